#!/usr/bin/env python3
"""bench/ann: vela against the ANN libraries on PyPI (index issue, item 4).

README
======

What it does
------------
1. ``data``: builds each dataset once into a cache directory (default
   /work/cache/ann, or $ANN_CACHE, or --cache; never committed), as
   .fvecs/.ivecs, with exact top-100 ground truth (numpy float32 matmul in
   blocks for the candidates, the top 200 re-scored in float64).
2. ``run``: per dataset, vela first (bench_graph in file mode, one build per
   compression with all the machine's threads, searched at each --threads
   count), then every peer, each in its own process; `uptime` is logged
   before and after each library. Raw JSON: bench/results/ann/<set>/<lib>.json.
3. ``report.py``: one PNG per (dataset, query set, threads) and markdown
   tables (QPS at recall@10 = 0.90 / 0.95, ratios, build time, bytes/vector).

Datasets (all L2; queries 1,000 unless said)
--------------------------------------------
* ``sift-5k``: ../shared/data/sift-5k.tsv (real SIFT; 128 floats and an id
  per line). Rows 0..4899 are the base, 4900..4999 the 100 queries, as
  bench_graph's built-in mode reads it.
* ``clu128-1m`` (1,000,000 x 128) and ``clu768-200k`` (200,000 x 768), and
  with --scale small ``clu128-50k`` / ``clu768-20k``: the clustered
  generator below, seed 20261127 (numpy PCG64), fully deterministic.
* ``wordnet`` (when /work/main/data/wordnet exists, from `make wordnet`):
  117,659 all-MiniLM-L6-v2 gloss vectors (384-d), queries are short phrases
  (words/lemmas) embedded by the same model: a real text-to-text set whose
  queries are shorter than and differently distributed from the glosses.
  Vectors are normalised, so L2 ranks as cosine. Queries 0..499 are the
  LeanVec-OOD training sample, 500..999 (500) are measured ("phrase").

The clustered generator (``gen_clustered``)
-------------------------------------------
Real embeddings have a decaying spectrum (a few directions carry most of the
variance) and cluster structure, which isotropic Gaussians lack (PCA, hence
LeanVec, would be meaningless on them). So, in dimension D:

* 1,000 cluster centres mu_k ~ N(0, I_D); a point of cluster k (k uniform)
  is the latent y = mu_k + z, z ~ N(0, I_D);
* spectrum w_j = (j + 1)^-0.5 (j = 0..D-1), scaled so that sum w_j^2 = D:
  the first D/2 directions hold ~90 % (768-d) / ~87 % (128-d) of the energy;
* a fixed random rotation R (QR of a Gaussian D x D matrix):
  base vector x = R (w * y).
* ID queries: drawn exactly like the base (fresh y).
* OOD queries: q = R (s * y) + e with a fresh y from the same clusters,
  s_j = w_{D-1-j} (the spectrum reversed) and isotropic noise
  e ~ N(0, 0.1^2 * mean(s^2) I). That is a fixed linear map
  M = R diag(s / w) R^T applied to a base-distributed point, plus noise:
  queries and base share the clusters (the neighbours of q are still the
  points of its cluster, since <q, x> weighs direction j by s_j w_j > 0),
  but the query energy sits in the directions where the base has the LEAST
  variance. The second-moment matrices E[q q^T] and E[x x^T] differ, which
  is what makes a text-to-image workload out-of-distribution (LeanVec
  paper, §1.1 of reference/leanvec-lvq.md): a PCA of the base (LeanVec-ID)
  keeps the directions the queries barely use; LeanVec-OOD, trained on a
  query sample, can keep the ones that matter to <q, x>.
* ``ood_train.fvecs``: 5,000 more OOD queries drawn the same way with other
  random numbers, for bench_graph --ood-train (never measured).

vela (bench_graph, build once with all threads)
-----------------------------------------------
``bench_graph --base B --queries Q1,Q2 --gt G1,G2 --names id,ood --compression
F32,LVQ8,... [--ood-train T] --threads 1,2 --windows ... --json OUT``.
R = 32, L = 200 (the defaults); search: one query per call per thread
(T threads, each its share of the queries), the re-rank buffer is the window,
OpenBLAS set to 1 thread while searching (LeanVec projects each query with
a BLAS sgemv; with OpenBLAS' default pool, T concurrent searches were ~10x
slower on the 2-core machine -- an engine issue reported, not hidden).
The graph is built on the same compressed encoding it is searched with.

Peers (bench-only venv /work/cache/annvenv: python3 -m venv, then pip install
numpy matplotlib hnswlib faiss-cpu usearch scalable-vs)
---------------------------------------------------------------------------
Built with all the machine's threads; searched at T threads with the thread
count set explicitly per library. Every peer gets the 1,000 queries in ONE
batched call with T threads (each library parallelises over queries, one
query at a time per thread, like vela's loop but without Python overhead):
* hnswlib: M 16, ef_construction 200, sweep ef (knn_query, num_threads=T).
* faiss HNSW: IndexHNSWFlat M 32, efConstruction 80 (40 is faiss' default),
  sweep efSearch; faiss.omp_set_num_threads(T).
* faiss IVF-PQ fast-scan: index_factory "IVF{nlist},PQ{D/2}x4fs,Refine(SQ8)"
  (nlist ~ 4 sqrt(n), 4-bit PQ with D/2 sub-quantisers, re-ranked with an
  8-bit scalar quantiser, k_factor 4), sweep nprobe. Fast-scan is at its best
  with batched queries: batched here as for all peers.
* usearch: connectivity 16, expansion_add 200, f32 and i8 (the vectors are
  scaled by 1 / max|x| into [-1, 1] first, since usearch casts f32 to i8 as
  round(127 x); L2 ranking is unchanged by the scaling), sweep
  expansion_search; search(threads=T).
* scalable-vs (Intel SVS): Vamana R 32, L 200, alpha 1.2 on F32, sweep
  search_window_size; num_threads = T. Its LVQ/LeanVec loaders are tried
  in a child process, and what they print is recorded.
Bytes per vector: the size of the serialised index / n (hnswlib save_index,
faiss write_index, usearch save, svs save), i.e. vectors + graph (+ ids),
not the process's memory (usearch's memory_usage, which counts preallocated
capacity, is noted next to it).

ANN_USEARCH_DTYPES=f32 limits usearch to f32 (used on clu128-1m for time).

Commands (all from the repository root)
---------------------------------------
  python3 -m venv /work/cache/annvenv
  /work/cache/annvenv/bin/pip install numpy matplotlib hnswlib faiss-cpu usearch scalable-vs
  cmake -S . -B build/h2rel -DCMAKE_BUILD_TYPE=Release
  cmake --build build/h2rel --target bench_graph -j2
  PY=/work/cache/annvenv/bin/python
  $PY bench/ann/ann.py data --sets sift-5k,clu768-200k,clu128-1m
  $PY bench/ann/ann.py run --sets sift-5k,clu768-200k --threads 1,2
  $PY bench/ann/ann.py run --sets clu128-1m --threads 1,2 --vela F32,LVQ8,LVQ4x8 --qsets id
  $PY bench/ann/report.py plot      # PNGs into bench/results/ann/
  $PY bench/ann/report.py table     # markdown on stdout
Small validation: the same with --scale small (clu128-50k, clu768-20k).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
RESULTS = os.path.join(ROOT, "bench", "results", "ann")
SIFT = os.path.abspath(os.path.join(ROOT, "..", "shared", "data", "sift-5k.tsv"))
WORDNET = os.path.join(ROOT, "data", "wordnet")
SEED = 20261127
K = 10
GT_K = 100
NQ = 1000
N_OOD_TRAIN = 5000

SIZES = {  # name: (n, dim)
    "clu128-1m": (1_000_000, 128), "clu768-200k": (200_000, 768),
    "clu128-50k": (50_000, 128), "clu768-20k": (20_000, 768),
}
SWEEP = [10, 15, 20, 30, 40, 60, 80, 120, 160, 200, 300, 400]
NPROBE = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256]
STOP_RECALL = 0.999
PEERS = ["hnswlib", "faiss-hnsw", "faiss-ivfpqfs", "usearch", "svs"]


def cache_dir(args):
    return args.cache or os.environ.get("ANN_CACHE", "/work/cache/ann")


# ------------------------------------------------------------ .fvecs / .ivecs

def write_vecs(path, a):
    a = np.ascontiguousarray(a)
    n, d = a.shape
    out = np.empty((n, d + 1), dtype=np.int32)
    out[:, 0] = d
    out[:, 1:] = a.view(np.int32)
    out.tofile(path + ".tmp")
    os.replace(path + ".tmp", path)


def read_vecs(path, dtype=np.float32):
    raw = np.fromfile(path, dtype=np.int32)
    d = raw[0]
    return raw.reshape(-1, d + 1)[:, 1:].copy().view(dtype)


# ------------------------------------------------------------ ground truth

def exact_topk(base, q, k=GT_K, cand=200, block=65536):
    """Exact L2 top-k: float32 matmul in blocks for top-`cand` candidates,
    then the candidates re-scored in float64 and sorted."""
    nq = len(q)
    cand = min(cand, len(base))
    best_d = np.full((nq, 0), np.inf, dtype=np.float32)
    best_i = np.zeros((nq, 0), dtype=np.int64)
    for s in range(0, len(base), block):
        b = base[s:s + block]
        d = (b * b).sum(1)[None, :] - 2.0 * (q @ b.T)
        c = min(cand, d.shape[1])
        part = np.argpartition(d, c - 1, axis=1)[:, :c]
        best_d = np.concatenate([best_d, np.take_along_axis(d, part, 1)], 1)
        best_i = np.concatenate([best_i, part + s], 1)
        if best_d.shape[1] > cand:
            keep = np.argpartition(best_d, cand - 1, axis=1)[:, :cand]
            best_d = np.take_along_axis(best_d, keep, 1)
            best_i = np.take_along_axis(best_i, keep, 1)
    q64 = q.astype(np.float64)
    out = np.empty((nq, k), dtype=np.int32)
    for i in range(nq):
        ids = best_i[i]
        diff = base[ids].astype(np.float64) - q64[i]
        d = (diff * diff).sum(1)
        order = np.lexsort((ids, d))[:k]
        out[i] = ids[order]
    return out


# ------------------------------------------------------------ generators

def gen_clustered(n, dim, seed=SEED, nc=1000):
    """Base, ID queries, OOD queries, OOD training queries (see README)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((nc, dim)).astype(np.float32)
    rot, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    rot = rot.astype(np.float32)
    w = (np.arange(dim) + 1.0) ** -0.5
    w = (w * np.sqrt(dim / (w * w).sum())).astype(np.float32)
    s = w[::-1].copy()

    def latent(m, r):
        y = centres[r.integers(0, nc, m)]
        return y + r.standard_normal((m, dim), dtype=np.float32)

    def draw(m, r, spec, noise=0.0):
        out = np.empty((m, dim), dtype=np.float32)
        for a in range(0, m, 100_000):
            b = min(m, a + 100_000)
            v = (latent(b - a, r) * spec) @ rot.T
            if noise:
                v += noise * r.standard_normal(v.shape, dtype=np.float32)
            out[a:b] = v
        return out

    rb, rq, ro, rt = (np.random.default_rng([seed, i]) for i in (1, 2, 3, 4))
    base = draw(n, rb, w)
    q_id = draw(NQ, rq, w)
    noise = 0.1 * float(np.sqrt((s * s).mean()))
    q_ood = draw(NQ, ro, s, noise)
    q_train = draw(N_OOD_TRAIN, rt, s, noise)
    return base, q_id, q_ood, q_train


