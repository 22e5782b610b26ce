# Raw record of bench/RESULTS.md "A follower's cost per ack" (2026-12-05): shares of the
# followers' perf samples, main vs head, from `perf script -F pid,tid,comm,ip,sym` of
# `perf record -g -F 1999 -p PID1,PID2,PID3` during a 200-connection cluster run.
# usage: perf-cmp.py MAIN.script FOLLOWER_PIDS HEAD.script FOLLOWER_PIDS (pids comma-separated)
import re, sys, collections
def load(fn):
    samples=[];cur=None
    for line in open(fn):
        if not line.strip():
            if cur: samples.append(cur); cur=None
            continue
        if not line.startswith((' ','\t')):
            m=re.search(r'(\d+)/(\d+)',line); cur={'pid':int(m.group(1)),'syms':[]}
        else:
            p=line.split()
            if len(p)>=2: cur['syms'].append(p[1])
    if cur: samples.append(cur)
    return samples
MALLOC={'malloc','_int_malloc','_int_free','cfree@GLIBC_2.2.5','free','unlink_chunk.constprop.0','malloc_consolidate','_int_free_merge_chunk','_int_free_create_chunk','_int_free_maybe_consolidate.part.0','sysmalloc','__libc_malloc','__libc_free','realloc','_int_realloc','tcache_get'}
for fn, fol in [(sys.argv[1], sys.argv[2]), (sys.argv[3], sys.argv[4])]:
    ss=load(fn); fset=set(int(x) for x in fol.split(','))
    tot=len(ss); f=[s for s in ss if s['pid'] in fset]; n=len(f)
    inc=lambda k: sum(1 for s in f if k in s['syms'])
    selfm=sum(1 for s in f if s['syms'] and s['syms'][0] in MALLOC)
    anym=sum(1 for s in f if any(x in MALLOC for x in s['syms'][:3]))
    print('%s: followers %d of %d samples (%.1f%%); part_apply %.1f%%, apply_entry %.1f%%, stream_get_hashed %.1f%%, idem_probe %.1f%%, malloc/free self %.1f%%, rlog_put %.1f%%, sysmalloc %.1f%%, __mprotect %.1f%%' % (fn, n, tot, 100*n/tot, 100*inc('part_apply_hinted' if 'head' in fn else 'part_apply')/n, 100*inc('apply_entry')/n, 100*inc('stream_get_hashed')/n, 100*inc('idem_probe')/n, 100*selfm/n, 100*inc('rlog_put')/n, 100*inc('sysmalloc')/n, 100*inc('__mprotect')/n))
