"""Integration: `vela create` + `vela import` (.npy, .fvecs, JSON lines) +
`vela batch --db` (inline vectors, vector_file_row, filters) on a real
database directory; every answer is compared with a numpy brute force in
float64, and recall@k from --groundtruth (.ivecs and JSON lines) must be 1.
Also: malformed query/vector files fail with a clear message.

    python -m pytest tests/integration --vela <path to the vela binary>
"""
import json
import subprocess

import numpy as np
import pytest

N, DIM, NQ, K = 2000, 16, 40, 10
GENRES = ["jazz", "rock", "folk"]


def run(vela, *args, ok=True):
    p = subprocess.run([vela, *map(str, args)], capture_output=True, text=True, timeout=300)
    if ok:
        assert p.returncode == 0, f"vela {' '.join(map(str, args[:3]))} failed: {p.stderr}"
    return p


def write_fvecs(path, a, dtype=np.float32):
    a = np.asarray(a, dtype=dtype)
    rows = np.hstack([np.full((len(a), 1), a.shape[1], dtype=np.int32).view(dtype), a])
    rows.astype(dtype).tofile(path)


def brute(vecs, q, mask, k):
    d = ((vecs.astype(np.float64) - q.astype(np.float64)) ** 2).sum(axis=1)
    ids = np.nonzero(mask)[0]
    order = ids[np.lexsort((ids, d[ids]))][:k]  # ties by insertion order
    return order, d[order]


