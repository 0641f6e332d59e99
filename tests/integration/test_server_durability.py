"""Durability of acknowledged writes: velad is SIGKILLed at a random moment
while writers run; after a restart on the same --dir every write that got its
reply is present and searchable. And a SIGTERM with clients connected and
writing exits 0 promptly with the acknowledged writes persisted."""
import random
import threading
import time
import zlib

import numpy as np
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

DIM = 8
CYCLES = 5


def create_index(r):
    r.execute_command("FT.CREATE", "idx", "ON", "HASH", "PREFIX", "1", "doc:", "SCHEMA",
                      "c", "TAG", "v", "VECTOR", "HNSW", "6", "TYPE", "FLOAT32", "DIM", DIM,
                      "DISTANCE_METRIC", "L2")


def vec(key):
    rng = np.random.default_rng(zlib.crc32(key.encode()))
    return rng.standard_normal(DIM).astype(np.float32)


class Writers:
    """Threads writing doc:<tag>:<n> until the server goes away; `acked` holds
    the keys whose HSET reply arrived."""

    def __init__(self, port, tag, n_single=2, n_pipe=2):
        self.port, self.tag = port, tag
        self.acked = set()
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.single, args=(i,)) for i in range(n_single)]
        self.threads += [threading.Thread(target=self.pipe, args=(i,)) for i in range(n_pipe)]
        for t in self.threads:
            t.start()

    def client(self):
        return redis.Redis(port=self.port, socket_timeout=10, retry=Retry(NoBackoff(), 0),
                           protocol=2)

    def doc(self, key):
        return {"v": vec(key).tobytes(), "c": self.tag, "k": key}

    def single(self, w):
        r = self.client()
        try:
            for i in range(10**9):
                if self.stop.is_set():
                    return
                key = f"doc:{self.tag}:s{w}:{i}"
                assert r.hset(key, mapping=self.doc(key)) == 3
                with self.lock:
                    self.acked.add(key)
        except (redis.ConnectionError, redis.TimeoutError, ConnectionError):
            return

    def pipe(self, w):
        r = self.client()
        try:
            for b in range(10**9):
                if self.stop.is_set():
                    return
                p = r.pipeline(transaction=b % 2 == 1)
                keys = [f"doc:{self.tag}:p{w}:{b}:{i}" for i in range(16)]
                for key in keys:
                    p.hset(key, mapping=self.doc(key))
                assert p.execute() == [3] * len(keys)
                with self.lock:
                    self.acked.update(keys)
        except (redis.ConnectionError, redis.TimeoutError, ConnectionError):
            return

    def join(self):
        self.stop.set()
        for t in self.threads:
            t.join(30)
            assert not t.is_alive()


def check_present(r, acked, tag):
    """Every acknowledged key: stored intact, found by a tag search and by KNN."""
    found = set()
    total = r.execute_command("FT.SEARCH", "idx", f"@c:{{{tag}}}", "NOCONTENT", "LIMIT", "0", "0")[0]
    res = r.execute_command("FT.SEARCH", "idx", f"@c:{{{tag}}}", "NOCONTENT", "LIMIT", "0",
                            max(total, 1))
    found = {k.decode() for k in res[1:]}
    missing = acked - found
    assert not missing, f"{len(missing)} acknowledged writes not searchable, e.g. {sorted(missing)[:3]}"
    for key in random.Random(1).sample(sorted(acked), min(20, len(acked))):
        assert r.hget(key, "v") == vec(key).tobytes()
        res = r.execute_command("FT.SEARCH", "idx", "*=>[KNN 1 @v $b AS d]", "PARAMS", "2", "b",
                                vec(key).tobytes(), "RETURN", "1", "d", "DIALECT", "2")
        assert res[1].decode() == key and float(res[2][1]) == pytest.approx(0, abs=1e-5)


def test_sigkill_keeps_acknowledged_writes(velad_factory):
    rng = random.Random(42)
    srv = velad_factory()
    create_index(srv.client(protocol=2))
    history = {}
    for cycle in range(CYCLES):
        tag = f"c{cycle}"
        w = Writers(srv.port, tag)
        time.sleep(rng.uniform(0.2, 0.8))
        srv.kill()
        w.join()
        assert w.acked, "no write was acknowledged before the kill"
        history[tag] = w.acked
        srv.check_log()
        srv.restart()
        r = srv.client(protocol=2)
        for t, acked in history.items():  # earlier cycles survive too
            check_present(r, acked, t)
        r.close()


def test_sigterm_with_clients_connected(velad_factory):
    srv = velad_factory()
    create_index(srv.client(protocol=2))
    idle = [srv.client(protocol=2) for _ in range(3)]
    for c in idle:
        assert c.ping()
    w = Writers(srv.port, "t", n_single=2, n_pipe=2)
    time.sleep(0.5)
    took = srv.stop_ok()  # exit 0, no sanitizer report
    assert took < 5, f"SIGTERM took {took:.1f}s"
    w.join()
    assert w.acked
    srv.restart()
    check_present(srv.client(protocol=2), w.acked, "t")
