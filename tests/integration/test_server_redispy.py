"""velad through redis-py 8.1 (RESP2, RESP3, and the v8 default: RESP3 wire
with legacy Python objects): the search API checked against a numpy float64
brute force, the keyspace/hash commands, server introspection, expiry, and the
examples of the protocol reference (§2.3/§2.4 wire bytes, §3 redis-py calls)."""
import socket
import time

import numpy as np
import pytest
import redis
from redis.commands.search.field import NumericField, TagField, TextField, VectorField
from redis.commands.search.index_definition import IndexDefinition, IndexType
from redis.commands.search.query import NumericFilter, Query

from replies import text

N, DIM, K = 300, 8, 10
TAGS = ["a", "b", "c"]
WORDS = ["red", "blue", "green", "apple", "tree"]
PROTOCOLS = [2, 3, None]  # None: redis-py 8's default (RESP3 wire, legacy objects)


@pytest.fixture(scope="module")
def server(velad_path, tmp_path_factory):
    """One velad for the module (the search tests only read after loading)."""
    from conftest import Velad
    d = tmp_path_factory.mktemp("redispy")
    s = Velad(velad_path, d / "data", d / "velad.log").start()
    yield s
    s.stop_ok()


def client(server, protocol, **kw):
    if protocol is not None:
        kw["protocol"] = protocol
    return server.client(**kw)


@pytest.fixture(params=PROTOCOLS, ids=lambda p: f"resp{p or 'default'}")
def r(request, server):
    c = client(server, request.param)
    c.flushall()
    yield c
    c.close()


# ------------------------------------------------------------ data and brute force

def make_data(seed=7):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, DIM)).astype(np.float32)
    tags = [TAGS[i % 3] if i % 7 else f"{TAGS[i % 3]},{TAGS[(i + 1) % 3]}" for i in range(N)]
    years = rng.integers(1990, 2021, N)
    titles = [" ".join(rng.choice(WORDS, 2, replace=False)) for _ in range(N)]
    return x, tags, years, titles


def distances(x, q, metric):
    x = x.astype(np.float64)
    q = q.astype(np.float64)
    if metric == "L2":
        return ((x - q) ** 2).sum(1)
    if metric == "IP":
        return 1.0 - x @ q
    return 1.0 - (x @ q) / (np.linalg.norm(x, axis=1) * np.linalg.norm(q))


def load(r, name, algo, metric, prefix="doc:"):
    x, tags, years, titles = make_data()
    params = {"TYPE": "FLOAT32", "DIM": DIM, "DISTANCE_METRIC": metric}
    if algo == "HNSW":
        params.update({"M": 16, "EF_CONSTRUCTION": 200})
    r.ft(name).create_index(
        [TagField("tag"), NumericField("year"), TextField("title"), VectorField("v", algo, params)],
        definition=IndexDefinition(prefix=[prefix], index_type=IndexType.HASH))
    p = r.pipeline(transaction=False)
    for i in range(N):
        p.hset(f"{prefix}{i}", mapping={"v": x[i].tobytes(), "tag": tags[i],
                                        "year": int(years[i]), "title": titles[i]})
    assert p.execute() == [4] * N
    return x, tags, years, titles


def hits(res):
    """[(id, {field: value})] from a Result (RESP2 / legacy) or a RESP3 dict."""
    if isinstance(res, dict):
        out = []
        for d in res["results"]:
            attrs = {k if isinstance(k, str) else k.decode(): v
                     for k, v in d.get("extra_attributes", {}).items()}
            out.append((d["id"] if isinstance(d["id"], str) else d["id"].decode(), attrs))
        return res["total_results"], out
    out = []
    for d in res.docs:
        attrs = {k: v for k, v in d.__dict__.items() if k not in ("id", "payload")}
        out.append((d.id, attrs))
    return res.total, out


def ft_info(r, name):
    return text(r.ft(name).info())