def load_sift():
    rows = np.loadtxt(SIFT, dtype=np.float32)
    v = np.ascontiguousarray(rows[:, :128])
    return v[:4900].copy(), v[4900:5000].copy()


def load_wordnet():
    base = np.load(os.path.join(WORDNET, "gloss.npy")).astype(np.float32)
    q = np.load(os.path.join(WORDNET, "queries.npy")).astype(np.float32)
    base /= np.maximum(np.linalg.norm(base, axis=1, keepdims=True), 1e-30)
    q /= np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-30)
    return base, q[500:].copy(), q[:500].copy()


def build_set(name, root):
    d = os.path.join(root, name)
    if os.path.exists(os.path.join(d, "meta.json")):
        print(f"{name}: cached in {d}")
        return
    os.makedirs(d, exist_ok=True)
    t0 = time.time()
    qsets = {}
    train = None
    if name == "sift-5k":
        base, q = load_sift()
        qsets["id"] = q
        desc = "sift-5k.tsv rows 0..4899 base, 4900..4999 queries"
    elif name == "wordnet":
        base, q, train = load_wordnet()
        qsets["phrase"] = q
        desc = "data/wordnet gloss vectors (normalised), queries 500..999; 0..499 = OOD train"
    else:
        n, dim = SIZES[name]
        base, q_id, q_ood, train = gen_clustered(n, dim)
        qsets["id"] = q_id
        qsets["ood"] = q_ood
        desc = f"gen_clustered(n={n}, dim={dim}, seed={SEED})"
    write_vecs(os.path.join(d, "base.fvecs"), base)
    if train is not None:
        write_vecs(os.path.join(d, "ood_train.fvecs"), train)
    for qn, q in qsets.items():
        t1 = time.time()
        gt = exact_topk(base, q)
        write_vecs(os.path.join(d, f"query_{qn}.fvecs"), q)
        write_vecs(os.path.join(d, f"gt_{qn}.ivecs"), gt)
        print(f"{name}: ground truth {qn} ({len(q)} queries) {time.time() - t1:.1f} s")
    meta = {"name": name, "n": int(len(base)), "dim": int(base.shape[1]), "metric": "L2",
            "queries": {k: int(len(v)) for k, v in qsets.items()}, "gt_k": GT_K,
            "ood_train": int(len(train)) if train is not None else 0,
            "description": desc, "seconds": round(time.time() - t0, 1)}
    with open(os.path.join(d, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    print(f"{name}: built in {time.time() - t0:.1f} s -> {d}")


def load_set(root, name):
    d = os.path.join(root, name)
    with open(os.path.join(d, "meta.json")) as f:
        meta = json.load(f)
    return d, meta


# ------------------------------------------------------------ peers

def timed_search(fn, nq, min_s=0.3):
    """Call fn() (one batched search of all nq queries) until min_s has
    passed; QPS over all calls, and the last result."""
    done, t0 = 0, time.perf_counter()
    res = None
    while done == 0 or time.perf_counter() - t0 < min_s:
        res = fn()
        done += nq
    return done / (time.perf_counter() - t0), res


def recall_at(labels, gt):
    labels = np.asarray(labels)[:, :K]
    g = gt[:, :K]
    hits = sum(len(set(labels[i].tolist()) & set(g[i].tolist())) for i in range(len(g)))
    return hits / (len(g) * K)


def file_bytes(path):
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(a, f)) for a, _, fs in os.walk(path) for f in fs)
    return os.path.getsize(path)


