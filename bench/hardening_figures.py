#!/usr/bin/python3
"""Issue 10's figures at the issue's own sizes, against real processes.

  /usr/bin/python3 bench/hardening_figures.py [--bin=bazel-bin] [--only=a,b]

Each case starts its own in-memory broker (and worker) on loopback, does
what the issue tried, prints one line of figures and stops every process by
PID. Cases:

  wait      2,200 finished jobs with 1 MB results, then `dexec wait` on all
            of them (2.2 GB of answers: before, the broker aborted)
  repeat    one Watch naming a 4 MB-result job 1,000 times (before: abort)
  flood     a Watch of 5,000,000 unknown ids, 40 MB (before: 2 GB resident
            that stayed)
  queued    5,000 x 1 MiB payloads queued with no worker, by default and
            with --max_queued_bytes=1GiB (before: 5.5 GB resident)
  frames    eight peers each sending all but the last byte of a long frame
            to the worker port: raw ZMTP before any key, without CURVE,
            with an unknown key, with the admitted local key (before
            issue 10: 2 GB pinned; before item 4: 8 x 65 MiB)
  bigresults 200 x 10 MiB results through one worker (the cost of
            sending outputs in 1 MiB pieces)

The memory-return figures (task-name churn, large payloads) come from
tests/memory_test with DEXEC_CHURN_JOBS / DEXEC_LARGE_JOBS; the disk-full
ones from tests/disk_full_test (bench/README.md).
"""
import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "python"))

import grpc  # noqa: E402
import zmq  # noqa: E402

from dexec._proto import dexec_pb2 as pb  # noqa: E402
from dexec._proto import dexec_pb2_grpc  # noqa: E402

MB = 1 << 20


