"""The compute-backend knobs through redis-py: CONFIG GET/SET gpu, the INFO
GPU section, `--gpu` at start-up, and FT.SEARCH answering the same on every
mode (on a machine without a CUDA device every mode runs on the CPU; with
one, `yes`/`auto` run FLAT batches on the GPU)."""
import subprocess

import numpy as np
import pytest
import redis
from redis.commands.search.field import VectorField
from redis.commands.search.index_definition import IndexDefinition, IndexType

from conftest import free_port

FIELDS = ("gpu_mode", "gpu_backend", "gpu_device", "gpu_devices", "gpu_library",
          "gpu_fallbacks", "gpu_resident_blocks", "gpu_resident_bytes")


def gpu_info(r):
    info = r.info("gpu")
    for f in FIELDS:
        assert f in info, f"INFO gpu lacks {f}: {info}"
    return info


def has_device(r):
    return int(gpu_info(r)["gpu_devices"]) > 0


def test_config_get_default_and_star(velad):
    r = velad.client(decode_responses=True)
    assert r.config_get("gpu") == {"gpu": "auto"}
    assert r.config_get("*")["gpu"] == "auto"
    assert r.config_get("GP?") == {"gpu": "auto"}


def test_info_gpu_section(velad):
    r = velad.client(decode_responses=True)
    info = gpu_info(r)
    assert info["gpu_mode"] == "auto"
    if has_device(r):
        assert info["gpu_backend"] == "cuda"
        assert info["gpu_device"] != "none"
    else:
        assert info["gpu_backend"] == "cpu"
        assert info["gpu_device"] == "none"
    assert int(info["gpu_fallbacks"]) == 0
    # the section is in the default INFO and in INFO all, under "# GPU"
    raw = velad.client(decode_responses=True, protocol=2)
    raw.response_callbacks["INFO"] = lambda resp, **kw: resp  # the text as sent
    text = raw.execute_command("INFO")
    assert "\r\n# GPU\r\ngpu_mode:auto\r\n" in text
    assert "gpu_backend:" in raw.execute_command("INFO", "all")
    assert "gpu_mode:" not in raw.execute_command("INFO", "server")
    assert set(r.info("all")) >= set(FIELDS)


def test_config_set_gpu(velad):
    r = velad.client(decode_responses=True)
    device = has_device(r)
    assert r.config_set("gpu", "no")
    assert r.config_get("gpu") == {"gpu": "no"}
    info = gpu_info(r)
    assert (info["gpu_mode"], info["gpu_backend"], info["gpu_device"]) == ("no", "cpu", "none")
    assert int(info["gpu_resident_blocks"]) == 0
    if device:
        assert r.config_set("gpu", "YES")
        assert gpu_info(r)["gpu_backend"] == "cuda"
        assert r.config_get("gpu") == {"gpu": "yes"}
    else:
        with pytest.raises(redis.ResponseError, match="no CUDA device"):
            r.config_set("gpu", "yes")
        assert r.config_get("gpu") == {"gpu": "no"}, "a refused SET must not change the mode"
    assert r.config_set("gpu", "auto")
    assert r.config_get("gpu") == {"gpu": "auto"}
    assert gpu_info(r)["gpu_backend"] == ("cuda" if device else "cpu")
    with pytest.raises(redis.ResponseError, match="Invalid argument"):
        r.config_set("gpu", "sometimes")
    with pytest.raises(redis.ResponseError):
        r.execute_command("CONFIG", "SET", "gpu")
    assert r.config_get("gpu") == {"gpu": "auto"}


def test_start_flag(velad_factory):
    r = velad_factory("--gpu", "no").client(decode_responses=True)
    assert r.config_get("gpu") == {"gpu": "no"}
    assert gpu_info(r)["gpu_backend"] == "cpu"


def test_start_gpu_yes_without_device(velad_path, tmp_path, velad):
    if has_device(velad.client(decode_responses=True)):
        pytest.skip("this machine has a CUDA device")
    p = subprocess.run([velad_path, "--port", str(free_port()), "--dir", str(tmp_path / "d"),
                        "--gpu", "yes"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 1, p.stderr
    assert "no CUDA device" in p.stderr


N, DIM, K = 500, 12, 7


def knn_all(r, queries):
    """A pipeline of KNN queries (the server batches them: one GEMM per
    vector field); each answer as [(key, distance)] from the RESP2 reply."""
    pipe = r.pipeline(transaction=False)
    for v in queries:
        pipe.execute_command("FT.SEARCH", "idx", f"*=>[KNN {K} @v $B AS d]", "PARAMS", "2",
                             "B", v.tobytes(), "SORTBY", "d", "RETURN", "1", "d",
                             "DIALECT", "2")
    out = []
    for reply in pipe.execute():
        out.append([(reply[i].decode(), float(reply[i + 1][1]))
                    for i in range(1, len(reply), 2)])
    return out


def test_search_same_on_every_mode(velad):
    r = velad.client(protocol=2)
    rng = np.random.default_rng(7)
    X = rng.standard_normal((N, DIM)).astype(np.float32)
    r.ft("idx").create_index(
        [VectorField("v", "FLAT", {"TYPE": "FLOAT32", "DIM": DIM, "DISTANCE_METRIC": "L2"})],
        definition=IndexDefinition(prefix=["doc:"], index_type=IndexType.HASH))
    pipe = r.pipeline(transaction=False)
    for i in range(N):
        pipe.hset(f"doc:{i}", mapping={"v": X[i].tobytes()})
    pipe.execute()
    Q = rng.standard_normal((20, DIM)).astype(np.float32)
    d2 = ((Q[:, None, :].astype(np.float64) - X[None, :, :]) ** 2).sum(-1)
    answers = {}
    for mode in ("no", "auto", "no"):
        r.config_set("gpu", mode)
        answers.setdefault(mode, []).append(knn_all(r, Q))
    first = answers["no"][0]
    assert answers["auto"][0] == first and answers["no"][1] == first
    for qi, hits in enumerate(first):
        want = np.argsort(d2[qi], kind="stable")[:K]
        assert [h[0] for h in hits] == [f"doc:{j}" for j in want]
        assert np.allclose([h[1] for h in hits], d2[qi][want], rtol=1e-4, atol=1e-5)
    # a write invalidates a GPU-resident copy: the new vector is found
    r.hset("doc:0", mapping={"v": Q[0].tobytes()})
    r.config_set("gpu", "auto")
    assert knn_all(r, Q[:1])[0][0] == ("doc:0", 0.0)
    assert int(r.info("gpu")["gpu_fallbacks"]) == 0