def mask_of(tags, years, titles, expr):
    """The filters below, evaluated in Python."""
    t = np.array([set(s.split(",")) for s in tags], dtype=object)
    y = np.asarray(years)
    w = np.array([set(s.split()) for s in titles], dtype=object)
    has = lambda arr, v: np.array([v in s for s in arr])  # noqa: E731
    return {
        "*": np.ones(N, bool),
        "(@tag:{a|b})": has(t, "a") | has(t, "b"),
        "(@year:[(2000 2010])": (y > 2000) & (y <= 2010),
        "(@year:[2000 (2010])": (y >= 2000) & (y < 2010),
        "(@year:[-inf (1995])": y < 1995,
        "(@title:(red))": has(w, "red"),
        "(-@tag:{a})": ~has(t, "a"),
        "(@tag:{a} | @year:[2015 +inf])": has(t, "a") | (y >= 2015),
        "(@tag:{c} -@title:(blue))": has(t, "c") & ~has(w, "blue"),
        "(@tag:{b} @year:[(1995 (2005] @title:(apple|tree))":
            has(t, "b") & (y > 1995) & (y < 2005) & (has(w, "apple") | has(w, "tree")),
    }[expr]


FILTERS = ["*", "(@tag:{a|b})", "(@year:[(2000 2010])", "(@year:[2000 (2010])",
           "(@year:[-inf (1995])", "(@title:(red))", "(-@tag:{a})",
           "(@tag:{a} | @year:[2015 +inf])", "(@tag:{c} -@title:(blue))",
           "(@tag:{b} @year:[(1995 (2005] @title:(apple|tree))"]


def check_knn(r, name, data, metric, flt, q, exact=True, k=K):
    x, tags, years, titles = data
    m = mask_of(tags, years, titles, flt)
    d = distances(x, q, metric)
    d[~m] = np.inf
    want = [i for i in np.argsort(d, kind="stable")[:k] if np.isfinite(d[i])]
    qs = (Query(f"{flt}=>[KNN {k} @v $vec AS score]").return_fields("score", "tag", "year")
          .sort_by("score").paging(0, k).dialect(2))
    total, got = hits(r.ft(name).search(qs, query_params={"vec": q.tobytes()}))
    assert total == len(want), flt
    assert len(got) == len(want), flt
    ids = [int(g[0].split(":")[1]) for g in got]
    assert all(m[i] for i in ids), f"{flt}: a hit fails the filter"
    scores = [float(g[1]["score"]) for g in got]
    assert scores == sorted(scores)
    for i, s in zip(ids, scores):  # each reported distance is the true one
        assert s == pytest.approx(d[i], abs=1e-4, rel=1e-4)
    for i, g in zip(ids, got):
        assert g[1]["tag"] == tags[i] and int(g[1]["year"]) == years[i]
    if exact:  # same distances as the brute force (ties may swap ids)
        np.testing.assert_allclose(scores, d[want], rtol=1e-4, atol=1e-4)
    else:
        recall = len(set(ids) & set(want)) / max(1, len(want))
        assert recall >= 0.9, f"{flt}: recall {recall}"


@pytest.mark.parametrize("algo,metric", [("FLAT", "L2"), ("FLAT", "IP"), ("FLAT", "COSINE"),
                                         ("HNSW", "L2"), ("HNSW", "COSINE"), ("HNSW", "IP")])
def test_knn_with_filters(r, algo, metric):
    data = load(r, "idx", algo, metric)
    rng = np.random.default_rng(11)
    for qi, flt in enumerate(FILTERS):
        q = rng.standard_normal(DIM).astype(np.float32)
        check_knn(r, "idx", data, metric, flt, q, exact=algo == "FLAT")
    info = ft_info(r, "idx")
    assert info["index_name"] == "idx"
    assert int(info["num_docs"]) == N
    assert int(info["hash_indexing_failures"]) == 0


