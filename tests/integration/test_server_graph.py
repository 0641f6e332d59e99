"""HNSW and SVS-VAMANA indexes through redis-py, large enough (> 1,024
vectors) that velad answers them with the Vamana graph: recall@10 against a
numpy float64 brute force, per-query EF_RUNTIME / SEARCH_WINDOW_SIZE, a
filter, deletes, and a restart (the graph is rebuilt from LMDB)."""
import numpy as np
import pytest
from redis.commands.search.field import TagField, VectorField
from redis.commands.search.index_definition import IndexDefinition
from redis.commands.search.query import Query

N, DIM, NQ, K = 3000, 32, 40, 10


def load(r, algo, attrs, metric, rng):
    r.ft("g").create_index(
        [TagField("t"), VectorField("v", algo, {"TYPE": "FLOAT32", "DIM": DIM,
                                                "DISTANCE_METRIC": metric, **attrs})],
        definition=IndexDefinition(prefix=["d:"]))
    centres = rng.normal(size=(20, DIM)).astype(np.float32) * 3
    X = (centres[rng.integers(0, 20, N)] + rng.normal(size=(N, DIM))).astype(np.float32)
    if metric == "COSINE":
        X /= np.linalg.norm(X, axis=1, keepdims=True)
    p = r.pipeline(transaction=False)
    for i, v in enumerate(X):
        p.hset(f"d:{i}", mapping={"v": v.tobytes(), "t": "odd" if i % 2 else "even"})
    p.execute()
    return X


def truth(X, live, q, metric, mask=None):
    Xd, qd = X.astype(np.float64), q.astype(np.float64)
    d = ((Xd - qd) ** 2).sum(1) if metric == "L2" else 1 - Xd @ qd
    ok = live.copy() if mask is None else live & mask
    idx = np.nonzero(ok)[0]
    return set(idx[np.argsort(d[idx], kind="stable")[:K]].tolist())


def recall(r, X, live, metric, rng, window_attr, flt="*", mask=None):
    hit = tot = 0
    for _ in range(NQ):
        q = X[rng.integers(0, N)] + rng.normal(size=DIM).astype(np.float32) * 0.1
        q = q.astype(np.float32)
        if metric == "COSINE":
            q /= np.linalg.norm(q)
        res = r.ft("g").search(
            Query(f"{flt}=>[KNN {K} @v $q {window_attr} 100 AS d]").sort_by("d")
            .return_fields("d").paging(0, K).dialect(2), query_params={"q": q.tobytes()})
        got = {int(doc.id[2:]) for doc in res.docs}
        assert all(live[i] for i in got)
        if mask is not None:
            assert all(mask[i] for i in got)
        want = truth(X, live, q, metric, mask)
        hit += len(got & want)
        tot += len(want)
    return hit / tot


@pytest.mark.parametrize("algo,attrs,window_attr,metric", [
    ("HNSW", {"M": 16, "EF_CONSTRUCTION": 100}, "EF_RUNTIME", "L2"),
    ("SVS-VAMANA", {"GRAPH_MAX_DEGREE": 32, "CONSTRUCTION_WINDOW_SIZE": 100}, "SEARCH_WINDOW_SIZE", "COSINE"),
    # The index issue's acceptance case: LeanVec4x8 created through redis-py.
    ("SVS-VAMANA", {"GRAPH_MAX_DEGREE": 32, "CONSTRUCTION_WINDOW_SIZE": 100,
                    "COMPRESSION": "LeanVec4x8", "TRAINING_THRESHOLD": 1024}, "SEARCH_WINDOW_SIZE", "L2"),
    ("HNSW", {"M": 16, "COMPRESSION": "LVQ4x8", "TRAINING_THRESHOLD": 1024}, "EF_RUNTIME", "IP"),
])
def test_graph_recall_filter_delete_restart(velad, algo, attrs, window_attr, metric):
    rng = np.random.default_rng(5)
    r = velad.client()
    X = load(r, algo, attrs, metric, rng)
    velad.wait_builds()  # built in the background: measure the graph, not the exact scan
    live = np.ones(N, bool)
    assert recall(r, X, live, metric, rng, window_attr) >= 0.95
    odd = np.arange(N) % 2 == 1
    # Half the documents match: big enough to go through the graph walk.
    assert recall(r, X, live, metric, rng, window_attr, "@t:{odd}", odd) >= 0.9
    gone = rng.choice(N, N // 5, replace=False)
    r.delete(*[f"d:{i}" for i in gone])
    live[gone] = False
    assert recall(r, X, live, metric, rng, window_attr) >= 0.95
    velad.stop_ok()
    velad.restart()
    velad.wait_builds()
    r = velad.client()
    info = r.ft("g").info()
    assert info["num_docs"] in (N - N // 5, str(N - N // 5))
    assert recall(r, X, live, metric, rng, window_attr) >= 0.95
