"""FT.TRAIN (vela): a LeanVec4x8 SVS-VAMANA index retrained on the queries
its searches recorded, in the background (the old graph answers meanwhile),
keeps answering like a numpy brute force, keeps its training queries beside
the database and answers the same after a restart; bad calls get clear errors."""
import os

import numpy as np
import pytest

N, DIM, K, NQ = 2500, 32, 10, 40


def knn(r, q, window=200):
    res = r.execute_command("FT.SEARCH", "lv", f"*=>[KNN {K} @v $B SEARCH_WINDOW_SIZE {window}]",
                            "PARAMS", 2, "B", q.tobytes(), "NOCONTENT", "DIALECT", 2)
    return [k.decode() for k in res[1:]]


def truth(X, q):
    d = ((X.astype(np.float64) - q.astype(np.float64)) ** 2).sum(1)
    return [f"d:{i}" for i in np.argsort(d, kind="stable")[:K]]


@pytest.fixture
def lv(velad):
    r = velad.client(protocol=2)
    r.execute_command("FT.CREATE", "lv", "ON", "HASH", "PREFIX", 1, "d:", "SCHEMA", "v", "VECTOR",
                      "SVS-VAMANA", 10, "TYPE", "FLOAT32", "DIM", DIM, "DISTANCE_METRIC", "L2",
                      "COMPRESSION", "LeanVec4x8", "TRAINING_THRESHOLD", 1024)
    r.execute_command("FT.CREATE", "fl", "ON", "HASH", "PREFIX", 1, "f:", "SCHEMA", "v", "VECTOR",
                      "FLAT", 6, "TYPE", "FLOAT32", "DIM", DIM, "DISTANCE_METRIC", "L2")
    rng = np.random.default_rng(11)
    basis = rng.normal(size=(8, DIM))
    X = (rng.normal(size=(N, 8)) * np.linspace(3, 0.5, 8)) @ basis
    X = X.astype(np.float32)
    p = r.pipeline(transaction=False)
    for i, v in enumerate(X):
        p.hset(f"d:{i}", "v", v.tobytes())
    p.execute()
    velad.wait_builds()
    return velad, r, X, rng


def test_ft_train_retrains_on_recorded_queries(lv):
    velad, r, X, rng = lv
    # Queries from another distribution (the same subspace, other weights):
    # the searches record them (the planner's workload log and query sample).
    Q = (X[rng.integers(0, N, 300)] @ np.diag(rng.uniform(0.2, 2.0, DIM))).astype(np.float32)
    for q in Q[:200]:
        knn(r, q)
    assert r.execute_command("FT.TRAIN", "lv") == b"OK"
    velad.wait_builds()
    assert r.ft("lv").info()["indexing"] in (0, "0")
    assert "retrained and rebuilt" in velad.log()
    assert os.path.exists(os.path.join(velad.dir, "train-1-0.bin")), os.listdir(velad.dir)
    before = [knn(r, q) for q in Q[200:200 + NQ]]
    hit = sum(len(set(b) & set(truth(X, q))) for b, q in zip(before, Q[200:200 + NQ]))
    assert hit / (NQ * K) >= 0.9, hit / (NQ * K)
    velad.stop_ok()
    velad.restart()
    velad.wait_builds()
    r = velad.client(protocol=2)
    assert r.ft("lv").info()["num_docs"] in (N, str(N))
    after = [knn(r, q) for q in Q[200:200 + NQ]]
    assert after == before  # the same store, trained on the kept queries


def test_ft_train_errors(lv):
    _, r, _, _ = lv
    import redis
    for args, msg in [(("nosuch",), "Unknown Index name"),
                      (("fl",), "not a compressed graph"),
                      (("lv", "FIELD", "zz"), "no field"),
                      (("lv", "FIELD"), "syntax error"),
                      (("lv", "BOGUS", "v"), "syntax error")]:
        with pytest.raises(redis.ResponseError, match=msg):
            r.execute_command("FT.TRAIN", *args)


def test_index_build_foreground(velad_factory):
    """--index-build foreground: the write that crosses the threshold builds
    the graph before it is answered (nothing pending right after)."""
    srv = velad_factory("--index-build", "foreground")
    r = srv.client(protocol=2)
    assert r.config_get("index-build") == {"index-build": "foreground"}
    r.execute_command("FT.CREATE", "g", "ON", "HASH", "PREFIX", 1, "g:", "SCHEMA", "v", "VECTOR",
                      "HNSW", 6, "TYPE", "FLOAT32", "DIM", 8, "DISTANCE_METRIC", "L2")
    X = np.random.default_rng(3).normal(size=(1100, 8)).astype(np.float32)
    p = r.pipeline(transaction=False)
    for i, v in enumerate(X):
        p.hset(f"g:{i}", "v", v.tobytes())
    p.execute()
    assert r.info("persistence")["graph_builds_pending"] == 0
    assert "graph over" in srv.log() and "in the background" not in srv.log()
