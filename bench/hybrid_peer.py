#!/usr/bin/env python3
"""Hybrid (filter + KNN) queries: vela against faiss IVF with an IDSelector and
hnswlib with a filter function, on the same generated workload (issue 6,
"Measure" (c)).

Input: a directory written by `bench_workload --out DIR` (bench/workload.c):
base.fvecs, queries_future.jsonl (per query: filter text, selectivity bucket,
match count), future.fvecs, future.gt.ivecs (exact filtered top-k, double
precision) and future.matches.bitmap (each query's exact match set).

Libraries, one after another in this process, each on 1 thread:
  vela    bench_hybrid (bench/hybrid.c) --queries future --modes auto,batch,
          once per --vela-windows value (EF_RUNTIME of every query): the
          same generator, seed and queries as the files (checked: its
          bucket counts and per-query recall come from the same wl_truth).
          batch = each bucket's queries through one vela_search_batch call
          (the fastest of --reps runs); the "all buckets" figure is the whole
          set in one call. auto = the planner, one query at a time (each
          query's fastest of --reps runs). vela evaluates each filter from
          its own postings inside the timed call.
          With --vela-recalls, also "vela partitions": bench_hybrid --modes
          partitions --recall r once per r (a layout learned from 2,000
          queries of the generator's past workload, docs/partitions.md, its
          calibrated probing at mean recall r; every query of a bucket in
          one vela_search_batch call, the queries the cost rule does not
          send to the layout on the batch's other plans at
          --vela-part-window).
  faiss   IndexIVFFlat (nlist = round(4 sqrt(n)), trained on the whole base),
          one query per search() call with SearchParametersIVF(sel =
          IDSelectorBitmap(the query's match bitmap), nprobe); `*` queries
          without a selector. nprobe swept.
  hnswlib Index('l2'), M 16, ef_construction 200, knn_query(one query,
          k = min(k, matches), filter = the match set's bytes.__getitem__);
          ef swept; `*` queries without a filter; a query whose filter
          matches nothing is answered empty without a call.
The peers get each query's exact match set for free (built before the timed
call, not timed); vela's times include evaluating the filter. Peer times are
each query's fastest of --reps runs (a run over --slow-ms is not repeated),
as bench_hybrid times one-at-a-time modes.

Recall@k of a query: |returned ∩ truth| / |truth|, truth = the exact top
min(k, matches); 1 when the filter matches nothing and nothing is returned
(bench/hybrid.c's definition). Per bucket (1e-4, 1e-3, 1e-2, 1e-1, 0.5, 1;
"empty" = no match): the mean.

For each library and bucket the sweep runs the settings in ascending order
and stops at the first reaching recall 0.95 (or when one cell took over
--max-cell-s). Reported: per bucket, the QPS at the smallest setting
reaching 0.9 (and 0.95); overall, (1) one setting for every query, the
smallest reaching the target in every bucket, and (2) each bucket at its own
smallest setting (an oracle that knows each query's bucket; the peers are
given the match count anyway).

Usage:
  OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 /work/cache/annvenv/bin/python \\
      bench/hybrid_peer.py --wl /tmp/hp/wl200k --vela-db /tmp/hp/db200k \\
      --name 200k-2000q [--libs vela,faiss,hnswlib] [--reps 2]
Writes bench/results/hybrid_peer/<name>.json and <name>.md; indexes are
cached next to the workload (DIR/faiss_ivf<nlist>.index, DIR/hnsw_M16_ef200.bin).
"""
import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import csv  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

BUCKETS = ["empty", "1e-4", "1e-3", "1e-2", "1e-1", "0.5", "1"]
REPORT_BUCKETS = BUCKETS[1:]
TARGETS = (0.9, 0.95)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def uptime():
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "?"


def read_vecs(path, dtype):
    raw = np.fromfile(path, dtype=np.int32)
    if raw.size == 0:
        return np.zeros((0, 0), dtype=dtype)
    dim = int(raw[0])
    return raw.reshape(-1, dim + 1)[:, 1:].copy().view(dtype)


