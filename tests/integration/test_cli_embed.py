"""`vela embed` end to end: the 60 sentence-transformers golden sentences
(tests/data/embed) through the CLI, every output format read back, errors
that name the input line, and the tmp+rename contract (a failed run leaves
no file at --out, and no temporary file either).

Needs the real all-MiniLM-L6-v2 weights (`make models`), like
test_embed_golden: $VELA_MODELS_DIR/all-MiniLM-L6-v2, else
models/all-MiniLM-L6-v2 in the source tree. Skipped with that reason
otherwise."""
import json
import os
import struct
import subprocess

import numpy as np
import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DATA = os.path.join(ROOT, "tests", "data", "embed")
DIM = 384
COS_MIN = 0.9999


def model_dir():
    env = os.environ.get("VELA_MODELS_DIR")
    return os.path.join(env, "all-MiniLM-L6-v2") if env else os.path.join(
        ROOT, "models", "all-MiniLM-L6-v2")


pytestmark = pytest.mark.skipif(
    not os.path.exists(os.path.join(model_dir(), "model.safetensors")),
    reason=f"no {model_dir()}/model.safetensors: run `make models` (or set VELA_MODELS_DIR) "
           "for the vela embed tests")


@pytest.fixture(scope="module")
def golden():
    with open(os.path.join(DATA, "sentences.json"), encoding="utf-8") as f:
        texts = json.load(f)["sentences"]
    vecs = np.fromfile(os.path.join(DATA, "embeddings.f32"), dtype="<f4")
    return texts, vecs.reshape(len(texts), DIM)


def embed(vela, *args, stdin=None):
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    return subprocess.run([vela, "embed", "--model", model_dir(), *map(str, args)],
                          input=stdin, capture_output=True, env=env, timeout=300)


def read_fvecs(path):
    raw = open(path, "rb").read()
    rows = []
    off = 0
    while off < len(raw):
        (d,) = struct.unpack_from("<i", raw, off)
        assert d == DIM
        rows.append(np.frombuffer(raw, dtype="<f4", count=d, offset=off + 4))
        off += 4 + 4 * d
    return np.array(rows)


def read_jsonl(path):
    keys, rows = [], []
    for line in open(path, encoding="utf-8"):
        o = json.loads(line)
        keys.append(o["key"])
        rows.append(o["vector"])
    return keys, np.array(rows, dtype=np.float32)


def cosines(a, b):
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    return (a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1))


def no_leftovers(d, keep=()):
    left = [p for p in os.listdir(d) if p not in keep and ".tmp." in p]
    assert not left, f"temporary files left behind: {left}"


def test_golden_plain_text_npy(vela, golden, tmp_path):
    texts, gold = golden
    # One text per line: the one golden sentence holding a newline cannot be
    # a line; it is covered by the JSON-lines test below.
    keep = [i for i, t in enumerate(texts) if "\n" not in t and "\r" not in t]
    inp = tmp_path / "texts.txt"
    inp.write_text("".join(texts[i] + "\n" for i in keep), encoding="utf-8")
    out = tmp_path / "v.npy"
    r = embed(vela, "--threads", 2, "--batch", 7, "--out", out, inp)
    assert r.returncode == 0, r.stderr.decode()
    err = r.stderr.decode()
    assert f"{len(keep)} texts" in err and "texts/s" in err and "tokens/s" in err
    v = np.load(out)
    assert v.dtype == np.float32 and v.shape == (len(keep), DIM)
    c = cosines(v, gold[keep])
    assert c.min() >= COS_MIN, f"worst cosine {c.min()} at row {int(c.argmin())}"
    no_leftovers(tmp_path)


def test_golden_jsonl_field_all_formats(vela, golden, tmp_path):
    texts, gold = golden
    inp = tmp_path / "docs.jsonl"
    with open(inp, "w", encoding="utf-8") as f:
        for i, t in enumerate(texts):
            f.write(json.dumps({"id": f"s{i}", "gloss": t, "n": i}) + "\n")
            if i == 3:
                f.write("\n")  # blank lines are skipped in JSON-lines input
    outs = {}
    for fmt in ("npy", "fvecs", "jsonl"):
        out = tmp_path / f"v.{fmt}"
        extra = ["--key", "id"] if fmt == "jsonl" else []
        r = embed(vela, "--field", "gloss", *extra, "--threads", 1, "--out", out, inp)
        assert r.returncode == 0, r.stderr.decode()
        outs[fmt] = out
    npy = np.load(outs["npy"])
    fvecs = read_fvecs(outs["fvecs"])
    keys, jl = read_jsonl(outs["jsonl"])
    assert npy.shape == (len(texts), DIM)
    assert keys == [f"s{i}" for i in range(len(texts))]
    # The same vectors bit for bit in all three (JSON keeps 9 significant
    # digits: enough to round-trip a float32).
    assert np.array_equal(npy, fvecs)
    assert np.array_equal(npy, jl)
    c = cosines(npy, gold)
    assert c.min() >= COS_MIN, f"worst cosine {c.min()} at row {int(c.argmin())}"


