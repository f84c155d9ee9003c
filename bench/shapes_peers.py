#!/usr/bin/env python3
"""The seeds' own programs for issue 12's workloads, as peers of dexec:

  shapes_peers.py aiohttp URLS N     asyncio + aiohttp crawler, N GETs at once
  shapes_peers.py threads URLS N T   ThreadPoolExecutor(T) crawler (urllib)

URLS is comma-separated; request i gets URL i % count.
  shapes_peers.py ppe N CHUNKSIZE    ProcessPoolExecutor(2).map of a no-op

Each prints one RESULT line like shapes_bench's.
"""
import concurrent.futures
import resource
import sys
import time
import urllib.request


def aiohttp_crawl(urls, n):
    import asyncio
    import aiohttp

    async def main():
        # Connections capped below the fd limit, as http.get caps them.
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        conn = aiohttp.TCPConnector(limit=max(soft - 1024, soft // 2))
        timeout = aiohttp.ClientTimeout(total=600)
        async with aiohttp.ClientSession(connector=conn, timeout=timeout) as s:
            async def one(i):
                async with s.get(urls[i % len(urls)]) as r:
                    await r.read()
                    return r.status
            return await asyncio.gather(*(one(i) for i in range(n)))

    start = time.monotonic()
    statuses = asyncio.run(main())
    took = time.monotonic() - start
    assert all(s == 200 for s in statuses), set(statuses)
    print("RESULT system=aiohttp measure=http_%d unit=s value=%.3f" % (n, took))


def thread_crawl(urls, n, threads):
    def one(i):
        with urllib.request.urlopen(urls[i % len(urls)], timeout=600) as r:
            r.read()
            return r.status

    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(threads) as ex:
        statuses = list(ex.map(one, range(n)))
    took = time.monotonic() - start
    assert all(s == 200 for s in statuses)
    print("RESULT system=tpe%d measure=http_%d unit=s value=%.3f" %
          (threads, n, took))


def noop(x):
    return x


def ppe(n, chunksize):
    with concurrent.futures.ProcessPoolExecutor(2) as ex:
        list(ex.map(noop, range(1000), chunksize=100))  # start the workers
        start = time.monotonic()
        count = sum(1 for _ in ex.map(noop, range(n), chunksize=chunksize))
        took = time.monotonic() - start
    assert count == n
    print("RESULT system=ppe2 measure=chunked_map unit=items/s value=%.0f "
          "n=%d chunksize=%d" % (n / took, n, chunksize))


if __name__ == "__main__":
    # One socket per request in flight: every fd allowed (as dexec-worker
    # and shapes_http_limit take).
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1 << 20, 1 << 20))
    except (ValueError, OSError):
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    what = sys.argv[1]
    if what == "aiohttp":
        aiohttp_crawl(sys.argv[2].split(","), int(sys.argv[3]))
    elif what == "threads":
        thread_crawl(sys.argv[2].split(","), int(sys.argv[3]),
                     int(sys.argv[4]))
    elif what == "ppe":
        ppe(int(sys.argv[2]), int(sys.argv[3]))
    else:
        sys.exit("usage: see the docstring")
