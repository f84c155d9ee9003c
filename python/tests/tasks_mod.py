"""Tasks the Python suite's workers serve (loaded by name: tasks_mod)."""
import asyncio
import os
import signal
import time

import dexec


@dexec.task("t.square")
def square(x):
    return x * x


@dexec.task("t.add")
def add(a, b=0):
    return a + b


@dexec.task("t.ident")
def ident(x):
    return x


class Oops(Exception):
    """An exception class of the tasks' own."""


@dexec.task("t.raise_value")
def raise_value(msg):
    raise ValueError(msg)


@dexec.task("t.raise_oops")
def raise_oops(code):
    raise Oops("oops %d" % code)


@dexec.task("t.fail_kind")
def fail_kind(kind, msg):
    raise dexec.TaskError(kind, msg)


@dexec.task("t.fail_at")
def fail_at(x, bad):
    if x == bad:
        raise KeyError(x)
    return x


@dexec.task("t.sleep")
def sleep(s):
    time.sleep(s)
    return s


@dexec.task("t.wait_cancel")
def wait_cancel(limit):
    """Sleeps cooperatively: returns early when cancelled."""
    ctx = dexec.current()
    ctx.sleep(limit)
    return "cancelled" if ctx.cancelled else "slept"


@dexec.task("t.spin")
def spin(seconds):
    """Holds the GIL in pure Python for that long."""
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        n += 1
    return n


@dexec.task("t.pid")
def pid(_=None):
    return os.getpid()


@dexec.task("p.square", pool="process")
def psquare(x):
    return x * x


@dexec.task("p.pid", pool="process")
def ppid(_=None):
    return os.getpid()


@dexec.task("p.sleep", pool="process")
def psleep(s):
    time.sleep(s)
    return s


@dexec.task("p.crash", pool="process")
def pcrash(_=None):
    os.kill(os.getpid(), signal.SIGKILL)


@dexec.task("p.cpu", pool="process")
def pcpu(n):
    acc = 0
    for i in range(n):
        acc += i
    return acc


@dexec.task("a.sleep")
async def asleep(s):
    await asyncio.sleep(s)
    return s


@dexec.task("a.nap")
async def anap(s, fail=False):
    await asyncio.sleep(s)
    if fail:
        raise ValueError("nap %s failed" % s)
    return s


@dexec.task("a.raise")
async def araise(msg):
    await asyncio.sleep(0)
    raise RuntimeError(msg)


@dexec.task("t.with_timeout", timeout=0.5)
def with_timeout(s):
    time.sleep(s)
    return s


@dexec.task("t.blob")
def blob(n):
    return b"x" * n


@dexec.task("t.patterned")
def patterned(n):
    # Every piece different, so a piece out of place shows.
    return bytes(range(251)) * (n // 251) + bytes(range(n % 251))


@dexec.task("a.timed_sleep")
async def timed_sleep(s):
    t0 = time.time()
    await asyncio.sleep(s)
    return t0, time.time()