@pytest.fixture(scope="module")
def data(vela, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("batch")
    rng = np.random.default_rng(5)
    # Small integers keep float32 sums exact, so rankings compare exactly.
    vecs = rng.integers(-8, 9, size=(N, DIM)).astype(np.float32)
    queries = rng.integers(-8, 9, size=(NQ, DIM)).astype(np.float32)
    db = tmp / "db"
    run(vela, "create", "--db", db, "raw", "--prefix", "raw:", "v", "VECTOR", DIM, "L2")
    run(vela, "create", "--db", db, "idx", "--prefix", "doc:", "genre", "TAG", "n", "NUMERIC",
        "v", "VECTOR", DIM, "L2")
    np.save(tmp / "base.npy", vecs)
    write_fvecs(tmp / "queries.fvecs", queries)
    p = run(vela, "import", "--db", db, "--index", "raw", "--batch", 300, tmp / "base.npy")
    assert f"{N} documents (0 failed)" in p.stderr
    with open(tmp / "docs.jsonl", "w") as f:
        for i, v in enumerate(vecs):
            f.write(json.dumps({"key": f"doc:{i}", "vector": v.tolist(),
                                "genre": GENRES[i % 3], "n": i}) + "\n")
    p = run(vela, "import", "--db", db, "--index", "idx", tmp / "docs.jsonl")
    assert f"{N} documents (0 failed)" in p.stderr
    return tmp, db, vecs, queries


def read_results(text):
    return [json.loads(line) for line in text.strip().splitlines()]


def test_fvecs_rows_with_ivecs_groundtruth(vela, data):
    tmp, db, vecs, queries = data
    truth = np.array([brute(vecs, q, np.ones(N, bool), K)[0] for q in queries], dtype=np.int32)
    write_fvecs(tmp / "gt.ivecs", truth, dtype=np.int32)
    with open(tmp / "q.jsonl", "w") as f:
        for i in range(NQ):
            f.write(json.dumps({"id": i, "vector_file_row": i, "k": K}) + "\n")
    p = run(vela, "batch", "--db", db, "--index", "raw", "--vectors", tmp / "queries.fvecs",
            "--groundtruth", tmp / "gt.ivecs", "--gt-prefix", "raw:", "--chunk", 7,
            tmp / "q.jsonl")
    res = read_results(p.stdout)
    assert [r["id"] for r in res] == list(range(NQ))
    for r, q, want in zip(res, queries, truth):
        keys = [h["key"] for h in r["results"]]
        assert keys == [f"raw:{i}" for i in want]
        _, wd = brute(vecs, q, np.ones(N, bool), K)
        assert np.allclose([h["dist"] for h in r["results"]], wd, rtol=1e-6)
    assert f"{NQ} queries (0 failed)" in p.stderr
    assert "queries/s" in p.stderr and "p50" in p.stderr and "p99" in p.stderr
    assert "recall@k: 1.0000" in p.stderr


def test_filtered_inline_vectors_with_jsonl_groundtruth(vela, data):
    tmp, db, vecs, queries = data
    genre = np.array([GENRES[i % 3] for i in range(N)])
    qf, gf = tmp / "fq.jsonl", tmp / "fgt.jsonl"
    with open(qf, "w") as f, open(gf, "w") as g:
        for i, q in enumerate(queries):
            gname = GENRES[i % 3]
            k = 1 + i % K
            f.write(json.dumps({"id": f"q{i}", "index": "idx", "filter": f"@genre:{{{gname}}}",
                                "vector": q.tolist(), "k": k, "field": "v"}) + "\n")
            want, _ = brute(vecs, q, genre == gname, k)
            g.write(json.dumps({"id": f"q{i}", "keys": [f"doc:{j}" for j in want]}) + "\n")
    out = tmp / "out.jsonl"
    p = run(vela, "batch", "--db", db, qf, "--groundtruth", gf, "--out", out)
    assert p.stdout == ""
    res = read_results(out.read_text())
    gts = read_results(gf.read_text())
    for r, g in zip(res, gts):
        assert r["id"] == g["id"]
        assert [h["key"] for h in r["results"]] == g["keys"]
    assert "recall@k: 1.0000 (40 queries" in p.stderr


def test_bad_query_lines_are_reported(vela, data):
    tmp, db, _, _ = data
    cases = {
        '{"id": 1, "vector": [1, 2]}\n{"id": 2, "vector": [1,\n': "line 2",
        '{"id": 1}\n': "vector",
        '{"id": 1, "vector_file_row": 3}\n': "--vectors",
        '[1, 2]\n': "object",
        '{"id": 1, "vector": [1, "x"]}\n': "number",
        '{"id": 1, "vector": [1, 2], "k": -1}\n': "\"k\"",
    }
    for text, needle in cases.items():
        qf = tmp / "bad.jsonl"
        qf.write_text(text)
        p = run(vela, "batch", "--db", db, "--index", "raw", qf, ok=False)
        assert p.returncode != 0
        assert needle in p.stderr, (text, p.stderr)
        assert "LeakSanitizer" not in p.stderr
    # vector_file_row past the end of --vectors
    qf.write_text('{"id": 1, "vector_file_row": 40}\n')
    p = run(vela, "batch", "--db", db, "--index", "raw", "--vectors", tmp / "queries.fvecs", qf,
            ok=False)
    assert p.returncode != 0 and "0..39" in p.stderr


def test_query_errors_become_error_lines(vela, data):
    tmp, db, _, queries = data
    qf = tmp / "mixed.jsonl"
    qf.write_text(json.dumps({"id": "ok", "vector": queries[0].tolist()}) + "\n" +
                  json.dumps({"id": "short", "vector": [1.0, 2.0]}) + "\n" +
                  json.dumps({"id": "nope", "index": "missing", "vector": [1.0]}) + "\n")
    p = run(vela, "batch", "--db", db, "--index", "raw", qf, ok=False)
    assert p.returncode == 1
    res = {r["id"]: r for r in read_results(p.stdout)}
    assert len(res["ok"]["results"]) == 10
    assert "error" in res["short"] and "error" in res["nope"]
    assert "3 queries (2 failed)" in p.stderr


def test_bad_vector_files(vela, data):
    tmp, db, vecs, _ = data
    np.save(tmp / "wrongdim.npy", vecs[:5, :8])
    p = run(vela, "import", "--db", db, "--index", "raw", tmp / "wrongdim.npy", ok=False)
    assert p.returncode != 0 and "dim 8" in p.stderr
    raw = (tmp / "base.npy").read_bytes()
    (tmp / "cut.npy").write_bytes(raw[:-3])
    p = run(vela, "import", "--db", db, "--index", "raw", tmp / "cut.npy", ok=False)
    assert p.returncode != 0 and "truncated" in p.stderr
    np.save(tmp / "f64.npy", vecs[:5].astype(np.float64))
    p = run(vela, "import", "--db", db, "--index", "raw", tmp / "f64.npy", ok=False)
    assert p.returncode != 0 and "<f8" in p.stderr
    raw = (tmp / "queries.fvecs").read_bytes()
    (tmp / "cut.fvecs").write_bytes(raw[:-1])
    qf = tmp / "q1.jsonl"
    qf.write_text('{"vector_file_row": 0}\n')
    p = run(vela, "batch", "--db", db, "--index", "raw", "--vectors", tmp / "cut.fvecs", qf,
            ok=False)
    assert p.returncode != 0 and "truncated" in p.stderr
    # keys not starting with --prefix get it prepended (tmp: is outside every index)
    p = run(vela, "import", "--db", db, "--index", "raw", tmp / "docs.jsonl", "--prefix", "tmp:")
    assert f"{N} documents (0 failed) into raw (prefix 'tmp:')" in p.stderr


def test_import_map_size(vela, tmp_path):
    """--map-size sets the LMDB map of an in-process import: a map too small
    for the data stops the import with the map-full error (nothing half
    written: the documents imported before the failing batch stay), a larger
    one takes everything."""
    rng = np.random.default_rng(5)
    vecs = rng.standard_normal((6000, 256)).astype(np.float32)  # ~6 MiB of vectors
    np.save(tmp_path / "v.npy", vecs)
    small, big = tmp_path / "small", tmp_path / "big"
    for db in (small, big):
        run(vela, "create", "--db", db, "--map-size", 2, "raw", "--prefix", "raw:",
            "v", "VECTOR", 256, "L2")
    p = run(vela, "import", "--db", small, "--map-size", 2, "--index", "raw", tmp_path / "v.npy",
            ok=False)
    assert p.returncode != 0 and "map is full" in p.stderr, p.stderr
    p = run(vela, "import", "--db", big, "--map-size", 64, "--index", "raw", tmp_path / "v.npy")
    assert "6000 documents (0 failed)" in p.stderr
    p = run(vela, "import", "--db", big, "--map-size", 0, "--index", "raw", tmp_path / "v.npy",
            ok=False)
    assert p.returncode != 0 and "--map-size" in p.stderr
