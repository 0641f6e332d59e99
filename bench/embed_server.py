#!/usr/bin/env python3
"""Throughput of velad's encoder stage (docs/embeddings.md "In the server"):
texts/s of HSET with a computed vector (MODEL/SOURCE) from C concurrent
clients, each pipelining P commands at a time, against the in-process
encoder's own ceiling measured on the same texts in the same run
(`vela embed`, one process, batches of 64) — the ratio is what the server's
queueing, batching, group commit and protocol cost.

Texts: WordNet glosses (Debian wordnet-base), the first N at an even stride,
one HSET per text.

Usage: bench/embed_server.py --build build/release [--n 2000] [--clients 8]
                             [--pipeline 16] [--threads 2]
Needs `make models` (models/all-MiniLM-L6-v2) and redis-py.
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

import redis

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
MODEL = "all-MiniLM-L6-v2"


def glosses(n):
    out = []
    for pos in ("noun", "verb", "adj", "adv"):
        with open(f"/usr/share/wordnet/data.{pos}", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("  ") or "| " not in line:
                    continue
                g = line.split("| ", 1)[1].strip()
                out.append(g.split('; "')[0])
    step = max(1, len(out) // n)
    return out[::step][:n]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def inprocess(build, texts, threads, tmp):
    src = os.path.join(tmp, "texts.txt")
    with open(src, "w") as f:
        f.write("\n".join(t.replace("\n", " ") for t in texts) + "\n")
    t0 = time.perf_counter()
    subprocess.run([os.path.join(build, "vela"), "embed", "--model",
                    os.path.join(ROOT, "models", MODEL), "--threads", str(threads),
                    "--batch", "64", "--out", os.path.join(tmp, "out.npy"), src],
                   check=True, capture_output=True)
    return len(texts) / (time.perf_counter() - t0)


def server(build, texts, clients, pipeline, threads, tmp):
    port = free_port()
    p = subprocess.Popen([os.path.join(build, "velad"), "--port", str(port), "--dir",
                          os.path.join(tmp, "db"), "--model-dir", os.path.join(ROOT, "models"),
                          "--embed-threads", str(threads), "--loglevel", "warn"])
    try:
        r = redis.Redis(port=port)
        for _ in range(100):
            try:
                r.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        r.execute_command("FT.CREATE", "g", "ON", "HASH", "PREFIX", 1, "g:", "SCHEMA", "body",
                          "TEXT", "v", "VECTOR", "FLAT", 10, "TYPE", "FLOAT32", "DIM", 384,
                          "DISTANCE_METRIC", "COSINE", "MODEL", MODEL, "SOURCE", "body")
        r.execute_command("EMBED", MODEL, "TEXT", "warm up")  # the model loads once
        before = r.info("embed")

        def work(c):
            cl = redis.Redis(port=port)
            mine = range(c, len(texts), clients)
            for i in range(0, len(mine), pipeline):
                pl = cl.pipeline(transaction=False)
                for k in mine[i:i + pipeline]:
                    pl.hset(f"g:{k}", "body", texts[k])
                pl.execute()

        t0 = time.perf_counter()
        ts = [threading.Thread(target=work, args=(c,)) for c in range(clients)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        rate = len(texts) / (time.perf_counter() - t0)
        after = r.info("embed")
        assert r.hget("g:0", "v") is not None
        batches = after["embed_batches"] - before["embed_batches"]
        per_batch = (after["embed_texts"] - before["embed_texts"]) / max(1, batches)
        return rate, batches, per_batch
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=30)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build", "release"))
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--pipeline", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    if not os.path.exists(os.path.join(ROOT, "models", MODEL, "model.safetensors")):
        sys.exit("run `make models` first")
    texts = glosses(a.n)
    tmp = tempfile.mkdtemp(prefix="vela-embed-bench-")
    try:
        ceil = inprocess(a.build, texts, a.threads, tmp)
        rate, batches, per_batch = server(a.build, texts, a.clients, a.pipeline, a.threads, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"texts {len(texts)}  threads {a.threads}  clients {a.clients}  pipeline {a.pipeline}")
    print(f"in-process vela embed (batch 64): {ceil:8.1f} texts/s")
    print(f"velad HSET, computed vectors:     {rate:8.1f} texts/s  "
          f"({batches} batches, {per_batch:.1f} texts/batch)")
    print(f"ratio server / in-process: {rate / ceil:.2f}")


if __name__ == "__main__":
    main()
