import sys, collections
# fold perf script output: key = tid, stack (root..leaf)
folded = collections.Counter()
cur = None; frames = []
for line in sys.stdin:
    line = line.rstrip('\n')
    if not line.strip():
        if cur is not None:
            folded[(cur, ';'.join(reversed(frames)))] += 1
        cur = None; frames = []; continue
    if not line.startswith('\t') and not line.startswith(' '):
        parts = line.split()
        cur = parts[0] + ' ' + parts[1]   # comm pid/tid
        continue
    p = line.strip().split(None, 1)
    if len(p) == 2:
        sym = p[1].split(' (')[0]
        sym = sym.split('+0x')[0]
        frames.append(sym)
for (k, s), n in folded.items():
    print(f"{k};{s} {n}")
