#!/usr/bin/env python3
"""drop-unsynced.py — TEST-ONLY: make a kill -9'd parleyd lose what a power
loss could have lost.

A kill -9 keeps every byte the process wrote (the page cache has it), so a
restart after one never meets lost unsynced writes. Run parleyd with
PARLEY_TEST_SYNC_LOG=<file> (engine/io/io_synclog.c records every write,
fdatasync, create, rename, unlink and directory fsync there); after the
process is dead (waited for), run

    python3 tools/drop-unsynced.py <file>

which changes the files the log names, as the worst power loss would:
  - every byte written after the last fdatasync that covered it is lost:
    a file is cut back to the end of its last durable byte (or the size it
    had when this run first opened it) and lost bytes below that are
    zeroed (the engine's WAL segments are pre-zeroed, so zeros are what a
    lost block reads as there);
  - a create, rename or unlink not followed by an fsync of its directory is
    undone (a created file removed, a renamed one put back under its old
    name with the file it replaced, kept as a hard link by the engine,
    restored; an unlinked one restored), newest first.
Limits: a truncate counts as durable at once; a directory made by mkdir is
never removed (the engine syncs its parent right after, pio_dir_ensure).

Prints one summary line; the log is then moved to <file>.applied and the
link directory <file>.d emptied, so the next run starts a new log.
Exit 0, or 1 on a malformed log or a file it cannot change.
"""
import os
import sys


class FileState:
    def __init__(self, loc, base):
        self.loc = loc          # ("path", p) | ("bak", bid) | None (gone)
        self.base = base        # size known durable at first sight
        self.writes = []        # in issue order
        self.completed = set()  # completed, not known durable


class Write:
    def __init__(self, fs, off, length):
        self.fs = fs
        self.off = off
        self.len = length
        self.durable = False


def dirname(p):
    d = os.path.dirname(p)
    return d if d else "."


