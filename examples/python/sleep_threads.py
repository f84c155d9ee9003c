"""IO-bound work on threads: ThreadPoolExecutor submit/result, with only the
executor changed. Ten time.sleep(1) calls finish in about a second on a
worker with ten threads:

    /usr/bin/python3 -m dexec.worker --threads=10 examples/python/sleep_threads.py
    /usr/bin/python3 examples/python/sleep_threads.py

Before:
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(max_workers=10) as ex:
"""
import time

import dexec


@dexec.task  # pool="thread" is the default for a plain def
def fetch(i):
    time.sleep(1)  # stands in for a network call
    return "page %d" % i


def main():
    start = time.perf_counter()
    with dexec.Executor() as ex:
        futures = [ex.submit(fetch, i) for i in range(10)]
        pages = [f.result() for f in futures]
    print(pages)
    print("elapsed %.2f s" % (time.perf_counter() - start))


if __name__ == "__main__":
    main()
