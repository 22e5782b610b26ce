import sys, collections, re
# perf script -F pid,tid,ip,sym | python3 agg2.py TID [N]
tid=sys.argv[1]; N=int(sys.argv[2]) if len(sys.argv)>2 else 40
samples=[]; cur=None
for line in sys.stdin:
    if not line.strip():
        if cur: samples.append(cur); cur=None
        continue
    if not line.startswith((' ','\t')):
        m=re.match(r'\s*(\d+)/(\d+)',line); cur=[m.group(2),[]]
    else:
        parts=line.split(None,1); cur[1].append(parts[1].strip() if len(parts)>1 else '?')
if cur: samples.append(cur)
S=[st for t,st in samples if t in tid.split(',')]
n=len(S); print("samples",n)
self_=collections.Counter(st[0] if st else '?' for st in S)
incl=collections.Counter()
for st in S:
    for f in set(st): incl[f]+=1
print("-- self"); 
for f,c in self_.most_common(N): print(f"{100*c/n:5.1f} {f}")
print("-- inclusive")
for f,c in incl.most_common(N*2): print(f"{100*c/n:5.1f} {f}")
