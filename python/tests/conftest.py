"""Real processes for the Python suite: a dexec-broker (C++), Python workers
(python3 -m dexec.worker) and, where a test needs built-in tasks, the C++
dexec-worker. Every process is stopped by PID in a finalizer; every wait is
bounded and waits on a signal (a printed line, a ListWorkers answer).

Binaries: $DEXEC_BIN_DIR if set, else bazel-bin/ of this checkout (`make
build`). Security: a broker that wrote client.token and worker.key in its
--auth_dir is secure; the fixtures then use them (token for clients,
worker.key for workers). Otherwise workers run --insecure and clients send
no token.
"""
import os
import selectors
import signal
import subprocess
import sys
import time

import grpc
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
PYTHON_DIR = os.path.dirname(HERE)
ROOT = os.path.dirname(PYTHON_DIR)
sys.path.insert(0, PYTHON_DIR)
sys.path.insert(0, HERE)

from dexec._proto import dexec_pb2 as pb  # noqa: E402
from dexec._proto import dexec_pb2_grpc  # noqa: E402

PY = "/usr/bin/python3"
START_TIMEOUT_S = 20


def _bin(rel):
    d = os.environ.get("DEXEC_BIN_DIR")
    if d:
        return os.path.join(d, os.path.basename(rel))
    return os.path.join(ROOT, "bazel-bin", rel)


BROKER_BIN = _bin("broker/dexec-broker")
CXX_WORKER_BIN = _bin("worker/dexec-worker")


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [PYTHON_DIR, HERE] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH")
                              else []))
    env.pop("DEXEC_TOKEN", None)
    env.pop("DEXEC_TOKEN_FILE", None)
    return env


def _read_line(proc, prefix, timeout, what):
    """The first stdout line starting with prefix, within timeout."""
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    end = time.monotonic() + timeout
    buf = b""
    try:
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise AssertionError("%s printed no '%s' line within %ss" %
                                     (what, prefix, timeout))
            if not sel.select(left):
                continue
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                raise AssertionError("%s exited (%s) before printing '%s'" %
                                     (what, proc.wait(), prefix))
            buf += chunk
            for line in buf.split(b"\n")[:-1]:
                if line.startswith(prefix.encode()):
                    return line.decode()
    finally:
        sel.close()


def stop(proc, sig=signal.SIGTERM, timeout=10):
    """Stops one process by PID; returns its exit code."""
    if proc.poll() is None:
        try:
            os.kill(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout)
    return proc.returncode


class Broker:
    """A dexec-broker on loopback; restartable on the same ports/data."""

    def __init__(self, data_dir, in_memory=False, flags=()):
        self.data_dir = data_dir
        self.in_memory = in_memory
        self.flags = list(flags)
        self.proc = None
        self.grpc = None
        self.workers = None
        self.log = open(os.path.join(data_dir, "broker.log"), "ab")

    def start(self):
        listen = self.grpc or "127.0.0.1:0"
        wl = self.workers or "tcp://127.0.0.1:*"
        args = [BROKER_BIN, "--listen=" + listen, "--http_listen=127.0.0.1:0", "--worker_listen=" + wl,
                "--data_dir=" + self.data_dir] + self.flags
        if self.in_memory:
            args.append("--in_memory")
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE,
                                     stderr=self.log, cwd=self.data_dir)
        line = _read_line(self.proc, "dexec-broker listening",
                          START_TIMEOUT_S, "dexec-broker")
        fields = dict(f.split("=", 1) for f in line.split()[2:])
        self.grpc, self.workers = fields["grpc"], fields["workers"]
        return self

    def stop(self, sig=signal.SIGTERM):
        return stop(self.proc, sig)

    # Security, as the broker set it up in its --auth_dir (= data_dir).
    @property
    def token_file(self):
        p = os.path.join(self.data_dir, "client.token")
        return p if os.path.exists(p) else None

    @property
    def secure(self):
        return self.token_file is not None

    def token(self):
        if not self.secure:
            return None
        with open(self.token_file) as f:
            return f.readline().strip()

    def metadata(self):
        t = self.token()
        return (("authorization", "Bearer " + t),) if t else None

    def stub(self):
        ch = grpc.insecure_channel(self.grpc)
        return ch, dexec_pb2_grpc.BrokerStub(ch)

    def executor(self, **kw):
        import dexec
        if self.secure:
            kw.setdefault("token_file", self.token_file)
        return dexec.Executor(self.grpc, **kw)

    def list_workers(self):
        ch, stub = self.stub()
        try:
            return stub.ListWorkers(pb.ListWorkersRequest(), timeout=5,
                                    metadata=self.metadata()).workers
        finally:
            ch.close()

    def wait_workers(self, names, timeout=START_TIMEOUT_S):
        """Until every named worker is registered (and READY)."""
        end = time.monotonic() + timeout
        want = set(names)
        while True:
            have = {w.name for w in self.list_workers()
                    if w.state == pb.WorkerInfo.READY}
            if want <= have:
                return
            if time.monotonic() > end:
                raise AssertionError("workers %s not registered within %ss "
                                     "(registered: %s)" %
                                     (sorted(want - have), timeout,
                                      sorted(have)))
            time.sleep(0.02)  # polling an RPC under a deadline

    def wait_gone(self, name, timeout=START_TIMEOUT_S):
        end = time.monotonic() + timeout
        while any(w.name == name for w in self.list_workers()):
            if time.monotonic() > end:
                raise AssertionError("worker %s still listed after %ss" %
                                     (name, timeout))
            time.sleep(0.02)