def peer_sweep(cfg, qsets, threads, params, search, set_threads):
    for qn, (q, gt) in qsets.items():
        for t in threads:
            set_threads(t)
            for p in params:
                qps, lab = timed_search(lambda: search(q, p, t), len(q))
                rec = recall_at(lab, gt)
                cfg["points"].append({"queries": qn, "threads": t, "param": p,
                                      "qps": round(qps, 1), "recall": round(rec, 5)})
                print(f"  {cfg['config']} {qn} T={t} {cfg['param_name']}={p}: "
                      f"{qps:10.0f} QPS recall {rec:.4f}", flush=True)
                if rec >= STOP_RECALL:
                    break


def run_peer(lib, d, meta, threads, nbuild, tmp, only=None):
    base = read_vecs(os.path.join(d, "base.fvecs"))
    qsets = {qn: (read_vecs(os.path.join(d, f"query_{qn}.fvecs")),
                  read_vecs(os.path.join(d, f"gt_{qn}.ivecs"), np.int32))
             for qn in meta["queries"] if only is None or qn in only}
    n, dim = base.shape
    configs = []
    from importlib.metadata import version
    pkg = {"hnswlib": "hnswlib", "faiss-hnsw": "faiss-cpu", "faiss-ivfpqfs": "faiss-cpu",
           "usearch": "usearch", "svs": "scalable-vs"}[lib]
    versions = {pkg: version(pkg), "numpy": version("numpy")}

    def new_cfg(name, pname, build_s, bpv, note):
        c = {"config": name, "param_name": pname, "build_s": round(build_s, 3),
             "build_threads": nbuild, "bytes_per_vector": round(bpv, 2),
             "bytes_note": note, "points": []}
        configs.append(c)
        print(f"{lib} {meta['name']} {name}: build {build_s:.1f} s ({nbuild} threads), "
              f"{bpv:.1f} B/vector ({note})", flush=True)
        return c

    search_note = "one batched call of all queries with T threads (parallel over queries)"
    if lib == "hnswlib":
        import hnswlib
        idx = hnswlib.Index(space="l2", dim=dim)
        idx.init_index(max_elements=n, M=16, ef_construction=200, random_seed=42)
        idx.set_num_threads(nbuild)
        t0 = time.perf_counter()
        idx.add_items(base, np.arange(n), num_threads=nbuild)
        bt = time.perf_counter() - t0
        p = os.path.join(tmp, "h.bin")
        idx.save_index(p)
        bpv = file_bytes(p) / n
        os.unlink(p)
        cfg = new_cfg("hnswlib M16 efC200", "ef", bt, bpv, "save_index file size / n")

        def search(q, ef, t):
            idx.set_ef(max(ef, K))
            return idx.knn_query(q, k=K, num_threads=t)[0]
        peer_sweep(cfg, qsets, threads, SWEEP, search, lambda t: None)
    elif lib in ("faiss-hnsw", "faiss-ivfpqfs"):
        import faiss
        faiss.omp_set_num_threads(nbuild)
        t0 = time.perf_counter()
        if lib == "faiss-hnsw":
            idx = faiss.IndexHNSWFlat(dim, 32)
            idx.hnsw.efConstruction = 80
            idx.add(base)
            name, pname, params = "faiss HNSWFlat M32 efC80", "efSearch", SWEEP

            def search(q, ef, t):
                idx.hnsw.efSearch = max(ef, K)
                return idx.search(q, K)[1]
        else:
            nlist = int(2 ** round(np.log2(4 * np.sqrt(n))))
            m = dim // 2
            idx = faiss.index_factory(dim, f"IVF{nlist},PQ{m}x4fs,Refine(SQ8)")
            rng = np.random.default_rng(1)
            tr = base[rng.choice(n, min(n, max(100_000, 64 * nlist)), replace=False)]
            idx.train(tr)
            idx.add(base)
            ivf = faiss.extract_index_ivf(idx)
            idx.k_factor = 4
            name, pname = f"faiss IVF{nlist},PQ{m}x4fs,Refine(SQ8) k_factor 4", "nprobe"
            params = [p for p in NPROBE if p <= nlist]

            def search(q, npb, t):
                ivf.nprobe = npb
                return idx.search(q, K)[1]
        bt = time.perf_counter() - t0
        p = os.path.join(tmp, "f.index")
        faiss.write_index(idx, p)
        bpv = file_bytes(p) / n
        os.unlink(p)
        cfg = new_cfg(name, pname, bt, bpv, "write_index file size / n")
        peer_sweep(cfg, qsets, threads, params, search, faiss.omp_set_num_threads)
    elif lib == "usearch":
        from usearch.index import Index
        for dt in os.environ.get("ANN_USEARCH_DTYPES", "f32,i8").split(","):
            scale = 1.0 if dt == "f32" else 1.0 / float(np.abs(base).max())
            idx = Index(ndim=dim, metric="l2sq", dtype=dt, connectivity=16, expansion_add=200)
            t0 = time.perf_counter()
            idx.add(np.arange(n), base * scale if dt == "i8" else base, threads=nbuild)
            bt = time.perf_counter() - t0
            p = os.path.join(tmp, "u.usearch")
            idx.save(p)
            bpv = file_bytes(p) / n
            os.unlink(p)
            cfg = new_cfg(f"usearch {dt} conn16 expA200", "expansion_search", bt, bpv,
                          f"save() file size / n (memory_usage / n = {idx.memory_usage / n:.0f})")
            qs = {qn: (q * scale, gt) for qn, (q, gt) in qsets.items()}

            def search(q, ef, t, idx=idx):
                idx.expansion_search = max(ef, K)
                return idx.search(q, K, threads=t).keys
            peer_sweep(cfg, qs, threads, SWEEP, search, lambda t: None)
            del idx
    elif lib == "svs":
        import svs
        bp = svs.VamanaBuildParameters(graph_max_degree=32, window_size=200, alpha=1.2)
        t0 = time.perf_counter()
        idx = svs.Vamana.build(bp, base, svs.DistanceType.L2, num_threads=nbuild)
        bt = time.perf_counter() - t0
        p = os.path.join(tmp, "svs")
        for sub in ("config", "graph", "data"):
            os.makedirs(os.path.join(p, sub))
        idx.save(p + "/config", p + "/graph", p + "/data")
        bpv = file_bytes(p) / n
        shutil.rmtree(p)
        cfg = new_cfg("svs Vamana F32 R32 L200", "search_window_size", bt, bpv,
                      "save() directory size / n")

        def set_t(t):
            idx.num_threads = t

        def search(q, w, t):
            idx.search_window_size = max(w, K)
            return idx.search(q, K)[0]
        peer_sweep(cfg, qsets, threads, SWEEP, search, set_t)
        # LVQ / LeanVec: in a child (the library exits the process on non-Intel CPUs).
        for kind in ("LVQ8", "LVQ4x8", "LeanVec4x8"):
            r = subprocess.run([sys.executable, __file__, "svs-compressed", d, kind,
                                str(nbuild)], capture_output=True, text=True, timeout=1800)
            msg = (r.stdout + r.stderr).strip()[-600:]
            configs.append({"config": f"svs {kind}", "refused": r.returncode != 0,
                            "returncode": r.returncode, "output": msg, "points": []})
            print(f"svs {kind}: rc {r.returncode}: {msg}", flush=True)
    return {"dataset": meta["name"], "library": lib, "versions": versions,
            "search": search_note, "configs": configs}


