#!/usr/bin/python3
"""Turns the RESULT lines of one bench/run.sh invocation (dexec's and the
peers') into bench/results/latest.json, latest.md and latest.png.

latest.md: the machine and versions; the issue #4 targets, met or not; one
table per workload (a-g) with every system's median (min-max) and the
ratio dexec / that system from the same run; the cost of security (s:
secure vs --insecure, against issue #9's goals); work of every shape (h:
issue 12's goals, from shapes.txt's last run); the cost of /metrics (m:
scraped every 100 ms vs not, as ratios); the micro-suite; how long
each phase took. latest.png: no-op throughput (tasks/s, log) and round-trip
latency (p50, p99) per system. The chart needs matplotlib (Debian's
python3-matplotlib, hence /usr/bin/python3); without it the report says so.

The Python package's goals (issue 11) come from phase p's python.txt
(--python): one table of goal, Python worker, C++ worker and
ProcessPoolExecutor, from the same run.

Usage: report.py DEXEC.txt PEERS.txt [--micro MICRO.json]
                 [--shapes SHAPES.txt] [--python PY.txt]
                 --json OUT.json --md OUT.md [--png OUT.png]
"""
import argparse
import ast
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys

WORKLOADS = [
    ("a", "No-op throughput",
     "`sys.echo` no-ops, one client; clock from first submit to last result."),
    ("b", "Round-trip latency",
     "Sequential submit → result of one no-op; p50 and p99 of each run."),
    ("c", "Sleep makespan",
     "10 × sleep 1 s on 10 slots and 1,000 × sleep 0.1 s on 100 slots; "
     "ideal 1.0 s."),
    ("d", "CPU-bound",
     "16 × 0.25 s of CPU on 2 processes; speedup = serial ÷ wall, ideal 2.0. "
     "The peers calibrate a pure-Python spin to ~0.25 s and time their serial "
     "baseline in each run, so compare speedups (dexec ÷ this is the ratio "
     "of speedups here), not wall times."),
    ("e", "Memory per queued job",
     "Jobs queued with no worker: growth of the broker's (dexec), "
     "scheduler's (Dask) or redis's (Celery) memory ÷ jobs, and submit time."),
    ("f", "Durable vs in-memory (dexec)",
     "The no-op workload of (a) on a broker with its RocksDB journal "
     "(`--data_dir`, fresh per run) next to `--in_memory`."),
    ("g", "Broker restart with journaled jobs (dexec)",
     "Jobs submitted with no worker to a durable broker, SIGTERM, restart "
     "on the same journal: time from fork to the `listening` line and to the "
     "first GetStats showing every job queued."),
    ("s", "Cost of security (dexec, issue #9)",
     "The no-op `Map` of (a) and the round trip of (b), each on a default "
     "broker (bearer token on every gRPC call and stream, CURVE on the "
     "worker port) and on an `--insecure` one (neither), alternated — "
     "secure, insecure, secure, … — with a fresh cluster per run, so a "
     "drift of the machine hits both. Each cell is the median (min–max) of "
     "the rounds. Every other dexec figure in this report is on a default, "
     "secure broker."),
    ("m", "Cost of /metrics scraping (dexec, issue #13)",
     "The no-op `Map` of (a) and the round trip of (b), each on a broker "
     "whose `/metrics` a scraper (`bench/scraper.py`, one keep-alive "
     "connection, a read of the whole exposition) GETs every 100 ms for the "
     "whole measurement, and on one nobody scrapes; alternated — off, "
     "scraped, off, … — with a fresh cluster per run. Each cell is the "
     "median (min–max) of the rounds; *scraped ÷ off* is the ratio of the "
     "medians (above 1 is faster for tasks/s, slower for µs). Every broker "
     "counts its metrics either way: what this isolates is the scrape."),
]
# Issue #9's goals for the cost of security.
SECURITY_MAP_GOAL_PCT = 5.0
SECURITY_P50_GOAL_US = 10.0
# Foreign cores (of 2) from which a security verdict is marked noisy.
SECURITY_NOISY_CORES = 0.3
LOWER_IS_BETTER_UNITS = {"us", "s", "bytes/task"}


def parse_result(line):
    fields = {}
    for tok in line.split()[1:]:
        if "=" in tok:
            k, v = tok.split("=", 1)
            fields[k] = v
    return fields


def num(s):
    try:
        return float(str(s).rstrip("/s"))
    except (TypeError, ValueError):
        return float("nan")


def fmt(v):
    if v != v:
        return "–"
    if abs(v) >= 1000:
        return "{:,.0f}".format(v)
    if abs(v) >= 10:
        return "%.1f" % v
    if abs(v) >= 0.01:
        return "%.3f" % v
    return "%.2g" % v


