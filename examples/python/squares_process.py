"""CPU-bound work on every core: ProcessPoolExecutor.map of squares, with
only the executor changed. Workers run it in their process pool:

    /usr/bin/python3 -m dexec.worker examples/python/squares_process.py
    DEXEC_BROKER=127.0.0.1:50051 /usr/bin/python3 examples/python/squares_process.py

Before:
    from concurrent.futures import ProcessPoolExecutor
    with ProcessPoolExecutor() as ex:
"""
import dexec


@dexec.task(pool="process")
def square(x):
    return x * x


def main():
    with dexec.Executor() as ex:
        results = list(ex.map(square, range(10)))
    print(results)


if __name__ == "__main__":
    main()