# ------------------------------------------------------------ workload


class Workload:
    def __init__(self, d):
        self.dir = d
        self.base = read_vecs(os.path.join(d, "base.fvecs"), np.float32)
        self.n, self.dim = self.base.shape
        self.q = read_vecs(os.path.join(d, "future.fvecs"), np.float32)
        self.gt = read_vecs(os.path.join(d, "future.gt.ivecs"), np.int32)
        self.k = self.gt.shape[1]
        self.nq = self.q.shape[0]
        row = (self.n + 7) // 8
        self.bits = np.fromfile(os.path.join(d, "future.matches.bitmap"), dtype=np.uint8)
        if self.bits.size != self.nq * row:
            raise SystemExit("future.matches.bitmap: wrong size for %d x %d" % (self.nq, self.n))
        self.bits = self.bits.reshape(self.nq, row)
        self.meta = []
        with open(os.path.join(d, "queries_future.jsonl")) as f:
            for line in f:
                o = json.loads(line)
                self.meta.append({k: o[k] for k in ("id", "filter", "matches", "bucket", "shape")})
        if len(self.meta) != self.nq:
            raise SystemExit("queries_future.jsonl and future.fvecs disagree")
        self.matches = np.array([m["matches"] for m in self.meta], dtype=np.int64)
        self.star = np.array([m["filter"].strip() == "*" for m in self.meta])
        self.bucket_of = [m["bucket"] for m in self.meta]
        self.by_bucket = {b: [i for i in range(self.nq) if self.bucket_of[i] == b] for b in BUCKETS}
        self.truth = [set(int(x) for x in self.gt[i] if x >= 0) for i in range(self.nq)]

    def recall(self, i, ids):
        t = self.truth[i]
        got = [int(x) for x in ids if x >= 0]
        if not t:
            return 1.0 if not got else 0.0
        return len(t.intersection(got)) / len(t)

    def match_bytes(self, i):
        """One byte per document (0/1): bytes.__getitem__ is a fast filter."""
        return np.unpackbits(self.bits[i], bitorder="little")[: self.n].tobytes()


# ------------------------------------------------------------ results


class Cell:
    """One library, bucket and setting: per-query recall and seconds."""

    def __init__(self, setting, rec, secs, failed=0):
        self.setting = setting
        self.rec = list(rec)
        self.secs = list(secs)
        self.failed = failed

    @property
    def n(self):
        return len(self.rec)

    @property
    def recall(self):
        return float(np.mean(self.rec)) if self.rec else 1.0

    @property
    def min_recall(self):
        return float(np.min(self.rec)) if self.rec else 1.0

    @property
    def time(self):
        return float(np.sum(self.secs))

    @property
    def qps(self):
        return self.n / self.time if self.time > 0 else float("inf")

    def as_json(self):
        return {"setting": self.setting, "queries": self.n, "recall": round(self.recall, 5),
                "min_recall": round(self.min_recall, 4), "seconds": round(self.time, 6),
                "qps": round(self.qps, 1), "failed": self.failed}


class Lib:
    """A library: settings (ascending) and measure(bucket, setting) -> Cell."""

    name = "?"
    setting_name = "?"
    settings = []

    def __init__(self):
        self.cells = {}  # (bucket, setting) -> Cell
        self.whole = {}  # setting -> seconds for the whole set in one go (vela batch)
        self.info = {}

    def cell(self, b, s):
        if (b, s) not in self.cells:
            self.cells[(b, s)] = self.measure(b, s)
        return self.cells[(b, s)]


class PeerLib(Lib):
    def __init__(self, wl, reps, slow_ms):
        super().__init__()
        self.wl, self.reps, self.slow = wl, reps, slow_ms * 1e-3

    def measure(self, b, s):
        self.prepare(s)
        rec, secs, failed = [], [], 0
        for i in self.wl.by_bucket[b]:
            call = self.call(i, s)
            best, ids = math.inf, None
            for r in range(self.reps):
                t0 = time.perf_counter()
                try:
                    out = call()
                except RuntimeError:
                    out = None
                t = time.perf_counter() - t0
                if t < best:
                    best, ids = t, out
                if t > self.slow:
                    break
            if ids is None:
                failed += 1
                ids = []
            rec.append(self.wl.recall(i, ids))
            secs.append(best)
        return Cell(s, rec, secs, failed)

    def prepare(self, s):
        pass


