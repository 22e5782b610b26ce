import sys, collections
# usage: callers.py FOLDED SYM [depth]  -> who calls SYM (inclusive samples), by immediate caller chain of given depth
f, sym = sys.argv[1], sys.argv[2]; depth = int(sys.argv[3]) if len(sys.argv) > 3 else 2
c = collections.Counter(); tot = 0; all_ = 0
for line in open(f):
    st, n = line.rsplit(" ", 1); n = int(n)
    if not (st.startswith("parleyd") or st.startswith("iou-wrk")): continue
    all_ += n
    fr = st.split(';')
    if sym in fr[1:]:
        i = fr.index(sym, 1)
        key = ' <- '.join(reversed(fr[max(1, i-depth):i]))
        c[key] += n; tot += n
print(f"{sym}: {tot} of {all_} samples ({100*tot/all_:.2f}%)")
for k, n in c.most_common(15): print(f"  {100*n/all_:6.2f}%  {k}")
