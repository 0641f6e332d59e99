"""Workload-aware partition layouts through velad (docs/partitions.md §5):
FT.LAYOUT BUILD / INFO / DROP and their errors; FT.INFO's `layouts` section
over RESP2 and RESP3 (redis-py's ft().info() parses it); pipelined FT.SEARCH
with an exhaustively probed layout answers exactly as a numpy brute force,
after inserts, updates and deletes too (they go to the layout's delta, which
the builder folds back into the clusters); the layout comes back after a
restart and FT.DROPINDEX deletes its file."""

import glob
import os
import time

import numpy as np
import pytest
import redis
from redis.commands.search.field import NumericField, TagField, VectorField
from redis.commands.search.index_definition import IndexDefinition

from replies import pairs, text

DIM, N, K = 16, 6000, 10
CATS = ["k0", "k1", "k2", "k3", "k4"]


class Data:
    def __init__(self, seed=7):
        rng = np.random.default_rng(seed)
        self.rng = rng
        self.vec = {}
        self.cat = {}
        self.num = {}
        for i in range(N):
            self.put(f"d:{i}", rng.standard_normal(DIM).astype(np.float32),
                     CATS[min(int(rng.exponential(1.2)), 4)], float(rng.random()))

    def put(self, key, v, c, n):
        self.vec[key], self.cat[key], self.num[key] = v, c, n

    def drop(self, key):
        for d in (self.vec, self.cat, self.num):
            d.pop(key, None)

    def hset(self, pipe, key):
        pipe.hset(key, mapping={"v": self.vec[key].tobytes(), "cat": self.cat[key],
                                "n": repr(self.num[key])})

    def truth(self, q, cats, lo, hi):
        keys = [k for k in self.vec if (cats is None or self.cat[k] in cats)
                and lo <= self.num[k] <= hi]
        if not keys:
            return []
        m = np.stack([self.vec[k] for k in keys])
        d = ((m - q) ** 2).sum(axis=1)
        order = sorted(range(len(keys)), key=lambda i: (d[i], keys[i]))[:K]
        return [(keys[i], float(d[i])) for i in order]


def load(r, data):
    r.ft("idx").create_index(
        [TagField("cat"), NumericField("n"),
         VectorField("v", "FLAT", {"TYPE": "FLOAT32", "DIM": DIM, "DISTANCE_METRIC": "L2"})],
        definition=IndexDefinition(prefix=["d:"]))
    p = r.pipeline(transaction=False)
    for k in data.vec:
        data.hset(p, k)
    p.execute()


