"""FT.INFO of VECTOR attributes (reference §2.5): the algorithm name the user
wrote (HNSW and SVS-VAMANA share one Vamana graph), its parameters in Redis
8.2's order, compression, training_threshold and the resolved reduced_dim,
and vela's `memory`; the same lists over RESP2 and RESP3; the name kept
across a restart. Recall of a LeanVec4x8 index against a numpy brute force
(test_server_graph.py covers the other algorithms, filters and deletes)."""

import numpy as np
from redis.commands.search.field import TagField, VectorField
from redis.commands.search.index_definition import IndexDefinition
from redis.commands.search.query import Query

from replies import text

DIM, N, NQ, K = 64, 3000, 20, 10

HNSW = {"TYPE": "FLOAT32", "DIM": DIM, "DISTANCE_METRIC": "L2", "M": 8, "EF_CONSTRUCTION": 100}
LEANVEC = {"TYPE": "FLOAT32", "DIM": DIM, "DISTANCE_METRIC": "L2", "COMPRESSION": "LeanVec4x8",
           "REDUCE": 32, "TRAINING_THRESHOLD": 1024, "GRAPH_MAX_DEGREE": 24}
FLAT = {"TYPE": "FLOAT32", "DIM": DIM, "DISTANCE_METRIC": "L2"}


def create(r, name, algo, attrs, prefix, tag=False):
    fields = [VectorField("v", algo, attrs)] + ([TagField("t")] if tag else [])
    r.ft(name).create_index(fields, definition=IndexDefinition(prefix=[prefix]))


def attributes(r, name):
    """FT.INFO's attribute lists, raw (RESP2 flat array or RESP3 map)."""
    info = r.execute_command("FT.INFO", name)
    if isinstance(info, dict):
        info = [x for kv in info.items() for x in kv]
    info = text(info)
    return info[info.index("attributes") + 1]


def vector_attr(r, name):
    """The vector attribute's list, and the same as a dict (it has no flags)."""
    a = [x for x in attributes(r, name) if x[1] == "v"][0]
    assert len(a) % 2 == 0, a
    return a, dict(zip(a[::2], a[1::2]))


def test_ft_info_vector_attributes(velad):
    r2 = velad.client(protocol=2)
    create(r2, "h", "HNSW", HNSW, "h:", tag=True)
    create(r2, "s", "SVS-VAMANA", LEANVEC, "s:")
    create(r2, "f", "FLAT", FLAT, "f:")
    # The SVS defaults; LeanVec8x8 without REDUCE: reduced_dim is DIM / 2.
    create(r2, "s2", "SVS-VAMANA", {"TYPE": "FLOAT16", "DIM": 50, "DISTANCE_METRIC": "COSINE",
                                    "COMPRESSION": "LeanVec8x8", "SEARCH_WINDOW_SIZE": 40}, "x:")
    create(r2, "s3", "SVS-VAMANA", {"TYPE": "FLOAT32", "DIM": 8, "DISTANCE_METRIC": "IP",
                                    "COMPRESSION": "LVQ8"}, "y:")
    # HNSW defaults (M 16, EF_CONSTRUCTION 200); EF_RUNTIME is not shown (8.2 does not).
    create(r2, "h2", "HNSW", {"TYPE": "FLOAT32", "DIM": 4, "DISTANCE_METRIC": "IP",
                              "EF_RUNTIME": 30}, "z:")

    a, _ = vector_attr(r2, "h")
    head = ["identifier", "v", "attribute", "v", "type", "VECTOR"]
    assert a[:-2] == head + ["algorithm", "HNSW", "data_type", "FLOAT32", "dim", DIM,
                             "distance_metric", "L2", "M", 8, "ef_construction", 100]
    assert a[-2] == "memory" and a[-1] > 0
    a, _ = vector_attr(r2, "s")
    assert a[:-2] == head + ["algorithm", "SVS-VAMANA", "data_type", "FLOAT32", "dim", DIM,
                             "distance_metric", "L2", "graph_max_degree", 24,
                             "construction_window_size", 200, "search_window_size", 10,
                             "compression", "LeanVec4x8", "training_threshold", 1024,
                             "reduced_dim", 32]
    a, _ = vector_attr(r2, "f")
    assert a[:-2] == head + ["algorithm", "FLAT", "data_type", "FLOAT32", "dim", DIM,
                             "distance_metric", "L2"]
    _, d = vector_attr(r2, "s2")
    assert (d["algorithm"], d["data_type"], d["distance_metric"]) == ("SVS-VAMANA", "FLOAT16",
                                                                      "COSINE")
    assert (d["graph_max_degree"], d["construction_window_size"], d["search_window_size"]) == \
        (32, 200, 40)
    assert (d["compression"], d["training_threshold"], d["reduced_dim"]) == \
        ("LeanVec8x8", 10240, 25)
    _, d = vector_attr(r2, "s3")
    assert d["compression"] == "LVQ8" and d["training_threshold"] == 10240
    assert "reduced_dim" not in d
    _, d = vector_attr(r2, "h2")
    assert (d["algorithm"], d["M"], d["ef_construction"]) == ("HNSW", 16, 200)
    assert not {"ef_runtime", "compression", "graph_max_degree"} & set(d)
    tag = [x for x in attributes(r2, "h") if x[1] == "t"][0]
    assert tag == ["identifier", "t", "attribute", "t", "type", "TAG", "SEPARATOR", ","]

    # RESP3: the same attribute lists (a miscounted array would shift everything after it).
    r3 = velad.client(protocol=3)
    for name in ("h", "s", "f", "s2", "s3", "h2"):
        assert attributes(r3, name) == attributes(r2, name)
        info = r3.execute_command("FT.INFO", name)
        assert isinstance(info, dict) and len(info) == 12
    # redis-py's own parser (a dict of the top level) reads it too.
    assert text(r2.ft("s").info())["index_name"] == "s"


