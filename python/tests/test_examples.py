"""The seed programs of examples/python, run as a user runs them (their own
process, the broker from $DEXEC_BROKER) against one Python worker that
loaded them: the ProcessPoolExecutor map of squares, ten time.sleep(1) on
ten threads in about a second, 10,000 asyncio sleeps in about a second."""
import os
import re
import subprocess

import pytest

from conftest import PY, ROOT, _env

EXAMPLES = os.path.join(ROOT, "examples", "python")
FILES = ["squares_process.py", "sleep_threads.py", "sleep_asyncio.py"]


@pytest.fixture(scope="module")
def example_cluster(tmp_path_factory, binaries):
    from conftest import Procs
    p = Procs(str(tmp_path_factory.mktemp("examples")))
    try:
        b = p.broker(in_memory=True)
        p.worker(b, *[os.path.join(EXAMPLES, f) for f in FILES],
                 flags=["--threads=10", "--processes=2",
                        "--concurrency=10000"])
        yield b
    finally:
        p.close()


def run_example(broker, name):
    env = _env()
    env["DEXEC_BROKER"] = broker.grpc
    if broker.secure:
        env["DEXEC_TOKEN_FILE"] = broker.token_file
    r = subprocess.run([PY, os.path.join(EXAMPLES, name)], env=env,
                       capture_output=True, timeout=60, cwd=EXAMPLES)
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout.decode()


def elapsed(out):
    return float(re.search(r"elapsed ([0-9.]+) s", out).group(1))


def test_process_pool_map_of_squares(example_cluster):
    out = run_example(example_cluster, "squares_process.py")
    assert out.strip() == str([x * x for x in range(10)])


def test_ten_sleeps_on_ten_threads_take_about_a_second(example_cluster):
    out = run_example(example_cluster, "sleep_threads.py")
    assert "'page 9'" in out
    assert 1.0 <= elapsed(out) < 2.5, out


def test_ten_thousand_asyncio_sleeps_take_about_a_second(example_cluster):
    out = run_example(example_cluster, "sleep_asyncio.py")
    assert "10000 sleeps of 1 s done" in out
    # About a second of sleeping, plus 10k jobs through a Python client, the
    # broker and a Python worker on 2 cores: 1.3-1.6 s on a quiet machine,
    # nearer 5 s with other builds running. The bound catches a worker that
    # runs them in series (10 s at --concurrency=1000, far more at 1).
    assert 1.0 <= elapsed(out) < 8.0, out
