"""Integration: the `vela` CLI's server mode (libvela-client over RESP).

- Against Debian's redis-server (a core-RESP oracle, no search module):
  `vela import --host` writes the same hashes (little-endian FLOAT32 blobs,
  attribute strings) through pipelined HSETs; `vela batch --host` turns the
  server's FT.SEARCH error into per-query error lines.
- Against velad (found next to the vela binary; skipped until it is built):
  create + import + batch through the server give the same answers as the
  in-process mode, with recall 1.0 against a numpy brute force.
"""
import json
import os
import shutil
import socket
import subprocess
import time

import numpy as np
import pytest

N, DIM, NQ, K = 1500, 12, 30, 10


def run(vela, *args, ok=True):
    p = subprocess.run([vela, *map(str, args)], capture_output=True, text=True, timeout=300)
    if ok:
        assert p.returncode == 0, f"vela {' '.join(map(str, args[:3]))} failed: {p.stderr}"
    return p


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, what):
    for _ in range(200):
        if proc.poll() is not None:
            pytest.fail(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    pytest.fail(f"{what} did not listen on {port}")


@pytest.fixture
def redis(tmp_path):
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--dir",
                             str(tmp_path), "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL)
    wait_port(port, proc, "redis-server")
    yield port
    proc.terminate()
    proc.wait()


def redis_cli(port, *args):
    return subprocess.run(["redis-cli", "-p", str(port), "--no-raw", *args],
                          capture_output=True, timeout=30).stdout


def test_import_through_redis(vela, redis, tmp_path):
    vecs = np.arange(20 * 4, dtype=np.float32).reshape(20, 4) / 4
    np.save(tmp_path / "v.npy", vecs)
    p = run(vela, "import", "--host", "127.0.0.1", "--port", redis, "--index", "idx",
            "--prefix", "vec:", "--batch", 7, tmp_path / "v.npy")
    assert "20 documents (0 failed)" in p.stderr
    raw = subprocess.run(["redis-cli", "-p", str(redis), "--raw", "HGET", "vec:13", "v"],
                         capture_output=True, timeout=30).stdout
    assert np.array_equal(np.frombuffer(raw[:16], dtype="<f4"), vecs[13])
    docs = tmp_path / "d.jsonl"
    docs.write_text(json.dumps({"key": "a", "vector": [1, 2, 3, 4], "genre": ["x", "y"],
                                "n": 3, "r": 0.5, "b": True, "skip": None}) + "\n")
    p = run(vela, "import", "--host", "127.0.0.1", "--port", redis, "--index", "idx",
            "--prefix", "doc:", docs)
    out = redis_cli(redis, "HGETALL", "doc:a").decode()
    for want in ('"genre"', '"x,y"', '"n"', '"3"', '"0.5"', '"true"'):
        assert want in out, out
    assert "skip" not in out


def test_batch_errors_through_redis(vela, redis, tmp_path):
    qf = tmp_path / "q.jsonl"
    qf.write_text("".join(json.dumps({"id": i, "vector": [1, 2]}) + "\n" for i in range(5)))
    p = run(vela, "batch", "--host", "127.0.0.1", "--port", redis, "--index", "idx", qf, ok=False)
    assert p.returncode == 1
    res = [json.loads(x) for x in p.stdout.splitlines()]
    assert [r["id"] for r in res] == list(range(5))
    assert all("unknown command" in r["error"] for r in res)
    assert "5 queries (5 failed)" in p.stderr


def test_wrong_password_and_refused(vela, redis, tmp_path):
    qf = tmp_path / "q.jsonl"
    qf.write_text('{"vector": [1]}\n')
    p = run(vela, "batch", "--host", "127.0.0.1", "--port", redis, "--password", "x",
            "--index", "i", qf, ok=False)
    assert p.returncode != 0 and "AUTH" in p.stderr
    p = run(vela, "batch", "--host", "127.0.0.1", "--port", free_port(), "--index", "i", qf,
            ok=False)
    assert p.returncode != 0 and "connect" in p.stderr


# ------------------------------------------------------------ velad


@pytest.fixture
def velad(vela, tmp_path):
    exe = os.path.join(os.path.dirname(os.path.abspath(vela)), "velad")
    if not os.path.exists(exe):
        pytest.skip("velad is not built")
    port = free_port()
    (tmp_path / "srv").mkdir()
    proc = subprocess.Popen([exe, "--port", str(port), "--dir", str(tmp_path / "srv")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, proc, "velad")
    yield port
    proc.terminate()
    proc.wait(timeout=30)


def brute(vecs, q, mask, k):
    d = ((vecs.astype(np.float64) - q.astype(np.float64)) ** 2).sum(axis=1)
    ids = np.nonzero(mask)[0]
    return ids[np.lexsort((ids, d[ids]))][:k]


def test_velad_end_to_end(vela, velad, tmp_path):
    rng = np.random.default_rng(3)
    vecs = rng.integers(-8, 9, size=(N, DIM)).astype(np.float32)
    queries = rng.integers(-8, 9, size=(NQ, DIM)).astype(np.float32)
    host = ["--host", "127.0.0.1", "--port", velad]
    db = tmp_path / "db"
    for target in (host, ["--db", db]):
        run(vela, "create", *target, "idx", "--prefix", "doc:", "genre", "TAG",
            "v", "VECTOR", DIM, "L2")
    docs = tmp_path / "docs.jsonl"
    with open(docs, "w") as f:
        for i, v in enumerate(vecs):
            f.write(json.dumps({"key": f"doc:{i}", "vector": v.tolist(),
                                "genre": ["a", "b"][i % 2]}) + "\n")
    for target in (host, ["--db", db]):
        p = run(vela, "import", *target, "--index", "idx", "--batch", 250, docs)
        assert f"{N} documents (0 failed)" in p.stderr
    qf, gf = tmp_path / "q.jsonl", tmp_path / "gt.jsonl"
    with open(qf, "w") as f, open(gf, "w") as g:
        for i, q in enumerate(queries):
            filt = "*" if i % 2 else "@genre:{b}"
            mask = np.ones(N, bool) if i % 2 else (np.arange(N) % 2 == 1)
            f.write(json.dumps({"id": i, "filter": filt, "vector": q.tolist(), "k": K}) + "\n")
            g.write(json.dumps({"id": i, "keys": [f"doc:{j}" for j in brute(vecs, q, mask, K)]})
                    + "\n")
    remote = run(vela, "batch", *host, "--index", "idx", "--groundtruth", gf, "--chunk", 8, qf)
    local = run(vela, "batch", "--db", db, "--index", "idx", "--groundtruth", gf, qf)
    assert "recall@k: 1.0000" in remote.stderr, remote.stderr
    assert "recall@k: 1.0000" in local.stderr, local.stderr
    r = [json.loads(x) for x in remote.stdout.splitlines()]
    loc = [json.loads(x) for x in local.stdout.splitlines()]
    assert [[h["key"] for h in x["results"]] for x in r] == \
        [[h["key"] for h in x["results"]] for x in loc]
    for x, y in zip(r, loc):
        assert np.allclose([h["dist"] for h in x["results"]], [h["dist"] for h in y["results"]],
                           rtol=1e-6)
