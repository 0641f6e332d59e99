"""Integration: `vela train` (clients/cli/train.c) on a database directory
holding a LeanVec4x8 SVS-VAMANA index built by a real velad.

- argument and input errors exit 2 (usage) or 1 (with a message) and leave
  the database usable;
- training on a query file (.fvecs, .npy, JSON lines) exits 0, and after a
  velad restart the index still finds the right neighbours (recall@10
  against a numpy float64 brute force);
- without --queries it trains on the queries recorded from the field's
  searches (here recorded and saved by `vela train-layout`).

Run by ctest as: python -m pytest tests/integration --vela <vela binary>
"""
import json
import os
import subprocess

import numpy as np
import pytest
from redis.commands.search.field import TagField, VectorField
from redis.commands.search.index_definition import IndexDefinition
from redis.commands.search.query import Query

N, DIM, K, NQ = 2500, 32, 10, 40


def run(vela, *args, rc=0):
    p = subprocess.run([vela, *args], capture_output=True, text=True, timeout=600)
    assert p.returncode == rc, (f"vela {' '.join(args)}: exit {p.returncode}, wanted {rc}\n"
                                f"{p.stdout}\n{p.stderr}")
    for m in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
        assert m not in p.stderr, p.stderr
    return p


def write_fvecs(path, X):
    X = np.asarray(X, np.float32)
    rows = np.empty((X.shape[0], X.shape[1] + 1), np.float32)
    rows[:, 0] = np.frombuffer(np.int32(X.shape[1]).tobytes(), np.float32)[0]
    rows[:, 1:] = X
    rows.tofile(path)


def queries(X, rng, n, shift=0.0):
    """Queries near the data, moved by `shift` (out of distribution)."""
    q = X[rng.integers(0, len(X), n)] + rng.normal(size=(n, X.shape[1])) * 0.3 + shift
    return q.astype(np.float32)


@pytest.fixture
def lv(velad_factory):
    """A stopped velad whose directory holds index g (LeanVec4x8, N vectors)
    and index f (FLAT). Returns (velad, X)."""
    v = velad_factory()
    r = v.client()
    r.ft("g").create_index(
        [TagField("t"),
         VectorField("v", "SVS-VAMANA", {"TYPE": "FLOAT32", "DIM": DIM, "DISTANCE_METRIC": "L2",
                                         "GRAPH_MAX_DEGREE": 32, "CONSTRUCTION_WINDOW_SIZE": 100,
                                         "COMPRESSION": "LeanVec4x8",
                                         "TRAINING_THRESHOLD": 1024})],
        definition=IndexDefinition(prefix=["d:"]))
    r.ft("f").create_index(
        [VectorField("w", "FLAT", {"TYPE": "FLOAT32", "DIM": DIM, "DISTANCE_METRIC": "L2"})],
        definition=IndexDefinition(prefix=["e:"]))
    rng = np.random.default_rng(7)
    centres = rng.normal(size=(16, DIM)).astype(np.float32) * 3
    X = (centres[rng.integers(0, 16, N)] + rng.normal(size=(N, DIM))).astype(np.float32)
    p = r.pipeline(transaction=False)
    for i, x in enumerate(X):
        p.hset(f"d:{i}", mapping={"v": x.tobytes(), "t": "odd" if i % 2 else "even"})
        if i < 50:
            p.hset(f"e:{i}", mapping={"w": x.tobytes()})
    p.execute()
    r.close()
    v.wait_builds()
    v.stop_ok()
    return v, X


def recall(v, X, rng):
    r = v.client()
    hit = 0
    for q in queries(X, rng, NQ):
        res = r.ft("g").search(
            Query(f"*=>[KNN {K} @v $q SEARCH_WINDOW_SIZE 100 AS d]").sort_by("d")
            .return_fields("d").paging(0, K).dialect(2), query_params={"q": q.tobytes()})
        got = {int(doc.id[2:]) for doc in res.docs}
        d = ((X.astype(np.float64) - q.astype(np.float64)) ** 2).sum(1)
        hit += len(got & set(np.argsort(d, kind="stable")[:K].tolist()))
    r.close()
    return hit / (NQ * K)