class Faiss(PeerLib):
    name = "faiss IVF + IDSelectorBitmap"
    setting_name = "nprobe"

    def __init__(self, wl, reps, slow_ms, nlist, build_threads):
        super().__init__(wl, reps, slow_ms)
        import faiss

        self.faiss = faiss
        self.nlist = nlist or int(round(4 * math.sqrt(wl.n)))
        path = os.path.join(wl.dir, "faiss_ivf%d.index" % self.nlist)
        faiss.omp_set_num_threads(build_threads)
        t0 = time.perf_counter()
        if os.path.exists(path):
            self.index = faiss.read_index(path)
            self.info["index"] = "loaded " + path
        else:
            q = faiss.IndexFlatL2(wl.dim)
            self.index = faiss.IndexIVFFlat(q, wl.dim, self.nlist, faiss.METRIC_L2)
            self.index.cp.max_points_per_centroid = max(256, (wl.n + self.nlist - 1) // self.nlist)
            self.index.train(wl.base)
            t1 = time.perf_counter()
            self.index.add(wl.base)
            self.info["train_s"] = round(t1 - t0, 1)
            faiss.write_index(self.index, path)
            self.info["index"] = "built, saved to " + path
        self.info["build_or_load_s"] = round(time.perf_counter() - t0, 1)
        self.info["nlist"] = self.nlist
        self.info["build_threads"] = build_threads
        self.info["version"] = faiss.__version__
        faiss.omp_set_num_threads(1)
        grid = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512,
                768, 1024, 1536, 2048, 3072, 4096]
        self.settings = [p for p in grid if p < self.nlist] + [self.nlist]
        self.sels = {}

    def prepare(self, s):
        self.index.nprobe = s

    def call(self, i, s):
        wl, f = self.wl, self.faiss
        q = wl.q[i : i + 1]
        if wl.star[i]:
            prm = f.SearchParametersIVF(nprobe=s)
        else:
            sel = self.sels.get(i)
            if sel is None:
                sel = self.sels[i] = (f.IDSelectorBitmap(wl.bits[i]), wl.bits[i])
            prm = f.SearchParametersIVF(sel=sel[0], nprobe=s)
        k = wl.k
        return lambda: self.index.search(q, k, params=prm)[1][0]


class Hnsw(PeerLib):
    name = "hnswlib + filter function"
    setting_name = "ef"

    def __init__(self, wl, reps, slow_ms, build_threads):
        super().__init__(wl, reps, slow_ms)
        import hnswlib

        path = os.path.join(wl.dir, "hnsw_M16_ef200.bin")
        self.index = hnswlib.Index(space="l2", dim=wl.dim)
        t0 = time.perf_counter()
        if os.path.exists(path):
            self.index.load_index(path, max_elements=wl.n)
            self.info["index"] = "loaded " + path
        else:
            self.index.init_index(max_elements=wl.n, M=16, ef_construction=200, random_seed=100)
            self.index.add_items(wl.base, np.arange(wl.n), num_threads=build_threads)
            self.index.save_index(path)
            self.info["index"] = "built, saved to " + path
        self.info["build_or_load_s"] = round(time.perf_counter() - t0, 1)
        self.info["build_threads"] = build_threads
        self.info["version"] = getattr(hnswlib, "__version__", "?")
        self.index.set_num_threads(1)
        self.settings = [10, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512]
        self.filters = {}

    def prepare(self, s):
        self.index.set_ef(s)

    def call(self, i, s):
        wl = self.wl
        q = wl.q[i : i + 1]
        k = int(min(wl.k, wl.matches[i]))
        if k == 0:
            return lambda: []
        if wl.star[i]:
            return lambda: self.index.knn_query(q, k=k, num_threads=1)[0][0]
        filt = self.filters.get(i)
        if filt is None:  # one byte per document, built before the timed call
            filt = self.filters[i] = wl.match_bytes(i).__getitem__
            if len(self.filters) > 4096:  # bound memory: drop the oldest
                self.filters.pop(next(iter(self.filters)))
        return lambda: self.index.knn_query(q, k=k, num_threads=1, filter=filt)[0][0]


