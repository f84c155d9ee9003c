"""/usr/bin/python3 -m dexec.worker --broker=tcp://HOST:PORT MODULE...

Imports the task modules named on the command line (dotted names or .py
paths) and serves their @dexec.task functions. SIGTERM or SIGINT drains
(no new jobs; the running ones finish, up to --drain_timeout); a second
one stops at once.
"""
import argparse
import gc
import logging
import os
import signal
import sys
import threading

from . import Worker
from . import credentials
from .loader import load_modules


def _parse(argv):
    p = argparse.ArgumentParser(
        prog="python3 -m dexec.worker",
        description="Serve @dexec.task functions of MODULEs to a dexec broker.")
    p.add_argument("modules", nargs="+", metavar="MODULE",
                   help="dotted module name or path of a .py file")
    p.add_argument("--broker", default=os.environ.get(
        "DEXEC_WORKER_BROKER", "tcp://127.0.0.1:50052"),
        help="the broker's worker endpoint (default tcp://127.0.0.1:50052)")
    p.add_argument("--auth_dir", default="./dexec-data",
                   help="where worker.key is (default ./dexec-data)")
    p.add_argument("--worker_key", default=None,
                   help="the CURVE credentials file (default "
                        "AUTH_DIR/worker.key)")
    p.add_argument("--insecure", action="store_true",
                   help="no CURVE, for a broker started with --insecure")
    p.add_argument("--threads", type=int, default=8,
                   help="threads for pool='thread' tasks (default 8)")
    p.add_argument("--processes", type=int, default=0,
                   help="child processes for pool='process' tasks (default: "
                        "one per core)")
    p.add_argument("--concurrency", type=int, default=1000,
                   help="async tasks running at once (default 1000)")
    p.add_argument("--prefetch", type=int, default=None,
                   help="tasks accepted beyond the slots (default "
                        "max(256, 4 x slots))")
    p.add_argument("--name", default=None, help="default host:pid")
    p.add_argument("--drain_timeout", type=float, default=30.0,
                   help="seconds running tasks may finish on SIGTERM")
    p.add_argument("--log_level", default="INFO")
    a = p.parse_args(argv)
    for flag in ("threads", "concurrency"):
        if not 1 <= getattr(a, flag) <= 100000:
            p.error("--%s=%d; use 1 to 100000" % (flag, getattr(a, flag)))
    if not 0 <= a.processes <= 1024:
        p.error("--processes=%d; use 1 to 1024, or 0 for one per core" %
                a.processes)
    return a


def main(argv=None):
    a = _parse(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=a.log_level.upper(), stream=sys.stderr,
        format="%(levelname)s %(asctime)s %(message)s")
    curve = None
    if not a.insecure:
        path = a.worker_key or os.path.join(a.auth_dir, "worker.key")
        try:
            curve = credentials.load(path)
        except credentials.CredentialsError as e:
            print("dexec.worker: %s" % e, file=sys.stderr)
            return 2
    try:
        load_modules(a.modules)
        w = Worker(a.broker, modules=a.modules, threads=a.threads,
                   processes=a.processes or None, concurrency=a.concurrency,
                   prefetch=a.prefetch, name=a.name, curve=curve,
                   drain_timeout=a.drain_timeout)
        w.start()
    except Exception as e:  # noqa: BLE001 - one line, exit 2
        print("dexec.worker: %s: %s" % (type(e).__name__, e), file=sys.stderr)
        return 2
    # What is loaded by now (modules, the task modules' own state, the
    # pools) lives as long as the worker: out of the cyclic GC's full
    # passes, which otherwise walk it again while jobs churn objects.
    gc.freeze()
    signals = [0]

    def on_signal(signum, frame):
        signals[0] += 1
        if signals[0] == 1:
            w.drain()
        else:
            w.stop()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print("dexec.worker ready name=%s slots=%d" % (w.name, w.slots),
          flush=True)
    while not w.wait(0.5):
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
