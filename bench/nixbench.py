#!/usr/bin/env python3
"""Helpers for bench/run.sh: upstream trees, a delaying upstream, load bursts, the report.

Subcommands (all talk to 127.0.0.1 only):
  freeports N                   print N distinct free TCP ports
  prepare --fixtures D --out W --synth N [--gen-dir G --gen-mib M]
                                build W/up/{A,B,C}: the fixture caches (symlinked NARs) plus
                                N synthetic store paths, each signed by every builder's key,
                                and optionally one generated M-MiB NAR (zstd for B, none for
                                C); writes W/synth.txt (hash parts) and W/gen.env
  upstream --dir D --port P --delay S --log F
                                HTTP/1.0 file server; every *.narinfo answer waits S seconds;
                                one line per request in F
  timeget URL...                sequential GETs on fresh connections: "status ms bytes" each
  fetch URL                     one GET, body discarded: "status bytes ttfb_s penultimate_s total_s"
                                (penultimate: when all but the last byte had arrived)
  burst --url U --n N           N connections opened first, then N requests sent at once;
                                prints JSON {statuses, bytes, seconds}
  report --results F --out MD   render the results table (stdout and MD)
"""
import argparse
import base64
import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.parse

ALPHABET = "0123456789abcdfghijklmnpqrsvwxyz"
BUILDERS = ("A", "B", "C")