def queries(data, n, seed):
    """Wide filters (thousands of matches: the batch takes the partitions
    plan) in a few templates."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        q = rng.standard_normal(DIM).astype(np.float32)
        t = i % 3
        if t == 0:
            cats, lo, hi = None, 0.0, float(rng.uniform(0.5, 1.0))
            f = f"@n:[0 {hi!r}]"
        elif t == 1:
            cats, lo, hi = ["k0", "k1"], 0.0, 1.0
            f = "@cat:{k0 | k1}"
        else:
            cats, lo, hi = ["k0"], 0.0, 1.0
            f = "@cat:{k0}"
        out.append((q, cats, lo, hi, f"({f})=>[KNN {K} @v $B AS d]"))
    return out


def search_all(r, qs):
    """Pipelined FT.SEARCH: the worker answers them as one batch."""
    p = r.pipeline(transaction=False)
    for q, _, _, _, text_ in qs:
        p.execute_command("FT.SEARCH", "idx", text_, "PARAMS", 2, "B", q.tobytes(),
                          "SORTBY", "d", "LIMIT", 0, K, "RETURN", 1, "d", "DIALECT", 2)
    return p.execute()


def check_exact(r, data, qs):
    for (q, cats, lo, hi, t), res in zip(qs, search_all(r, qs)):
        res = text(res)
        got = [(res[i], float(res[i + 1][1])) for i in range(1, len(res), 2)]
        want = data.truth(q, cats, lo, hi)
        assert [k for k, _ in got] == [k for k, _ in want], t
        for (_, a), (_, b) in zip(got, want):
            assert a == pytest.approx(b, rel=1e-4, abs=1e-5)


def layout_info(r, field="v"):
    return pairs(r.execute_command("FT.LAYOUT", "idx", "INFO", "FIELD", field))


def test_layout_command_info_writes_restart(velad):
    data = Data()
    r = velad.client(protocol=2)
    load(r, data)
    past = queries(data, 300, seed=1)
    search_all(r, past)  # the workload log
    assert r.execute_command("FT.LAYOUT", "idx", "BUILD", "FIELD", "v", "LEAF_MIN", 500,
                             "CLUSTER_ROWS", 64, "PROBE_FACTOR", 0) in (b"OK", "OK")
    li = layout_info(r)
    assert li["leaves"] >= 2 and li["rows"] == N and li["stale"] == 0 and li["delta"] == 0
    assert li["rows_per_cluster_min"] <= li["rows_per_cluster_median"] <= li["rows_per_cluster_max"]
    assert li["probe_factor"] in ("-1", -1, -1.0) or float(li["probe_factor"]) == -1
    assert li["encoding"] == "FIELD"  # an F32 field's default
    assert float(li["recall"]) == -1  # exact: PROBE_FACTOR 0
    r.execute_command("FT.LAYOUT", "idx", "BUILD", "FIELD", "v", "LEAF_MIN", 500,
                      "CLUSTER_ROWS", 64, "RECALL", 0.9)
    li = layout_info(r)
    assert abs(float(li["recall"]) - 0.9) < 1e-6 and float(li["probe_factor"]) == 0
    r.execute_command("FT.LAYOUT", "idx", "BUILD", "FIELD", "v", "LEAF_MIN", 500,
                      "CLUSTER_ROWS", 64, "PROBE_FACTOR", 0)
    # (a batch records a filter its queries share once: search_batch.c filter_share)
    assert li["workload_queries"] >= 100 and len(li["workload_hash"]) == 16

    # FT.INFO: the `layouts` section, through redis-py over RESP2 and RESP3
    for proto in (2, 3):
        c = velad.client(protocol=proto)
        info = text(c.ft("idx").info())
        assert "attributes" in info and info["num_docs"] in (N, str(N))
        lays = info["layouts"]
        assert len(lays) == 1
        e = pairs(lays[0])
        assert e["attribute"] == "v" and int(e["leaves"]) == li["leaves"]
        assert int(e["rows"]) == N and int(e["clusters"]) == li["clusters"]
        c.close()

    future = queries(data, 120, seed=2)
    check_exact(r, data, future)
    # the batch did take the layout: probed sparsely, it misses some neighbours
    r.execute_command("FT.LAYOUT", "idx", "BUILD", "LEAF_MIN", 500, "CLUSTER_ROWS", 64,
                      "PROBE_FACTOR", 1, "PROBE_MIN", 1)
    missed = 0
    for (q, cats, lo, hi, _), res in zip(future, search_all(r, future)):
        res = text(res)
        missed += [res[i] for i in range(1, len(res), 2)] != [k for k, _ in
                                                                data.truth(q, cats, lo, hi)]
    assert missed > 0, "the partitions plan answered (approximately)"
    r.execute_command("FT.LAYOUT", "idx", "BUILD", "LEAF_MIN", 500, "CLUSTER_ROWS", 64,
                      "PROBE_FACTOR", 0)
    check_exact(r, data, future)

    # writes: inserts, vector updates, deletes -> the delta; still exact
    p = r.pipeline(transaction=False)
    rng = np.random.default_rng(3)
    for j in range(200):
        k = f"d:new{j}"
        data.put(k, rng.standard_normal(DIM).astype(np.float32), CATS[j % 5], float(rng.random()))
        data.hset(p, k)
    for j in range(0, 600, 3):
        k = f"d:{j}"
        data.put(k, rng.standard_normal(DIM).astype(np.float32), data.cat[k], data.num[k])
        data.hset(p, k)
    for j in range(1, 600, 3):
        p.delete(f"d:{j}")
        data.drop(f"d:{j}")
    p.execute()
    li = layout_info(r)
    assert li["stale"] == 0 and li["delta"] == 400, li
    assert li["rows"] + li["delta"] == len(data.vec)
    check_exact(r, data, future)

    # a restart: saved at close, loaded at the field's first use
    velad.stop_ok()
    files = glob.glob(os.path.join(velad.dir, "part-*.snap"))
    assert len(files) == 1, files
    velad.restart()
    r = velad.client(protocol=2)
    li2 = layout_info(r)
    assert li2["loaded"] == 1 and li2["stale"] == 0
    for k in ("leaves", "clusters", "rows", "delta", "workload_hash"):
        assert li2[k] == li[k], k
    check_exact(r, data, future)

    # past a tenth of the rows the builder folds the delta into the clusters
    # (writes that land while a fold runs stay in the delta, below the
    # threshold, until a later one)
    p = r.pipeline(transaction=False)
    for j in range(700):
        k = f"d:fold{j}"
        data.put(k, rng.standard_normal(DIM).astype(np.float32), CATS[j % 5], float(rng.random()))
        data.hset(p, k)
    p.execute()
    deadline = time.monotonic() + 60
    while True:
        li3 = layout_info(r)
        if (li3["folds"] >= 1 and li3["rebuild_pending"] == 0
                and li3["delta"] * 10 < li3["rows"] + li3["delta"]):
            break
        assert time.monotonic() < deadline, str(li3)
        time.sleep(0.05)
    assert li3["rows"] + li3["delta"] == len(data.vec) and li3["stale"] == 0
    assert li3["rows"] >= li["rows"] + 400  # the fold moved the old delta into clusters
    check_exact(r, data, future)

    # DROP, then INFO / DROP refuse; FT.DROPINDEX deletes the file
    assert r.execute_command("FT.LAYOUT", "idx", "DROP") in (b"OK", "OK")
    assert not glob.glob(os.path.join(velad.dir, "part-*.snap"))
    with pytest.raises(redis.ResponseError, match="no layout"):
        r.execute_command("FT.LAYOUT", "idx", "INFO")
    with pytest.raises(redis.ResponseError, match="no layout"):
        r.execute_command("FT.LAYOUT", "idx", "DROP", "FIELD", "v")
    assert "layouts" not in text(r.ft("idx").info())  # only when a field has one
    r.execute_command("FT.LAYOUT", "idx", "BUILD", "LEAF_MIN", 500, "CLUSTER_ROWS", 64)
    velad.stop_ok()
    assert len(glob.glob(os.path.join(velad.dir, "part-*.snap"))) == 1
    velad.restart()
    r = velad.client(protocol=2)
    r.ft("idx").dropindex()
    assert not glob.glob(os.path.join(velad.dir, "part-*.snap"))


def test_layout_errors(velad):
    r = velad.client(protocol=2)
    r.ft("idx").create_index(
        [TagField("cat"),
         VectorField("v", "FLAT", {"TYPE": "FLOAT32", "DIM": 4, "DISTANCE_METRIC": "L2"}),
         VectorField("w", "FLAT", {"TYPE": "FLOAT32", "DIM": 4, "DISTANCE_METRIC": "L2"})],
        definition=IndexDefinition(prefix=["d:"]))
    r.hset("d:1", mapping={"cat": "a", "v": np.ones(4, np.float32).tobytes(),
                           "w": np.ones(4, np.float32).tobytes()})
    cases = [
        (("FT.LAYOUT", "nope", "BUILD"), "Unknown index name"),
        (("FT.LAYOUT", "idx", "BUILD"), "2 vector fields"),
        (("FT.LAYOUT", "idx", "BUILD", "FIELD", "zz"), "Unknown field"),
        (("FT.LAYOUT", "idx", "BUILD", "FIELD", "cat"), "not a vector field"),
        (("FT.LAYOUT", "idx", "FROB"), "syntax error"),
        (("FT.LAYOUT", "idx", "BUILD", "FIELD"), "syntax error"),
        (("FT.LAYOUT", "idx", "BUILD", "FIELD", "v", "CLUSTER_ROWS", 0), "syntax error"),
        (("FT.LAYOUT", "idx", "BUILD", "FIELD", "v", "CLUSTER_ROWS", 2), "out of range"),
        (("FT.LAYOUT", "idx", "INFO", "FIELD", "v", "LEAF_MIN", 5), "syntax error"),
        (("FT.LAYOUT", "idx", "INFO", "FIELD", "v"), "no layout"),
        (("FT.LAYOUT", "idx", "BUILD", "FIELD", "v", "ENCODING", "LVQ4"), "syntax error"),
        (("FT.LAYOUT", "idx", "BUILD", "FIELD", "v", "RECALL", 1.5), "syntax error"),
        (("FT.LAYOUT", "idx", "BUILD", "FIELD", "v", "RECALL", "x"), "syntax error"),
        (("FT.LAYOUT", "idx", "DROP", "FIELD", "w"), "no layout"),
    ]
    for args, msg in cases:
        with pytest.raises(redis.ResponseError, match=msg):
            r.execute_command(*args)
    with pytest.raises(redis.ResponseError):
        r.execute_command("FT.LAYOUT", "idx")  # arity


def test_layout_compressed_field(velad):
    """A compressed field (F32 rows released) gets an LVQ-8 layout from its
    store's decoded vectors; KNN still finds the neighbours; it comes back
    after a restart."""
    r = velad.client(protocol=2)
    r.ft("c").create_index(
        [VectorField("v", "SVS-VAMANA", {"TYPE": "FLOAT32", "DIM": 8, "DISTANCE_METRIC": "L2",
                                         "COMPRESSION": "LVQ8", "TRAINING_THRESHOLD": 1024})],
        definition=IndexDefinition(prefix=["c:"]))
    rng = np.random.default_rng(5)
    vecs = rng.standard_normal((1100, 8)).astype(np.float32)
    p = r.pipeline(transaction=False)
    for i in range(1100):
        p.hset(f"c:{i}", mapping={"v": vecs[i].tobytes()})
    p.execute()
    velad.wait_builds()
    assert r.execute_command("FT.LAYOUT", "c", "BUILD", "CLUSTER_ROWS", 64,
                             "PROBE_FACTOR", 0) in (b"OK", "OK")
    li = pairs(r.execute_command("FT.LAYOUT", "c", "INFO"))
    assert li["encoding"] == "LVQ8" and li["rows"] == 1100 and li["stale"] == 0, li
    with pytest.raises(redis.ResponseError, match="syntax error"):
        r.execute_command("FT.LAYOUT", "c", "BUILD", "ENCODING")

    def recall():
        hit = 0
        for qi in range(20):
            q = vecs[qi * 37]
            res = text(r.execute_command("FT.SEARCH", "c", f"*=>[KNN {K} @v $B AS d]", "PARAMS",
                                         2, "B", q.tobytes(), "SORTBY", "d", "LIMIT", 0, K,
                                         "RETURN", 1, "d", "DIALECT", 2))
            got = {res[i] for i in range(1, len(res), 2)}
            d = ((vecs - q) ** 2).sum(axis=1)
            want = {f"c:{i}" for i in np.argsort(d, kind="stable")[:K]}
            hit += len(got & want)
        return hit / (20 * K)

    assert recall() >= 0.9
    velad.stop_ok()
    velad.restart()
    r = velad.client(protocol=2)
    li2 = pairs(r.execute_command("FT.LAYOUT", "c", "INFO"))
    assert li2["loaded"] == 1 and li2["stale"] == 0 and li2["encoding"] == "LVQ8", li2
    assert recall() >= 0.9