def svs_compressed(d, kind, nbuild):
    """Try SVS LVQ/LeanVec on the base (prints what happens; child process)."""
    import svs
    loader = svs.VectorDataLoader(os.path.join(d, "base.fvecs"), svs.DataType.float32)
    if kind == "LVQ8":
        data = svs.LVQLoader(loader, primary=8)
    elif kind == "LVQ4x8":
        data = svs.LVQLoader(loader, primary=4, residual=8)
    else:
        dim = read_vecs(os.path.join(d, "base.fvecs")).shape[1]
        data = svs.LeanVecLoader(loader, dim // 2, primary_kind=svs.LeanVecKind.lvq4,
                                 secondary_kind=svs.LeanVecKind.lvq8)
    bp = svs.VamanaBuildParameters(graph_max_degree=32, window_size=200, alpha=1.2)
    t0 = time.perf_counter()
    svs.Vamana.build(bp, data, svs.DistanceType.L2, num_threads=nbuild)
    print(f"built {kind} in {time.perf_counter() - t0:.1f} s")


def recover(logp, setname, lib, out, threads):
    """Rebuild a peer's JSON from its log (a child killed before writing it):
    the configurations whose build line and sweep lines were printed."""
    import re
    from importlib.metadata import version
    pkg = {"hnswlib": "hnswlib", "faiss-hnsw": "faiss-cpu", "faiss-ivfpqfs": "faiss-cpu",
           "usearch": "usearch", "svs": "scalable-vs"}[lib]
    b_re = re.compile(r"^\S+ \S+ (.+): build ([\d.]+) s \((\d+) threads\), ([\d.]+) "
                      r"B/vector \((.+)\)$")
    p_re = re.compile(r"^  (.+) (\w+) T=(\d+) (\w+)=(\d+):\s+([\d.]+) QPS recall ([\d.]+)$")
    configs = {}
    for line in open(logp):
        m = b_re.match(line.rstrip("\n"))
        if m:
            configs[m[1]] = {"config": m[1], "build_s": float(m[2]),
                             "build_threads": int(m[3]), "bytes_per_vector": float(m[4]),
                             "bytes_note": m[5], "points": []}
            continue
        m = p_re.match(line.rstrip("\n"))
        if m and m[1] in configs:
            c = configs[m[1]]
            c["param_name"] = m[4]
            c["points"].append({"queries": m[2], "threads": int(m[3]), "param": int(m[5]),
                                "qps": float(m[6]), "recall": float(m[7])})
    res = {"dataset": setname, "library": lib, "versions": {pkg: version(pkg)},
           "search": "one batched call of all queries with T threads (parallel over queries)",
           "recovered_from_log": os.path.basename(logp), "threads": threads,
           "configs": list(configs.values())}
    with open(out, "w") as f:
        json.dump(res, f, indent=1)
    for c in res["configs"]:
        print(f"{c['config']}: {len(c['points'])} points")