def rss(pid, field="VmRSS"):
    """A /proc/PID/status field in bytes (VmRSS now, VmHWM the peak)."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


class Cluster:
    def __init__(self, bin_dir, flags=(), worker_threads=0):
        self.dir = tempfile.mkdtemp(prefix="dexec-hardening-")
        self.bin = bin_dir
        self.procs = []
        log = open(os.path.join(self.dir, "broker.log"), "wb")
        self.broker = subprocess.Popen(
            [os.path.join(bin_dir, "broker/dexec-broker"),
             "--listen=127.0.0.1:0", "--worker_listen=tcp://127.0.0.1:0", "--http_listen=127.0.0.1:0",
             "--in_memory", "--auth_dir=" + self.dir] + list(flags),
            stdout=subprocess.PIPE, stderr=log, cwd=self.dir)
        self.procs.append(self.broker)
        line = self.broker.stdout.readline().decode()
        if not line.startswith("dexec-broker listening"):
            raise SystemExit("broker did not start: " + line)
        fields = dict(f.split("=", 1) for f in line.split()[2:])
        self.grpc, self.workers = fields["grpc"], fields["workers"]
        with open(os.path.join(self.dir, "client.token")) as f:
            self.token = f.readline().strip()
        self.md = (("authorization", "Bearer " + self.token),)
        self.channel = grpc.insecure_channel(
            self.grpc, options=[("grpc.max_receive_message_length", -1),
                                ("grpc.max_send_message_length", -1)])
        self.stub = dexec_pb2_grpc.BrokerStub(self.channel)
        if worker_threads:
            w = subprocess.Popen(
                [os.path.join(bin_dir, "worker/dexec-worker"),
                 "--broker=" + self.workers, "--auth_dir=" + self.dir,
                 "--threads=%d" % worker_threads],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                cwd=self.dir)
            self.procs.append(w)
            end = time.monotonic() + 20
            while not self.stub.ListWorkers(pb.ListWorkersRequest(),
                                            metadata=self.md).workers:
                if time.monotonic() > end:
                    raise SystemExit("worker did not register")
                time.sleep(0.05)  # polling the broker's answer

    def alive(self):
        try:
            self.stub.GetStats(pb.GetStatsRequest(), metadata=self.md,
                               timeout=10)
            return self.broker.poll() is None
        except grpc.RpcError:
            return False

    def cli(self, *args, **kw):
        return subprocess.run(
            [os.path.join(self.bin, "cli/dexec"), "--broker=" + self.grpc,
             "--token_file=" + os.path.join(self.dir, "client.token")] +
            list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)

    def submit(self, task, payloads, per_call=20):
        ids = []
        for i in range(0, len(payloads), per_call):
            req = pb.SubmitRequest(jobs=[pb.JobSpec(task=task, payload=p)
                                         for p in payloads[i:i + per_call]])
            ids.extend(self.stub.Submit(req, metadata=self.md,
                                        timeout=60).job_ids)
        return ids

    def wait_finished(self, ids, timeout=300):
        end = time.monotonic() + timeout
        while True:
            s = self.stub.GetStats(pb.GetStatsRequest(), metadata=self.md)
            if s.succeeded + s.failed + s.cancelled >= len(ids):
                return
            if time.monotonic() > end:
                raise SystemExit("jobs did not finish")
            time.sleep(0.1)  # polling the broker's answer

    def close(self):
        self.channel.close()
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def case_wait(bin_dir):
    c = Cluster(bin_dir, worker_threads=4)
    try:
        ids = c.submit("sys.echo", [b"r" * 1_000_000] * 2200)
        c.wait_finished(ids)
        base = rss(c.broker.pid)
        t0 = time.monotonic()
        r = c.cli("wait", *[str(i) for i in ids], timeout=600)
        took = time.monotonic() - t0
        lines = r.stdout.decode().splitlines()
        ok = sum(1 for l in lines if l.endswith("SUCCEEDED"))
        print("wait: dexec wait on 2,200 x 1 MB results: exit %d, %d SUCCEEDED "
              "lines, %.1f s; broker alive=%s, RSS %d MB before, peak %d MB" %
              (r.returncode, ok, took, c.alive(), base // MB,
               rss(c.broker.pid, "VmHWM") // MB))
    finally:
        c.close()


def case_repeat(bin_dir):
    c = Cluster(bin_dir, worker_threads=2)
    try:
        [jid] = c.submit("sys.echo", [b"R" * (4 * MB)])
        c.wait_finished([jid])
        req = pb.SessionRequest(watch=pb.SessionRequest.Watch(
            job_ids=[jid] * 1000))
        t0 = time.monotonic()
        events = responses = nbytes = 0
        call = c.stub.Session(iter([req]), metadata=c.md, timeout=60)
        try:
            for resp in call:
                responses += 1
                nbytes += resp.ByteSize()
                events += len(resp.events.events)
        finally:
            call.cancel()
        print("repeat: one Watch naming a 4 MB-result job 1,000 times "
              "(%d bytes): %d event(s) in %d response(s), %d MB, %.2f s; "
              "broker alive=%s, peak RSS %d MB" %
              (req.ByteSize(), events, responses, nbytes // MB,
               time.monotonic() - t0, c.alive(),
               rss(c.broker.pid, "VmHWM") // MB))
    finally:
        c.close()


def case_flood(bin_dir):
    c = Cluster(bin_dir)
    try:
        base = rss(c.broker.pid)
        req = pb.SessionRequest(watch=pb.SessionRequest.Watch(
            job_ids=range(10**9, 10**9 + 5_000_000)))
        status = "OK"
        try:
            for _ in c.stub.Session(iter([req]), metadata=c.md, timeout=120):
                pass
        except grpc.RpcError as e:
            status = "%s: %s" % (e.code().name, e.details())
        peak = rss(c.broker.pid, "VmHWM")
        time.sleep(2)  # the broker trims its heap once a second
        print("flood: a Watch of 5,000,000 unknown ids (%d MB): %s; broker "
              "alive=%s, RSS %d MB before, peak %d MB, %d MB after" %
              (req.ByteSize() // MB, status[:160], c.alive(), base // MB,
               peak // MB, rss(c.broker.pid) // MB))
    finally:
        c.close()


def unread_at_port(port):
    """Bytes sent to local TCP port `port` not yet read by its owner
    (/proc/net/tcp receive queues): 0 once the broker read all it was sent."""
    unread = 0
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port:
                unread += int(fields[4].split(":")[1], 16)
    return unread


def case_frames(bin_dir):
    """Eight peers on the worker port each sending all but the last byte of
    one long frame. Raw ZMTP peers stop after the greeting (no key offered
    at all); DEALERs without CURVE, with an unknown key, or with the
    admitted local key send a whole frame. The broker's RSS is read once it
    has read everything they sent (or closed them)."""
    c = Cluster(bin_dir)
    try:
        creds = {}
        with open(os.path.join(c.dir, "worker.key")) as f:
            for line in f:
                if "=" in line and not line.startswith("#"):
                    k, v = line.strip().split("=", 1)
                    creds[k.strip()] = v.strip()
        host, port = c.workers[len("tcp://"):].rsplit(":", 1)
        port = int(port)
        ctx = zmq.Context()
        for kind, size in (("raw-curve-greeting", 8 * MB - 1),
                           ("raw-curve-greeting", 65 * MB - 1),
                           ("raw-curve-greeting", 250 * MB - 1),
                           ("plain", 65 * MB - 1),
                           ("unknown-key", 65 * MB - 1),
                           ("admitted-key", 8 * MB - 1),
                           ("admitted-key", 65 * MB - 1)):
            base = rss(c.broker.pid)
            socks, threads = [], []
            for _ in range(8 if kind.startswith("raw") else 0):
                # ZMTP 3.0 by hand: a greeting asking for CURVE, then one
                # long frame where the HELLO command belongs, all of it but
                # its last byte (so it is held, not parsed and refused).
                t = socket.create_connection((host, port))
                greeting = (b"\xff" + b"\0" * 8 + b"\x7f" + b"\x03\x00" +
                            b"CURVE".ljust(20, b"\0") + b"\0" + b"\0" * 31)
                t.sendall(greeting + b"\x06" + size.to_bytes(8, "big"))

                def body(t=t, n=size - 1):
                    try:
                        t.sendall(memoryview(b"\0" * n))
                    except OSError:
                        pass  # closed at the header
                th = threading.Thread(target=body)
                th.start()
                threads.append(th)
                socks.append(t)
            for _ in range(0 if kind.startswith("raw") else 8):
                s = ctx.socket(zmq.DEALER)
                s.setsockopt(zmq.LINGER, 0)
                if kind != "plain":
                    s.curve_serverkey = creds["broker_public"].encode()
                    if kind == "unknown-key":
                        pub, sec = zmq.curve_keypair()
                    else:
                        pub = creds["public"].encode()
                        sec = creds["secret"].encode()
                    s.curve_publickey, s.curve_secretkey = pub, sec
                s.setsockopt(zmq.SNDTIMEO, 10000)
                s.connect(c.workers)
                try:
                    s.send(b"\0" * size, copy=False)
                except zmq.Again:
                    pass  # refused at the handshake: never connected
                socks.append(s)
            for th in threads:
                th.join(10)
            end = time.monotonic() + 10
            while unread_at_port(port) and time.monotonic() < end:
                time.sleep(0.01)  # polling /proc/net/tcp
            during = rss(c.broker.pid)
            for s in socks:
                s.close()
            print("frames: 8 peers x %.1f MiB frames, %s: broker RSS %d MB "
                  "before, %d MB with them connected, peak %d MB; alive=%s" %
                  (size / MB, kind, base // MB, during // MB,
                   rss(c.broker.pid, "VmHWM") // MB, c.alive()))
            end = time.monotonic() + 10
            while rss(c.broker.pid) > base + 16 * MB and \
                    time.monotonic() < end:
                time.sleep(0.1)  # let the broker free (handshake limit 5 s)
        ctx.term()
    finally:
        c.close()


def case_queued(bin_dir):
    for flags in ([], ["--max_queued_bytes=1073741824"]):
        c = Cluster(bin_dir, flags=flags)
        try:
            accepted, refused = 0, ""
            for _ in range(5000):
                try:
                    c.submit("nobody.offers.this", [b"q" * MB])
                    accepted += 1
                except grpc.RpcError as e:
                    refused = "%s: %s" % (e.code().name, e.details())
                    break
            print("queued: 5,000 x 1 MiB submitted with no worker, %s: %d "
                  "accepted, broker RSS %d MB; %s" %
                  (" ".join(flags) or "default --max_queued_bytes", accepted,
                   rss(c.broker.pid) // MB, refused[:120] or "none refused"))
        finally:
            c.close()


def case_bigresults(bin_dir):
    """200 sys.echo jobs of 10 MiB through one 4-thread worker, submitted
    ten at a time: the results' worker -> broker leg is 2 GB, in 1 MiB
    pieces since issue 10 item 4 (one frame each before)."""
    n, size = 200, 10 * MB
    c = Cluster(bin_dir, worker_threads=4,
                flags=["--max_result_bytes=%d" % (16 * MB),
                       "--max_payload_bytes=%d" % (16 * MB), "--retention=10m"])
    try:
        payload = bytes(range(256)) * (size // 256)
        start = time.monotonic()
        ids = c.submit("sys.echo", [payload] * n, per_call=1)
        c.wait_finished(ids, timeout=600)
        took = time.monotonic() - start
        s = c.stub.GetStats(pb.GetStatsRequest(), metadata=c.md)
        check = c.stub.GetJobs(pb.GetJobsRequest(job_ids=ids[-3:],
                                                 include_result=True),
                               metadata=c.md, timeout=60)
        intact = all(j.result == payload for j in check.jobs)
        # CPU time says more than wall time on a shared machine.
        tick = os.sysconf("SC_CLK_TCK")

        def cpu(pid):
            with open("/proc/%d/stat" % pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / tick
        print("bigresults: %d x %d MiB sys.echo, 4 threads: %.2f s "
              "(%.0f MB/s of results), succeeded=%d, last 3 intact=%s, "
              "CPU broker %.2f s worker %.2f s, broker peak RSS %d MB" %
              (n, size // MB, took, n * size / took / 1e6, s.succeeded, intact,
               cpu(c.broker.pid), cpu(c.procs[1].pid),
               rss(c.broker.pid, "VmHWM") // MB))
    finally:
        c.close()


CASES = {"wait": case_wait, "queued": case_queued, "repeat": case_repeat, "flood": case_flood,
         "frames": case_frames, "bigresults": case_bigresults}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(HERE, "..", "bazel-bin"))
    ap.add_argument("--only", default=",".join(CASES))
    args = ap.parse_args()
    for name in args.only.split(","):
        CASES[name](args.bin)


if __name__ == "__main__":
    main()