def fmt_n(n):
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return "%dM" % (n // 1_000_000)
    if n >= 1000 and n % 1000 == 0:
        return "%dk" % (n // 1000)
    return str(n)


def measure_n(measure):
    """noop_100k -> 100000, mem_1000k_queued -> 1000000, else None."""
    m = re.search(r"_(\d+)k(_|$)", measure)
    return int(m.group(1)) * 1000 if m else None


def workload_of(r):
    m = r["measure"]
    if r.get("metrics"):
        return "m"
    if r.get("security"):
        return "s"
    if m.startswith("noop_"):
        return "f" if r.get("store") == "durable" else "a"
    if m.startswith("latency_"):
        return "b"
    if m.startswith("sleep_"):
        return "c"
    if m.startswith("cpu_"):
        return "d"
    if (m.startswith("restart_") or m.startswith("shutdown_")
            or m.endswith("_durable")):
        return "g"
    if m.startswith("mem_") or m.startswith("submit_"):
        return "e"
    return "other"


def label(r):
    """The row name: system, plus how it was called when one system reports
    a measure several ways (api=, chunksize=)."""
    s = r["system"]
    if r.get("api"):
        s += "/" + r["api"]
    if r.get("chunksize") and r["chunksize"] != "1" and \
            not r["system"].startswith("dexec"):
        s += "/cs" + r["chunksize"]
    return s


def is_dexec(r):
    return r["system"].startswith("dexec")


def cell(r):
    med, lo, hi = num(r["median"]), num(r["min"]), num(r["max"])
    if lo == hi == med:
        return fmt(med)
    return "%s (%s–%s)" % (fmt(med), fmt(lo), fmt(hi))


# ---------------------------------------------------------------- inputs

def read_inputs(paths):
    results, meta = [], {"phases": {}, "peer_times": [], "failures": [],
                         "host": "",
                         "commit": "", "config": "", "micro_noise": ""}
    for path in paths:
        if not path or not os.path.exists(path):
            continue
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line.startswith("RESULT "):
                    r = parse_result(line)
                    r["file"] = os.path.basename(path)
                    if "system" in r and "measure" in r:
                        results.append(r)
                elif line.startswith("# phase "):
                    p = parse_result(line[1:])
                    meta["phases"][p.get("name", "?")] = num(p.get("seconds"))
                elif line.startswith("# peer_time "):
                    p = parse_result(line[1:])
                    meta["peer_times"].append(
                        ("%s --only %s" % (p.get("script"), p.get("only")),
                         num(p.get("seconds"))))
                elif line.startswith("# FAILED"):
                    meta["failures"].append(line[2:])
                elif line.startswith("# host "):
                    meta["host"] = line[7:]
                elif line.startswith("# dexec commit="):
                    meta["commit"] = line.split("=", 1)[1]
                elif line.startswith("# config "):
                    meta["config"] = line[9:]
                elif line.startswith("# micro foreign_cores="):
                    meta["micro_noise"] = line.split("=", 1)[1]
                elif line.startswith("# scraper "):
                    meta.setdefault("scrapes", []).append(
                        parse_result(line[2:]))
    return results, meta


def read_micro(path):
    """Google Benchmark JSON -> one row per benchmark: median/min/max of the
    repetitions' items/s (aggregate entries are ignored; we compute our
    own from the repetitions)."""
    if not path or not os.path.exists(path):
        return [], {}
    with open(path) as f:
        data = json.load(f)
    runs = {}
    order = []
    for b in data.get("benchmarks", []):
        if b.get("run_type") == "aggregate" or b.get("error_occurred"):
            continue
        name = b.get("run_name", b["name"])
        if name not in runs:
            order.append(name)
        runs.setdefault(name, []).append(b)
    rows = []
    for name in order:
        bs = runs[name]
        ips = [b.get("items_per_second", float("nan")) for b in bs]
        bps = [b.get("bytes_per_second", float("nan")) for b in bs]
        extra = {}
        for k, v in bs[0].items():
            if k in ("rounds_per_batch",):
                extra[k] = v
        rows.append({
            "name": name,
            "repetitions": len(bs),
            "items_per_second_median": statistics.median(ips),
            "items_per_second_min": min(ips),
            "items_per_second_max": max(ips),
            "ns_per_item_median": 1e9 / statistics.median(ips)
            if statistics.median(ips) > 0 else float("nan"),
            "bytes_per_second_median": statistics.median(bps),
            **extra,
        })
    return rows, data.get("context", {})


# ---------------------------------------------------------------- machine

def run(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True,
                              timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine():
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_gib = ""
    try:
        with open("/proc/meminfo") as f:
            mem_gib = "%.0f GiB" % (int(f.readline().split()[1]) / 1024 / 1024)
    except (OSError, ValueError, IndexError):
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "memory": mem_gib,
        "kernel": platform.release(),
        "os": run(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"]),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime(
            "%Y-%m-%d %H:%M UTC"),
    }


def versions(peers_log):
    """dexec's toolchain and libraries; the peers' versions as their scripts
    printed them ("# versions {...}"), else as importable now."""
    def dpkg(p):
        return run(["dpkg-query", "-W", "-f=${Version}", p])
    v = {
        "compiler": run(["sh", "-c", "c++ --version | head -1"]),
        "grpc": dpkg("libgrpc++-dev"),
        "zeromq": dpkg("libzmq3-dev"),
        "rocksdb": dpkg("librocksdb-dev"),
        "protobuf": dpkg("libprotobuf-dev"),
        "google-benchmark": dpkg("libbenchmark-dev"),
    }
    peers = {}
    if peers_log and os.path.exists(peers_log):
        with open(peers_log) as f:
            for line in f:
                if line.startswith("# versions {"):
                    try:
                        peers.update(ast.literal_eval(line[len("# versions "):]))
                    except (ValueError, SyntaxError):
                        pass
    if not peers:
        out = run(["/usr/bin/python3", "-c", (
            "import sys, json\n"
            "d = {'python': sys.version.split()[0]}\n"
            "for m in ('dask', 'distributed', 'celery', 'kombu', 'billiard', "
            "'redis'):\n"
            "    try: d[m] = __import__(m).__version__\n"
            "    except Exception: d[m] = 'n/a'\n"
            "print(json.dumps(d))")])
        try:
            peers = json.loads(out)
        except ValueError:
            peers = {}
        rs = run(["redis-server", "--version"])
        m = re.search(r"v=(\S+)", rs)
        peers["redis-server"] = m.group(1) if m else "n/a"
    peers.pop("rq", None)
    v["peers"] = peers
    return v


# ---------------------------------------------------------------- tables

def find(results, system=None, measure_prefix=None, **fields):
    out = []
    for r in results:
        if system is not None and r["system"] != system:
            continue
        if measure_prefix and not r["measure"].startswith(measure_prefix):
            continue
        if any(r.get(k) != v for k, v in fields.items()):
            continue
        out.append(r)
    return out[-1] if out else None


def reference(results, r):
    """The dexec row a peer row is compared with (same measure family)."""
    m = r["measure"]
    if m.startswith("noop_"):
        return find(results, "dexec", "noop_", api="map")
    if m.startswith("mem_"):
        return find(results, "dexec", "mem_", store="memory") or \
            find(results, "dexec", "mem_")
    return find(results, "dexec", m)


def ratio_cell(results, r):
    if is_dexec(r):
        return ""
    ref = reference(results, r)
    if not ref or not num(r["median"]) > 0:
        return ""
    if r["measure"].startswith("cpu_"):
        # The peers' spin is calibrated on their side, so wall times differ
        # in what they run; the speedups compare.
        a, b = num(ref.get("speedup_median")), num(r.get("speedup_median"))
        return "speedup %.2f" % (a / b) if a > 0 and b > 0 else ""
    out = "%.2f" % (num(ref["median"]) / num(r["median"]))
    if r["measure"].startswith("noop_"):
        sub = find(results, "dexec", "noop_", api="submit")
        if sub:
            out = "Map %s; Submit %.2f" % (
                out, num(sub["median"]) / num(r["median"]))
    return out


def workload_table(results, letter):
    rows = [r for r in results if workload_of(r) == letter]
    if not rows:
        return []
    # dexec rows first, then the peers, each in the order they ran.
    rows.sort(key=lambda r: not is_dexec(r))  # stable: keeps run order
    lines = ["| system | measure | unit | median (min–max) | dexec ÷ this | "
             "notes | foreign cores |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        notes = []
        for k in ("workers", "prefetch", "store", "slots", "chunksize",
                  "samples_per_run", "speedup_median", "serial_s_median",
                  "enqueue_rate_median", "submit_100k_s_median",
                  "rss_bytes_per_task_median", "broker", "note", "what",
                  "runs_done", "worker_startup_s"):
            if r.get(k) and not (k == "chunksize" and r[k] == "1"):
                notes.append("%s=%s" % (k, r[k]))
        lines.append("| %s | %s | %s | %s | %s | %s | %s |" % (
            label(r), r["measure"], r["unit"], cell(r),
            ratio_cell(results, r), " ".join(notes),
            r.get("foreign_cores", "")))
    return lines


# ---------------------------------------------------------------- python

def read_python(path):
    """Phase p (bench/python_bench.py): its RESULT lines and the uptime
    line run.sh wrote before it."""
    rows, uptime = [], ""
    if not path or not os.path.exists(path):
        return rows, uptime
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("RESULT "):
                r = parse_result(line)
                if "system" in r and "measure" in r:
                    rows.append(r)
            elif line.startswith("# python_bench uptime="):
                uptime = line.split("=", 1)[1].strip('"')
    return rows, uptime


# (goal, measure or measure prefix, unit, better, bound): issue 11's goals.
PYTHON_GOALS = [
    ("`submit` of no-ops from one Python process", "submit_", "jobs/s",
     "higher", 50000),
    ("`map`, chunksize 1", "map_c1", "items/s", "higher", 50000),
    ("`map`, chunksize 1000", "map_c1000", "items/s", "higher", 1000000),
    ("`submit(...).result()` round trip p50", "rtt_p50", "us", "lower",
     1000),
    ("`submit(...).result()` round trip p99 (no goal)", "rtt_p99", "us",
     "lower", None),
    ("10,000 concurrent `asyncio.sleep(1)` jobs, one worker process",
     "async_10k_sleep_1s", "s", "lower", 1.5),
    ("process pool CPU speedup, 16 × 0.25 s on 2 cores", "cpu_speedup", "x",
     "higher", 1.9),
]
PYTHON_SYSTEMS = [("dexec_py_worker", "Python worker"),
                  ("dexec_cxx_worker", "C++ worker"),
                  ("processpool_2", "ProcessPoolExecutor(2)")]


def python_goals(rows):
    """One dict per goal: the value of each system (None: not measured),
    the verdict on the Python worker's figure."""
    def pick(system, measure):
        got = [r for r in rows if r["system"] == system and (
            r["measure"] == measure or (measure.endswith("_") and
                                        r["measure"].startswith(measure)))]
        return got[-1] if got else None

    out = []
    for name, measure, unit, better, bound in PYTHON_GOALS:
        g = {"goal": name, "measure": measure, "unit": unit, "bound": bound,
             "better": better, "systems": {}}
        for system, _ in PYTHON_SYSTEMS:
            r = pick(system, measure)
            if r is not None:
                g["systems"][system] = {
                    "measure": r["measure"], "value": num(r["value"]),
                    "runs": r.get("runs", ""),
                    "foreign_cores": r.get("foreign_cores", ""),
                    "load": r.get("load", "")}
        if measure == "async_10k_sleep_1s":
            r = pick("asyncio_in_process", measure)
            if r is not None:
                g["asyncio_in_process"] = num(r["value"])
        py = g["systems"].get("dexec_py_worker")
        if bound is None or py is None:
            g["met"] = None
        elif better == "higher":
            g["met"] = py["value"] >= bound
        else:
            g["met"] = py["value"] <= bound
        out.append(g)
    return out


def python_n(goals):
    """Jobs per throughput run (the N in submit_<N>k)."""
    for g in goals:
        v = g["systems"].get("dexec_py_worker")
        if v and measure_n(v["measure"]):
            return measure_n(v["measure"])
    return None


def python_table(goals):
    if not any(g["systems"] for g in goals):
        return []
    lines = ["| goal | | Python worker | C++ worker | "
             "ProcessPoolExecutor(2) | |",
             "|---|---|---|---|---|---|"]
    for g in goals:
        if g["bound"] is None:
            target = "–"
        else:
            b = g["bound"]
            target = "%s %s %s" % ("≥" if g["better"] == "higher" else "≤",
                                   fmt(b) if b >= 10 else "%g" % b,
                                   g["unit"].replace("us", "µs"))
            target = target.replace(" x", "×")
        cells = []
        for system, _ in PYTHON_SYSTEMS:
            v = g["systems"].get(system)
            if v is None:
                cells.append("–")
                continue
            c = fmt(v["value"])
            if v["runs"] and "," in v["runs"]:
                c += " (runs %s)" % v["runs"].replace(",", ", ")
            if v["foreign_cores"]:
                c += " [fc %s]" % v["foreign_cores"]
            cells.append(c)
        if "asyncio_in_process" in g:
            cells[2] = "asyncio in one process: %s" % fmt(
                g["asyncio_in_process"])
        verdict = "" if g["met"] is None else (
            "met" if g["met"] else "**missed**")
        fc = num(g["systems"].get("dexec_py_worker", {}).get(
            "foreign_cores"))
        if verdict and fc >= SECURITY_NOISY_CORES:
            verdict += " (noisy: foreign cores %.2f)" % fc
        lines.append("| %s | %s | %s | %s |" % (
            g["goal"], target, " | ".join(cells), verdict))
    return lines


def alternated_runs(results, phase, field):
    """The runs of an alternated phase (s, m): {(measure, value of `field`):
    [{value, round, foreign_cores}, ...]}, one entry per run."""
    runs = {}
    for r in results:
        if workload_of(r) != phase:
            continue
        key = (r["measure"], r[field])
        for v in r.get("runs", r["median"]).split(","):
            runs.setdefault(key, []).append({
                "value": num(v), "round": r.get("round", "?"),
                "foreign_cores": num(r.get("foreign_cores"))})
    return runs


def security_cost(results, micro):
    """Phase s: per measure, the secure and the insecure runs (one RESULT
    line per run, the rounds alternated), their medians, the cost against
    issue #9's goal, and the token check of the micro-suite."""
    runs = alternated_runs(results, "s", "security")
    out = {"rows": [], "token_check": []}
    specs = [
        (lambda m: m.startswith("noop_"), "no-op Map", "higher",
         SECURITY_MAP_GOAL_PCT),
        (lambda m: m == "latency_p50", "round trip p50", "lower",
         SECURITY_P50_GOAL_US),
        (lambda m: m == "latency_p99", "round trip p99", "lower", None),
        # Where the round trip's difference is (bench/README.md, "What
        # limits the round trip"): the p50 of each part, no goal.
        (lambda m: m == "latency_part_submit_p50",
         "part: Submit → broker has it, p50", "lower", None),
        (lambda m: m == "latency_part_dispatch_p50",
         "part: → worker started it, p50", "lower", None),
        (lambda m: m == "latency_part_return_p50",
         "part: worker finished → caller has it, p50", "lower", None),
    ]
    measures = sorted({m for m, _ in runs})
    for pick, name, better, goal in specs:
        for m in measures:
            if not pick(m):
                continue
            sec, ins = runs.get((m, "secure"), []), runs.get((m, "insecure"), [])
            if not sec or not ins:
                continue
            ms = statistics.median(x["value"] for x in sec)
            mi = statistics.median(x["value"] for x in ins)
            row = {"measure": m, "name": name,
                   "unit": "tasks/s" if better == "higher" else "us",
                   "secure": [x["value"] for x in sec],
                   "insecure": [x["value"] for x in ins],
                   "rounds": [x["round"] for x in sec],
                   "secure_foreign_cores": [x["foreign_cores"] for x in sec],
                   "insecure_foreign_cores": [x["foreign_cores"] for x in ins],
                   "secure_median": ms, "insecure_median": mi}
            fc = [x["foreign_cores"] for x in sec + ins
                  if x["foreign_cores"] == x["foreign_cores"]]
            row["max_foreign_cores"] = max(fc) if fc else float("nan")
            if better == "higher":
                # The throughput lost to security, in % of the insecure rate.
                row["cost_pct"] = (1 - ms / mi) * 100 if mi > 0 else float("nan")
                row["ratio"] = ms / mi if mi > 0 else float("nan")
                row["paired_cost_pct"] = [
                    (1 - a["value"] / b["value"]) * 100
                    for a, b in zip(sec, ins) if b["value"] > 0]
                if goal is not None:
                    row["goal"] = "≤ %g %% slower" % goal
                    row["met"] = row["cost_pct"] <= goal
            else:
                row["cost_us"] = ms - mi
                row["paired_cost_us"] = [a["value"] - b["value"]
                                         for a, b in zip(sec, ins)]
                if goal is not None:
                    row["goal"] = "≤ %g µs more" % goal
                    row["met"] = row["cost_us"] <= goal
            out["rows"].append(row)
    for m in micro:
        if m["name"].startswith("BM_TokenAuthenticate"):
            out["token_check"].append({
                "name": m["name"], "ns_median": m["ns_per_item_median"],
                "repetitions": m["repetitions"]})
    return out


def security_table(cost):
    if not cost["rows"]:
        return []
    lines = ["| measure | default (token + CURVE) | `--insecure` | cost | "
             "goal | | per round: cost (foreign cores secure / insecure) |",
             "|---|---|---|---|---|---|---|"]

    def cell_of(vals):
        med = statistics.median(vals)
        if min(vals) == max(vals):
            return fmt(med)
        return "%s (%s–%s)" % (fmt(med), fmt(min(vals)), fmt(max(vals)))

    for r in cost["rows"]:
        if "cost_pct" in r:
            c = "%.1f %% slower (secure ÷ insecure %.3f)" % (
                r["cost_pct"], r["ratio"])
            paired = ["%.1f %%" % v for v in r["paired_cost_pct"]]
        else:
            c = "%+.1f µs" % r["cost_us"]
            paired = ["%+.1f µs" % v for v in r["paired_cost_us"]]
        noise = r["max_foreign_cores"]
        per = "; ".join(
            "%s: %s (%s / %s)" % (rd, p, fmt(fs), fmt(fi)) for rd, p, fs, fi in
            zip(r["rounds"], paired, r["secure_foreign_cores"],
                r["insecure_foreign_cores"]))
        verdict = "" if "met" not in r else (
            "met" if r["met"] else "**missed**")
        if verdict and noise >= SECURITY_NOISY_CORES:
            # Other processes took a large share of the cores: the
            # difference measures them more than security.
            verdict += " (noisy: foreign cores up to %.2f)" % noise
        lines.append("| %s (%s, %s), %s | %s | %s | %s | %s | %s | %s |" % (
            r["name"], r["measure"], "%d run%s each" % (
                len(r["secure"]), "" if len(r["secure"]) == 1 else "s"),
            r["unit"].replace("us", "µs"), cell_of(r["secure"]),
            cell_of(r["insecure"]), c, r.get("goal", "–"), verdict, per))
    return lines


def metrics_cost(results, scrapes):
    """Phase m: per measure, the runs with and without a scraper, their
    medians and the ratio scraped / off; `scrapes`: the scraper's summary
    lines (scrapes made, failed, exposition size)."""
    runs = alternated_runs(results, "m", "metrics")
    out = {"rows": [], "scrapes": scrapes}
    specs = [
        (lambda m: m.startswith("noop_"), "no-op Map", "tasks/s"),
        (lambda m: m == "latency_p50", "round trip p50", "us"),
        (lambda m: m == "latency_p99", "round trip p99", "us"),
    ]
    measures = sorted({m for m, _ in runs})
    for pick, name, unit in specs:
        for m in measures:
            if not pick(m):
                continue
            on, off = runs.get((m, "scraped"), []), runs.get((m, "off"), [])
            before = runs.get((m, "before"), [])
            if not on or not off:
                continue
            mon = statistics.median(x["value"] for x in on)
            moff = statistics.median(x["value"] for x in off)
            fc = [x["foreign_cores"] for x in on + off
                  if x["foreign_cores"] == x["foreign_cores"]]
            out["rows"].append({
                "measure": m, "name": name, "unit": unit,
                "scraped": [x["value"] for x in on],
                "off": [x["value"] for x in off],
                "scraped_median": mon, "off_median": moff,
                "ratio": mon / moff if moff > 0 else float("nan"),
                "before": [x["value"] for x in before],
                "max_foreign_cores": max(fc) if fc else float("nan")})
    return out


def metrics_table(cost):
    if not cost["rows"]:
        return []
    with_before = any(r["before"] for r in cost["rows"])
    if with_before:
        lines = ["| measure | before (BASE_BIN, no scraper) | no scraper | "
                 "scraped every 100 ms | off ÷ before | scraped ÷ off | "
                 "max foreign cores |", "|---|---|---|---|---|---|---|"]
    else:
        lines = ["| measure | no scraper | scraped every 100 ms | "
                 "scraped ÷ off | max foreign cores |", "|---|---|---|---|---|"]

    def cell_of(vals):
        med = statistics.median(vals)
        if min(vals) == max(vals):
            return fmt(med)
        return "%s (%s–%s)" % (fmt(med), fmt(min(vals)), fmt(max(vals)))

    for r in cost["rows"]:
        head = "| %s (%s, %d run%s each), %s | " % (
            r["name"], r["measure"], len(r["off"]),
            "" if len(r["off"]) == 1 else "s", r["unit"].replace("us", "µs"))
        if with_before:
            b = statistics.median(r["before"]) if r["before"] else float("nan")
            head += "%s | %s | %s | %.3f | " % (
                cell_of(r["before"]) if r["before"] else "–",
                cell_of(r["off"]), cell_of(r["scraped"]),
                r["off_median"] / b if b > 0 else float("nan"))
        else:
            head += "%s | %s | " % (cell_of(r["off"]), cell_of(r["scraped"]))
        lines.append(head + "%.3f | %s |" % (r["ratio"],
                                            fmt(r["max_foreign_cores"])))
    if cost["scrapes"]:
        lines.append("")
        lines.append("The scraper, per scraped run: " + "; ".join(
            "%s scrapes (%s failed) of %s bytes, %s ms p50" % (
                s.get("scrapes", "?"), s.get("failed", "?"),
                s.get("bytes_last", "?"), s.get("scrape_ms_p50", "?"))
            for s in cost["scrapes"]) + ".")
    return lines


def durable_table(results):
    lines = []
    for api in ("map", "submit"):
        mem = find(results, "dexec", "noop_", api=api, store="memory") or \
            find(results, "dexec", "noop_", api=api)
        dur = find(results, "dexec_durable", "noop_", api=api)
        if not dur:
            continue
        if not lines:
            lines = ["| API | in memory, tasks/s | durable, tasks/s | "
                     "durable ÷ in memory |", "|---|---|---|---|"]
        ratio = num(dur["median"]) / num(mem["median"]) if mem else float("nan")
        lines.append("| %s | %s | %s | %s |" % (
            api, cell(mem) if mem else "–", cell(dur), fmt(ratio)))
    return lines


def submit_rates(results):
    """Submit rates of e, normalised to jobs/s (dexec's from its submit
    time; the peers' from the extra fields of their memory lines)."""
    lines = []
    for r in results:
        if workload_of(r) != "e":
            continue
        rate = None
        if is_dexec(r) and r["measure"].startswith("submit_"):
            n = measure_n(r["measure"])
            if n and num(r["median"]) > 0:
                rate = n / num(r["median"])
        elif r.get("enqueue_rate_median"):
            rate = num(r["enqueue_rate_median"])
        elif r.get("submit_100k_s_median"):
            rate = 100000 / num(r["submit_100k_s_median"])
        if rate:
            lines.append("%s %s/s" % (label(r), fmt(rate)))
    return lines


def targets(results):
    """The issue #4 targets: (target, measured, verdict)."""
    out = []

    def add(name, r, ok, value=None):
        if r is None:
            out.append((name, "not measured", "–"))
            return
        out.append((name, value or "%s %s" % (fmt(num(r["median"])), r["unit"]),
                    "met" if ok(num(r["median"])) else "**missed**"))

    mp = find(results, "dexec", "noop_", api="map")
    sb = find(results, "dexec", "noop_", api="submit")
    add("≥ 100,000 no-op tasks/s via Map, in memory", mp, lambda v: v >= 1e5)
    add("≥ 50,000 no-op tasks/s via Map, durable",
        find(results, "dexec_durable", "noop_", api="map"), lambda v: v >= 5e4)
    add("≥ 20,000 no-op tasks/s via individual Submit", sb, lambda v: v >= 2e4)
    add("round trip p50 ≤ 200 µs", find(results, "dexec", "latency_p50"),
        lambda v: v <= 200)
    add("round trip p99 ≤ 1 ms", find(results, "dexec", "latency_p99"),
        lambda v: v <= 1000)
    add("10 × 1 s makespan within 5 % of 1.0 s",
        find(results, "dexec", "sleep_10x1s"), lambda v: v <= 1.05)
    add("1,000 × 0.1 s makespan within 5 % of 1.0 s",
        find(results, "dexec", "sleep_1000x0.1s"), lambda v: v <= 1.05)
    cpu = find(results, "dexec", "cpu_")
    if cpu and cpu.get("speedup_median"):
        sp = num(cpu["speedup_median"])
        out.append(("CPU speedup ≥ 1.9×", "%.2f×" % sp,
                    "met" if sp >= 1.9 else "**missed**"))
    else:
        out.append(("CPU speedup ≥ 1.9×", "not measured", "–"))
    def by_measure(rx):
        rows = [r for r in results if r["system"] == "dexec" and
                re.match(rx, r["measure"])]
        return rows[-1] if rows else None

    add("≤ 300 bytes of broker memory per queued job, in memory",
        by_measure(r"mem_\d+k_queued$"), lambda v: v <= 300)
    add("≤ 300 bytes of broker memory per queued job, durable",
        by_measure(r"mem_\d+k_queued_durable$"), lambda v: v <= 300)
    for what, rx in (("in memory", r"submit_\d+k_queued$"),
                     ("durable", r"submit_\d+k_durable$")):
        name = "1,000,000 submits in ≤ 10 s, %s" % what
        sub = by_measure(rx)
        if sub and measure_n(sub["measure"]):
            n = measure_n(sub["measure"])
            per_m = num(sub["median"]) * 1e6 / n
            txt = "%s s for %s" % (fmt(num(sub["median"])), fmt_n(n))
            if n != 1_000_000:
                txt += " (≈ %s s per 1M)" % fmt(per_m)
            out.append((name, txt, "met" if per_m <= 10 else "**missed**"))
        else:
            out.append((name, "not measured", "–"))
    # Every throughput row: >= 20x Dask and Celery, ahead of PPE chunksize 1.
    peers = [r for r in results if workload_of(r) == "a" and not is_dexec(r)]
    for name, pick, factor in (
            ("≥ 20× Dask distributed on no-op throughput",
             lambda r: r["system"].startswith("dask"), 20),
            ("≥ 20× Celery on no-op throughput",
             lambda r: r["system"].startswith("celery"), 20),
            ("ahead of ProcessPoolExecutor without chunking",
             lambda r: r["system"].startswith("ppe") and
             r.get("chunksize", "1") == "1", 1)):
        rows = [r for r in peers if pick(r) and num(r["median"]) > 0]
        mine = [d for d in (mp, sb) if d]
        if not rows or not mine:
            out.append((name, "not measured", "–"))
            continue
        worst = min(num(d["median"]) / num(r["median"])
                    for d in mine for r in rows)
        parts = ["%s ÷ %s %s: %.1f×" % (label(d), label(r), fmt_n(
            measure_n(r["measure"]) or 0), num(d["median"]) / num(r["median"]))
            for d in mine for r in rows]
        out.append((name, "; ".join(parts),
                    "met" if worst >= factor else "**missed**"))
    return out


def deviations(results, meta):
    """Where the run differs from the issue's workload sizes."""
    notes = []
    for r in results:
        if workload_of(r) == "a" and not is_dexec(r):
            n = measure_n(r["measure"])
            if n and n < 100_000 and not any(
                    x["system"] == r["system"] and x.get("api") == r.get("api")
                    and measure_n(x["measure"]) == 100_000 for x in results):
                notes.append("%s no-op at %s, not 100k" % (label(r), fmt_n(n)))
    notes = sorted(set(notes))
    out = []
    if notes:
        out.append("No-op throughput below 100k: " + "; ".join(notes) +
                   ". Dask's 100k runs take ~4 min (3 × 82 s) and Celery's "
                   "one 100k run ~4 min; with them `make bench` would not "
                   "fit in 15 minutes (enable with `PEER_100K=\"cf dask "
                   "celery\"`). Rates are compared across N.")
    if any(r["system"].startswith(("ppe", "tpe", "dask", "celery")) and
           r["measure"].startswith("latency_") for r in results):
        out.append("The peers' latency runs are 1,000 round trips each (fixed "
                   "in their scripts); dexec's are %s." % (
                       ", ".join(sorted({r.get("samples_per_run", "?")
                                         for r in results if is_dexec(r) and
                                         r["measure"] == "latency_p50"}))))
    if any(r["measure"] == "mem_100k_pending" or
           (r["measure"] == "mem_100k_queued" and not is_dexec(r))
           for r in results):
        out.append("The peers queue 100,000 jobs for (e) (fixed in their "
                   "scripts); dexec queues the number in its measure name.")
    return out


# ---------------------------------------------------------------- chart

# ---------------------------------------------------------------- shapes

# Issue 12's goals ("Work of every shape"), from bench/shapes_bench.sh's
# file: (goal text, measure prefix, unit, test of dexec's median, peers).
SHAPES_SLEEP_GOAL_S = 1.3
SHAPES_HTTP_GOAL_RATIO = 1.3
SHAPES_MEMORY_GOAL_BYTES = 4096
SHAPES_MAP_GOAL_ITEMS_S = 1_000_000


def read_shapes(path):
    """The last run of a shapes.txt (after its last '# shapes run' line):
    {"run": fields of that line, "results": {(system, measure): [values]},
    "cpu": {name: [{client, nginx, broker, worker}]}, "notes": [...]}, or
    None if there is no run in it."""
    if not path or not os.path.exists(path):
        return None
    with open(path) as f:
        lines = [l.strip() for l in f]
    starts = [i for i, l in enumerate(lines) if l.startswith("# shapes run")]
    if not starts:
        return None
    out = {"run": parse_result(lines[starts[-1]][1:]), "results": {},
           "cpu": {}, "notes": []}
    for line in lines[starts[-1] + 1:]:
        if line.startswith("RESULT "):
            r = parse_result(line)
            out["results"].setdefault((r["system"], r["measure"]), []).append(
                num(r.get("value")))
        elif line.startswith("# cpu_s of "):
            name, rest = line[len("# cpu_s of "):].split(":", 1)
            out["cpu"].setdefault(name, []).append(
                {k: num(v) for k, v in parse_result("x " + rest).items()})
        elif line.startswith("# ") and "failed" in line:
            out["notes"].append(line[2:])
    return out


def shapes_json(shapes):
    if shapes is None:
        return None
    return {"run": shapes["run"], "cpu_s": shapes["cpu"],
            "notes": shapes["notes"],
            "results": [{"system": s, "measure": m, "values": v}
                        for (s, m), v in sorted(shapes["results"].items())]}


def shapes_section(shapes):
    """Markdown lines of the "Work of every shape" table (issue 12): each
    goal, dexec's figure, the peers', the server's limit, the ratio."""
    L = ["## h. Work of every shape (issue 12)", ""]
    if shapes is None:
        return L + ["Not measured in this run.", ""]
    res, run = shapes["results"], shapes["run"]

    def vals(system, prefix):
        for (s, m), v in sorted(res.items()):
            if s == system and m.startswith(prefix):
                return m, v
        return None, []

    def cell_of(v):
        if not v:
            return "–"
        med = statistics.median(v)
        if len(v) == 1:
            return fmt(med)
        return "%s (%s–%s)" % (fmt(med), fmt(min(v)), fmt(max(v)))

    def peers(prefix, systems):
        cells = []
        for (s, m), v in sorted(res.items()):
            if m.startswith(prefix) and s in systems:
                cells.append("%s %s" % (s, cell_of(v)))
        return "; ".join(cells) or "–"

    def verdict(ok):
        return "–" if ok is None else ("met" if ok else "**not met**")

    L.append("One broker and one worker with 2 threads (`--insecure`, in "
             "memory), by `bench/shapes_bench.sh` (%s, commit %s, load %s at "
             "the start). Cells: median (min–max) of the rounds. "
             "*Server limit*: `bench/shapes_http_limit`, every request in "
             "flight at once from 4 processes, with plain sockets on epoll "
             "(raw_epoll: one request per connection, the least CPU per "
             "request, each connection closed; raw_keep: the same, each "
             "left open once answered, as a keep-alive client leaves it) "
             "and with curl as http.get drives it (curl_multi); the "
             "least (bold) is the limit, the least time any client here "
             "gets from this nginx (4 processes answering each request after "
             "1 s)." % (
                 run.get("date", "?"), run.get("commit", "?"),
                 run.get("load", "?").replace(",", " ")))
    if run.get("quick") == "1":
        L.append("")
        L.append("> **SHAPES_QUICK / BENCH_QUICK: small N, one round. Not "
                 "results.**")
    L.append("")
    L.append("| goal | dexec | peers | server limit | dexec ÷ | |")
    L.append("|---|---|---|---|---|---|")
    m, v = vals("dexec", "sleeps_")
    if m:
        med = statistics.median(v)
        L.append("| %s concurrent `sys.sleep 1000` in ≤ %.1f s | %s s | – | "
                 "1.0 s (one sleep) | %s | %s |" % (
                     "{:,}".format(int(m.split("_")[1])), SHAPES_SLEEP_GOAL_S,
                     cell_of(v), fmt(med / 1.0),
                     verdict(med <= SHAPES_SLEEP_GOAL_S)))
    http_ns = sorted({int(m.split("_")[1]) for (_, m) in res
                      if re.match(r"http_\d+$", m)}, reverse=True)
    # dexec_fresh: a worker started just before, every request on a new
    # connection (as the limit clients'); dexec: the same worker again,
    # its connections kept alive from that round. Older runs have dexec
    # alone.
    dexec_rows = (("dexec_fresh", ", fresh worker (a new connection per "
                   "request)"),
                  ("dexec", ", warm worker (connections kept alive from the "
                   "round before)"),
                  ("dexec_chunked", ", fresh worker, chunks of 100 URLs "
                   "(`--chunksize=100`)"),
                  ("dexec_fresh_curl", ", fresh worker, every request "
                   "through curl (`--nohttp_plain`)"))
    for n in http_ns:
        measure = "http_%d" % n
        limits = {s: x for (s, m), x in res.items()
                  if m == measure and s in ("raw_epoll", "raw_keep",
                                              "curl_multi")}
        best = min(limits, key=lambda s: statistics.median(limits[s]),
                   default=None)
        lv = limits.get(best, [])
        limit_cell = "; ".join("%s%s %s s" % ("**" if s == best else "", s,
                                              cell_of(x)) +
                               ("**" if s == best else "")
                               for s, x in sorted(limits.items())) or "–"
        one_proc = res.get(("raw_1proc", measure), [])
        if one_proc:
            limit_cell += ("; raw_epoll in one process (not the limit) %s s"
                           % cell_of(one_proc))
        peers_cell = "; ".join(
            "%s %s s" % (s, cell_of(x)) for (s, m), x in sorted(res.items())
            if m == measure and s not in
            ("dexec", "dexec_fresh", "dexec_chunked", "dexec_fresh_curl",
             "raw_epoll", "raw_keep", "curl_multi", "raw_1proc")) or "–"
        has_fresh = ("dexec_fresh", measure) in res
        for system, what in dexec_rows:
            v = res.get((system, measure), [])
            if not v and system in ("dexec_fresh", "dexec_chunked",
                                    "dexec_fresh_curl"):
                continue
            ratio = (statistics.median(v) / statistics.median(lv)
                     if v and lv else float("nan"))
            L.append("| `map http.get` over %s URLs within %.1f× the "
                     "server's limit%s | %s s | %s | %s | %s | %s |" % (
                         "{:,}".format(n), SHAPES_HTTP_GOAL_RATIO,
                         what if has_fresh else "", cell_of(v), peers_cell,
                         limit_cell, fmt(ratio),
                         verdict(None if ratio != ratio
                                 else ratio <= SHAPES_HTTP_GOAL_RATIO)))
    m, v = vals("dexec", "memory_per_suspended_task")
    if m:
        med = statistics.median(v)
        L.append("| worker memory per suspended task ≤ %d KiB | %s bytes | – "
                 "| – | – | %s |" % (SHAPES_MEMORY_GOAL_BYTES // 1024,
                                     cell_of(v),
                                     verdict(med <= SHAPES_MEMORY_GOAL_BYTES)))
    m, v = vals("dexec", "chunked_map")
    pm, pv = vals("ppe2", "chunked_map")
    if m:
        med = statistics.median(v)
        L.append("| chunked map, chunksize 1000, ≥ 1M no-op items/s | %s "
                 "items/s | ProcessPoolExecutor(2) %s items/s | – | %s | %s |"
                 % (cell_of(v), cell_of(pv),
                    fmt(med / statistics.median(pv)) if pv else "–",
                    verdict(med >= SHAPES_MAP_GOAL_ITEMS_S)))
    L.append("")
    L.append("For http, *dexec ÷* divides by the server limit; for the "
             "chunked map by ProcessPoolExecutor(2) (above 1: dexec is "
             "faster), which has no broker and no network.")
    L.append("")
    if shapes["cpu"]:
        L.append("CPU seconds used during each HTTP client's round (median of "
                 "rounds; the client's own with its children, and nginx's, "
                 "the broker's and the worker's meanwhile), on 2 cores:")
        L.append("")
        L.append("| client | client | nginx | broker | worker | load |")
        L.append("|---|---|---|---|---|---|")
        for name, rounds in shapes["cpu"].items():
            def med(k):
                xs = [r.get(k, float("nan")) for r in rounds]
                xs = [x for x in xs if x == x]
                return fmt(statistics.median(xs)) if xs else "–"
            L.append("| %s | %s | %s | %s | %s | %s |" % (
                name, med("client"), med("nginx"), med("broker"),
                med("worker"), med("load")))
        L.append("")
    if shapes["notes"]:
        L.append("Failures in this run: " + "; ".join(shapes["notes"]) + ".")
        L.append("")
    return L


def chart(results, png, title):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (apt-get install python3-matplotlib)"
    results = [r for r in results if workload_of(r) != "s"]
    thr = [r for r in results if workload_of(r) in ("a", "f")
           and r["unit"] == "tasks/s" and num(r["median"]) > 0]
    thr.sort(key=lambda r: num(r["median"]))
    lat = {}
    for r in results:
        if r["measure"] in ("latency_p50", "latency_p99") and num(r["median"]) > 0:
            lat.setdefault(label(r), {})[r["measure"]] = r
    lat_rows = sorted(lat.items(), key=lambda kv: num(
        kv[1].get("latency_p50", kv[1].get("latency_p99"))["median"]))
    if not thr and not lat_rows:
        return "no throughput or latency results to chart"

    h = max(len(thr), 2 * len(lat_rows), 4)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, 0.35 * h + 2.2))
    dexec_c, peer_c = "#1f77b4", "#999999"

    if thr:
        names = ["%s (%s)" % (label(r), fmt_n(measure_n(r["measure"]) or 0))
                 for r in thr]
        med = [num(r["median"]) for r in thr]
        err = [[m - num(r["min"]) for m, r in zip(med, thr)],
               [num(r["max"]) - m for m, r in zip(med, thr)]]
        ax1.barh(names, med, xerr=err, capsize=2,
                 color=[dexec_c if is_dexec(r) else peer_c for r in thr])
        for bar, r in zip(ax1.patches, thr):
            if r.get("store") == "durable":
                bar.set_hatch("//")
                bar.set_edgecolor("white")
        for i, r in enumerate(thr):
            ax1.text(max(num(r["max"]), med[i]) * 1.15, i, fmt(med[i]),
                     va="center", fontsize=7)
        ax1.set_xscale("log")
        ax1.set_xlim(min(med) / 2, max(max(med), 1) * 8)
        ax1.set_xlabel("no-op tasks/s (log; median, bars min–max)")
        ax1.set_title("a/f. throughput")
        ax1.tick_params(axis="y", labelsize=8)

    if lat_rows:
        ys, vals, cols, names = [], [], [], []
        for i, (name, ms) in enumerate(lat_rows):
            for j, m in enumerate(("latency_p50", "latency_p99")):
                if m in ms:
                    ys.append(2 * i + j)
                    vals.append(num(ms[m]["median"]))
                    cols.append((dexec_c if name.startswith("dexec") else peer_c)
                                if j == 0 else
                                ("#aec7e8" if name.startswith("dexec")
                                 else "#cccccc"))
                    names.append("%s %s" % (name, m[-3:]))
        ax2.barh(ys, vals, color=cols)
        ax2.set_yticks(ys)
        ax2.set_yticklabels(names, fontsize=8)
        for y, v in zip(ys, vals):
            ax2.text(v * 1.08, y, fmt(v), va="center", fontsize=7)
        ax2.set_xscale("log")
        ax2.set_xlim(min(vals) / 2, max(vals) * 8)
        ax2.set_xlabel("round trip, µs (log; median of runs)")
        ax2.set_title("b. latency p50 / p99 (lower is better)")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return None


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("inputs", nargs="+")
    ap.add_argument("--micro")
    ap.add_argument("--shapes", help="bench/shapes_bench.sh's file (phase h)")
    ap.add_argument("--python", help="phase p's python.txt")
    ap.add_argument("--json", required=True)
    ap.add_argument("--md", required=True)
    ap.add_argument("--png")
    args = ap.parse_args()

    results, meta = read_inputs(args.inputs)
    micro, micro_ctx = read_micro(args.micro)
    peers_log = os.path.join(os.path.dirname(args.md), "peers.log")
    mach = machine()
    vers = versions(peers_log)
    commit = meta["commit"] or run(["git", "rev-parse", "--short", "HEAD"])
    tgt = targets(results)
    sec = security_cost(results, micro)
    shapes = read_shapes(args.shapes)
    met = metrics_cost(results, meta.get("scrapes", []))
    py_rows, py_uptime = read_python(args.python)
    py_goals = python_goals(py_rows)

    with open(args.json, "w") as f:
        json.dump({"machine": mach, "versions": vers, "dexec_commit": commit,
                   "host_line": meta["host"], "config": meta["config"],
                   "phases_s": meta["phases"],
                   "peer_scripts_s": dict(meta["peer_times"]),
                   "failures": meta["failures"],
                   "targets": [{"target": t, "measured": m, "verdict": v}
                               for t, m, v in tgt],
                   "security_cost": sec,
                   "shapes": shapes_json(shapes),
                   "metrics_cost": met,
                   "python": {"uptime": py_uptime, "goals": py_goals,
                              "results": py_rows},
                   "results": results, "micro": micro}, f, indent=1)

    pv = vers.get("peers", {})
    L = ["# dexec benchmark: latest run", ""]
    L.append("**Machine:** %s cores, %s, %s RAM; kernel %s; %s. Run of %s." % (
        mach["nproc"], mach["cpu"] or "unknown CPU", mach["memory"] or "?",
        mach["kernel"], mach["os"], mach["date"]))
    L.append("")
    L.append("**Versions:** dexec %s (`-c opt`; %s), gRPC %s, ZeroMQ %s, "
             "RocksDB %s, Google Benchmark %s. Peers: Python %s, dask %s, "
             "distributed %s, celery %s (kombu %s, billiard %s), redis-py %s, "
             "redis-server %s." % (
                 commit, vers["compiler"], vers["grpc"] or "?",
                 vers["zeromq"] or "?", vers["rocksdb"] or "?",
                 vers["google-benchmark"] or "?", pv.get("python", "?"),
                 pv.get("dask", "?"), pv.get("distributed", "?"),
                 pv.get("celery", "?"), pv.get("kombu", "?"),
                 pv.get("billiard", "?"), pv.get("redis", "?"),
                 pv.get("redis-server", "?")))
    L.append("")
    if meta["config"]:
        L.append("**Run configuration:** `%s`" % meta["config"])
        L.append("")
    if "quick=1" in meta["config"]:
        L.append("> **BENCH_QUICK=1: small N and 1 run per measurement. "
                 "These numbers are for trying the suite, not results.**")
        L.append("")
    if meta["failures"]:
        L.append("**Failed in this run:**")
        L.extend("- `%s`" % f for f in meta["failures"])
        L.append("")
    L.append("Everything — client, broker or scheduler, workers, redis — "
             "runs on this one host over loopback. Each cell is the median "
             "(min–max) of the runs. Peer rows come only from the peer "
             "scripts run in this same `bench/run.sh` invocation, right after "
             "dexec's run of the same workload. **dexec ÷ this** divides "
             "dexec's median by the row's: for tasks/s above 1 means dexec "
             "is faster; for µs, s and bytes below 1 means dexec is better. "
             "*foreign cores*: CPU used by processes outside the benchmark "
             "during the measurement (0 = quiet machine, 2 = both cores "
             "taken).")
    L.append("")
    title = "dexec vs peers, %s, %s cores, %s; dexec %s" % (
        mach["date"], mach["nproc"], mach["cpu"], commit)
    if "quick=1" in meta["config"]:
        title = "BENCH_QUICK=1 (small N, 1 run: not results) — " + title
    chart_err = chart(results, args.png, title) if args.png else None
    if args.png and not chart_err:
        L.append("![throughput and latency](%s)" % os.path.basename(args.png))
        L.append("")
    elif chart_err:
        L.append("(No chart: %s.)" % chart_err)
        L.append("")

    L.append("## Targets (issue #4)")
    L.append("")
    L.append("| target | measured | |")
    L.append("|---|---|---|")
    for t, m, v in tgt:
        L.append("| %s | %s | %s |" % (t, m, v))
    L.append("")

    for letter, title, what in WORKLOADS:
        L.append("## %s. %s" % (letter, title))
        L.append("")
        L.append(what)
        L.append("")
        if letter == "f":
            rows = durable_table(results)
            L.extend(rows or ["Not measured in this run."])
            L.append("")
            continue
        if letter == "s":
            L.extend(security_table(sec) or ["Not measured in this run."])
            L.append("")
            if sec["token_check"]:
                L.append("The broker's token check (`micro_bench`, "
                         "`TokenStore::AuthenticateHeader`, 101 live tokens, "
                         "once per call or stream open): " + "; ".join(
                             "%s %s ns" % (t["name"].split("/", 1)[-1],
                                           fmt(t["ns_median"]))
                             for t in sec["token_check"]) + ".")
                L.append("")
            continue
        if letter == "m":
            L.extend(metrics_table(met) or ["Not measured in this run."])
            L.append("")
            continue
        rows = workload_table(results, letter)
        L.extend(rows or ["Not measured in this run."])
        L.append("")
        if letter == "e":
            rates = submit_rates(results)
            if rates:
                L.append("Submit rate with no worker: " + "; ".join(rates) + ".")
                L.append("")
    L.append("## p. Python package (issue 11)")
    L.append("")
    rows = python_table(py_goals)
    if rows:
        L.append("`bench/python_bench.py` in this run: one Python client "
                 "(`dexec.Executor`); no-op jobs on one Python worker "
                 "process (`--threads=4 --processes=2 "
                 "--concurrency=10000`), and for the client's own ceiling on "
                 "the C++ worker (`sys.echo`, 1 thread); the same work on "
                 "`concurrent.futures.ProcessPoolExecutor(2)`. %s jobs or "
                 "items per throughput run (the issue's goals are for 100k). "
                 "A cell with runs is their median. [fc]: foreign cores "
                 "during the measure, as above. Machine before the phase: "
                 "`%s`." % (fmt_n(python_n(py_goals) or 0),
                            py_uptime.strip() or "not recorded"))
        L.append("")
        L.extend(rows)
    else:
        L.append("Not measured in this run.")
    L.append("")
    other = [r for r in results if workload_of(r) == "other"]
    if other:
        L.append("Other figures: " + "; ".join(
            "%s %s %s %s" % (label(r), r["measure"], cell(r), r["unit"])
            for r in other) + ".")
        L.append("")

    if args.shapes:
        L.extend(shapes_section(shapes))

    L.append("## Micro-benchmarks (`bench/micro_bench.cc`)")
    L.append("")
    if micro:
        L.append("One core, no I/O; items are tasks or jobs. Median (min–max) "
                 "of %d repetition(s); foreign cores %s." % (
                     micro[0]["repetitions"], meta["micro_noise"] or "?"))
        L.append("")
        L.append("| benchmark | ns per item | items/s | MB/s | |")
        L.append("|---|---|---|---|---|")
        for m in micro:
            extra = ""
            if "rounds_per_batch" in m:
                extra = "%.0f Schedule/Results rounds per batch" % \
                    m["rounds_per_batch"]
            ips = fmt(m["items_per_second_median"])
            if m["repetitions"] > 1:
                ips += " (%s–%s)" % (fmt(m["items_per_second_min"]),
                                     fmt(m["items_per_second_max"]))
            L.append("| %s | %s | %s | %s | %s |" % (
                m["name"], fmt(m["ns_per_item_median"]), ips,
                fmt(m["bytes_per_second_median"] / 1e6)
                if m["bytes_per_second_median"] == m["bytes_per_second_median"]
                else "", extra))
        L.append("")
    else:
        L.append("Not run.")
        L.append("")

    dev = deviations(results, meta)
    if dev:
        L.append("## Differences from the issue's sizes")
        L.append("")
        L.extend("- " + d for d in dev)
        L.append("")

    if meta["phases"]:
        L.append("## Time taken")
        L.append("")
        L.append(", ".join("%s %.0f s" % (k, v) if v >= 10 else
                           "%s %.1f s" % (k, v)
                           for k, v in meta["phases"].items()) + ".")
        if meta["peer_times"]:
            L.append("")
            L.append("Peer scripts: " + ", ".join(
                "`%s` %.0f s" % (k, v) for k, v in meta["peer_times"]) + ".")
        if "total" in meta["phases"]:
            L.append("")
            L.append("`bench/run.sh` took %.1f min in all (build included)."
                     % (meta["phases"]["total"] / 60))
        L.append("")
    L.append("Sources: " + ", ".join(sorted(set(
        r.get("source", r["file"]) for r in results))) +
        ("; micro.json" if micro else "") + ".")

    with open(args.md, "w") as f:
        f.write("\n".join(L) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