class Vela(Lib):
    name = "vela batch"
    setting_name = "window"

    def __init__(self, wl, args, mode):
        super().__init__()
        self.wl, self.args, self.mode = wl, args, mode
        self.name = {"batch": "vela batch (vela_search_batch per bucket)",
                     "auto": "vela one at a time (planner)",
                     "partitions": "vela partitions (batch + layout)"}[mode]
        if mode == "partitions":
            self.setting_name = "recall"
            self.settings = [float(x) for x in args.vela_recalls.split(",")]
        else:
            self.settings = [int(x) for x in args.vela_windows.split(",")]

    def measure(self, b, s):
        raise KeyError("vela cell %s window %s not run" % (b, s))


def run_vela(wl, args, libs, logf, part=False):
    """bench_hybrid once per window (fills libs['batch'] and libs['auto']),
    or with part once per recall target (libs['partitions'])."""
    exe = os.path.join(ROOT, args.vela_bin)
    lib = libs["partitions" if part else "batch"]
    for w in lib.settings:
        csvp = os.path.join(args.tmp, ("vela_r%g.csv" if part else "vela_w%d.csv") % w)
        cmd = [exe, "--n", str(wl.n), "--dim", str(wl.dim), "--queries", "future", "--nq",
               str(wl.nq), "--k", str(wl.k), "--reps", str(args.reps), "--db", args.vela_db,
               "--csv", csvp]
        cmd += (["--window", str(args.vela_part_window), "--modes", "partitions", "--recall",
                 str(w)] if part else ["--window", str(w), "--modes", args.vela_modes])
        env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
        t0 = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True, env=env)
        logf.write("$ OPENBLAS_NUM_THREADS=1 " + " ".join(cmd) + "\n" + p.stdout + p.stderr + "\n")
        logf.flush()
        if p.returncode:
            raise SystemExit("bench_hybrid failed:\n" + p.stderr[-2000:])
        log("  vela %s %s: %.1f s" % (lib.setting_name, w, time.perf_counter() - t0))
        per = {}
        with open(csvp) as f:
            for r in csv.DictReader(f):
                key = (r["mode"], BUCKETS[int(r["bucket"]) + 1])
                per.setdefault(key, ([], [], {}))
                per[key][0].append(float(r["recall"]))
                per[key][1].append(float(r["ns"]) * 1e-9)
                plans = per[key][2]
                plans[r["plan"]] = plans.get(r["plan"], 0) + 1
        for mode in (("partitions",) if part else ("batch", "auto")):
            if mode not in libs:
                continue
            for b in BUCKETS:
                rec, secs, plans = per.get((mode, b), ([], [], {}))
                if len(rec) != len(wl.by_bucket[b]):
                    raise SystemExit("vela %s bucket %s: %d queries, the files have %d" %
                                     (mode, b, len(rec), len(wl.by_bucket[b])))
                c = Cell(w, rec, secs)
                c.plans = plans
                libs[mode].cells[(b, w)] = c
        # the summary: | mode | seconds | QPS | ratio |
        for m in re.finditer(r"^\| (\w+) \| ([0-9.]+) \| [0-9]+ \|", p.stdout, re.M):
            if m.group(1) in libs:
                libs[m.group(1)].whole[w] = float(m.group(2))


# ------------------------------------------------------------ sweep + report


