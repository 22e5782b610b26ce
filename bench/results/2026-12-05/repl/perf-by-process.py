#!/usr/bin/env python3
# Share of perf samples by process and by function on the stack (self or callee),
# from `perf script -F pid,tid,comm,ip,sym` of `perf record -g -p PID1,PID2,PID3`.
# usage: perf-by-process.py SCRIPT.txt LEADER_PID
import re, sys, collections
samples = []; cur = None
for line in open(sys.argv[1]):
    if not line.strip():
        if cur: samples.append(cur); cur = None
        continue
    if not line.startswith((' ', '\t')):
        m = re.search(r'(\d+)/(\d+)', line)
        cur = {'pid': int(m.group(1)), 'syms': []}
    else:
        p = line.split()
        if len(p) >= 2: cur['syms'].append(p[1])
if cur: samples.append(cur)
leader = int(sys.argv[2]); tot = len(samples)
keys = ['apply_entry', 'part_apply', 'stream_get', 'idem_probe', 'raft_step', 'raft_ready',
        'send_append', 'handle_append', 'handle_append_resp', 'pe_raft_recv', 'peer_send_all',
        '_int_malloc', '_int_free', 'tcp_sendmsg', 'finish_task_switch.isra.0', 'shard_round', 'loop_main']
print('samples', tot)
for pid, c in collections.Counter(s['pid'] for s in samples).most_common():
    ss = [s for s in samples if s['pid'] == pid]
    print('== pid %d%s: %d samples, %.1f%% of all' % (pid, ' (leader)' if pid == leader else '', c, 100 * c / tot))
    for k in keys:
        n = sum(1 for s in ss if k in s['syms'])
        if n: print('  %-28s %5.1f%% of the process, %4.1f%% of all' % (k, 100 * n / c, 100 * n / tot))