def test_filter_queries_and_paging(r):
    x, tags, years, titles = load(r, "idx", "FLAT", "L2")
    y = np.asarray(years)
    # numeric range with exclusive bounds, sorted by year, paged
    m = (y > 2000) & (y < 2010)
    want = sorted(np.nonzero(m)[0], key=lambda i: (years[i], i))
    got = []
    for off in range(0, len(want) + 20, 20):
        total, page = hits(r.ft("idx").search(
            Query("@year:[(2000 (2010]").return_fields("year").sort_by("year")
            .paging(off, 20).dialect(2)))
        assert total == len(want)
        got += page
    assert [int(g[1]["year"]) for g in got] == [years[i] for i in want]
    assert sorted(int(g[0].split(":")[1]) for g in got) == sorted(want)
    # descending
    _, page = hits(r.ft("idx").search(Query("*").return_fields("year")
                                      .sort_by("year", asc=False).paging(0, 5).dialect(2)))
    assert [int(g[1]["year"]) for g in page] == sorted(years, reverse=True)[:5]
    # legacy FILTER (NumericFilter), exclusive min
    total, _ = hits(r.ft("idx").search(
        Query("*").add_filter(NumericFilter("year", 2015, 2020, minExclusive=True))
        .paging(0, 0).dialect(2)))
    assert total == int(((y > 2015) & (y <= 2020)).sum())
    # FILTER on a KNN query restricts the candidates before the K are chosen
    m = (y > 2015) & (y <= 2020)
    d = distances(x, x[0], "L2")
    d[~m] = np.inf
    total, page = hits(r.ft("idx").search(
        Query("*=>[KNN 5 @v $vec AS s]").add_filter(
            NumericFilter("year", 2015, 2020, minExclusive=True))
        .return_fields("s").sort_by("s").dialect(2), query_params={"vec": x[0].tobytes()}))
    assert total == 5
    np.testing.assert_allclose([float(g[1]["s"]) for g in page], np.sort(d)[:5], atol=1e-4)
    # text OR / NOT counts
    for expr in ["(@title:(red))", "(-@tag:{a})", "(@tag:{a} | @year:[2015 +inf])",
                 "(@tag:{c} -@title:(blue))"]:
        total, _ = hits(r.ft("idx").search(Query(expr).paging(0, 0).dialect(2)))
        assert total == int(mask_of(tags, years, titles, expr).sum()), expr
    # KNN 0 returns just the total 0
    total, page = hits(r.ft("idx").search(
        Query("*=>[KNN 0 @v $vec]").dialect(2), query_params={"vec": x[0].tobytes()}))
    assert total == 0 and page == []


def test_dropindex_and_expiry(r):
    x, *_ = load(r, "idx", "HNSW", "COSINE")
    r.ft("idx2").create_index([TagField("tag")],
                              definition=IndexDefinition(prefix=["doc:"]))
    lst = r.execute_command("FT._LIST")
    assert {v.decode() if isinstance(v, bytes) else v for v in lst} == {"idx", "idx2"}
    # expiry: short TTLs leave the index within ~1 s
    for i in range(5):
        assert r.pexpire(f"doc:{i}", 300)
    q = (Query("*=>[KNN 300 @v $vec AS s]").return_fields("s").paging(0, 300).dialect(2))
    t0 = time.monotonic()
    while True:
        total, got = hits(r.ft("idx").search(q, query_params={"vec": x[0].tobytes()}))
        ids = {g[0] for g in got}
        if not ids & {f"doc:{i}" for i in range(5)}:
            break
        assert time.monotonic() - t0 < 1.5, "expired keys still returned by FT.SEARCH"
        time.sleep(0.05)
    assert total == N - 5
    assert r.exists("doc:0") == 0
    assert int(ft_info(r, "idx")["num_docs"]) == N - 5
    # drop with DD deletes the documents; idx2 stays
    assert r.ft("idx").dropindex(delete_documents=True)
    assert r.dbsize() == 0
    with pytest.raises(redis.ResponseError, match="(?i)unknown index name"):
        r.ft("idx").info()
    assert int(ft_info(r, "idx2")["num_docs"]) == 0
    r.ft("idx2").dropindex()


