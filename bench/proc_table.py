"""The process table, read from /proc: shared by bench/noise.py (CPU used
outside the benchmark) and bench/run_peer.py (what a peer script left
running)."""
import os


def read():
    """{pid: (state, ppid, ticks)} for every process /proc shows;
    ticks = utime + stime + cutime + cstime (reaped children count to their
    parent)."""
    table = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                st = f.read()
        except OSError:
            continue  # exited meanwhile
        # "PID (comm) S PPID ...": fields after the last ')'.
        rest = st[st.rfind(")") + 2:].split()
        table[int(d)] = (rest[0], int(rest[1]),
                         sum(int(x) for x in rest[11:15]))
    return table


def children(table):
    """{ppid: [pid, ...]} of `table`."""
    kids = {}
    for pid, (_, ppid, _) in table.items():
        kids.setdefault(ppid, []).append(pid)
    return kids