def main():
    if len(sys.argv) != 2:
        print("usage: drop-unsynced.py SYNC_LOG", file=sys.stderr)
        return 1
    logp = sys.argv[1]
    bdir = logp + ".d"
    files = {}     # current path -> FileState
    byino = {}     # inode number -> FileState of the file that has it
    every = []     # every FileState ever seen
    writes = {}    # id -> Write
    fsyncs = {}    # fid -> [Write]
    ns = []        # namespace events: (kind, eid, dirs, data, bid)
    dsync = {}     # dir -> highest seq of a completed fsync of it

    def new_state(ino, path, base):
        fs = FileState(("path", path), base)
        old = files.get(path)
        if old is not None:
            old.loc = None
        files[path] = fs
        byino[ino] = fs
        every.append(fs)
        return fs

    def state(ino, path, base=0):
        fs = byino.get(ino)
        return fs if fs is not None else new_state(ino, path, base)

    try:
        f = open(logp)
    except FileNotFoundError:
        print("drop-unsynced: no sync log %s: nothing to drop" % logp)
        return 0
    for ln, line in enumerate(f, 1):
        a = line.split()
        if not a:
            continue
        try:
            k = a[0]
            if k == "Q":
                fs = state(int(a[2]), a[3])
                w = Write(fs, int(a[4]), int(a[5]))
                fs.writes.append(w)
                writes[int(a[1])] = w
            elif k == "W":
                w = writes.get(int(a[1]))
                if w is not None and not w.durable:
                    w.fs.completed.add(w)
            elif k == "F":
                fs = state(int(a[2]), a[3])
                cov = list(fs.completed)
                for i in a[4:]:
                    w = writes.get(int(i))
                    if w is not None:
                        cov.append(w)
                fsyncs[int(a[1])] = cov
            elif k == "S":
                for w in fsyncs.pop(int(a[1]), []):
                    w.durable = True
                    w.fs.completed.discard(w)
            elif k == "T":
                fs = state(int(a[1]), a[2])
                size = int(a[3])
                fs.base = size
                keep = []
                for w in fs.writes:
                    if w.off >= size:
                        continue
                    w.len = min(w.len, size - w.off)
                    keep.append(w)
                fs.writes = keep
            elif k == "O":
                if int(a[1]) not in byino:
                    new_state(int(a[1]), a[2], int(a[3]))
            elif k == "C":
                new_state(int(a[2]), a[3], 0)
                ns.append(("C", int(a[1]), {dirname(a[3])}, a[3], 0))
            elif k == "R":
                eid, bid, src, dst = int(a[1]), int(a[2]), a[3], a[4]
                fs = files.pop(src, None)
                old = files.pop(dst, None)
                if old is not None:
                    old.loc = ("bak", bid) if bid else None
                if fs is not None:
                    fs.loc = ("path", dst)
                    files[dst] = fs
                ns.append(("R", eid, {dirname(src), dirname(dst)},
                           (src, dst), bid))
            elif k == "U":
                eid, bid, path = int(a[1]), int(a[2]), a[3]
                fs = files.pop(path, None)
                if fs is not None:
                    fs.loc = ("bak", bid) if bid else None
                ns.append(("U", eid, {dirname(path)}, path, bid))
            elif k == "D":
                seq, d = int(a[1]), a[2]
                dsync[d] = max(dsync.get(d, 0), seq)
            else:
                raise ValueError("unknown event")
        except (IndexError, ValueError) as e:
            print("drop-unsynced: %s:%d: malformed line (%s): %r" %
                  (logp, ln, e, line), file=sys.stderr)
            return 1
    f.close()

    def where(fs):
        if fs.loc is None:
            return None
        if fs.loc[0] == "path":
            return fs.loc[1]
        return os.path.join(bdir, str(fs.loc[1]))

    # 1. data: bytes whose last write is not durable
    zeroed = cut = nfiles = 0
    for fs in every:
        p = where(fs)
        if p is None or not os.path.exists(p):
            continue
        extent = fs.base
        lost = []
        for w in fs.writes:
            lo, hi = w.off, w.off + w.len
            if w.durable:
                extent = max(extent, hi)
                nl = []
                for (x, y) in lost:
                    if y <= lo or x >= hi:
                        nl.append((x, y))
                    else:
                        if x < lo:
                            nl.append((x, lo))
                        if y > hi:
                            nl.append((hi, y))
                lost = nl
            elif hi > lo:
                lost.append((lo, hi))
        size = os.path.getsize(p)
        changed = False
        with open(p, "r+b") as fh:
            if size > extent:
                fh.truncate(extent)
                cut += size - extent
                size = extent
                changed = True
            for (x, y) in lost:
                y = min(y, size)
                if x >= y:
                    continue
                fh.seek(x)
                fh.write(b"\0" * (y - x))
                zeroed += y - x
                changed = True
        nfiles += changed

    # 2. namespace: undo what no directory fsync covered, newest first
    def durable(ev):
        return all(dsync.get(d, 0) > ev[1] for d in ev[2])

    removed = renamed = restored = 0
    for ev in sorted(ns, key=lambda e: e[1], reverse=True):
        if durable(ev):
            continue
        kind = ev[0]
        if kind == "C":
            if os.path.exists(ev[3]):
                os.unlink(ev[3])
                removed += 1
        elif kind == "R":
            src, dst = ev[3]
            if os.path.exists(dst):
                os.rename(dst, src)
                renamed += 1
            if ev[4]:
                b = os.path.join(bdir, str(ev[4]))
                if os.path.exists(b):
                    os.rename(b, dst)
                    restored += 1
                else:
                    print("drop-unsynced: the file %s replaced is not kept "
                          "(link %s): left as is" % (dst, b), file=sys.stderr)
        elif kind == "U":
            b = os.path.join(bdir, str(ev[4]))
            if ev[4] and os.path.exists(b) and not os.path.exists(ev[3]):
                os.rename(b, ev[3])
                restored += 1

    for name in os.listdir(bdir) if os.path.isdir(bdir) else []:
        os.unlink(os.path.join(bdir, name))
    os.replace(logp, logp + ".applied")
    print("drop-unsynced: %d file(s) changed: %d byte(s) cut, %d zeroed; "
          "%d created file(s) removed, %d rename(s) undone, %d file(s) "
          "restored" % (nfiles, cut, zeroed, removed, renamed, restored))
    return 0


if __name__ == "__main__":
    sys.exit(main())