def test_hash_and_key_commands(r):
    assert r.hset("h", mapping={"a": "1", "b": "2"}) == 2
    assert r.hset("h", "a", "3") == 0
    assert r.hget("h", "a") == b"3"
    assert r.hget("h", "zz") is None
    assert r.hgetall("h") == {b"a": b"3", b"b": b"2"}
    assert r.hmget("h", ["a", "zz", "b"]) == [b"3", None, b"2"]
    assert r.hexists("h", "a") is True or r.hexists("h", "a") == 1
    assert r.hlen("h") == 2
    assert r.hsetnx("h", "a", "9") == 0
    assert r.hsetnx("h", "c", "9") == 1
    assert r.hdel("h", "a", "zz") == 1
    assert r.type("h") == b"hash"
    assert r.set("s", "v") is True
    assert r.get("s") == b"v"
    assert r.type("s") == b"string"
    assert r.type("nope") == b"none"
    with pytest.raises(redis.ResponseError, match="^WRONGTYPE"):
        r.hget("s", "x")
    assert r.exists("h", "s", "nope") == 2
    assert r.expire("h", 100) is True
    assert 98 <= r.ttl("h") <= 100
    assert r.persist("h") is True
    assert r.ttl("h") == -1
    assert r.ttl("nope") == -2
    assert sorted(r.keys("*")) == [b"h", b"s"]
    for i in range(30):
        r.hset(f"k:{i}", "f", i)
    assert sorted(r.scan_iter("k:*", count=7)) == sorted(f"k:{i}".encode() for i in range(30))
    assert r.dbsize() == 32
    assert r.delete("h", "nope") == 1
    assert r.unlink("s", "k:0") == 2
    assert r.hdel("k:1", "f") == 1  # emptied hash is deleted
    assert r.exists("k:1") == 0
    assert r.flushall() is True
    assert r.dbsize() == 0
    with pytest.raises(redis.ResponseError, match="wrong number of arguments for 'hget' command"):
        r.execute_command("HGET", "h")
    with pytest.raises(redis.ResponseError, match="^unknown command 'FOO', with args beginning with: 'a' 'b'"):
        r.execute_command("FOO", "a", "b")


def test_pipelines(r):
    x = np.arange(DIM, dtype=np.float32)
    for tx in (False, True):
        r.flushall()
        p = r.pipeline(transaction=tx)
        p.hset("doc:1", mapping={"v": x.tobytes(), "tag": "a"})
        p.hget("doc:1", "tag")
        p.expire("doc:1", 100)
        p.hgetall("doc:1")
        p.delete("nope")
        p.set("s", "1")
        p.get("s")
        res = p.execute()
        assert res[0] == 2 and res[1] == b"a" and res[2] is True
        assert res[3] == {b"v": x.tobytes(), b"tag": b"a"}
        assert res[4:] == [0, True, b"1"]
    # errors inside a pipeline come back in place
    p = r.pipeline(transaction=False)
    p.set("s", "1")
    p.hget("s", "f")
    p.get("s")
    res = p.execute(raise_on_error=False)
    assert res[0] is True and isinstance(res[1], redis.ResponseError) and res[2] == b"1"
    # FT.SEARCH inside a transaction pipeline (LangChain does HGETALL in MULTI)
    r.ft("idx").create_index([VectorField("v", "FLAT", {"TYPE": "FLOAT32", "DIM": DIM,
                                                         "DISTANCE_METRIC": "L2"})])
    r.hset("doc:2", "v", (x + 1).tobytes())
    p = r.pipeline(transaction=True)
    p.hgetall("doc:2")
    p.ft("idx").search(Query("*=>[KNN 1 @v $b AS d]").return_fields("d").dialect(2),
                       query_params={"b": x.tobytes()})
    res = p.execute()
    assert res[0] == {b"v": (x + 1).tobytes()}
    assert res[1] is not None


