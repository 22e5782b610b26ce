import sys, collections
f = sys.argv[1]
tidn = collections.Counter(); tidroles = collections.defaultdict(collections.Counter); tidpid = {}
tot = 0; sysn = collections.Counter()
R = ('shard_main','node_main','loop_main','prep_main','fanout_main','rpool_main','io_wq_worker','sweep_main','admin_main','hworker_main','__libc_start_call_main')
for line in open(f):
    st, n = line.rsplit(' ', 1); n = int(n)
    fr = st.split(';'); head = fr[0]
    if not head.startswith('parleyd') and not head.startswith('iou-wrk'): continue
    tot += n
    pid, tid = head.split()[1].split('/')
    tidn[tid] += n; tidpid[tid] = pid
    if head.startswith('iou-wrk'): tidroles[tid]['io_wq_worker'] += n
    for x in R:
        if x in fr: tidroles[tid][x] += n; break
    if any(k in st for k in ('entry_SYSCALL_64', 'asm_exc_page_fault', 'asm_sysvec', 'ret_from_fork', 'asm_common_interrupt')): sysn[tid] += n
agg = collections.Counter(); aggsys = collections.Counter(); pidtot = collections.Counter()
for t, n in tidn.items():
    role = tidroles[t].most_common(1)[0][0] if tidroles[t] else 'unknown'
    if role == '__libc_start_call_main': role = 'main'
    agg[(tidpid[t], role)] += n; aggsys[(tidpid[t], role)] += sysn[t]; pidtot[tidpid[t]] += n
for p, pn in pidtot.most_common():
    print(f"pid {p}: {100*pn/tot:.1f}%")
    for (pp, r), n in sorted(agg.items(), key=lambda x: -x[1]):
        if pp == p and 100*n/tot >= 0.4:
            print(f"   {r:14s} {100*n/tot:5.1f}%   kernel {100*aggsys[(pp,r)]/n:3.0f}%")
print("samples", tot)
