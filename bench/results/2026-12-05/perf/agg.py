import sys, collections, re
# usage: perf script -F pid,tid,ip,sym --no-inline | python3 agg.py [TID_FILTER]
samples=[]; cur=None
for line in sys.stdin:
    if not line.strip():
        if cur: samples.append(cur); cur=None
        continue
    if not line.startswith((' ','\t')):
        m=re.match(r'\s*(\d+)/(\d+)',line); cur=[m.group(1),m.group(2),[]]
    else:
        parts=line.split(None,1)
        cur[2].append(parts[1].strip() if len(parts)>1 else '?')
if cur: samples.append(cur)
tot=len(samples)
bythr=collections.Counter((p,t) for p,t,_ in samples)
print("total",tot)
# thread role guess by frames
role={}
for p,t,st in samples:
    s=' '.join(st)
    for k in ('shard_main','node_main','loop_main','prep_main','fanout','rpool','admin'):
        if k in s: role.setdefault((p,t),collections.Counter())[k]+=1
for (p,t),n in sorted(bythr.items()):
    r=role.get((p,t)); r=r.most_common(1)[0][0] if r else '?'
    print(f"{p}/{t} {r:12s} {n:6d} {100*n/tot:5.1f}%")