class Worker:
    """A Python worker (python3 -m dexec.worker) or the C++ dexec-worker."""

    _n = 0

    def __init__(self, broker, modules=("tasks_mod",), flags=(), cxx=False,
                 name=None, wait=True, log_dir=None):
        Worker._n += 1
        self.name = name or "%s-%d" % ("cxx" if cxx else "py", Worker._n)
        self.broker = broker
        auth = ["--auth_dir=" + broker.data_dir] if broker.secure else []
        if cxx:
            args = [CXX_WORKER_BIN, "--broker=" + broker.workers,
                    "--name=" + self.name, "--drain_timeout=2s"] + auth + \
                list(flags)
        else:
            args = [PY, "-m", "dexec.worker", "--broker=" + broker.workers,
                    "--name=" + self.name, "--drain_timeout=2"] + \
                (auth or ["--insecure"]) + list(flags) + list(modules)
        self.log_path = os.path.join(log_dir or broker.data_dir,
                                     self.name + ".log")
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=self.log,
                                     env=_env(), cwd=broker.data_dir)
        if wait:
            broker.wait_workers([self.name])

    @property
    def pid(self):
        return self.proc.pid

    def stop(self, sig=signal.SIGTERM, timeout=10):
        return stop(self.proc, sig, timeout)

    def output(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")


@pytest.fixture(scope="session")
def binaries():
    for b in (BROKER_BIN, CXX_WORKER_BIN):
        if not os.access(b, os.X_OK):
            pytest.fail("%s is missing: run `make build` (or bazel build "
                        "//broker:dexec-broker //worker:dexec-worker)" % b)


class Procs:
    """Stops every process it started, by PID, at the end of a test."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.items = []

    def broker(self, **kw):
        d = os.path.join(self.tmp, "broker-%d" % len(self.items))
        os.makedirs(d, exist_ok=True)
        b = Broker(d, **kw)
        self.items.append(b)
        return b.start()

    def worker(self, broker, *modules, **kw):
        w = Worker(broker, modules or ("tasks_mod",), **kw)
        self.items.append(w)
        return w

    def close(self):
        for p in reversed(self.items):
            if p.proc is not None:
                stop(p.proc)


@pytest.fixture
def procs(tmp_path, binaries):
    p = Procs(str(tmp_path))
    yield p
    p.close()


class Cluster:
    def __init__(self, broker, workers):
        self.broker = broker
        self.workers = workers

    def executor(self, **kw):
        return self.broker.executor(**kw)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, binaries):
    """A broker, one Python worker (10 threads, 2 processes) and a C++
    worker, shared by a module's tests."""
    p = Procs(str(tmp_path_factory.mktemp("cluster")))
    try:
        b = p.broker(in_memory=True)
        py = p.worker(b, flags=["--threads=10", "--processes=2"])
        cxx = p.worker(b, cxx=True, flags=["--threads=2"])
        c = Cluster(b, [py, cxx])
        yield c
    finally:
        p.close()


@pytest.fixture(scope="module")
def ex(cluster):
    e = cluster.executor()
    yield e
    e.shutdown(wait=False, cancel_futures=True)