def test_server_commands(r):
    proto = r.connection_pool.connection_kwargs.get("protocol")
    assert r.ping() is True
    assert r.echo("hi") == b"hi"
    assert r.execute_command("SELECT", 0) in (True, b"OK", "OK")
    with pytest.raises(redis.ResponseError, match="DB index is out of range"):
        r.execute_command("SELECT", 1)
    assert r.client_setname("worker-1") is True
    assert r.client_getname() in (b"worker-1", "worker-1")
    cid = r.client_id()
    assert isinstance(cid, int) and cid > 0
    ci = r.client_info()
    assert int(ci["id"]) == cid and ci["name"] == "worker-1"
    cfg = r.config_get("appendonly")
    assert cfg == {"appendonly": "no"} or cfg == {b"appendonly": b"no"}
    assert r.config_get("save") in ({"save": ""}, {b"save": b""})
    assert r.config_set("maxclients", 500) is True
    assert r.config_get("maxclients") in ({"maxclients": "500"}, {b"maxclients": b"500"})
    info = r.info()
    assert info["redis_version"] == "8.2.0"
    assert r.info("server")["redis_version"] == "8.2.0"
    mods = r.module_list()
    assert mods[0][b"name"] == b"search" and mods[0][b"ver"] == 80200
    assert r.execute_command("COMMAND COUNT") > 20
    docs = r.execute_command("COMMAND DOCS")
    assert docs in ([], {}) or docs is not None
    h = r.execute_command("HELLO", 3 if proto in (3, None) else 2)
    h = {(k.decode() if isinstance(k, bytes) else k): v for k, v in
         (h.items() if isinstance(h, dict) else zip(h[::2], h[1::2]))}
    assert h["server"] in (b"redis", "redis") and h["version"] in (b"8.2.0", "8.2.0")
    assert h["proto"] == (3 if proto in (3, None) else 2)
    assert h["id"] == cid


def test_ft_info_and_list(r):
    load(r, "idx", "HNSW", "COSINE")
    info = ft_info(r, "idx")
    assert info["index_name"] == "idx"
    assert int(info["num_docs"]) == N
    assert info["index_definition"][1] == "HASH"
    assert info["index_definition"][3] == ["doc:"]
    lst = r.execute_command("FT._LIST")
    assert [v.decode() if isinstance(v, bytes) else v for v in lst] == ["idx"]
    with pytest.raises(redis.ResponseError, match="Index already exists"):
        r.ft("idx").create_index([TagField("tag")])
    with pytest.raises(redis.ResponseError, match="^No such index nope"):
        r.ft("nope").search(Query("*"))
    r.flushall()  # FLUSHALL drops index definitions too
    assert list(r.execute_command("FT._LIST")) == []


def test_wrong_blob_size_is_indexing_failure(r):
    r.ft("idx").create_index([VectorField("v", "FLAT", {"TYPE": "FLOAT32", "DIM": 4,
                                                         "DISTANCE_METRIC": "L2"})])
    assert r.hset("doc:1", "v", b"\x00" * 7) == 1
    info = ft_info(r, "idx")
    assert int(info["hash_indexing_failures"]) == 1 and int(info["num_docs"]) == 0
    with pytest.raises(redis.ResponseError, match=r"query vector blob size \(7\) does not match "
                                                  r"index's expected size \(16\)"):
        r.ft("idx").search(Query("*=>[KNN 1 @v $b]").dialect(2), query_params={"b": b"1234567"})


# ------------------------------------------------------------ the reference's examples

