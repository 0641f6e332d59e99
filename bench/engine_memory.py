#!/usr/bin/env python3
"""Memory of a vector field in the engine, per compression (issue 4's memory
target measured in velad, not only in the index structures).

One velad per configuration, each on a fresh database: the same base vectors
(an .fvecs file, the first --n rows) are HSET into one SVS-VAMANA field with
GRAPH_MAX_DEGREE --degree, the build is awaited (INFO graph_builds_pending), then
FT.INFO's per-field `memory` (vela_field_memory: vectors + codes + graph) and
the growth of the process's RssAnon from just after FT.CREATE (heap; LMDB's
pages are file-backed and not in it) are read, and the slowest of the
searches a second connection sends every 20 ms meanwhile. The ratio column divides by the uncompressed field with the same graph
degree, measured in the same run. A recall check (20 queries of the same file
against a float64 brute force) shows the field still answers.

  bench/engine_memory.py --build build/release --base /work/cache/ann/clu768-200k/base.fvecs \
      --n 50000 --degree 32
"""
import argparse
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time

import numpy as np
import redis
from redis.commands.search.query import Query

CONFIGS = ["none", "LVQ8", "LVQ4x8", "LeanVec4x8", "LVQ4"]


def fvecs(path, n):
    a = np.fromfile(path, dtype=np.int32, count=-1)
    d = int(a[0])
    a = a.reshape(-1, d + 1)[:n, 1:]
    return np.ascontiguousarray(a).view(np.float32)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_anon_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    return -1


def field_memory(r, index):
    info = r.execute_command("FT.INFO", index)  # redis-py makes a dict of it
    attrs = info.get("attributes", info.get(b"attributes"))
    a = [x.decode() if isinstance(x, bytes) else x for x in attrs[0]]
    return int(a[a.index("memory") + 1])


def run(build, X, comp, degree, tmp):
    port = free_port()
    d = os.path.join(tmp, comp)
    p = subprocess.Popen([os.path.join(build, "velad"), "--port", str(port), "--dir", d,
                          "--loglevel", "warn"])
    try:
        r = redis.Redis(port=port)
        for _ in range(200):
            try:
                r.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        params = ["TYPE", "FLOAT32", "DIM", X.shape[1], "DISTANCE_METRIC", "L2",
                  "GRAPH_MAX_DEGREE", degree]
        if comp != "none":
            params += ["COMPRESSION", comp, "TRAINING_THRESHOLD", min(10240, len(X))]
        r.execute_command("FT.CREATE", "g", "ON", "HASH", "PREFIX", 1, "d:", "SCHEMA", "v",
                          "VECTOR", "SVS-VAMANA", len(params), *params)
        rss0 = rss_anon_kib(p.pid)
        # A search every 20 ms on its own connection while the vectors load
        # and the graph builds: the longest one shows whether training and
        # the build's install held searches up.
        stop, lat = threading.Event(), []

        def prober():
            c = redis.Redis(port=port)
            q = X[0].tobytes()
            while not stop.is_set():
                t = time.perf_counter()
                c.ft("g").search(Query("*=>[KNN 10 @v $q]").no_content().dialect(2),
                                 query_params={"q": q})
                lat.append(time.perf_counter() - t)
                time.sleep(0.02)

        th = threading.Thread(target=prober)
        th.start()
        t0 = time.perf_counter()
        for s in range(0, len(X), 1000):
            pipe = r.pipeline(transaction=False)
            for i in range(s, min(s + 1000, len(X))):
                pipe.hset(f"d:{i}", "v", X[i].tobytes())
            pipe.execute()
        while True:
            pend = r.info("persistence").get("graph_builds_pending", 0)
            if int(pend) == 0:
                break
            time.sleep(0.5)
        secs = time.perf_counter() - t0
        stop.set()
        th.join()
        mem = field_memory(r, "g")
        rss = rss_anon_kib(p.pid) - rss0
        rng = np.random.default_rng(7)
        hit = 0
        for qi in rng.integers(0, len(X), 20):
            q = X[qi] + rng.normal(size=X.shape[1]).astype(np.float32) * 0.01
            res = r.ft("g").search(Query("*=>[KNN 10 @v $q]").no_content().dialect(2),
                                   query_params={"q": q.astype(np.float32).tobytes()})
            got = {int(doc.id[2:]) for doc in res.docs}
            dd = ((X.astype(np.float64) - q.astype(np.float64)) ** 2).sum(1)
            hit += len(got & set(np.argsort(dd, kind="stable")[:10].tolist()))
        return mem, rss, secs, hit / 200, max(lat), len(lat)
    finally:
        p.terminate()
        p.wait()
        shutil.rmtree(d, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default="build/release")
    ap.add_argument("--base", required=True)
    ap.add_argument("--n", type=int, default=50000)
    ap.add_argument("--degree", type=int, default=32)
    ap.add_argument("--configs", default=",".join(CONFIGS))
    a = ap.parse_args()
    X = fvecs(a.base, a.n)
    print(f"{len(X)} x {X.shape[1]} from {a.base}, GRAPH_MAX_DEGREE {a.degree}; "
          f"F32 vectors alone: {X.nbytes / 2**20:.1f} MiB", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for comp in a.configs.split(","):
            mem, rss, secs, rec, worst, nprobe = run(a.build, X, comp, a.degree, tmp)
            rows.append((comp, mem, rss, secs, rec, worst))
            print(f"  {comp:<11} field {mem / 2**20:8.1f} MiB  RssAnon +{rss / 1024:8.1f} MiB  "
                  f"load+build {secs:6.1f} s  recall@10 {rec:.3f}  slowest of {nprobe} "
                  f"searches meanwhile {worst * 1e3:.0f} ms", flush=True)
    base = next((r for r in rows if r[0] == "none"), None)
    print("\n| compression | field memory (MiB) | vs F32 + graph | velad RssAnon growth (MiB) "
          "| vs F32 + graph | load + build (s) | recall@10 (20 q) | slowest search during it (ms) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for comp, mem, rss, secs, rec, worst in rows:
        rm = f"{mem / base[1]:.2f}x" if base else "-"
        rr = f"{rss / base[2]:.2f}x" if base else "-"
        print(f"| {comp} | {mem / 2**20:.1f} | {rm} | {rss / 1024:.1f} | {rr} | {secs:.1f} "
              f"| {rec:.3f} | {worst * 1e3:.0f} |")


if __name__ == "__main__":
    main()
