"""Hybrid (filter + KNN) queries through redis-py: FT.PROFILE's reply shape
(RESP2 and RESP3) and plan names, FT.EXPLAIN's plan line, HYBRID_POLICY
ADHOC_BF / BATCHES with BATCH_SIZE and EF_RUNTIME honoured and their errors,
against a numpy float64 brute force. 3,000 vectors: above the 1,024 at
which velad builds the graph."""
import numpy as np
import pytest
import redis

N, DIM, K = 3000, 16, 5


@pytest.fixture
def hyb(velad):
    r = velad.client(protocol=2)
    r.execute_command("FT.CREATE", "h", "ON", "HASH", "PREFIX", 1, "d:", "SCHEMA",
                      "t", "TAG", "n", "NUMERIC",
                      "v", "VECTOR", "HNSW", 8, "TYPE", "FLOAT32", "DIM", DIM,
                      "DISTANCE_METRIC", "L2", "EF_RUNTIME", 40)
    rng = np.random.default_rng(7)
    X = rng.normal(size=(N, DIM)).astype(np.float32)
    tags = np.where(np.arange(N) % 600 == 0, "rare",
                    np.where(np.arange(N) % 10 == 1, "mid", "common"))
    p = r.pipeline(transaction=False)
    for i in range(N):
        p.hset(f"d:{i}", mapping={"v": X[i].tobytes(), "t": str(tags[i]), "n": i})
    p.execute()
    velad.wait_builds()  # the graph plans need the graph
    return velad, r, X, tags, rng


def brute(X, q, mask):
    d = ((X.astype(np.float64) - q.astype(np.float64)) ** 2).sum(1)
    idx = np.nonzero(mask)[0]
    return [f"d:{i}" for i in idx[np.argsort(d[idx], kind="stable")[:K]]]


def pairs(flat):
    """A RESP2 flat [name, value, ...] list as a dict with str keys."""
    return {flat[i].decode(): flat[i + 1] for i in range(0, len(flat), 2)}


def profile(r, query, q, *opts, limited=False):
    args = ["FT.PROFILE", "h", "SEARCH"] + (["LIMITED"] if limited else []) + ["QUERY", query]
    rep = r.execute_command(*args, "PARAMS", 2, "B", q.tobytes(), *opts, "DIALECT", 2)
    assert isinstance(rep, list) and len(rep) == 2
    results, prof = rep
    entries = {}
    for e in prof:  # [name, value] pairs; Warning may have no value
        entries[e[0].decode()] = e[1] if len(e) > 1 else None
    return results, entries


def keys_of(results):
    """Keys of an FT.SEARCH RESP2 reply with NOCONTENT."""
    return [k.decode() for k in results[1:]]


def test_profile_shape_and_plans(hyb):
    _, r, X, tags, rng = hyb
    q = rng.normal(size=DIM).astype(np.float32)
    res, prof = profile(r, f"@t:{{rare}}=>[KNN {K} @v $B]", q, "NOCONTENT")
    assert list(prof) == ["Total profile time", "Parsing time", "Filter time", "Search time",
                          "Load time", "Reply time", "Warning", "Iterators profile",
                          "Result processors profile"]
    for stage in ("Total profile time", "Parsing time", "Filter time", "Search time",
                  "Load time", "Reply time"):
        assert float(prof[stage]) >= 0
    assert float(prof["Total profile time"]) >= float(prof["Search time"])
    it = pairs(prof["Iterators profile"])
    # 5 documents match: an exact scan of them, the count exact
    assert it["Type"] == b"VECTOR"
    assert it["Plan"] == b"filtered-scan"
    assert it["Vector search mode"] == b"HYBRID_ADHOC_BF"
    assert it["Plan forced"] == 0
    assert it["Index size"] == N
    assert it["Estimated number of matches"] == 5
    assert abs(float(it["Selectivity"]) - 5 / N) < 1e-6 * 5 / N
    assert it["Distance computations"] == 5
    assert it["Counter"] == res[0] == 5
    child = pairs(it["Child iterators"][0])
    assert child["Type"] == b"FILTER" and child["Query"] == b"@t:{rare}"
    assert child["Counter"] == 5
    procs = [pairs(p) for p in prof["Result processors profile"]]
    assert [p["Type"] for p in procs] == [b"Index", b"Loader", b"Reply"]
    assert keys_of(res) == brute(X, q, tags == "rare")

    # no filter: the graph walk, with the index's EF_RUNTIME as its window
    res, prof = profile(r, f"*=>[KNN {K} @v $B]", q, "NOCONTENT")
    it = pairs(prof["Iterators profile"])
    assert it["Plan"] == b"graph" and it["Vector search mode"] == b"STANDARD_KNN"
    assert it["Window"] == 40
    assert it["Distance computations"] > K
    assert "Child iterators" not in it
    # a filter that keeps nearly everything: planned as without it, the
    # walk keeping the matches
    res, prof = profile(r, f"-@t:{{rare}}=>[KNN {K} @v $B EF_RUNTIME 60]", q, "NOCONTENT")
    it = pairs(prof["Iterators profile"])
    assert it["Plan"] == b"graph" and it["Vector search mode"] == b"HYBRID_GRAPH_POSTFILTER"
    assert it["Window"] == 60
    assert it["Estimated number of matches"] == N - 5
    # 2,695 matches (90 % less a few): cheaper to scan than to walk
    res, prof = profile(r, f"@t:{{common}}=>[KNN {K} @v $B]", q, "NOCONTENT")
    it = pairs(prof["Iterators profile"])
    assert it["Plan"] == b"filtered-scan"
    assert keys_of(res) == brute(X, q, tags == "common")
    # LIMITED leaves the filter's iterator out
    _, prof = profile(r, f"@t:{{mid}}=>[KNN {K} @v $B]", q, "NOCONTENT", limited=True)
    assert "Child iterators" not in pairs(prof["Iterators profile"])
    # without KNN the iterator is the filter itself
    res, prof = profile(r, "@n:[0 99]", q, "LIMIT", 0, 3)
    it = pairs(prof["Iterators profile"])
    assert it["Type"] == b"FILTER" and it["Counter"] == 100 and it["Size"] == N
    assert res[0] == 100


