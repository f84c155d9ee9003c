#!/usr/bin/env python3
"""Turns RESULT lines (dexec's and the peers') into bench/results/latest.json
and latest.md: one table of measure x system, median (min-max), and the ratio
dexec/peer for every peer measured in the same run. Standard library only
(a PNG chart is drawn only if matplotlib imports).

Usage: report.py RESULTS.txt [MORE.txt ...] --json OUT.json --md OUT.md
"""
import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys

# Per measure: which way is better, for the reader of a ratio.
HIGHER_IS_BETTER = {"tasks/s"}

# Peers name their memory measurement differently (100k queued vs pending);
# dexec queues 1M. They are compared as one row.
# No-op throughput is compared as tasks/s across N (dexec runs 100k, the
# peers with --skip-100k 10k); each cell then names its N.
ALIASES = [
    (re.compile(r"^mem_\d+k_(queued|pending)$"), "mem_per_queued_task"),
    (re.compile(r"^noop_\d+k$"), "noop_throughput"),
]


def parse_line(line):
    if not line.startswith("RESULT "):
        return None
    fields = {}
    for tok in line.split()[1:]:
        if "=" in tok:
            k, v = tok.split("=", 1)
            fields[k] = v
    return fields


def column(r):
    """The table column: system, plus how it was called when one system
    reports the same measure several ways (api=, chunksize=)."""
    col = r["system"]
    if r.get("api"):
        col += "/" + r["api"]
    if r.get("chunksize") and r.get("chunksize") != "1" and r["system"] != "dexec" \
            and not r["system"].startswith("dexec"):
        col += "/cs" + r["chunksize"]
    return col


def measure_key(m):
    for rx, name in ALIASES:
        if rx.match(m):
            return name
    return m


def num(s):
    try:
        return float(s)
    except (TypeError, ValueError):
        return float("nan")