def truth(X, q):
    d = ((X.astype(np.float64) - q.astype(np.float64)) ** 2).sum(1)
    return set(np.argsort(d, kind="stable")[:K].tolist())


def test_leanvec_recall_and_memory(velad):
    r = velad.client(protocol=2)
    # Both indexes read the same documents: one LeanVec4x8 graph, one FLAT.
    create(r, "s", "SVS-VAMANA", LEANVEC, "d:")
    create(r, "f", "FLAT", FLAT, "d:")
    rng = np.random.default_rng(11)
    X = rng.normal(size=(N, DIM)).astype(np.float32)
    p = r.pipeline(transaction=False)
    for i, v in enumerate(X):
        p.hset(f"d:{i}", "v", v.tobytes())
    assert p.execute() == [1] * N
    # velad builds graphs in the background (FT.INFO `indexing` 1 meanwhile);
    # until then the field answers exactly from its F32 vectors.
    velad.wait_builds()
    assert r.ft("s").info()["indexing"] in (0, "0")

    hit = 0
    for _ in range(NQ):
        q = (X[rng.integers(0, N)] + rng.normal(size=DIM).astype(np.float32) * 0.1)
        q = q.astype(np.float32)
        res = r.ft("s").search(
            Query(f"*=>[KNN {K} @v $q SEARCH_WINDOW_SIZE 400 AS d]").sort_by("d")
            .return_fields("d").paging(0, K).dialect(2), query_params={"q": q.tobytes()})
        got = {int(doc.id[2:]) for doc in res.docs}
        assert len(got) == K
        hit += len(got & truth(X, q))
    assert hit / (NQ * K) >= 0.9

    _, s = vector_attr(r, "s")
    _, f = vector_attr(r, "f")
    assert f["memory"] >= N * DIM * 4  # the F32 vectors, at least
    # Once its graph is in, the LeanVec field keeps its codes (16 + 64 bytes
    # a vector, plus projections), the degree-24 graph and only the docids of
    # its F32 rows (released): less than the FLAT field's F32 vectors.
    assert s["memory"] < f["memory"]


def test_algorithm_name_survives_restart(velad):
    r = velad.client(protocol=2)
    # Without compression a version-4 catalog read this as HNSW, and a
    # compressed HNSW as SVS-VAMANA: version 5 keeps what the user wrote.
    create(r, "s", "SVS-VAMANA", {"TYPE": "FLOAT32", "DIM": 8, "DISTANCE_METRIC": "L2",
                                  "GRAPH_MAX_DEGREE": 16, "SEARCH_WINDOW_SIZE": 20}, "s:")
    create(r, "h", "HNSW", {"TYPE": "FLOAT32", "DIM": 8, "DISTANCE_METRIC": "L2", "M": 12,
                            "COMPRESSION": "LVQ4x8", "TRAINING_THRESHOLD": 1024}, "h:")
    r.hset("s:1", "v", np.ones(8, np.float32).tobytes())
    before = {n: vector_attr(r, n)[0][:-2] for n in ("s", "h")}  # all but memory
    velad.stop_ok()
    velad.restart()
    r = velad.client(protocol=2)
    after = {n: vector_attr(r, n)[0][:-2] for n in ("s", "h")}
    assert after == before
    _, d = vector_attr(r, "s")
    assert (d["algorithm"], d["graph_max_degree"], d["search_window_size"]) == \
        ("SVS-VAMANA", 16, 20)
    assert d["compression"] == "none" and d["memory"] > 0
    _, d = vector_attr(r, "h")
    assert (d["algorithm"], d["M"], d["compression"], d["training_threshold"]) == \
        ("HNSW", 12, "LVQ4x8", 1024)