def test_profile_resp3(hyb):
    velad, _, X, tags, rng = hyb
    r3 = velad.client(protocol=3)
    q = rng.normal(size=DIM).astype(np.float32)
    rep = r3.execute_command("FT.PROFILE", "h", "SEARCH", "QUERY", f"@t:{{mid}}=>[KNN {K} @v $B]",
                             "PARAMS", 2, "B", q.tobytes(), "NOCONTENT", "DIALECT", 2)
    assert set(rep) == {b"Results", b"Profile"}
    assert rep[b"Results"][b"total_results"] == K
    prof = rep[b"Profile"]
    assert isinstance(prof[b"Search time"], float)
    it = prof[b"Iterators profile"]
    assert it[b"Estimated number of matches"] == int((tags == "mid").sum())
    assert it[b"Plan"] in (b"filtered-scan", b"filtered-graph", b"graph")
    got = [row[b"id"].decode() for row in rep[b"Results"][b"results"]]
    if it[b"Plan"] == b"filtered-scan":
        assert got == brute(X, q, tags == "mid")


def test_explain_names_the_plan(hyb):
    _, r, _, _, rng = hyb
    q = rng.normal(size=DIM).astype(np.float32).tobytes()
    text = r.execute_command("FT.EXPLAIN", "h", f"@t:{{rare}}=>[KNN {K} @v $B]",
                             "PARAMS", 2, "B", q, "DIALECT", 2).decode()
    assert "PLAN filtered-scan HYBRID_ADHOC_BF matches 5 of 3000" in text
    text = r.execute_command("FT.EXPLAIN", "h", f"@t:{{mid}}=>[KNN {K} @v $B HYBRID_POLICY "
                             "BATCHES]", "PARAMS", 2, "B", q, "DIALECT", 2).decode()
    assert "PLAN batches HYBRID_BATCHES forced matches 300 of 3000" in text
    # the plan EXPLAIN names is the one PROFILE runs
    for flt in ("@t:{rare}", "@t:{mid}", "@t:{common}", "*"):
        query = f"{flt}=>[KNN {K} @v $B]"
        text = r.execute_command("FT.EXPLAIN", "h", query, "PARAMS", 2, "B", q,
                                 "DIALECT", 2).decode()
        _, prof = profile(r, query, np.frombuffer(q, dtype=np.float32), "NOCONTENT")
        it = pairs(prof["Iterators profile"])
        if it["Vector search mode"].endswith(b"_TO_ADHOC_BF"):
            continue  # the walk gave up for the scan at run time
        assert f"PLAN {it['Plan'].decode()} {it['Vector search mode'].decode()}" in text
    # a query without KNN: the parse tree only
    text = r.execute_command("FT.EXPLAIN", "h", "@n:[1 2]").decode()
    assert "PLAN" not in text


