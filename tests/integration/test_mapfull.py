"""The LMDB map filling up (issue 8): velad started with a 2 MiB map is fed
HSETs of vectors until writes are refused with -OOM; then reads must go on
(HGET, FT.SEARCH, DBSIZE) and hold exactly the writes acknowledged before
(the client's own record is the reference, also after a restart), and the
server must recover: by CONFIG SET map-size, or by deleting documents.

What LMDB makes realistic (docs/operations.md): a delete needs fresh pages
too (copy-on-write of the B-tree paths), and the pages it frees are
reusable only by later transactions. So small deletes (one key per
transaction) on a map that just refused a batch go through and make room,
but a map filled to its last page can refuse deletes as well: then only a
larger map helps.
"""
import socket

import numpy as np
import pytest

DIM = 32
MAP = "2mb"


def make_index(c):
    c.execute_command("FT.CREATE", "ix", "ON", "HASH", "PREFIX", "1", "d:", "SCHEMA",
                      "t", "TAG", "v", "VECTOR", "FLAT", "6", "TYPE", "FLOAT32", "DIM", str(DIM),
                      "DISTANCE_METRIC", "L2")


def raw_hset(port, key, vec):
    """One HSET over a plain socket: the reply's exact first line."""
    cmd = [b"HSET", key.encode(), b"t", b"a", b"v", vec]
    req = b"*%d\r\n" % len(cmd) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in cmd)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(req)
        buf = b""
        while b"\r\n" not in buf:
            buf += s.recv(4096)
    return buf.split(b"\r\n")[0]


class Writer:
    """HSETs of fresh random vectors; `acked` holds what velad acknowledged."""

    def __init__(self, c, seed):
        self.c, self.rng, self.i = c, np.random.default_rng(seed), 0
        self.acked = {}  # key -> vector bytes

    def vec(self):
        return self.rng.standard_normal(DIM).astype(np.float32).tobytes()

    def batch(self, n, prefix="d:"):
        """Pipeline n HSETs; returns the error replies."""
        p = self.c.pipeline(transaction=False)
        items = []
        for _ in range(n):
            k, v = f"{prefix}{self.i}", self.vec()
            self.i += 1
            p.hset(k, mapping={"t": "a", "v": v})
            items.append((k, v))
        errs = []
        for (k, v), r in zip(items, p.execute(raise_on_error=False)):
            if isinstance(r, Exception):
                errs.append(str(r))
            else:
                assert r == 2, (k, r)
                self.acked[k] = v
        return errs

    def fill(self, n=50):
        """Batches of n until one is refused; the refusals' texts."""
        for _ in range(10_000):
            errs = self.batch(n)
            if errs:
                return errs
        raise AssertionError("the map never filled")


def check_reads(c, acked, rng):
    """Everything acknowledged, and nothing else, is there and searchable."""
    keys = list(acked)
    p = c.pipeline(transaction=False)
    for k in keys:
        p.hget(k, "v")
    assert p.execute() == [acked[k] for k in keys]
    assert c.dbsize() == len(acked)
    indexed = [k for k in keys if k.startswith("d:")]  # the index's prefix
    assert c.execute_command("FT.SEARCH", "ix", "*", "LIMIT", "0", "0")[0] == len(indexed)
    for k in rng.choice(indexed, size=min(5, len(indexed)), replace=False):
        r = c.execute_command("FT.SEARCH", "ix", "*=>[KNN 1 @v $q AS d]", "PARAMS", "2", "q",
                              acked[k], "RETURN", "1", "d", "DIALECT", "2")
        assert r[1] == k.encode() and float(r[2][1]) == 0.0, (k, r)


