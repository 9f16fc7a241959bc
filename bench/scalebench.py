#!/usr/bin/env python3
"""Helpers of bench/scale.sh (standard library only).

  sample --base URL --paths FILE --n N [--seed S]
      N hash parts drawn at random from FILE (one a line), each narinfo requested twice in a
      row on one keep-alive connection: the first answer comes from the database (nothing in
      memory yet), the second from memory. Prints key=value lines: p50/p90/p99/max in ms of
      both passes. Fails on any answer that is not 200 with the path's StorePath.
  serve-all --base URL --paths FILE [--threads 8]
      every path of FILE requested once (200 required), for the hot caches.
"""
import argparse
import http.client
import random
import sys
import time
import urllib.parse


def pct(values, q):
    v = sorted(values)
    if not v:
        return "n/a"
    i = max(1, min(len(v), int(-(-len(v) * q // 1)))) - 1
    return f"{v[i] * 1000:.3f}"


def cmd_sample(a):
    with open(a.paths) as f:
        paths = [line.strip() for line in f if line.strip()]
    rng = random.Random(a.seed)
    chosen = rng.sample(paths, min(a.n, len(paths)))
    u = urllib.parse.urlsplit(a.base)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    cold, warm = [], []
    for hp in chosen:
        for times in (cold, warm):
            t0 = time.perf_counter()
            conn.request("GET", f"/{hp}.narinfo")
            r = conn.getresponse()
            body = r.read()
            times.append(time.perf_counter() - t0)
            if r.status != 200 or f"StorePath: /nix/store/{hp}-".encode() not in body:
                sys.exit(f"{hp}.narinfo: {r.status} {body[:200]!r}")
    for name, times in (("db", cold), ("memory", warm)):
        for q, label in ((0.5, "p50"), (0.9, "p90"), (0.99, "p99"), (1.0, "max")):
            print(f"{name}_{label}_ms={pct(times, q)}")
    print(f"sampled={len(chosen)}")


def cmd_serve_all(a):
    """Every path of FILE once, THREADS keep-alive connections; prints seconds taken."""
    import threading

    with open(a.paths) as f:
        paths = [line.strip() for line in f if line.strip()]
    u = urllib.parse.urlsplit(a.base)
    errors = []

    def worker(part):
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
        for hp in part:
            conn.request("GET", f"/{hp}.narinfo")
            r = conn.getresponse()
            r.read()
            if r.status != 200:
                errors.append(f"{hp}: {r.status}")
                return

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(paths[i :: a.threads],)) for i in range(a.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        sys.exit(f"not served: {errors[:5]}")
    print(f"seconds={time.perf_counter() - t0:.1f}")


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("sample")
    s.add_argument("--base", required=True)
    s.add_argument("--paths", required=True)
    s.add_argument("--n", type=int, default=2000)
    s.add_argument("--seed", type=int, default=12)
    s.set_defaults(fn=cmd_sample)
    w = sub.add_parser("serve-all")
    w.add_argument("--base", required=True)
    w.add_argument("--paths", required=True)
    w.add_argument("--threads", type=int, default=8)
    w.set_defaults(fn=cmd_serve_all)
    a = p.parse_args()
    a.fn(a)


if __name__ == "__main__":
    main()
