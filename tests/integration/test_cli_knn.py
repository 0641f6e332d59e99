"""Integration: load vectors through the `vela` CLI into a real database
directory, query it through the CLI, and compare every answer with an
independent brute force computed by numpy in float64.

Run by ctest (see CMakeLists.txt) as:
    python -m pytest tests/integration --vela <path to the vela binary>
"""
import os
import subprocess

import numpy as np
import pytest

N, DIM = 3000, 24


def run(vela, *args):
    p = subprocess.run([vela, *args], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, f"vela {' '.join(args[:3])} failed: {p.stderr}"
    return p.stdout


@pytest.fixture(scope="module")
def loaded(vela, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("vela")
    rng = np.random.default_rng(11)
    # Small integers keep float32 sums exact, so rankings can be compared exactly.
    vecs = rng.integers(-8, 9, size=(N, DIM)).astype(np.float32)
    tsv = tmp / "vecs.tsv"
    with open(tsv, "w") as f:
        for i, v in enumerate(vecs):
            f.write("\t".join(str(int(x)) for x in v) + f"\t{i}\n")
    db = str(tmp / "db")
    out = run(vela, "demo", db, str(tsv))
    assert f"loaded {N} vectors of dim {DIM}" in out
    return db, vecs


def knn_keys(vela, db, query, q):
    out = run(vela, "query", db, "demo", query, "q=" + ",".join(str(float(x)) for x in q))
    lines = out.strip().splitlines()
    total = int(lines[0].split()[0])
    rows = [ln.split()[0] for ln in lines[1:]]
    dists = [float(ln.split("=")[1]) for ln in lines[1:] if "=" in ln]
    return total, rows, dists


def brute(vecs, q, mask, k):
    d = ((vecs.astype(np.float64) - q.astype(np.float64)) ** 2).sum(axis=1)
    ids = np.nonzero(mask)[0]
    # ascending distance, ties by insertion order (== docid order here)
    order = ids[np.lexsort((ids, d[ids]))][:k]
    return [f"vec:{i}" for i in order], d[order]


@pytest.mark.parametrize("bucket", [0, 3, 7])
def test_filtered_knn_matches_numpy(vela, loaded, bucket):
    db, vecs = loaded
    rng = np.random.default_rng(bucket)
    for _ in range(3):
        q = rng.integers(-8, 9, size=DIM).astype(np.float32)
        mask = (np.arange(N) % 10) == bucket
        total, keys, dists = knn_keys(vela, db, f"@bucket:{{b{bucket}}}=>[KNN 10 @v $q]", q)
        want, wd = brute(vecs, q, mask, 10)
        assert total == 10
        assert keys == want
        assert np.allclose(dists, wd, rtol=1e-5)


def test_numeric_range_and_not(vela, loaded):
    db, vecs = loaded
    q = vecs[42]
    n = np.arange(N)
    mask = (n >= 100) & (n < 500) & ((n % 10) != 4)
    total, keys, _ = knn_keys(vela, db, "(@n:[100 (500] -@bucket:{b4})=>[KNN 25 @v $q]", q)
    want, _ = brute(vecs, q, mask, 25)
    assert total == 25
    assert keys == want


def test_filter_only_total(vela, loaded):
    db, _ = loaded
    out = run(vela, "query", db, "demo", "@n:[(2990 +inf]")
    assert out.splitlines()[0] == "9 results"


def test_bad_query_is_a_clear_error(vela, loaded):
    db, _ = loaded
    p = subprocess.run([vela, "query", db, "demo", "@bucket:{b1"], capture_output=True, text=True)
    assert p.returncode != 0
    assert "offset" in p.stderr
