#!/usr/bin/python3
"""A Prometheus stand-in for bench/run.sh's phase m: GETs the broker's
/metrics every --interval seconds over one keep-alive connection, with the
bearer token of --token_file, until SIGTERM; then appends one line to --out:

  # scraper scrapes=N failed=M bytes_last=B scrape_ms_p50=X scrape_ms_max=Y

A failed scrape (refused, not 200) is counted and the next one opens a new
connection; the loop never stops on its own.
"""
import argparse
import http.client
import signal
import statistics
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--address", required=True, help="HOST:PORT of the broker's --http_listen")
    ap.add_argument("--token_file", default="")
    ap.add_argument("--interval", type=float, default=0.1)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    host, port = args.address.rsplit(":", 1)
    headers = {}
    if args.token_file:
        with open(args.token_file) as f:
            headers["Authorization"] = "Bearer " + f.read().strip()
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    conn = None
    ok, failed, last_bytes, took = 0, 0, 0, []
    next_at = time.monotonic()
    while not stop:
        t0 = time.monotonic()
        try:
            if conn is None:
                conn = http.client.HTTPConnection(host, int(port), timeout=10)
            conn.request("GET", "/metrics", headers=headers)
            resp = conn.getresponse()
            body = resp.read()
            if resp.status == 200:
                ok += 1
                last_bytes = len(body)
                took.append((time.monotonic() - t0) * 1000)
            else:
                failed += 1
        except (OSError, http.client.HTTPException):
            failed += 1
            conn = None
        next_at += args.interval
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        else:
            next_at = time.monotonic()
    with open(args.out, "a") as f:
        f.write("# scraper scrapes=%d failed=%d bytes_last=%d "
                "scrape_ms_p50=%.2f scrape_ms_max=%.2f\n" % (
                    ok, failed, last_bytes,
                    statistics.median(took) if took else float("nan"),
                    max(took) if took else float("nan")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