def sweep(lib, wl, max_cell_s):
    for b in BUCKETS:
        if not wl.by_bucket[b]:
            continue
        for s in lib.settings:
            t0 = time.perf_counter()
            c = lib.cell(b, s)
            el = time.perf_counter() - t0
            log("  %s bucket %s %s %s: recall %.4f, %.0f QPS (%.1f s)" %
                (lib.name, b, lib.setting_name, s, c.recall, c.qps, el))
            if c.recall >= 0.95 or el > max_cell_s:
                break


def smallest(lib, b, target):
    for s in lib.settings:
        c = lib.cells.get((b, s))
        if c is not None and c.recall >= target:
            return c
    return None


def one_setting(lib, wl, target, measure):
    """The smallest setting reaching target in every bucket (measuring the
    cells it needs when measure is true); (setting, seconds, cells) or None."""
    need = [b for b in BUCKETS if wl.by_bucket[b]]
    lo = 0
    for b in need:
        c = smallest(lib, b, target)
        if c is None:
            return None
        lo = max(lo, lib.settings.index(c.setting))
    for s in lib.settings[lo:]:
        cells = {}
        for b in need:
            if (b, s) not in lib.cells and not measure:
                break
            cells[b] = lib.cell(b, s)
            if cells[b].recall < target:
                break
        else:
            return s, sum(c.time for c in cells.values()), cells
    return None


def fmt_qps(x):
    return "%s" % format(int(round(x)), ",") if x >= 10 else "%.1f" % x