def latency_chart(r, path):
    """Writes an SVG of test 8's latency distributions (x: quantile, y: ms, log scale) to
    `path`; returns whether there was anything to chart."""
    import math
    series = []
    colors = {"quorate": ["#1f77b4", "#4a90d9", "#9cc3ea"], "nginx": ["#d62728", "#e8686a", "#f2a8a9"]}
    for t in ("quorate", "nginx"):
        for i, rate in enumerate(r.get("t8_rates", "").split()):
            cdf = r.get(f"t8_{t}_{rate}_cdf_ms", "")
            pts = []
            for item in cdf.split(","):
                try:
                    q, ms = item.split(":")
                    pts.append((float(q), max(float(ms), 0.001)))
                except ValueError:
                    continue
            if pts:
                series.append((f"{t} {int(rate):,}/s", colors[t][i % 3], pts))
    if not series:
        return False
    w, h, left, right, top, bottom = 760, 420, 70, 190, 20, 50
    lo = min(ms for _, _, p in series for _, ms in p)
    hi = max(ms for _, _, p in series for _, ms in p)
    ylo, yhi = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    if yhi == ylo:
        yhi += 1
    # x: the quantile on a "nines" scale, -log10(1 - q), capped at 1 - q = 1e-4.
    def xq(q):
        return min(-math.log10(max(1 - q, 1e-4)), 4.0)
    def X(q):
        return left + (w - left - right) * xq(q) / 4.0
    def Y(ms):
        return top + (h - top - bottom) * (1 - (math.log10(ms) - ylo) / (yhi - ylo))
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
           f'font-family="sans-serif" font-size="12">',
           f'<rect width="{w}" height="{h}" fill="white"/>']
    for e in range(ylo, yhi + 1):
        y = Y(10 ** e)
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{w - right}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{10 ** e:g} ms</text>')
    for q, label in ((0.5, "p50"), (0.9, "p90"), (0.99, "p99"), (0.999, "p99.9"), (0.9999, "p99.99")):
        x = X(q)
        out.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{h - bottom}" stroke="#eee"/>')
        out.append(f'<text x="{x:.1f}" y="{h - bottom + 16}" text-anchor="middle">{label}</text>')
    y2 = Y(2.0)
    out.append(f'<line x1="{left}" y1="{y2:.1f}" x2="{w - right}" y2="{y2:.1f}" stroke="#2ca02c" '
               'stroke-dasharray="4 3"/>')
    out.append(f'<text x="{w - right - 4}" y="{y2 - 4:.1f}" text-anchor="end" fill="#2ca02c">'
               'target 2 ms</text>')
    for k, (name, color, pts) in enumerate(series):
        d = " ".join(f"{X(q):.1f},{Y(ms):.1f}" for q, ms in pts if q >= 0.5 or q == pts[0][0])
        out.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{d}"/>')
        ly = top + 16 * k + 10
        out.append(f'<line x1="{w - right + 10}" y1="{ly}" x2="{w - right + 30}" y2="{ly}" '
                   f'stroke="{color}" stroke-width="2"/>')
        out.append(f'<text x="{w - right + 36}" y="{ly + 4}">{name}</text>')
    out.append(f'<text x="{(left + w - right) / 2:.0f}" y="{h - 12}" text-anchor="middle">'
               'quantile (open-loop warm narinfo; latency from each request\'s due time)</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")
    return True


def nixbase32(b: bytes) -> str:
    n = (len(b) * 8 - 1) // 5 + 1
    out = []
    for i in range(n - 1, -1, -1):
        bit = i * 5
        j, k = divmod(bit, 8)
        c = b[j] >> k
        if j + 1 < len(b):
            c |= b[j + 1] << (8 - k)
        out.append(ALPHABET[c & 0x1F])
    return "".join(out)


# ------------------------------------------------------------------------------ freeports
def cmd_freeports(a):
    socks, ports = [], []
    for _ in range(a.n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    print(" ".join(map(str, ports)))


# ------------------------------------------------------------------------------ prepare
def parse_narinfo(text):
    fields = []
    for line in text.splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            fields.append((k, v.strip()))
    return fields


def render(fields):
    return "".join(f"{k}: {v}\n" for k, v in fields)


def load_secret(path):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    name, b64 = open(path).read().strip().split(":", 1)
    raw = base64.b64decode(b64)
    return name, Ed25519PrivateKey.from_private_bytes(raw[:32])


def sign(key, store_path, nar_hash, nar_size, refs=""):
    name, sk = key
    fp = f"1;{store_path};{nar_hash};{nar_size};{refs}".encode()
    return f"{name}:{base64.b64encode(sk.sign(fp)).decode()}"


def narinfo_for(template, key, store_path, **over):
    """A narinfo like `template` (a builder's own), for another store path, signed."""
    d = dict(template)
    d.update(over)
    d["StorePath"] = store_path
    d["References"] = ""
    d.pop("Deriver", None)
    d["Sig"] = sign(key, store_path, d["NarHash"], d["NarSize"])
    order = ["StorePath", "URL", "Compression", "FileHash", "FileSize", "NarHash", "NarSize",
             "References", "Sig"]
    return render([(k, d[k]) for k in order if k in d])


def write_nar(path, mib):
    """A NAR of one regular file of `mib` MiB of random bytes. Returns (sha256, size)."""
    size = mib << 20
    h = hashlib.sha256()
    tmp = path + ".tmp"

    def s(x):
        b = x.encode()
        return len(b).to_bytes(8, "little") + b + b"\0" * (-len(b) % 8)

    with open(tmp, "wb") as f:
        head = s("nix-archive-1") + s("(") + s("type") + s("regular") + s("contents")
        head += size.to_bytes(8, "little")
        f.write(head)
        h.update(head)
        # openssl rand is ~10x faster than os.urandom in a Python loop.
        p = subprocess.Popen(["openssl", "rand", str(size)], stdout=subprocess.PIPE)
        left = size
        while left:
            chunk = p.stdout.read(min(left, 4 << 20))
            if not chunk:
                raise SystemExit("openssl rand ended early")
            f.write(chunk)
            h.update(chunk)
            left -= len(chunk)
        p.wait()
        tail = s(")")  # size is a multiple of 8: no padding after the contents
        f.write(tail)
        h.update(tail)
        total = f.tell()
    os.replace(tmp, path)
    return h.digest(), total


def file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(4 << 20)
            if not b:
                return h.digest()
            h.update(b)


def cmd_prepare(a):
    fx = json.load(open(os.path.join(a.fixtures, "manifest.json")))
    keys = {b: load_secret(fx["builders"][b]["secret_key_file"]) for b in BUILDERS}
    hello_hp = os.path.basename(fx["paths"]["hello"]["store_path"])[:32]
    gen = None
    if a.gen_mib:
        os.makedirs(a.gen_dir, exist_ok=True)
        nar = os.path.join(a.gen_dir, f"big-{a.gen_mib}m.nar")
        meta_path = nar + ".json"
        if not (os.path.exists(nar) and os.path.exists(meta_path)):
            digest, size = write_nar(nar, a.gen_mib)
            subprocess.run(["zstd", "-q", "-f", "-1", "-T0", nar, "-o", nar + ".zst"], check=True)
            json.dump({"nar_hash": "sha256:" + nixbase32(digest), "nar_size": size,
                       "zst_hash": "sha256:" + nixbase32(file_sha256(nar + ".zst")),
                       "zst_size": os.path.getsize(nar + ".zst")}, open(meta_path, "w"))
        gen = json.load(open(meta_path))
        gen["nar"] = nar
        gen["hash_part"] = nixbase32(hashlib.sha256(f"gen-{a.gen_mib}".encode()).digest()[:20])
        gen["store_path"] = f"{fx['store_dir']}/{gen['hash_part']}-big-{a.gen_mib}m"
    synth = [nixbase32(hashlib.sha256(f"quorate-bench-{i}".encode()).digest()[:20])
             for i in range(a.synth)]
    for b in BUILDERS:
        src = fx["builders"][b]["cache_dir"]
        dst = os.path.join(a.out, "up", b)
        os.makedirs(os.path.join(dst, "nar"), exist_ok=True)
        for name in os.listdir(os.path.join(src, "nar")):
            os.symlink(os.path.join(src, "nar", name), os.path.join(dst, "nar", name))
        for name in os.listdir(src):
            if name != "nar":
                os.symlink(os.path.join(src, name), os.path.join(dst, name))
        template = dict(parse_narinfo(open(os.path.join(src, hello_hp + ".narinfo")).read()))
        for i, hp in enumerate(synth):
            sp = f"{fx['store_dir']}/{hp}-bench-{i}"
            with open(os.path.join(dst, hp + ".narinfo"), "w") as f:
                f.write(narinfo_for(template, keys[b], sp))
        if gen and b in ("B", "C"):
            if b == "B":
                url, comp, fh, fs = (f"nar/{gen['zst_hash'][7:]}.nar.zst", "zstd",
                                     gen["zst_hash"], gen["zst_size"])
                os.symlink(gen["nar"] + ".zst", os.path.join(dst, url))
            else:
                url, comp, fh, fs = (f"nar/{gen['nar_hash'][7:]}.nar", "none",
                                     gen["nar_hash"], gen["nar_size"])
                os.symlink(gen["nar"], os.path.join(dst, url))
            with open(os.path.join(dst, gen["hash_part"] + ".narinfo"), "w") as f:
                f.write(narinfo_for(template, keys[b], gen["store_path"], URL=url,
                                    Compression=comp, FileHash=fh, FileSize=str(fs),
                                    NarHash=gen["nar_hash"], NarSize=str(gen["nar_size"])))
    with open(os.path.join(a.out, "synth.txt"), "w") as f:
        f.write("\n".join(synth) + "\n")
    with open(os.path.join(a.out, "gen.env"), "w") as f:
        if gen:
            f.write(f"GEN_HASH_PART={gen['hash_part']}\nGEN_NAR_SIZE={gen['nar_size']}\n"
                    f"GEN_NAR_KEY={gen['nar_hash'][7:]}\n")


# ------------------------------------------------------------------------------ upstream
def cmd_upstream(a):
    from functools import partial
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    log = open(a.log, "a", buffering=1)
    lock = threading.Lock()

    class Handler(SimpleHTTPRequestHandler):
        def send_head(self):
            if self.path.endswith(".narinfo") and a.delay > 0:
                time.sleep(a.delay)
            return super().send_head()

        def log_request(self, code="-", size="-"):
            with lock:
                log.write(f"{time.time():.3f} {self.command} {self.path} {code}\n")

        def log_message(self, *args):
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 1024

    Server(("127.0.0.1", a.port), partial(Handler, directory=a.dir)).serve_forever()


# ------------------------------------------------------------------------------ clients
def http_get(host, port, path, sock=None, bufsize=1 << 18):
    """GET on a fresh connection, read to EOF. Returns (status, body_bytes)."""
    s = sock or socket.create_connection((host, port))
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
    buf = bytearray(bufsize)
    head, body, in_head = b"", 0, True
    while True:
        n = s.recv_into(buf)
        if n == 0:
            break
        if in_head:
            head += bytes(buf[:n])
            i = head.find(b"\r\n\r\n")
            if i >= 0:
                body, head, in_head = len(head) - i - 4, head[:i], False
        else:
            body += n
    s.close()
    status = int(head.split(b" ", 2)[1]) if head else 0
    return status, body


def cmd_timeget(a):
    for url in a.urls:
        u = urllib.parse.urlsplit(url)
        t = time.perf_counter()
        status, n = http_get(u.hostname, u.port, u.path)
        print(f"{status} {(time.perf_counter() - t) * 1e3:.2f} {n}", flush=True)


def cmd_fetch(a):
    u = urllib.parse.urlsplit(a.url)
    t0 = time.perf_counter()
    s = socket.create_connection((u.hostname, u.port))
    s.sendall(f"GET {u.path} HTTP/1.1\r\nHost: {u.hostname}\r\nConnection: close\r\n\r\n".encode())
    buf = bytearray(1 << 20)
    head, body, length, t_head, t_pen = b"", 0, None, None, None
    while True:
        n = s.recv_into(buf)
        if n == 0:
            break
        if t_head is None:
            head += bytes(buf[:n])
            i = head.find(b"\r\n\r\n")
            if i < 0:
                continue
            t_head = time.perf_counter()
            body, head = len(head) - i - 4, head[:i]
            for line in head.split(b"\r\n")[1:]:
                k, _, v = line.partition(b":")
                if k.strip().lower() == b"content-length":
                    length = int(v)
        else:
            body += n
        if t_pen is None and length and body >= length - 1:
            t_pen = time.perf_counter()
    t_end = time.perf_counter()
    s.close()
    status = int(head.split(b" ", 2)[1]) if head else 0
    rel = lambda t: (t if t is not None else t_end) - t0
    print(f"{status} {body} {rel(t_head):.4f} {rel(t_pen):.4f} {t_end - t0:.4f}")


def cmd_burst(a):
    u = urllib.parse.urlsplit(a.url)
    socks = [socket.create_connection((u.hostname, u.port)) for _ in range(a.n)]
    barrier = threading.Barrier(a.n + 1)
    results = [None] * a.n

    def one(i):
        barrier.wait()
        try:
            results[i] = http_get(u.hostname, u.port, u.path, sock=socks[i])
        except OSError as e:
            results[i] = (f"error: {e}", 0)

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(a.n)]
    for t in threads:
        t.start()
    t0 = time.perf_counter()
    barrier.wait()
    for t in threads:
        t.join(timeout=a.timeout)
    statuses, sizes = {}, {}
    for r in results:
        st, n = r if r else ("timeout", 0)
        statuses[str(st)] = statuses.get(str(st), 0) + 1
        sizes[str(n)] = sizes.get(str(n), 0) + 1
    print(json.dumps({"statuses": statuses, "bytes": sizes,
                      "seconds": round(time.perf_counter() - t0, 3)}))


# ------------------------------------------------------------------------------ report
def cmd_report(a):
    r = {}
    for line in open(a.results):
        if "=" in line:
            k, v = line.rstrip("\n").split("=", 1)
            r[k] = v

    def f(k):
        try:
            return float(r[k])
        except (KeyError, ValueError):
            return None

    def fmt(x, d=1):
        return "n/a" if x is None else f"{x:,.{d}f}"

    def ratio(x, y):
        return None if x is None or y in (None, 0) else x / y

    def verdict(ok):
        return "n/a" if ok is None else ("MET" if ok else "MISSED")

    rows = []

    ran = r.get("tests", "1 2 3 4 5 6 7").split()

    def row(n, what, q, ref, rat, target, ok):
        if n in ran:
            rows.append((n, what, q, ref, rat, target, verdict(ok)))

    q, n, d = f("t1_quorate_rps"), f("t1_nginx_rps"), f("t1_direct_rps")
    rt = ratio(q, n)
    row("1", "warm narinfo, 64 conns: req/s (ref: nginx proxy_cache)", fmt(q, 0), fmt(n, 0),
        fmt(rt, 2), ">= 1.50x nginx", None if rt is None else rt >= 1.5)
    row("1", "warm narinfo: upstream served directly by nginx static, req/s", "", fmt(d, 0),
        fmt(ratio(q, d), 2), "info", None)
    row("1", "warm narinfo: latency p50 ms", fmt(f("t1_quorate_p50"), 3),
        fmt(f("t1_nginx_p50"), 3), fmt(ratio(f("t1_quorate_p50"), f("t1_nginx_p50")), 2),
        "info", None)
    p99 = f("t1_quorate_p99")
    row("1", "warm narinfo: latency p99 ms", fmt(p99, 3), fmt(f("t1_nginx_p99"), 3),
        fmt(ratio(p99, f("t1_nginx_p99")), 2), "< 2 ms", None if p99 is None else p99 < 2.0)
    if "t1_pinned_quorate_rps" in r:
        q, n = f("t1_pinned_quorate_rps"), f("t1_pinned_nginx_rps")
        rt = ratio(q, n)
        row("1", "warm narinfo, pinned (server CPU 0, wrk -t1 CPU 1): req/s", fmt(q, 0),
            fmt(n, 0), fmt(rt, 2), ">= 1.50x nginx", None if rt is None else rt >= 1.5)
        row("1", "warm narinfo, pinned: latency p50 ms", fmt(f("t1_pinned_quorate_p50"), 3),
            fmt(f("t1_pinned_nginx_p50"), 3),
            fmt(ratio(f("t1_pinned_quorate_p50"), f("t1_pinned_nginx_p50")), 2), "info", None)
        p99 = f("t1_pinned_quorate_p99")
        row("1", "warm narinfo, pinned: latency p99 ms", fmt(p99, 3),
            fmt(f("t1_pinned_nginx_p99"), 3), fmt(ratio(p99, f("t1_pinned_nginx_p99")), 2),
            "< 2 ms", None if p99 is None else p99 < 2.0)
    med, mx = f("t2_median_ms"), f("t2_max_ms")
    row("2", f"cold narinfo, majority 2 of 3, upstreams 20/40/2000 ms: median ms "
        f"(min {fmt(f('t2_min_ms'))}, n={r.get('t2_n', '?')}, 200s={r.get('t2_ok', '?')})",
        fmt(med), f"{fmt(f('t2_floor_ms'))} (B alone)", fmt(ratio(med, f("t2_floor_ms")), 2),
        "<= 50 ms", None if med is None else med <= 50)
    row("2", "cold narinfo: slowest of the runs, ms", fmt(mx), "", "", "<= 50 ms",
        None if mx is None else mx <= 50)
    q, n = f("t3_quorate_mibs"), f("t3_nginx_mibs")
    rt = ratio(q, n)
    row("3", "warm NAR 100 MiB, wrk 4 conns: MiB/s (ref: nginx sendfile, same bytes)",
        fmt(q, 0), fmt(n, 0), fmt(rt, 2), ">= 1.00x nginx", None if rt is None else rt >= 1.0)
    q, n = f("t3_single_quorate_mibs"), f("t3_single_nginx_mibs")
    row("3", "warm NAR 100 MiB, one curl at a time: MiB/s (median of rounds)", fmt(q, 0),
        fmt(n, 0), fmt(ratio(q, n), 2), "info", None)
    q = f("t4_mibs")
    row("4", f"cold NAR 100 MiB from zstd upstream: MiB/s (best of {r.get('t4_runs', '?')}; "
        f"runs {r.get('t4_all', '?')}; ref: curl|zstd -d|openssl sha256, best)", fmt(q, 0),
        fmt(f("t4_pipeline_mibs"), 0), fmt(ratio(q, f("t4_pipeline_mibs")), 2), ">= 500 MiB/s",
        None if q is None else q >= 500)
    row("4", f"  same run: all but the last byte, MiB/s (then {fmt(f('t4_tail_ms'), 0)} ms "
        "until the verified, fsynced last byte)", fmt(f("t4_stream_mibs"), 0), "", "", "info",
        None)
    row("4", "  same run: MiB per quorate CPU-second (user+sys, all threads)",
        fmt(f("t4_cpu_mibs"), 0), "", "", "info", None)
    if "t4g_mibs" in r:
        q = f("t4g_mibs")
        g = r.get("gen_mib", "?")
        row("4", f"cold NAR {g} MiB (generated) from zstd upstream: MiB/s (ref: the same "
            "pipeline)", fmt(q, 0), fmt(f("t4g_pipeline_mibs"), 0),
            fmt(ratio(q, f("t4g_pipeline_mibs")), 2), ">= 500 MiB/s",
            None if q is None else q >= 500)
        row("4", f"  same run: all but the last byte, MiB/s (then {fmt(f('t4g_tail_ms'), 0)} ms "
            "until the verified, fsynced last byte)", fmt(f("t4g_stream_mibs"), 0), "", "",
            "info", None)
        row("4", "  same run: MiB per quorate CPU-second", fmt(f("t4g_cpu_mibs"), 0), "", "",
            "info", None)
    q = f("t5_rss_mib")
    row("5", f"peak RSS above idle, cold 100 MiB NAR: MiB (idle {fmt(f('t5_idle_mib'))})",
        fmt(q), "", "", "< 64 MiB", None if q is None else q < 64)
    if "t5g_rss_mib" in r:
        q = f("t5g_rss_mib")
        row("5", f"peak RSS above idle, cold {r.get('gen_mib', '?')} MiB NAR: MiB",
            fmt(q), "", "", "< 64 MiB", None if q is None else q < 64)
    if "t6b_rss_mib" in r:
        row("5", f"peak RSS above idle, {r.get('t6b_clients', '50')} concurrent cold 100 MiB NAR "
            "clients: MiB (client reads share one 64 MiB budget)",
            fmt(f("t6b_rss_mib")), "", "", "info", None)
    up = r.get("t6a_upstream_counts", "")
    ok = None if not up else all(c == "1" for c in up.split("/"))
    row("6", f"500 concurrent cold narinfo requests ({r.get('t6a_statuses', '?')}): "
        "upstream requests A/B/C", up or "n/a", "1/1/1", "", "1 each", ok)
    nf = r.get("t6b_upstream_fetches")
    row("6", f"{r.get('t6b_clients', '50')} concurrent cold NAR requests "
        f"({r.get('t6b_statuses', '?')}, "
        f"{r.get('t6b_full', '?')} complete): upstream NAR fetches", nf or "n/a", "1", "",
        "1", None if nf is None else nf == "1")
    c, w, dd = f("t7_cold_s"), f("t7_warm_s"), f("t7_direct_s")
    fastest = r.get("t7_fastest", "?")
    rt = ratio(c, dd)
    row("7", f"nix-store -r 100 MiB path, cold quorate: s, median of {r.get('t7_rounds', '?')} "
        f"(ref: straight from the fastest upstream, {fastest})", fmt(c, 2), fmt(dd, 2),
        fmt(rt, 2), "<= 1.25x direct", None if rt is None else rt <= 1.25)
    row("7", "nix-store -r 100 MiB path, warm quorate: s", fmt(w, 2), fmt(dd, 2),
        fmt(ratio(w, dd), 2), "info", None)
    for b, comp in (("A", "xz"), ("B", "zstd"), ("C", "none")):
        if f"t7_direct_{b}_s" in r:
            row("7", f"  straight from upstream {b} ({comp}) served by nginx: s", "",
                fmt(f(f"t7_direct_{b}_s"), 2), "", "info", None)

    for rate in r.get("t8_rates", "").split():
        q99, n99 = f(f"t8_quorate_{rate}_p99_ms"), f(f"t8_nginx_{rate}_p99_ms")
        row("8", f"warm narinfo at {int(rate):,} req/s, open loop: p99 ms (ref: nginx "
            f"proxy_cache; p50 {fmt(f(f't8_quorate_{rate}_p50_ms'), 3)} vs "
            f"{fmt(f(f't8_nginx_{rate}_p50_ms'), 3)}, p99.9 "
            f"{fmt(f(f't8_quorate_{rate}_p999_ms'), 3)} vs {fmt(f(f't8_nginx_{rate}_p999_ms'), 3)})",
            fmt(q99, 3), fmt(n99, 3), fmt(ratio(q99, n99), 2), "< 2 ms",
            None if q99 is None else q99 < 2.0)

    header = ("#", "measurement", "quorate", "reference", "ratio", "target", "verdict")
    widths = [max(len(str(x[i])) for x in rows + [header]) for i in range(len(header))]

    def line(x):
        return "| " + " | ".join(str(v).ljust(w) for v, w in zip(x, widths)) + " |"

    table = [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    table += [line(x) for x in rows]
    print("\n".join(table))
    if a.out:
        meta = [f"- {k[5:]}: {v}" for k, v in r.items() if k.startswith("meta_")]
        with open(a.out, "w") as out:
            out.write("# quorate benchmark results\n\n")
            out.write("Produced by `bench/run.sh` (see bench/README.md for what each row "
                      "means).\n\n")
            out.write("\n".join(meta) + "\n\n")
            out.write("\n".join(table) + "\n")
            chart = latency_chart(r, os.path.join(os.path.dirname(os.path.abspath(a.out)),
                                                  "latency.svg"))
            if chart:
                out.write("\nFixed-rate warm narinfo latency distributions (test 8; latency at "
                          "each quantile, log scale): [latency.svg](latency.svg)\n\n"
                          "![latency distributions](latency.svg)\n")
            if a.notes and os.path.exists(a.notes):
                out.write("\n" + open(a.notes).read())


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("freeports")
    s.add_argument("n", type=int)
    s = sub.add_parser("prepare")
    s.add_argument("--fixtures", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--synth", type=int, default=50)
    s.add_argument("--gen-dir")
    s.add_argument("--gen-mib", type=int, default=0)
    s = sub.add_parser("upstream")
    s.add_argument("--dir", required=True)
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--delay", type=float, default=0.0)
    s.add_argument("--log", required=True)
    s = sub.add_parser("timeget")
    s.add_argument("urls", nargs="+")
    s = sub.add_parser("fetch")
    s.add_argument("url")
    s = sub.add_parser("burst")
    s.add_argument("--url", required=True)
    s.add_argument("--n", type=int, required=True)
    s.add_argument("--timeout", type=float, default=120)
    s = sub.add_parser("report")
    s.add_argument("--results", required=True)
    s.add_argument("--out")
    s.add_argument("--notes")
    a = p.parse_args()
    globals()["cmd_" + a.cmd](a)


if __name__ == "__main__":
    main()