def raw(port, data, want_bytes, timeout=5):
    """Send bytes; read until `want_bytes` bytes arrived (or EOF)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        buf = b""
        while len(buf) < want_bytes:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
        return buf


def test_reference_wire_examples(server):
    c = server.client()
    c.flushall()
    c.ft("idx").create_index([TagField("tag"), VectorField("v", "FLAT", {
        "TYPE": "FLOAT32", "DIM": 2, "DISTANCE_METRIC": "L2"})],
        definition=IndexDefinition(prefix=["doc:"]))
    # §2.2: HSET doc:1 v <[1,2]> tag a -> :2
    req = (b"*6\r\n$4\r\nHSET\r\n$5\r\ndoc:1\r\n$1\r\nv\r\n$8\r\n\x00\x00\x80\x3f\x00\x00\x00\x40"
           b"\r\n$3\r\ntag\r\n$1\r\na\r\n")
    assert raw(server.port, req, 4) == b":2\r\n"
    c.hset("doc:2", mapping={"v": np.array([2, 2], np.float32).tobytes(), "tag": "b"})
    # §2.4 RESP2 reply, byte for byte
    q = [b"FT.SEARCH", b"idx", b"*=>[KNN 2 @v $B AS dist]", b"PARAMS", b"2", b"B",
         b"\x00\x00\x80?\x00\x00\x00@", b"SORTBY", b"dist", b"RETURN", b"2", b"dist", b"tag",
         b"DIALECT", b"2"]
    req = b"*%d\r\n" % len(q) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in q)
    want = (b"*5\r\n:2\r\n"
            b"$5\r\ndoc:1\r\n*4\r\n$4\r\ndist\r\n$1\r\n0\r\n$3\r\ntag\r\n$1\r\na\r\n"
            b"$5\r\ndoc:2\r\n*4\r\n$4\r\ndist\r\n$1\r\n1\r\n$3\r\ntag\r\n$1\r\nb\r\n")
    assert raw(server.port, req, len(want)) == want
    # §2.4 RESP3 map shape
    want3 = (b"%5\r\n+attributes\r\n*0\r\n+format\r\n+STRING\r\n+results\r\n*2\r\n"
             b"%3\r\n+id\r\n$5\r\ndoc:1\r\n+extra_attributes\r\n%2\r\n$4\r\ndist\r\n$1\r\n0\r\n"
             b"$3\r\ntag\r\n$1\r\na\r\n+values\r\n*0\r\n"
             b"%3\r\n+id\r\n$5\r\ndoc:2\r\n+extra_attributes\r\n%2\r\n$4\r\ndist\r\n$1\r\n1\r\n"
             b"$3\r\ntag\r\n$1\r\nb\r\n+values\r\n*0\r\n"
             b"+total_results\r\n:2\r\n+warning\r\n*0\r\n")
    hello = b"*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(hello)
        buf = b""
        while not buf.endswith(b"*0\r\n"):
            buf += s.recv(4096)
        assert buf.startswith(b"%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$5\r\n8.2.0"
                              b"\r\n$5\r\nproto\r\n:3\r\n$2\r\nid\r\n:")
        s.sendall(req)
        buf = b""
        while len(buf) < len(want3):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
        assert buf == want3
    c.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_reference_redispy_example(server, protocol):
    r = client(server, protocol)
    r.flushall()
    r.ft("idx").create_index(
        [TagField("tag"), NumericField("year"), TextField("title"),
         VectorField("v", "HNSW", {"TYPE": "FLOAT32", "DIM": 4, "DISTANCE_METRIC": "COSINE"})],
        definition=IndexDefinition(prefix=["doc:"], index_type=IndexType.HASH))
    vecs = {1: [1, 0, 0, 0], 2: [1, 1, 0, 0], 3: [0, 1, 0, 0], 4: [0, 0, 1, 0]}
    for i, v in vecs.items():
        r.hset(f"doc:{i}", mapping={"v": np.array(v, np.float32).tobytes(),
                                    "tag": "abcd"[i - 1], "year": 2000 + i, "title": "t"})
    blob = np.array([1, 0.1, 0, 0], np.float32).tobytes()
    res = r.ft("idx").search(
        Query("(@tag:{a|b})=>[KNN 3 @v $vec AS score]").return_fields("score", "tag")
        .sort_by("score").paging(0, 3).dialect(2), query_params={"vec": blob})
    total, got = hits(res)
    assert total == 2
    assert [g[0] for g in got] == ["doc:1", "doc:2"]
    assert [g[1]["tag"] for g in got] == ["a", "b"]
    q = np.array([1, 0.1, 0, 0])
    for (_, a), v in zip(got, [vecs[1], vecs[2]]):
        v = np.array(v, float)
        assert float(a["score"]) == pytest.approx(1 - q @ v / np.linalg.norm(q) / np.linalg.norm(v),
                                                  abs=1e-5)
    assert r.ft("idx").dropindex(delete_documents=True)
    assert r.dbsize() == 0
    r.close()
