"""In-server embeddings (docs/embeddings.md "Server"): EMBED, vector fields
computed from a SOURCE field on HSET, FT.SEARCH ... EMBED param, INFO embed,
against the sentence-transformers vectors committed in tests/data/embed (an
independent reference: computed by PyTorch, not by vela).

Needs the real all-MiniLM-L6-v2 weights (`make models`); skipped otherwise."""
import json
import os
import shutil
import subprocess
import threading

import numpy as np
import pytest
import redis

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MODELS = os.environ.get("VELA_MODELS_DIR", os.path.join(ROOT, "models"))
MODEL = "all-MiniLM-L6-v2"
DATA = os.path.join(ROOT, "tests", "data", "embed")
COS_MIN = 0.9999  # vela vs sentence-transformers, per sentence (docs/embeddings.md)

pytestmark = pytest.mark.skipif(
    not os.path.exists(os.path.join(MODELS, MODEL, "model.safetensors")),
    reason=f"no {MODELS}/{MODEL}: run `make models` for the real-weight tests")


@pytest.fixture(scope="module")
def golden():
    with open(os.path.join(DATA, "sentences.json")) as f:
        sents = json.load(f)["sentences"]
    vecs = np.fromfile(os.path.join(DATA, "embeddings.f32"), dtype="<f4").reshape(len(sents), 384)
    return sents, vecs


