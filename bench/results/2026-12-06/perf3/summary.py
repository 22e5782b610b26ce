#!/usr/bin/env python3
# summary.py AB.txt...: per binary and connection count, the runs' CPU ms / 1k acks,
# context switches, r/w syscalls, Raft messages and peer frames per 1k acks, and means.
import sys, re, collections
d = collections.defaultdict(lambda: collections.defaultdict(list))
order = []
for fn in sys.argv[1:]:
    for l in open(fn):
        m = re.match(r'(\S+)\s+load (\S+) conns\s+(\d+) SENDs/s,p50,p99 (\S+) (\S+) (\S+) ms/1k (\S+) csw,sysc,msgs,frames/1k (\S+) (\S+) (\S+) (\S+)', l)
        if not m: continue
        b, load, c = m.group(1), m.group(2), int(m.group(3))
        if b not in order: order.append(b)
        k = d[(c, b)]
        for name, g in (('cpu', 7), ('csw', 8), ('sysc', 9), ('msgs', 10), ('frames', 11), ('sends', 4), ('p99', 6)):
            k[name].append(float(m.group(g)))
for c in sorted({c for c, _ in d}):
    for b in order:
        k = d.get((c, b))
        if not k: continue
        row = [f"{c}", b]
        for name in ('cpu', 'csw', 'sysc', 'msgs', 'frames'):
            v = k[name]
            row.append(", ".join(f"{x:.0f}" for x in v) + f" ({sum(v)/len(v):.0f})")
        print("| " + " | ".join(row) + " |")
