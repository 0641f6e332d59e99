#!/usr/bin/env python3
"""hnswlib on the data bench_graph exports (--fvecs DIR), for the ratio
reported next to bench_graph's figures. Same sets, same queries, same
ground truth, same windows (ef), 1 and 2 threads.

Parameters: M = 16 (so layer 0 has 2M = 32 links, like R = 32),
ef_construction = 200 (like L = 200). Queries go through knn_query in one
batch with num_threads = T: a C++ loop over single queries, so Python's
per-call overhead stays out of the figure.

Usage: graph_peer.py DIR [sift synth]
"""
import sys
import time

import hnswlib
import numpy as np

WINDOWS = [10, 20, 30, 40, 60, 80, 120, 160, 200]
K = 10


def read_vecs(path, dtype):
    raw = np.fromfile(path, dtype=np.int32)
    dim = raw[0]
    return raw.reshape(-1, dim + 1)[:, 1:].view(dtype).copy()


def run(d, name):
    base = read_vecs(f"{d}/{name}_base.fvecs", np.float32)
    q = read_vecs(f"{d}/{name}_query.fvecs", np.float32)
    gt = read_vecs(f"{d}/{name}_gt.ivecs", np.int32)
    for threads in (1, 2):
        idx = hnswlib.Index(space="l2", dim=base.shape[1])
        idx.init_index(max_elements=len(base), M=16, ef_construction=200, random_seed=42)
        idx.set_num_threads(threads)
        t0 = time.perf_counter()
        idx.add_items(base, np.arange(len(base)))
        bt = time.perf_counter() - t0
        print(f"hnswlib {name} n={len(base)} dim={base.shape[1]} M=16 efC=200 "
              f"threads={threads}: build {bt:.2f} s ({len(base) / bt:.0f} vec/s)")
        print(f"  {'window':<8} {'QPS':>10} {'recall@10':>10}")
        for ef in WINDOWS:
            idx.set_ef(max(ef, K))
            done, t0 = 0, time.perf_counter()
            while done == 0 or time.perf_counter() - t0 < 0.3:
                labels, _ = idx.knn_query(q, k=K, num_threads=threads)
                done += len(q)
            qps = done / (time.perf_counter() - t0)
            rec = np.mean([len(set(labels[i]) & set(gt[i])) / K for i in range(len(q))])
            print(f"  {ef:<8} {qps:10.0f} {rec:10.4f}")
        sys.stdout.flush()


if __name__ == "__main__":
    for n in sys.argv[2:] or ["sift", "synth"]:
        run(sys.argv[1], n)
