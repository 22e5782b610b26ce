#!/usr/bin/env python3
# perfagg.py DATA [N]: from `perf script` of a prof.sh recording, per thread (the biggest
# eight): its share of all samples, then its top-N self symbols and top-N inclusive
# symbols (a symbol counted once per sample if anywhere in the call chain), as % of the thread.
import sys, subprocess, collections
data = sys.argv[1]; N = int(sys.argv[2]) if len(sys.argv) > 2 else 25
out = subprocess.run(['perf', 'script', '-i', data, '-F', 'pid,tid,comm,ip,sym'],
                     capture_output=True, text=True).stdout
tot = 0
th = collections.Counter(); selfc = collections.defaultdict(collections.Counter)
incl = collections.defaultdict(collections.Counter); tpid = {}
cur = None; chain = []
def flush():
    global tot
    if cur is None: return
    tot += 1; th[cur] += 1
    if chain: selfc[cur][chain[0]] += 1
    for s in set(chain): incl[cur][s] += 1
for line in out.split('\n'):
    if not line.strip():
        flush(); cur = None; chain = []; continue
    if not line.startswith((' ', '\t')):
        f = line.split()
        # comm pid/tid
        pt = [x for x in f if '/' in x and x.replace('/', '').isdigit()]
        if pt:
            p, t = pt[0].split('/'); cur = int(t); tpid[cur] = int(p)
        continue
    f = line.split(None, 1)
    chain.append(f[1].strip() if len(f) > 1 else f[0])
flush()
print(f"{tot} samples")
for t, c in th.most_common(int(sys.argv[3]) if len(sys.argv) > 3 else 8):
    print(f"\n== tid {t} pid {tpid[t]}: {c} samples, {100*c/tot:.1f}% of all")
    print("  self:", "; ".join(f"{s} {100*n/c:.1f}" for s, n in selfc[t].most_common(N)))
    print("  incl:", "; ".join(f"{s} {100*n/c:.1f}" for s, n in incl[t].most_common(N)))
