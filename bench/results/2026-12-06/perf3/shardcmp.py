#!/usr/bin/env python3
# shardcmp.py DATA...: for each prof.sh recording, the samples of the three shard threads
# (the threads whose chains pass shard_main) and the share of them under given functions
# (a sample counted once if the function is anywhere in its chain), and the share of
# __memmove at the top of the chain. (glibc has no frame pointers: samples inside malloc
# and free rarely unwind to shard_main, so they are not counted here.)
import sys, subprocess, collections
WATCH = ['raft_entry_csum', 'log_get', 'unstable_push', 'rlog_alloc', 'part_raft_compact',
         'clear_page_erms', 'handle_mm_fault', '__madvise']
MALLOC = {'_int_malloc', '_int_free', 'unlink_chunk.constprop.0', 'malloc', 'cfree@GLIBC_2.2.5',
          '__libc_calloc', 'realloc', '_int_realloc', 'malloc_consolidate', 'sysmalloc',
          '_int_free_merge_chunk', '_int_free_create_chunk', 'free'}
for data in sys.argv[1:]:
    out = subprocess.run(['perf', 'script', '-i', data, '-F', 'tid,ip,sym'],
                         capture_output=True, text=True).stdout
    tot = 0; shard = 0; c = collections.Counter()
    for blk in out.split('\n\n'):
        L = [l for l in blk.split('\n') if l.strip()]
        if not L: continue
        tot += 1
        syms = [l.split(None, 1)[1].strip() if len(l.split(None, 1)) > 1 else '' for l in L[1:]]
        if 'shard_main' not in syms: continue
        shard += 1
        s = set(syms)
        for w in WATCH:
            if w in s: c[w] += 1
        if syms and syms[0] == '__memmove_avx512_unaligned_erms': c['memmove (self)'] += 1
    print(f"{data}: {tot} samples, shard threads {shard} ({100*shard/tot:.1f} %)")
    for k in WATCH + ['memmove (self)']:
        print(f"  {k:22s} {100*c[k]/max(shard,1):5.1f} % of shard samples")
