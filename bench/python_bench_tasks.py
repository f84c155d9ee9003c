"""Task bodies of bench/python_bench.py, importable by its worker and by
ProcessPoolExecutor alike."""
import asyncio
import time

import dexec


@dexec.task("pybench.noop")
def noop(x):
    return x


@dexec.task("pybench.spin", pool="process")
def spin(n):
    """Pure-Python CPU (holds the GIL)."""
    acc = 0
    for i in range(n):
        acc += i
    return acc


@dexec.task("pybench.nap")
async def nap(s):
    await asyncio.sleep(s)
    return s


def calibrate(seconds):
    """The spin(n) that takes about `seconds` here."""
    n = 100000
    while True:
        t0 = time.perf_counter()
        spin(n)
        dt = time.perf_counter() - t0
        if dt > 0.05:
            return int(n * seconds / dt)
        n *= 2