def cos(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


@pytest.fixture
def srv(velad_factory):
    return velad_factory("--model-dir", MODELS)


SCHEMA = ["FT.CREATE", "idx", "ON", "HASH", "PREFIX", 1, "doc:", "SCHEMA", "body", "TEXT",
          "genre", "TAG", "vec", "VECTOR", "FLAT", 10, "TYPE", "FLOAT32", "DIM", 384,
          "DISTANCE_METRIC", "COSINE", "MODEL", MODEL, "SOURCE", "body"]


def test_embed_command_matches_sentence_transformers(srv, golden):
    sents, ref = golden
    r = srv.client(protocol=2)
    blobs = r.execute_command("EMBED", MODEL, "TEXT", *sents)
    assert len(blobs) == len(sents)
    for i, b in enumerate(blobs):
        v = np.frombuffer(b, dtype="<f4")
        assert v.shape == (384,)
        assert cos(v, ref[i]) >= COS_MIN, sents[i]
    arr = r.execute_command("EMBED", MODEL, "FORMAT", "ARRAY", "TEXT", sents[0])
    assert len(arr) == 1 and len(arr[0]) == 384
    np.testing.assert_allclose(np.array(arr[0], dtype=np.float64),
                               np.frombuffer(blobs[0], dtype="<f4"), rtol=0, atol=1e-6)


def test_embed_errors(srv):
    r = srv.client(protocol=2)
    with pytest.raises(redis.ResponseError, match="cannot load model 'nope'"):
        r.execute_command("EMBED", "nope", "TEXT", "hello")
    with pytest.raises(redis.ResponseError, match="bad model name"):
        r.execute_command("EMBED", "../etc", "TEXT", "hello")
    with pytest.raises(redis.ResponseError, match="syntax"):
        r.execute_command("EMBED", MODEL, "hello", "world")
    with pytest.raises(redis.ResponseError, match="FORMAT"):
        r.execute_command("EMBED", MODEL, "FORMAT", "CSV", "TEXT", "x")
    with pytest.raises(redis.ResponseError, match="UTF-8"):
        r.execute_command("EMBED", MODEL, "TEXT", b"ok", b"bad \xff\xfe text")
    assert r.ping()  # the server keeps serving
    info = r.info("embed")
    assert info["embed_failures"] >= 3
    assert info["embed_models_loaded"] == 1


def test_hset_computes_vector_and_search_by_text(srv, golden):
    sents, ref = golden
    r = srv.client(protocol=2)
    with pytest.raises(redis.ResponseError, match="does not match model"):
        r.execute_command(*[("128" if a == 384 else a) for a in SCHEMA])
    with pytest.raises(redis.ResponseError, match="cannot load model"):
        r.execute_command(*[("other-model" if a == MODEL else a) for a in SCHEMA])
    assert r.execute_command(*SCHEMA) == b"OK"
    p = r.pipeline(transaction=False)
    for i, s in enumerate(sents):
        p.hset(f"doc:{i}", mapping={"body": s, "genre": "a" if i % 2 else "b"})
    p.hset("other:1", mapping={"body": sents[0]})  # no index: nothing computed
    p.execute()
    for i in range(len(sents)):
        v = np.frombuffer(r.hget(f"doc:{i}", "vec"), dtype="<f4")
        assert cos(v, ref[i]) >= COS_MIN
    assert r.hget("other:1", "vec") is None
    # Query by text: the nearest documents equal a float64 brute force over the
    # reference vectors (the query's own reference vector: the same sentence).
    for qi in (0, 5, 13):
        res = r.execute_command("FT.SEARCH", "idx", "*=>[KNN 5 @vec $q]", "PARAMS", 2, "q",
                                sents[qi], "EMBED", "q", "NOCONTENT", "DIALECT", 2)
        d = 1 - (ref.astype(np.float64) @ ref[qi].astype(np.float64))
        want = [f"doc:{i}".encode() for i in np.argsort(d, kind="stable")[:5]]
        assert res[0] == 5 and res[1] == want[0] == f"doc:{qi}".encode()
        assert set(res[1:]) == set(want)
    # With a filter: only genre b (even ids).
    res = r.execute_command("FT.SEARCH", "idx", "(@genre:{b})=>[KNN 3 @vec $q]", "PARAMS", 2,
                            "q", sents[1], "EMBED", "q", "NOCONTENT")
    assert res[0] == 3 and all(int(k.split(b":")[1]) % 2 == 0 for k in res[1:])
    with pytest.raises(redis.ResponseError, match="PARAMS"):
        r.execute_command("FT.SEARCH", "idx", "*=>[KNN 3 @vec $q]", "PARAMS", 2, "q", "x",
                          "EMBED", "missing")
    # FT.EXPLAIN takes EMBED too: the plan of the embedded vector, the same
    # as FT.EXPLAIN of the vector the EMBED command returns for that text.
    q = "(@genre:{b})=>[KNN 3 @vec $q]"
    got = r.execute_command("FT.EXPLAIN", "idx", q, "PARAMS", 2, "q", sents[1], "EMBED", "q",
                            "DIALECT", 2)
    blob = r.execute_command("EMBED", MODEL, "TEXT", sents[1])[0]
    want = r.execute_command("FT.EXPLAIN", "idx", q, "PARAMS", 2, "q", blob, "DIALECT", 2)
    assert got == want and b"KNN" in got.upper()
    with pytest.raises(redis.ResponseError, match="PARAMS"):
        r.execute_command("FT.EXPLAIN", "idx", q, "PARAMS", 2, "q", "x", "EMBED", "missing")
    info = r.info("embed")
    assert info["embed_texts"] >= len(sents) + 4
    attrs = r.execute_command("FT.INFO", "idx")
    flat = attrs[attrs.index(b"attributes") + 1]
    vec = [a for a in flat if a[1] == b"vec"][0]
    assert vec[vec.index(b"model") + 1] == MODEL.encode()
    assert vec[vec.index(b"source") + 1] == b"body"


def test_bad_text_writes_nothing(srv):
    r = srv.client(protocol=2)
    r.execute_command(*SCHEMA)
    r.hset("doc:keep", mapping={"body": "fine text", "genre": "x"})
    with pytest.raises(redis.ResponseError, match="UTF-8"):
        r.hset("doc:bad", mapping={"body": b"\xc3\x28 broken", "genre": "y"})
    assert r.exists("doc:bad") == 0
    with pytest.raises(redis.ResponseError, match="UTF-8"):
        r.hset("doc:keep", mapping={"body": b"\xff", "genre": "z"})
    assert r.hget("doc:keep", "genre") == b"x"  # the failed write changed nothing
    # A pipelined read after a computed write sees it (the client's order).
    p = r.pipeline(transaction=False)
    p.hset("doc:o", mapping={"body": "order matters"})
    p.hget("doc:o", "vec")
    _, v = p.execute()
    assert v is not None and len(v) == 384 * 4


def test_multi_refuses_encoder_commands(srv):
    r = srv.client(protocol=2)
    r.execute_command(*SCHEMA)
    p = r.pipeline(transaction=True)
    p.hset("doc:m", mapping={"body": "in a transaction"})
    with pytest.raises(redis.ResponseError, match="cannot run inside MULTI"):
        p.execute()
    assert r.exists("doc:m") == 0
    p = r.pipeline(transaction=True)
    p.hset("doc:m", mapping={"genre": "only a tag"})  # no SOURCE field: allowed
    assert p.execute() == [1]


def test_many_clients_share_batches(srv, golden):
    sents, ref = golden
    r = srv.client(protocol=2)
    r.execute_command(*SCHEMA)
    errors = []

    def worker(t):
        try:
            c = srv.client(protocol=2)
            p = c.pipeline(transaction=False)
            for i, s in enumerate(sents):
                p.hset(f"doc:{t}:{i}", mapping={"body": s})
            p.execute()
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    ts = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors
    for t in range(8):
        for i in (0, len(sents) - 1):
            v = np.frombuffer(r.hget(f"doc:{t}:{i}", "vec"), dtype="<f4")
            assert cos(v, ref[i]) >= COS_MIN
    info = r.info("embed")
    assert info["embed_texts"] >= 8 * len(sents)
    # Requests from several pipelines and clients were packed together.
    assert info["embed_texts_per_batch"] > 1.0
    assert info["embed_tokens_per_sec"] > 0


def test_float16_field_and_restart(srv, golden):
    sents, ref = golden
    r = srv.client(protocol=2)
    schema = [("FLOAT16" if a == "FLOAT32" else a) for a in SCHEMA]
    r.execute_command(*schema)
    r.hset("doc:1", mapping={"body": sents[2]})
    v = np.frombuffer(r.hget("doc:1", "vec"), dtype="<f2")
    assert cos(v, ref[2]) >= 0.999  # half precision
    srv.stop_ok()
    srv.restart()
    r = srv.client(protocol=2)
    attrs = r.execute_command("FT.INFO", "idx")
    assert MODEL.encode() in attrs[attrs.index(b"attributes") + 1][-1]
    r.hset("doc:2", mapping={"body": sents[3]})  # still computed after a restart
    v = np.frombuffer(r.hget("doc:2", "vec"), dtype="<f2")
    assert cos(v, ref[3]) >= 0.999
    res = r.execute_command("FT.SEARCH", "idx", "*=>[KNN 1 @vec $q]", "PARAMS", 2, "q",
                            sents[3], "EMBED", "q", "NOCONTENT")
    assert res == [1, b"doc:2"]


@pytest.mark.skipif(shutil.which("redis-cli") is None, reason="redis-cli not installed")
def test_redis_cli_text_in_text_out(srv):
    """The issue's acceptance: HSET text and search by text from redis-cli."""
    def cli(*args):
        out = subprocess.run(["redis-cli", "-p", str(srv.port), *map(str, args)],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        return out.stdout
    assert cli(*SCHEMA).strip() == "OK"
    cli("HSET", "doc:1", "body", "A man is playing guitar.")
    cli("HSET", "doc:2", "body", "The stock market fell sharply today.")
    cli("HSET", "doc:3", "body", "Someone strums an acoustic instrument.")
    out = cli("FT.SEARCH", "idx", "*=>[KNN 2 @vec $q]", "PARAMS", 2, "q",
              "a person playing music", "EMBED", "q", "NOCONTENT")
    lines = out.split()
    assert lines[0] == "2" and set(lines[1:]) == {"doc:1", "doc:3"}


def test_backfill_and_hdel(srv, golden):
    """FT.CREATE over documents written before it: their vectors are computed
    in the background; a text changed meanwhile wins; HDEL of the source
    deletes the vector computed from it."""
    sents, ref = golden
    r = srv.client(protocol=2)
    p = r.pipeline(transaction=False)
    for i, s in enumerate(sents):
        p.hset(f"doc:{i}", mapping={"body": s})
    p.execute()
    assert r.execute_command(*SCHEMA) == b"OK"
    import time
    deadline = time.time() + 60
    while time.time() < deadline:
        if all(r.hexists(f"doc:{i}", "vec") for i in range(len(sents))):
            break
        time.sleep(0.1)
    for i in range(len(sents)):
        v = np.frombuffer(r.hget(f"doc:{i}", "vec"), dtype="<f4")
        assert cos(v, ref[i]) >= COS_MIN
    info = r.info("embed")
    assert info["embed_backfill_queued"] >= len(sents)
    res = r.execute_command("FT.SEARCH", "idx", "*=>[KNN 1 @vec $q]", "PARAMS", 2, "q",
                            sents[7], "EMBED", "q", "NOCONTENT")
    assert res == [1, b"doc:7"]
    assert r.hdel("doc:7", "body") == 2  # the text and the vector computed from it
    assert r.hgetall("doc:7") == {}
    res = r.execute_command("FT.SEARCH", "idx", "*=>[KNN 1 @vec $q]", "PARAMS", 2, "q",
                            sents[7], "EMBED", "q", "NOCONTENT")
    assert res[1] != b"doc:7"
    # After a restart nothing is missing: the walk finds nothing to queue.
    srv.stop_ok()
    srv.restart()
    r = srv.client(protocol=2)
    time.sleep(0.5)
    assert r.info("embed")["embed_backfill_queued"] == 0


@pytest.fixture
def img_srv(velad_factory, tmp_path):
    """Models dir with the text model and the project-made tiny CLIP vision
    model of tests/data/embed/vit-tiny (no real CLIP weights exist offline)."""
    mdir = tmp_path / "models"
    mdir.mkdir()
    os.symlink(os.path.join(MODELS, MODEL), mdir / MODEL)
    os.symlink(os.path.join(DATA, "vit-tiny"), mdir / "vit-tiny")
    return velad_factory("--model-dir", str(mdir))


def test_images_embed_store_and_search(img_srv):
    """EMBED IMAGE and an image SOURCE field, against the numpy float64
    reference vectors of scripts/make_vit_fixture.py."""
    with open(os.path.join(DATA, "vit-tiny", "expected.json")) as f:
        exp = json.load(f)
    cases = exp["cases"]
    blobs = [open(os.path.join(DATA, "vit-tiny", c["file"]), "rb").read() for c in cases]
    r = img_srv.client(protocol=2)
    out = r.execute_command("EMBED", "vit-tiny", "IMAGE", *blobs)
    for c, b in zip(cases, out):
        v = np.frombuffer(b, dtype="<f4")
        assert cos(v, c["vector"]) >= 0.99999, c["file"]
        assert np.abs(v - np.array(c["vector"])).max() <= 1e-4
    with pytest.raises(redis.ResponseError, match="embeds images"):
        r.execute_command("EMBED", "vit-tiny", "TEXT", "a cat")
    with pytest.raises(redis.ResponseError, match="embeds text"):
        r.execute_command("EMBED", MODEL, "IMAGE", blobs[0])
    with pytest.raises(redis.ResponseError, match="argument 3"):
        r.execute_command("EMBED", "vit-tiny", "IMAGE", blobs[0][:40])  # truncated PNG
    # A corrupt image fails alone; the next request still works.
    assert len(r.execute_command("EMBED", "vit-tiny", "IMAGE", blobs[1])) == 1
    dim = exp["dim"]
    r.execute_command("FT.CREATE", "pics", "ON", "HASH", "PREFIX", 1, "pic:", "SCHEMA",
                      "name", "TAG", "v", "VECTOR", "FLAT", 10, "TYPE", "FLOAT32", "DIM", dim,
                      "DISTANCE_METRIC", "COSINE", "MODEL", "vit-tiny", "SOURCE", "img")
    for i, b in enumerate(blobs):
        r.hset(f"pic:{i}", mapping={"img": b, "name": cases[i]["file"]})
    ref = np.array([c["vector"] for c in cases], dtype=np.float64)
    for i in (0, 4):
        res = r.execute_command("FT.SEARCH", "pics", "*=>[KNN 3 @v $q]", "PARAMS", 2, "q",
                                blobs[i], "EMBED", "q", "NOCONTENT")
        d = 1 - ref @ ref[i] / np.linalg.norm(ref, axis=1) / np.linalg.norm(ref[i])
        assert res[1] == f"pic:{i}".encode()
        assert set(res[1:]) == {f"pic:{j}".encode() for j in np.argsort(d, kind="stable")[:3]}


def test_two_backfills_at_once(srv, golden):
    """Two indexes created back to back over existing documents: both walks
    run (the second one joins the list while the first is going)."""
    import time
    sents, ref = golden
    r = srv.client(protocol=2)
    p = r.pipeline(transaction=False)
    for i, s in enumerate(sents):
        p.hset(f"a:{i}", mapping={"body": s})
        p.hset(f"b:{i}", mapping={"text": s})
    p.execute()
    p = r.pipeline(transaction=False)
    for pre, src, vec in (("a:", "body", "va"), ("b:", "text", "vb")):
        p.execute_command("FT.CREATE", f"i{vec}", "ON", "HASH", "PREFIX", 1, pre, "SCHEMA",
                          vec, "VECTOR", "FLAT", 10, "TYPE", "FLOAT32", "DIM", 384,
                          "DISTANCE_METRIC", "COSINE", "MODEL", MODEL, "SOURCE", src)
    assert p.execute() == [b"OK", b"OK"]
    keys = [(f"a:{i}", "va") for i in range(len(sents))] + \
           [(f"b:{i}", "vb") for i in range(len(sents))]
    deadline = time.time() + 60
    while time.time() < deadline and not all(r.hexists(k, f) for k, f in keys):
        time.sleep(0.1)
    for k, f in keys:
        v = np.frombuffer(r.hget(k, f), dtype="<f4")
        assert cos(v, ref[int(k.split(":")[1])]) >= COS_MIN
    assert r.info("embed")["embed_backfill_indexes"] == 0


def test_hsetnx_computes_vector_once(srv, golden):
    """HSETNX of a SOURCE field computes its vector like HSET; when the
    field already exists nothing is written (the vector stays the old one)."""
    sents, ref = golden
    r = srv.client(protocol=2)
    assert r.execute_command(*SCHEMA) == b"OK"
    assert r.hsetnx("doc:nx", "body", sents[3]) == 1
    v = np.frombuffer(r.hget("doc:nx", "vec"), dtype="<f4")
    assert cos(v, ref[3]) >= COS_MIN
    assert r.hsetnx("doc:nx", "body", sents[4]) == 0
    assert r.hget("doc:nx", "body") == sents[3].encode()
    assert np.frombuffer(r.hget("doc:nx", "vec"), dtype="<f4").tobytes() == v.tobytes()
    # A field that is not a SOURCE: plain HSETNX.
    assert r.hsetnx("doc:nx", "genre", "a") == 1 and r.hsetnx("doc:nx", "genre", "b") == 0
    with pytest.raises(redis.ResponseError, match="wrong number"):
        r.execute_command("HSETNX", "doc:nx", "body", "x", "genre", "y")


def test_profile_takes_embed(srv, golden):
    """FT.PROFILE runs a query given as text (EMBED) like FT.SEARCH does."""
    sents, ref = golden
    r = srv.client(protocol=2)
    assert r.execute_command(*SCHEMA) == b"OK"
    p = r.pipeline(transaction=False)
    for i, s in enumerate(sents[:20]):
        p.hset(f"doc:{i}", mapping={"body": s, "genre": "a"})
    p.execute()
    rep = r.execute_command("FT.PROFILE", "idx", "SEARCH", "QUERY", "*=>[KNN 3 @vec $q]",
                            "PARAMS", 2, "q", sents[7], "EMBED", "q", "NOCONTENT", "DIALECT", 2)
    assert rep[0][0] == 3 and rep[0][1] == b"doc:7"


def fake_gpu_lib(velad_path):
    """The fake libvela_gpu (tests/unit/gpu_fake.c: a naive double-precision
    BERT behind gpu_bert_*) built beside velad, or None."""
    p = os.path.join(os.path.dirname(velad_path), "libvela_gpu_fake.so")
    return p if os.path.exists(p) else None


@pytest.mark.parametrize("fail", [None, "bert_encode"])
def test_gpu_device_through_the_server(velad_factory, velad_path, golden, monkeypatch, fail):
    """velad with a GPU library (the fake) encodes on it (INFO embed says so)
    and answers like the golden vectors; a GPU that fails mid-request moves the
    model to the CPU without losing the request (the answer is the CPU's)."""
    lib = fake_gpu_lib(velad_path)
    if lib is None:
        pytest.skip("libvela_gpu_fake.so not built beside velad")
    monkeypatch.setenv("VELA_GPU_LIB", lib)
    if fail:
        monkeypatch.setenv("FAKE_GPU_FAIL", fail)
    sents, ref = golden
    r = velad_factory("--model-dir", MODELS).client(protocol=2)
    blobs = r.execute_command("EMBED", MODEL, "TEXT", *sents[:8])
    for i, b in enumerate(blobs):
        assert cos(np.frombuffer(b, dtype="<f4"), ref[i]) >= COS_MIN
    info = r.info("embed")
    model0 = info["embed_model_0"]
    model0 = model0 if isinstance(model0, dict) else dict(
        kv.split("=", 1) for kv in str(model0).split(","))
    if fail:
        assert model0["device"] == "cpu" and info["embed_gpu"] == "none"
    else:
        assert model0["device"] == "gpu" and "Fake GPU" in str(info["embed_gpu"])
    assert r.config_get("embed-device") == {b"embed-device": b"auto"} or \
        r.config_get("embed-device") == {"embed-device": "auto"}
