#!/usr/bin/python3
"""Runs one peer benchmark script (../shared/bench-peers) so that nothing it
starts can outlive it, and copies its output to a log.

The peer scripts start their own processes (a private redis-server, celery
workers, dask clusters) in new sessions and stop them by PID in `finally`
blocks. That covers a clean exit and SIGTERM, not a script that is killed
hard or hangs. This wrapper makes itself a child subreaper
(PR_SET_CHILD_SUBREAPER), so whatever the script leaves behind is reparented
here rather than to init; after the script exits it stops every remaining
descendant by PID (SIGTERM, then SIGKILL after 5 s) and reaps it.

Usage: run_peer.py --dir PEERS_DIR --log FILE --timeout SECONDS \
           SCRIPT [ARGS...]
Exit status: the script's, or 124 if it hit the timeout.
"""
import argparse
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time

import proc_table

PR_SET_CHILD_SUBREAPER = 36


def descendants(root):
    """PIDs of every live descendant of `root`, from /proc."""
    table = {pid: v for pid, v in proc_table.read().items() if v[0] != "Z"}
    kids = proc_table.children(table)
    out, stack = [], [root]
    while stack:
        for k in kids.get(stack.pop(), []):
            out.append(k)
            stack.append(k)
    return out


def cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")[:100]
    except OSError:
        return "?"


def reap():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def stop_leftovers(log):
    left = descendants(os.getpid())
    if not left:
        return
    msg = "# run_peer: stopping %d leftover process(es): %s\n" % (
        len(left), "; ".join("%d %s" % (p, cmdline(p)) for p in left))
    log.write(msg)
    sys.stdout.write(msg)
    for pid in left:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.time() + 5
    while time.time() < deadline:
        reap()
        if not descendants(os.getpid()):
            return
        time.sleep(0.05)
    for pid in descendants(os.getpid()):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    time.sleep(0.1)
    reap()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--timeout", type=float, required=True)
    ap.add_argument("script")
    ap.add_argument("args", nargs=argparse.REMAINDER)
    a = ap.parse_args()

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        sys.stderr.write("run_peer: prctl(PR_SET_CHILD_SUBREAPER) failed; "
                         "leftovers of a killed script may escape\n")

    proc = subprocess.Popen([sys.executable, "-u", a.script] + a.args,
                            cwd=a.dir, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)

    def forward(_signum, _frame):
        # The scripts turn SIGTERM into SystemExit and clean up.
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)

    log = open(a.log, "a")
    log.write("# run_peer: %s %s (pid %d)\n" % (a.script, " ".join(a.args),
                                               proc.pid))

    # The copy runs on its own thread: a leftover process that inherited the
    # script's stdout keeps the pipe open after the script is gone, so EOF
    # is not the end of the script.
    def copy():
        for raw in proc.stdout:
            line = raw.decode(errors="replace")
            sys.stdout.write(line)
            sys.stdout.flush()
            log.write(line)
    copier = threading.Thread(target=copy, name="run-peer-copy", daemon=True)
    copier.start()

    timed_out = False
    try:
        rc = proc.wait(timeout=a.timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        sys.stdout.write("# run_peer: %s hit its %.0f s limit; SIGTERM\n"
                         % (a.script, a.timeout))
        forward(signal.SIGTERM, None)
        try:
            rc = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
    stop_leftovers(log)
    copier.join(timeout=10)
    log.write("# run_peer: %s exited %d\n" % (a.script, rc))
    log.close()
    return 124 if timed_out else rc


if __name__ == "__main__":
    sys.exit(main())
