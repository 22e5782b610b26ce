#!/bin/bash
# classify-futex-mprotect.sh PERF_DATA — counts the futex and mprotect
# tracepoint events of a `perf record -e syscalls:sys_enter_futex -e
# syscalls:sys_enter_mprotect --call-graph dwarf` by cause: "arena:F" when
# the stack holds malloc/free (F = the first caller outside the allocator),
# "lock:F" otherwise (F = the first caller outside pthread/futex).
perf script -i "$1" -F event,ip,sym 2>/dev/null | awk '
/^ *syscalls:/ { if (ev!="") out(); ev=$1; stack=""; next }
NF>=2 { stack = stack " " $2 }
function out() { key=ev;
  if (stack ~ /malloc|_int_free|libc_free|cfree|realloc|calloc/) {
     n=split(stack, a, " "); cls="arena:"; for(i=1;i<=n;i++) if (a[i] !~ /^(_|lll|futex|malloc|free|arena|tcache|sysmalloc|grow_heap|new_heap|mprotect|unknown|\[unknown\])/ ) { cls=cls a[i]; break } key=key " " cls }
  else { n=split(stack, a, " "); c=""; for(i=1;i<=n;i++) if (a[i] !~ /^(_|lll|futex|pthread|\[unknown\])/) { c=a[i]; break } key=key " lock:" c }
  cnt[key]++ }
END { out(); for (k in cnt) print cnt[k], k }' | sort -rn