# ------------------------------------------------------------ driver

def uptime():
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def log_load(setname, what, phase):
    os.makedirs(RESULTS, exist_ok=True)
    line = f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {setname} {what} {phase}: {uptime()}"
    print(line, flush=True)
    with open(os.path.join(RESULTS, "load.log"), "a") as f:
        f.write(line + "\n")


def run_vela(args, d, meta, out):
    binary = args.bench_graph
    qn = [q for q in meta["queries"] if args.qsets is None or q in args.qsets.split(",")]
    comp = args.vela
    if "ood" not in qn and meta.get("ood_train", 0) == 0:
        comp = ",".join(c for c in comp.split(",") if not c.endswith("-OOD"))
    cmd = [binary, "--base", os.path.join(d, "base.fvecs"),
           "--queries", ",".join(os.path.join(d, f"query_{q}.fvecs") for q in qn),
           "--gt", ",".join(os.path.join(d, f"gt_{q}.ivecs") for q in qn),
           "--names", ",".join(qn), "--name", meta["name"], "--compression", comp,
           "--threads", args.threads, "--windows", ",".join(map(str, SWEEP)),
           "--stop-recall", str(STOP_RECALL), "--json", out + ".raw"]
    if meta.get("ood_train", 0) and "-OOD" in comp:
        cmd += ["--ood-train", os.path.join(d, "ood_train.fvecs")]
    print(" ".join(cmd), flush=True)
    logp = os.path.join(cache_dir(args), "logs", f"{meta['name']}_vela.log")
    os.makedirs(os.path.dirname(logp), exist_ok=True)
    with open(logp, "w") as lf:
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in p.stdout:
            sys.stdout.write(line)
            lf.write(line)
        rc = p.wait()
    raw = open(out + ".raw").read()
    if rc != 0 and not raw.rstrip().endswith("]"):
        raw = raw.rstrip().rstrip(",") + ("\n  ]}\n]" if raw.rstrip().endswith("}") else "]")
    cfgs = json.loads(raw)
    for c in cfgs:
        for pt in c["points"]:
            pt["param"] = pt.pop("window")
        c["param_name"] = "window"
    os.unlink(out + ".raw")
    with open(out, "w") as f:
        json.dump({"dataset": meta["name"], "library": "vela", "versions": {"vela": git_rev()},
                   "search": "one query per graph_search call, T threads each its share",
                   "returncode": rc, "configs": cfgs}, f, indent=1)