def report(wl, libs, order, args, meta):
    out = []
    nq = wl.nq
    out.append("%d x %d, %d future queries, k %d; %s" % (wl.n, wl.dim, nq, wl.k, meta["when"]))
    out.append("")
    counts = ", ".join("%s %d" % (b, len(wl.by_bucket[b])) for b in BUCKETS if wl.by_bucket[b])
    out.append("queries per bucket: " + counts)
    out.append("")
    summary = {}
    for target in TARGETS:
        out.append("#### QPS at the smallest setting reaching recall@%d >= %.2f, per bucket" %
                   (wl.k, target))
        out.append("")
        head = "| bucket | queries | " + " | ".join(libs[o].name for o in order)
        ratio_cols = [o for o in order if o not in ("batch",)]
        if "batch" in libs:
            head += " | " + " | ".join("vela batch / %s" % libs[o].name.split(" ")[0] +
                                       (" auto" if o == "auto" else "") for o in ratio_cols)
        out.append(head + " |")
        out.append("|" + "---|" * (2 + len(order) + (len(ratio_cols) if "batch" in libs else 0)))
        for b in REPORT_BUCKETS + (["empty"] if wl.by_bucket["empty"] else []):
            if not wl.by_bucket[b]:
                continue
            row = ["%s" % b, "%d" % len(wl.by_bucket[b])]
            q = {}
            for o in order:
                c = smallest(libs[o], b, target)
                if c is None:
                    best = max((x for (bb, _), x in libs[o].cells.items() if bb == b),
                               key=lambda x: x.recall, default=None)
                    row.append("not reached (best %.3f)" % best.recall if best else "not run")
                    q[o] = None
                else:
                    row.append("%s (%s %s, %.3f)" % (fmt_qps(c.qps), libs[o].setting_name,
                                                     c.setting, c.recall))
                    q[o] = c.qps
                summary.setdefault(str(target), {}).setdefault(b, {})[o] = (
                    c.as_json() if c else None)
            if "batch" in libs:
                for o in ratio_cols:
                    row.append("%.1fx" % (q["batch"] / q[o]) if q.get("batch") and q.get(o)
                               else "–")
            out.append("| " + " | ".join(row) + " |")
        out.append("")
    out.append("#### All %d queries at recall@%d >= 0.9 (and 0.95) in every bucket" % (nq, wl.k))
    out.append("")
    out.append("| library | target | one setting for all: setting, s, QPS | "
               "per-bucket settings: s, QPS | vela batch is faster by (one / per-bucket) |")
    out.append("|---|---|---|---|---|")
    overall = {}
    for target in TARGETS:
        for o in order:
            lib = libs[o]
            one = one_setting(lib, wl, target, measure=False)
            if one and o in ("batch", "auto", "partitions") and one[0] in lib.whole:
                one_s = lib.whole[one[0]]  # the whole set in one call (batch) / summed (auto)
            else:
                one_s = one[1] if one else None
            per = [smallest(lib, b, target) for b in BUCKETS if wl.by_bucket[b]]
            per_s = sum(c.time for c in per) if all(per) else None
            overall.setdefault(str(target), {})[o] = {
                "one_setting": one[0] if one else None, "one_seconds": one_s,
                "one_qps": nq / one_s if one_s else None,
                "per_bucket_seconds": per_s, "per_bucket_qps": nq / per_s if per_s else None}
    for target in TARGETS:
        ob = overall[str(target)].get("batch", {})
        for o in order:
            v = overall[str(target)][o]
            one = ("%s %s, %.3f s, %s" % (libs[o].setting_name, v["one_setting"], v["one_seconds"],
                                          fmt_qps(v["one_qps"]))
                   if v["one_seconds"] else
                   "not measured" if o not in args.one_setting_libs.split(",") + ["batch", "auto", "partitions"]
                   else "not reached")
            per = ("%.3f s, %s" % (v["per_bucket_seconds"], fmt_qps(v["per_bucket_qps"]))
                   if v["per_bucket_seconds"] else "not reached")
            if o != "batch" and ob.get("one_seconds") and v["one_seconds"] and \
                    v["per_bucket_seconds"] and ob.get("per_bucket_seconds"):
                r = "%.1fx / %.1fx" % (v["one_seconds"] / ob["one_seconds"],
                                       v["per_bucket_seconds"] / ob["per_bucket_seconds"])
            else:
                r = "–"
            out.append("| %s | %.2f | %s | %s | %s |" % (libs[o].name, target, one, per, r))
    out.append("")
    return "\n".join(out), summary, overall


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--wl", required=True, help="bench_workload --out directory")
    ap.add_argument("--name", required=True, help="results name (bench/results/hybrid_peer/NAME.*)")
    ap.add_argument("--libs", default="vela,faiss,hnswlib")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--slow-ms", type=float, default=20.0,
                    help="a peer query slower than this is not repeated")
    ap.add_argument("--max-cell-s", type=float, default=240.0,
                    help="stop a bucket's sweep after a cell that took longer")
    ap.add_argument("--nlist", type=int, default=0)
    ap.add_argument("--build-threads", type=int, default=1)
    ap.add_argument("--vela-bin", default="build/release/bench_hybrid")
    ap.add_argument("--vela-db", help="bench_hybrid --db (built on first use, then reused)")
    ap.add_argument("--vela-windows", default="10,16,24,32,48,64,96,128")
    ap.add_argument("--vela-modes", default="auto,batch")
    ap.add_argument("--vela-recalls", default="",
                    help="also run vela partitions at these layout RECALL targets (ascending)")
    ap.add_argument("--vela-part-window", type=int, default=32,
                    help="EF_RUNTIME of the partitions runs' non-partition plans")
    ap.add_argument("--tmp", default=None, help="bench_hybrid CSVs (default: the workload dir)")
    ap.add_argument("--outdir", default=os.path.join(ROOT, "bench/results/hybrid_peer"))
    ap.add_argument("--one-setting-libs", default="faiss,hnswlib",
                    help="peers whose one-setting-for-all cells are measured (they can be slow)")
    ap.add_argument("--build-only", action="store_true",
                    help="build (and cache) the faiss / hnswlib indexes, then exit")
    args = ap.parse_args()
    args.tmp = args.tmp or args.wl
    os.makedirs(args.outdir, exist_ok=True)
    t_start = time.time()
    wl = Workload(args.wl)
    log("workload: %d x %d, %d queries" % (wl.n, wl.dim, wl.nq))
    meta = {"argv": sys.argv, "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "host": platform.node(), "cpu": "", "uptime": []}
    try:
        with open("/proc/cpuinfo") as f:
            meta["cpu"] = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
        meta["cpus"] = os.cpu_count()
    except (OSError, StopIteration):
        pass
    try:
        meta["git"] = subprocess.run(["git", "-C", ROOT, "describe", "--always", "--dirty"],
                                     capture_output=True, text=True).stdout.strip()
    except OSError:
        pass
    libs, order = {}, []
    if args.build_only:
        for name in args.libs.split(","):
            if name == "faiss":
                log("faiss: %s" % Faiss(wl, 1, 0, args.nlist, args.build_threads).info)
            elif name == "hnswlib":
                log("hnswlib: %s" % Hnsw(wl, 1, 0, args.build_threads).info)
        return
    logf = open(os.path.join(args.outdir, args.name + ".vela.log"), "w")
    for name in args.libs.split(","):
        meta["uptime"].append(("before " + name, uptime()))
        log("[%s] %s" % (name, meta["uptime"][-1][1]))
        t0 = time.perf_counter()
        if name == "vela":
            if not args.vela_db:
                raise SystemExit("--vela-db is required for vela")
            modes = args.vela_modes.split(",")
            for m in modes:
                libs[m] = Vela(wl, args, m)
            run_vela(wl, args, libs, logf)
            for m in ("batch", "auto"):
                if m in modes:
                    order.append(m)
            if args.vela_recalls:
                libs["partitions"] = Vela(wl, args, "partitions")
                run_vela(wl, args, libs, logf, part=True)
                order.append("partitions")
        elif name == "faiss":
            libs["faiss"] = Faiss(wl, args.reps, args.slow_ms, args.nlist, args.build_threads)
            log("  faiss: %s" % libs["faiss"].info)
            sweep(libs["faiss"], wl, args.max_cell_s)
            if "faiss" in args.one_setting_libs.split(","):
                one_setting(libs["faiss"], wl, 0.9, True)
                one_setting(libs["faiss"], wl, 0.95, True)
            order.append("faiss")
        elif name == "hnswlib":
            libs["hnswlib"] = Hnsw(wl, args.reps, args.slow_ms, args.build_threads)
            log("  hnswlib: %s" % libs["hnswlib"].info)
            sweep(libs["hnswlib"], wl, args.max_cell_s)
            if "hnswlib" in args.one_setting_libs.split(","):
                one_setting(libs["hnswlib"], wl, 0.9, True)
                one_setting(libs["hnswlib"], wl, 0.95, True)
            order.append("hnswlib")
        else:
            raise SystemExit("unknown library " + name)
        meta["uptime"].append(("after " + name, uptime()))
        meta.setdefault("lib_seconds", {})[name] = round(time.perf_counter() - t0, 1)
        log("[%s] done in %.0f s; %s" % (name, time.perf_counter() - t0, meta["uptime"][-1][1]))
    logf.close()
    text, summary, overall = report(wl, libs, order, args, meta)
    meta["total_s"] = round(time.time() - t_start, 1)
    res = {"meta": meta, "n": wl.n, "dim": wl.dim, "queries": wl.nq, "k": wl.k,
           "bucket_queries": {b: len(wl.by_bucket[b]) for b in BUCKETS},
           "libs": {o: {"name": libs[o].name, "setting": libs[o].setting_name,
                        "info": libs[o].info,
                        "whole_set_seconds": libs[o].whole,
                        "cells": [dict(c.as_json(), bucket=b,
                                       **({"plans": c.plans} if hasattr(c, "plans") else {}))
                                  for (b, s), c in sorted(libs[o].cells.items(),
                                                          key=lambda x: (BUCKETS.index(x[0][0]),
                                                                         x[0][1]))]}
                    for o in order},
           "per_bucket": summary, "overall": overall}
    with open(os.path.join(args.outdir, args.name + ".json"), "w") as f:
        json.dump(res, f, indent=1)
    with open(os.path.join(args.outdir, args.name + ".md"), "w") as f:
        f.write("$ " + " ".join(sys.argv) + "\n\n")
        for w, u in meta["uptime"]:
            f.write("uptime %s: %s\n" % (w, u))
        f.write("\n" + text)
    print(text)


if __name__ == "__main__":
    main()