def fmt(v):
    if v != v:
        return "nan"
    if abs(v) >= 1000:
        return "{:,.0f}".format(v)
    if abs(v) >= 10:
        return "%.1f" % v
    return "%.3f" % v


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
            kb = int(f.readline().split()[1])
            mem_gib = "%.0f GiB" % (kb / 1024 / 1024)
    except (OSError, ValueError, IndexError):
        pass

    def out(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True,
                                  timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "memory": mem_gib,
        "kernel": platform.release(),
        "os": out(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"]),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime(
            "%Y-%m-%d %H:%M UTC"),
        "dexec_commit": out(["git", "rev-parse", "--short", "HEAD"]),
        "compiler": out(["sh", "-c", "c++ --version | head -1"]),
        "grpc": out(["sh", "-c",
                     "dpkg-query -W -f='${Version}' libgrpc++-dev 2>/dev/null"]),
        "zeromq": out(["sh", "-c",
                       "dpkg-query -W -f='${Version}' libzmq3-dev 2>/dev/null"]),
        "python_peers": out(["/usr/bin/python3", "-c",
                             "import sys; print(sys.version.split()[0])"]),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("inputs", nargs="+")
    ap.add_argument("--json", required=True)
    ap.add_argument("--md", required=True)
    args = ap.parse_args()

    results = []
    for path in args.inputs:
        if not os.path.exists(path):
            continue
        with open(path) as f:
            for line in f:
                r = parse_line(line.strip())
                if r:
                    r["file"] = os.path.basename(path)
                    results.append(r)

    # Later lines of the same (measure, column) replace earlier ones.
    table = {}
    for r in results:
        table.setdefault(measure_key(r["measure"]), {})[column(r)] = r
    info = machine()

    with open(args.json, "w") as f:
        json.dump({"machine": info, "results": results}, f, indent=1)

    lines = ["# dexec benchmark: latest run", ""]
    lines.append("Machine: %s cores, %s, %s RAM; kernel %s; %s. Generated %s. "
                 "dexec commit %s (`-c opt`), %s; gRPC %s, ZeroMQ %s; peers' "
                 "Python %s." % (
                     info["nproc"], info["cpu"] or "unknown CPU",
                     info["memory"] or "?", info["kernel"], info["os"],
                     info["date"], info["dexec_commit"], info["compiler"],
                     info["grpc"] or "?", info["zeromq"] or "?",
                     info["python_peers"] or "?"))
    lines.append("")
    lines.append("Each cell: median (min–max) over the runs. Everything on "
                 "one host, over loopback. The peer columns come only from "
                 "peer scripts run in this same `bench/run.sh` invocation "
                 "(files listed under *Sources*); a blank cell means not "
                 "measured in this run. Ratio = dexec ÷ peer: for tasks/s "
                 "above 1 means dexec is faster; for µs, s and bytes below 1 "
                 "means dexec is better.")
    lines.append("")

    columns = []
    for m in table.values():
        for c in m:
            if c not in columns:
                columns.append(c)
    dexec_cols = [c for c in columns if c.startswith("dexec")]
    peer_cols = [c for c in columns if not c.startswith("dexec")]
    columns = dexec_cols + peer_cols

    lines.append("| measure | unit | " + " | ".join(columns) +
                 (" | dexec ÷ peer |" if peer_cols else " |"))
    lines.append("|---|---|" + "---|" * len(columns) +
                 ("---|" if peer_cols else ""))
    for measure in table:
        row = table[measure]
        unit = next(iter(row.values()))["unit"]
        cells = []
        for c in columns:
            r = row.get(c)
            if not r:
                cells.append("")
                continue
            cell = "%s (%s–%s)" % (fmt(num(r["median"])), fmt(num(r["min"])),
                                   fmt(num(r["max"])))
            if measure_key(r["measure"]) != r["measure"]:
                cell += " [%s]" % r["measure"]
            if r.get("speedup_median"):
                cell += "; speedup %s×" % r["speedup_median"]
            cells.append(cell)
        ratios = []
        # The reference dexec cell: the default-config system=dexec line.
        ref = row.get("dexec") or next(
            (row[c] for c in dexec_cols if c in row and c.startswith("dexec/")),
            None)
        if ref:
            for c in peer_cols:
                if c in row and num(row[c]["median"]) > 0:
                    ratios.append("%s: %.2f" % (
                        c, num(ref["median"]) / num(row[c]["median"])))
        line = "| %s | %s | %s |" % (measure, unit, " | ".join(cells))
        if peer_cols:
            line += " %s |" % ("; ".join(ratios))
        lines.append(line)

    lines.append("")
    lines.append("Columns: `dexec` is the default worker configuration "
                 "(prefetch max(8, threads)); `dexec_prefetchN` the same with "
                 "`--prefetch=N`; `/map` and `/submit` say which client API "
                 "ran the no-ops. The cluster shape of each dexec line is in "
                 "its `workers=` field in `dexec.txt` (2×2 threads for "
                 "no-ops and latency, 2×5 and 2×50 for sleep, 2×1 for cpu, "
                 "none for memory).")
    lines.append("")
    lines.append("Sources: " + ", ".join(sorted(set(
        r.get("source", r["file"]) for r in results))) + ".")
    lines.append("")

    png = os.path.splitext(args.md)[0] + ".png"
    try:
        import matplotlib  # noqa: F401
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        rows = [(m, c, num(r["median"])) for m, row in table.items()
                for c, r in row.items() if r["unit"] == "tasks/s"]
        if rows:
            fig, ax = plt.subplots(figsize=(8, 0.4 * len(rows) + 1))
            ax.barh(["%s %s" % (m, c) for m, c, _ in rows],
                    [v for _, _, v in rows])
            ax.set_xscale("log")
            ax.set_xlabel("tasks/s (log)")
            fig.tight_layout()
            fig.savefig(png)
            lines.append("![throughput](%s)" % os.path.basename(png))
    except ImportError:
        pass

    with open(args.md, "w") as f:
        f.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