def test_format_flag_stdin_and_default_keys(vela, golden, tmp_path):
    texts, gold = golden
    out = tmp_path / "vectors.bin"
    r = embed(vela, "--format", "jsonl", "--batch", 1, "--out", out, "-",
              stdin=(texts[0] + "\r\n" + texts[1] + "\n").encode())
    assert r.returncode == 0, r.stderr.decode()
    keys, v = read_jsonl(out)
    assert keys == ["0", "1"]  # row numbers without --key
    assert cosines(v, gold[:2]).min() >= COS_MIN


def test_batch_size_does_not_change_vectors(vela, golden, tmp_path):
    texts, _ = golden
    inp = tmp_path / "t.txt"
    inp.write_text("".join(t + "\n" for t in texts[:20] if "\n" not in t), encoding="utf-8")
    a, b = tmp_path / "a.npy", tmp_path / "b.npy"
    assert embed(vela, "--batch", 1, "--threads", 1, "--out", a, inp).returncode == 0
    assert embed(vela, "--batch", 64, "--threads", 2, "--out", b, inp).returncode == 0
    assert np.abs(np.load(a) - np.load(b)).max() < 1e-5


def test_invalid_utf8_names_line_and_leaves_no_file(vela, tmp_path):
    lines = [b"a fine line %d" % i for i in range(1233)] + [b"caf\xc3 au lait"] + \
            [b"more %d" % i for i in range(10)]
    inp = tmp_path / "bad.txt"
    inp.write_bytes(b"\n".join(lines) + b"\n")
    out = tmp_path / "v.npy"
    r = embed(vela, "--batch", 100, "--out", out, inp)
    assert r.returncode != 0
    err = r.stderr.decode()
    assert f"{inp}:1234:" in err and "invalid UTF-8" in err, err
    assert not out.exists()
    no_leftovers(tmp_path)


def test_error_keeps_previous_output(vela, tmp_path):
    out = tmp_path / "v.fvecs"
    out.write_bytes(b"previous complete file")
    inp = tmp_path / "bad.jsonl"
    inp.write_text('{"gloss": "fine"}\n{"gloss": 12}\n', encoding="utf-8")
    r = embed(vela, "--field", "gloss", "--out", out, inp)
    assert r.returncode != 0
    assert f"{inp}:2:" in r.stderr.decode() and "gloss" in r.stderr.decode()
    assert out.read_bytes() == b"previous complete file"
    no_leftovers(tmp_path)


@pytest.mark.parametrize("content,needle", [
    (b'{"gloss": "ok"}\n{"gloss": "x",}\n', ":2: invalid JSON"),
    (b'{"gloss": "ok"}\n{"gloss": "caf\xff"}\n', ":2: invalid JSON"),
    (b'{"gloss": "ok"}\n["gloss"]\n', ':2: no string field "gloss"'),
])
def test_jsonl_errors_name_line(vela, tmp_path, content, needle):
    inp = tmp_path / "in.jsonl"
    inp.write_bytes(content)
    out = tmp_path / "v.npy"
    r = embed(vela, "--field", "gloss", "--out", out, inp)
    assert r.returncode != 0
    assert needle in r.stderr.decode(), r.stderr.decode()
    assert not out.exists()
    no_leftovers(tmp_path)


def test_usage_errors(vela, tmp_path):
    inp = tmp_path / "t.txt"
    inp.write_text("hello\n")
    r = embed(vela, "--out", tmp_path / "v.txt", inp)
    assert r.returncode == 2 and b"--format" in r.stderr
    r = embed(vela, "--batch", 0, "--out", tmp_path / "v.npy", inp)
    assert r.returncode == 2
    r = embed(vela, "--out", tmp_path / "v.npy", tmp_path / "missing.txt")
    assert r.returncode == 1 and b"missing.txt" in r.stderr
    r = subprocess.run([vela, "embed", "--model", str(tmp_path), "--out",
                        str(tmp_path / "v.npy"), str(inp)], capture_output=True, timeout=60)
    assert r.returncode == 1 and b"make models" in r.stderr
    assert not (tmp_path / "v.npy").exists()
    no_leftovers(tmp_path)


def test_empty_input(vela, tmp_path):
    inp = tmp_path / "empty.txt"
    inp.write_bytes(b"")
    out = tmp_path / "v.npy"
    r = embed(vela, "--out", out, inp)
    assert r.returncode == 0, r.stderr.decode()
    assert np.load(out).shape == (0, DIM)
