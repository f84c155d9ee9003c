"""Coroutines: an asyncio program that awaits 10,000 sleeps at once, moved to
a cluster. The async def task runs on the worker's event loop, up to
--concurrency at a time, so one worker process finishes them in about a
second:

    /usr/bin/python3 -m dexec.worker --concurrency=10000 examples/python/sleep_asyncio.py
    /usr/bin/python3 examples/python/sleep_asyncio.py

Before:
    async def main():
        await asyncio.gather(*(nap(i) for i in range(10_000)))
    asyncio.run(main())

The client side stays asyncio too: asyncio.wrap_future turns each dexec
future into an awaitable.
"""
import asyncio
import time

import dexec


@dexec.task
async def nap(i):
    await asyncio.sleep(1)
    return i


async def main():
    start = time.perf_counter()
    with dexec.Executor() as ex:
        futures = [asyncio.wrap_future(ex.submit(nap, i))
                   for i in range(10_000)]
        done = await asyncio.gather(*futures)
    assert done == list(range(10_000))
    print("%d sleeps of 1 s done" % len(done))
    print("elapsed %.2f s" % (time.perf_counter() - start))


if __name__ == "__main__":
    asyncio.run(main())