def test_train_argument_errors(vela, lv, tmp_path):
    v, X = lv
    db = v.dir
    assert "usage: vela train" in run(vela, "train", rc=2).stderr
    run(vela, "train", "--db", db, rc=2)                      # no --index
    run(vela, "train", "--index", "g", rc=2)                  # no --db
    run(vela, "train", "--db", db, "--index", "g", "--bogus", rc=2)
    assert "in-process only" in run(vela, "train", "--host", "127.0.0.1", "--index", "g",
                                    rc=2).stderr
    assert "usage: vela" in run(vela, rc=2).stderr
    p = run(vela, "train", "--db", db, "--index", "nope", rc=1)
    assert "nope" in p.stderr
    p = run(vela, "train", "--db", db, "--index", "g", "--field", "zz", rc=1)
    assert "zz" in p.stderr
    assert "not a compressed graph" in run(vela, "train", "--db", db, "--index", "f",
                                           rc=1).stderr


def test_train_bad_query_files(vela, lv, tmp_path):
    v, X = lv
    db = v.dir
    bad = tmp_path / "bad.fvecs"
    bad.write_bytes(b"hello, not vectors")
    assert "bad.fvecs" in run(vela, "train", "--db", db, "--index", "g", "--queries", str(bad),
                              rc=1).stderr
    run(vela, "train", "--db", db, "--index", "g", "--queries", str(tmp_path / "none.fvecs"),
        rc=1)
    txt = tmp_path / "q.txt"
    txt.write_text("1 2 3\n")
    run(vela, "train", "--db", db, "--index", "g", "--queries", str(txt), rc=1)
    narrow = tmp_path / "narrow.fvecs"
    write_fvecs(narrow, np.ones((10, DIM // 2), np.float32))
    assert "dimensions" in run(vela, "train", "--db", db, "--index", "g", "--queries",
                               str(narrow), rc=1).stderr
    truncated = tmp_path / "trunc.fvecs"
    write_fvecs(truncated, np.ones((10, DIM), np.float32))
    truncated.write_bytes(truncated.read_bytes()[:-5])
    run(vela, "train", "--db", db, "--index", "g", "--queries", str(truncated), rc=1)
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"index": "f", "field": "w", "vector": [0.0] * DIM}) + "\n")
    assert "no query" in run(vela, "train", "--db", db, "--index", "g", "--queries", str(other),
                             rc=1).stderr
    syntax = tmp_path / "syntax.jsonl"
    syntax.write_text('{"vector": [1, 2,\n')
    run(vela, "train", "--db", db, "--index", "g", "--queries", str(syntax), rc=1)
    # Nothing above changed the database: it still answers.
    v.restart()
    assert recall(v, X, np.random.default_rng(1)) >= 0.9


def test_train_on_query_file(vela, lv, tmp_path):
    v, X = lv
    db = v.dir
    rng = np.random.default_rng(3)
    qf = tmp_path / "q.fvecs"
    write_fvecs(qf, queries(X, rng, 200, shift=0.5))
    p = run(vela, "train", "--db", db, "--index", "g", "--queries", str(qf))
    assert "200 query rows" in p.stdout and "trained and rebuilt" in p.stdout, p.stdout
    qn = tmp_path / "q.npy"
    np.save(qn, queries(X, rng, 100, shift=-0.5))
    p = run(vela, "train", "--db", db, "--index", "g", "--field", "v", "--queries", str(qn))
    assert "100 query rows" in p.stdout, p.stdout
    qj = tmp_path / "q.jsonl"
    with open(qj, "w") as f:
        for q in queries(X, rng, 80):
            f.write(json.dumps({"index": "g", "vector": q.tolist()}) + "\n")
        f.write(json.dumps({"index": "f", "field": "w", "vector": [0.0] * DIM}) + "\n")
    p = run(vela, "train", "--db", db, "--index", "g", "--queries", str(qj))
    assert "80 query rows" in p.stdout, p.stdout
    v.restart()
    assert recall(v, X, rng) >= 0.9


def test_train_on_recorded_queries(vela, lv, tmp_path):
    v, X = lv
    db = v.dir
    rng = np.random.default_rng(4)
    qj = tmp_path / "q.jsonl"
    with open(qj, "w") as f:
        for q in queries(X, rng, 150, shift=0.5):
            f.write(json.dumps({"index": "g", "k": K, "vector": q.tolist()}) + "\n")
    run(vela, "train-layout", "--db", db, "--index", "g", str(qj))
    assert any(n.startswith("qsample-") for n in os.listdir(db)), os.listdir(db)
    p = run(vela, "train", "--db", db, "--index", "g")
    assert "recorded from its searches (150 recorded)" in p.stdout, p.stdout
    assert "trained and rebuilt" in p.stdout
    p = run(vela, "train", "--db", db, "--index", "g", "--no-wait")
    assert "not waiting" in p.stdout, p.stdout
    v.restart()
    assert recall(v, X, rng) >= 0.9