def test_map_full_then_grow(velad_factory):
    srv = velad_factory("--map-size", MAP)
    c = srv.client(protocol=2)
    make_index(c)
    w = Writer(c, 1)
    errs = w.fill()
    # redis-py drops the "OOM " code; the raw reply below shows it.
    assert all(e.startswith("command not allowed when the LMDB map is full") for e in errs), errs
    # The reply itself is a -OOM error (as Redis's over-maxmemory refusal).
    for _ in range(1000):  # single writes still fit for a while: fill to the last page
        line = raw_hset(srv.port, f"d:{w.i}", w.vec())
        w.i += 1
        if line.startswith(b"-"):
            break
        assert line == b":2", line
        w.acked[f"d:{w.i - 1}"] = None  # acknowledged; value read back below
    assert line.startswith(b"-OOM command not allowed when the LMDB map is full: grow it with "
                           b"CONFIG SET map-size"), line
    for k in [k for k, v in w.acked.items() if v is None]:
        w.acked[k] = c.hget(k, "v")
    rng = np.random.default_rng(7)
    check_reads(c, w.acked, rng)
    info = c.info("persistence")
    assert info["map_size"] == 2 << 20 and info["map_used"] > 0.9 * info["map_size"], info

    # Grow the map at run time: writes go through again, deletes too.
    assert c.config_set("map-size", "8mb")
    assert int(c.config_get("map-size")["map-size"]) == 8 << 20
    n0 = len(w.acked)
    assert w.batch(200) == []
    assert len(w.acked) == n0 + 200
    gone = list(w.acked)[:100]
    assert c.delete(*gone) == 100
    for k in gone:
        del w.acked[k]
    check_reads(c, w.acked, rng)
    # Shrinking below what is in use is refused; the size in force survives a restart.
    with pytest.raises(Exception, match="below"):
        c.config_set("map-size", "1mb")
    srv.stop_ok()
    srv.restart()
    c = srv.client(protocol=2)
    check_reads(c, w.acked, rng)
    assert c.info("persistence")["map_size"] == 8 << 20


def test_map_full_then_delete(velad_factory):
    """Deletes on a full map: each is applied (1) or refused with the same
    -OOM (never anything else, never half); a refused one leaves its
    document intact. LMDB reuses the pages a transaction frees only after a
    later transaction committed, so once no transaction at all can commit,
    deletes are refused too and only a larger map gets writes going (the
    reason operations.md says to grow the map, not to delete, when full).
    After that, the deleted documents' pages are reused: more new documents
    fit than the added map space alone holds."""
    # everysec: 2,500 one-key transactions without an fsync each (a clean
    # stop still syncs, and the restart below checks every acknowledged write).
    srv = velad_factory("--map-size", MAP, "--appendfsync", "everysec")
    c = srv.client(protocol=2)
    make_index(c)
    w = Writer(c, 2)
    w.fill()
    first = len(w.acked)  # documents per 2 MiB: the density the check below uses
    rng = np.random.default_rng(8)
    check_reads(c, w.acked, rng)
    victims = list(w.acked)[:1500]
    refused = delete_each(c, w.acked, victims)
    check_reads(c, w.acked, rng)  # refused deletes left their documents, applied ones took them

    c.config_set("map-size", "3mb")
    assert delete_each(c, w.acked, refused) == []
    check_reads(c, w.acked, rng)
    added = 0
    while not w.batch(1, prefix="n:"):
        added += 1
    # 1 MiB more holds about first / 2 documents; the 1,500 deleted ones'
    # space must have been reused on top of that.
    assert added > first / 2 + 1500 * 0.5, (added, first)
    check_reads(c, w.acked, rng)
    srv.stop_ok()
    srv.restart()
    check_reads(srv.client(protocol=2), w.acked, rng)


def delete_each(c, acked, keys):
    """DEL each key in its own transaction; returns the refused ones."""
    refused = []
    for k in keys:
        try:
            assert c.delete(k) == 1, k
            del acked[k]
        except redis_errors() as e:
            assert str(e).startswith("command not allowed when the LMDB map is full"), e
            refused.append(k)
    return refused


def redis_errors():
    import redis
    return redis.exceptions.ResponseError
