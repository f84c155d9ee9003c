#!/usr/bin/env python3
"""Noise accounting for dexec's RESULT lines, the same figure the peer
scripts print as `foreign_cores` (../shared/bench-peers/common.py): the CPU
used by processes outside the benchmark's own process tree, in cores,
averaged over the measurement. 0 is a quiet machine; 2 means another job
took both cores of the reference VM.

  noise.py mark  --root PID --state FILE   wait (bounded) until quiet, mark
  noise.py since --root PID --state FILE   print cores used since the mark

`--root` is bench/run.sh's PID: it, and everything below it (brokers,
workers, dexec_bench), is the benchmark. Ticks of reaped children count to
their parent, as in the peers' figure.
Environment: PEERS_QUIET_CORES (0.3), PEERS_QUIET_MAX_WAIT_S (60), shared
with the peer scripts.
"""
import argparse
import json
import os
import sys
import time

import proc_table

CLK_TCK = os.sysconf("SC_CLK_TCK")


def foreign_ticks(root):
    table = proc_table.read()
    kids = proc_table.children(table)
    mine, stack = set(), [root, os.getpid()]
    while stack:
        p = stack.pop()
        mine.add(p)
        stack.extend(kids.get(p, []))
    return sum(t for pid, (_, _, t) in table.items() if pid not in mine)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["mark", "since"])
    ap.add_argument("--root", type=int, required=True)
    ap.add_argument("--state", required=True)
    a = ap.parse_args()

    if a.what == "mark":
        quiet = float(os.environ.get("PEERS_QUIET_CORES", "0.3"))
        max_wait = float(os.environ.get("PEERS_QUIET_MAX_WAIT_S", "60"))
        start = time.time()
        while True:
            t0, f0 = time.time(), foreign_ticks(a.root)
            time.sleep(0.5)
            cores = (foreign_ticks(a.root) - f0) / CLK_TCK / (time.time() - t0)
            if cores < quiet or time.time() - start > max_wait:
                break
        if time.time() - start > 1:
            sys.stderr.write("# waited %.0f s for other processes to go quiet "
                             "(%.2f foreign cores)\n" % (time.time() - start,
                                                         cores))
        with open(a.state, "w") as f:
            json.dump({"t": time.time(), "ticks": foreign_ticks(a.root)}, f)
        return 0

    try:
        with open(a.state) as f:
            m = json.load(f)
    except (OSError, ValueError):
        print("nan")
        return 0
    dt = time.time() - m["t"]
    cores = (foreign_ticks(a.root) - m["ticks"]) / CLK_TCK / dt if dt > 0 else 0
    print("%.2f" % cores)
    return 0


if __name__ == "__main__":
    sys.exit(main())