def git_rev():
    r = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                       capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--", "index", "quant"],
                           capture_output=True, text=True).stdout.strip()
    return r.stdout.strip() + ("+uncommitted index/quant edits" if dirty else "")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("cmd", choices=["data", "run", "peer", "svs-compressed", "recover"])
    ap.add_argument("rest", nargs="*")
    ap.add_argument("--cache")
    ap.add_argument("--sets", default="sift-5k,clu768-200k,clu128-1m")
    ap.add_argument("--scale", choices=["full", "small"], default="full")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--build-threads", type=int, default=os.cpu_count())
    ap.add_argument("--vela", default="F32,LVQ8,LVQ4x8,LeanVec4x8,LeanVec4x8-OOD")
    ap.add_argument("--peers", default=",".join(PEERS))
    ap.add_argument("--bench-graph", default=os.path.join(ROOT, "build", "h2rel", "bench_graph"))
    ap.add_argument("--out", default=RESULTS)
    ap.add_argument("--qsets", help="query sets to measure (default: all of the set's)")
    args = ap.parse_args()
    root = cache_dir(args)
    sets = args.sets.split(",")
    if args.scale == "small":
        sets = [{"clu128-1m": "clu128-50k", "clu768-200k": "clu768-20k"}.get(s, s) for s in sets]
    if args.cmd == "svs-compressed":
        svs_compressed(args.rest[0], args.rest[1], int(args.rest[2]))
        return
    if args.cmd == "data":
        for s in sets:
            if s == "wordnet" and not os.path.isdir(WORDNET):
                print("wordnet: data/wordnet missing (make wordnet): skipped")
                continue
            build_set(s, root)
        return
    threads = [int(t) for t in args.threads.split(",")]
    if args.cmd == "recover":  # ann.py recover LOG SET LIB
        recover(args.rest[0], args.rest[1], args.rest[2],
                os.path.join(args.out, args.rest[1], f"{args.rest[2]}.json"), threads)
        return
    if args.cmd == "peer":  # child: ann.py peer LIB SET
        lib, s = args.rest
        d, meta = load_set(root, s)
        tmp = tempfile.mkdtemp(dir=root)
        try:
            res = run_peer(lib, d, meta, threads, args.build_threads, tmp,
                           args.qsets.split(",") if args.qsets else None)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        res["threads"] = threads
        with open(os.path.join(args.out, s, f"{lib}.json"), "w") as f:
            json.dump(res, f, indent=1)
        return
    for s in sets:  # run
        build_set(s, root)
        d, meta = load_set(root, s)
        os.makedirs(os.path.join(args.out, s), exist_ok=True)
        if args.vela:
            log_load(s, "vela", "start")
            run_vela(args, d, meta, os.path.join(args.out, s, "vela.json"))
            log_load(s, "vela", "end")
        for lib in [p for p in args.peers.split(",") if p]:
            log_load(s, lib, "start")
            cmd = [sys.executable, __file__, "peer", lib, s, "--threads", args.threads,
                   "--build-threads", str(args.build_threads), "--out", args.out]
            if args.cache:
                cmd += ["--cache", args.cache]
            if args.qsets:
                cmd += ["--qsets", args.qsets]
            env = dict(os.environ, OMP_NUM_THREADS=str(args.build_threads))
            logp = os.path.join(root, "logs", f"{s}_{lib}.log")
            os.makedirs(os.path.dirname(logp), exist_ok=True)
            with open(logp, "w") as lf:
                p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, env=env)
                for line in p.stdout:
                    sys.stdout.write(line)
                    lf.write(line)
                rc = p.wait()
            if rc != 0:
                print(f"{lib} on {s}: exit {rc} (see {logp})", flush=True)
                keep = os.path.join(root, "logs", f"{s}_{lib}.exit{rc}.log")
                shutil.copy(logp, keep)
                if not os.path.exists(os.path.join(args.out, s, f"{lib}.json")):
                    recover(keep, s, lib, os.path.join(args.out, s, f"{lib}.json"), threads)
            log_load(s, lib, "end")


if __name__ == "__main__":
    main()