def test_hybrid_policy_honoured(hyb):
    _, r, X, tags, rng = hyb
    mask = tags == "mid"
    for _ in range(5):
        q = rng.normal(size=DIM).astype(np.float32)
        want = brute(X, q, mask)
        res, prof = profile(r, f"@t:{{mid}}=>[KNN {K} @v $B HYBRID_POLICY ADHOC_BF]", q,
                            "NOCONTENT")
        it = pairs(prof["Iterators profile"])
        assert it["Plan"] == b"filtered-scan" and it["Plan forced"] == 1
        assert it["Distance computations"] == int(mask.sum())
        assert keys_of(res) == want
        # BATCHES with a window that covers the index: exact too
        res, prof = profile(r, f"@t:{{mid}}=>[KNN {K} @v $B HYBRID_POLICY BATCHES "
                            f"BATCH_SIZE 50 EF_RUNTIME {N}]", q, "NOCONTENT")
        it = pairs(prof["Iterators profile"])
        assert it["Plan forced"] == 1
        assert it["Vector search mode"] in (b"HYBRID_BATCHES", b"HYBRID_BATCHES_TO_ADHOC_BF")
        assert it["Batches number"] >= 1 and it["Largest batch size"] == 50
        if it["Vector search mode"] == b"HYBRID_BATCHES":
            assert it["Plan"] == b"batches"
        assert keys_of(res) == want
    # the attribute-syntax form, and a query parameter for the batch size
    q = rng.normal(size=DIM).astype(np.float32)
    rep = r.execute_command("FT.SEARCH", "h",
                            f"@t:{{common}}=>[KNN {K} @v $B]=>{{$HYBRID_POLICY: BATCHES; "
                            "$BATCH_SIZE: $bs}", "PARAMS", 4, "B", q.tobytes(), "bs", 30,
                            "NOCONTENT", "DIALECT", 2)
    assert rep[0] == K
    # ADHOC_BF through FT.SEARCH returns exactly the brute force
    rep = r.execute_command("FT.SEARCH", "h", f"@t:{{mid}}=>[KNN {K} @v $B HYBRID_POLICY "
                            "ADHOC_BF AS d]", "PARAMS", 2, "B", q.tobytes(), "SORTBY", "d",
                            "RETURN", 1, "d", "DIALECT", 2)
    assert [rep[i].decode() for i in range(1, len(rep), 2)] == brute(X, q, mask)


def test_hybrid_policy_errors(hyb):
    _, r, _, _, rng = hyb
    q = rng.normal(size=DIM).astype(np.float32).tobytes()

    def err(query):
        with pytest.raises(redis.ResponseError) as e:
            r.execute_command("FT.SEARCH", "h", query, "PARAMS", 2, "B", q, "DIALECT", 2)
        return str(e.value)

    msg = err(f"@t:{{mid}}=>[KNN {K} @v $B HYBRID_POLICY FAST]")
    assert "invalid hybrid policy" in msg and "FAST" in msg and "ADHOC_BF or BATCHES" in msg
    assert "non-hybrid" in err(f"*=>[KNN {K} @v $B HYBRID_POLICY ADHOC_BF]")
    assert "irrelevant" in err(f"@t:{{mid}}=>[KNN {K} @v $B HYBRID_POLICY ADHOC_BF BATCH_SIZE 5]")
    assert "irrelevant" in err(f"@t:{{mid}}=>[KNN {K} @v $B HYBRID_POLICY ADHOC_BF EF_RUNTIME 5]")
    assert "BATCH_SIZE" in err(f"@t:{{mid}}=>[KNN {K} @v $B HYBRID_POLICY BATCHES BATCH_SIZE 0]")
    # FT.PROFILE's own argument errors
    for args, want in ((["h", "AGGREGATE", "QUERY", "*"], "AGGREGATE"),
                       (["h", "SEARCH", "*", "x"], "QUERY keyword"),
                       (["h", "SEARCH", "LIMITED", "QUERY"], "No query"),
                       (["h", "FOO", "QUERY", "*"], "SEARCH"),
                       (["nosuch", "SEARCH", "QUERY", "*"], "No such index")):
        with pytest.raises(redis.ResponseError) as e:
            r.execute_command("FT.PROFILE", *args)
        assert want in str(e.value)


def test_empty_filter(hyb):
    _, r, _, _, rng = hyb
    q = rng.normal(size=DIM).astype(np.float32)
    for attrs in ("", " HYBRID_POLICY ADHOC_BF", " HYBRID_POLICY BATCHES"):
        res, prof = profile(r, f"@t:{{nosuch}}=>[KNN {K} @v $B{attrs}]", q, "NOCONTENT")
        assert res == [0]
        it = pairs(prof["Iterators profile"])
        assert it["Estimated number of matches"] == 0
        assert it["Distance computations"] == 0
