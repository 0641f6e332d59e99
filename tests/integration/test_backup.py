"""Backups (issue 8, "Operations"): SAVE, BGSAVE, `vela backup` (from a
server and from a directory in use) and `vela restore`. A backup taken
under write load must hold a prefix of each writer's stream that includes
every write acknowledged before the backup began (the writers' own records
are the reference), and a restored copy must serve it with consistent
indexes. Also: what backup and restore refuse to overwrite, and a database
of a newer on-disk format is refused, never misread."""
import ctypes
import ctypes.util
import os
import random
import struct
import subprocess
import threading
import time

import numpy as np
import pytest
import redis

DIM = 4
WRITERS = 3


def vec(w, m):
    rng = np.random.default_rng(w * 1_000_003 + m)
    return rng.random(DIM, dtype=np.float32).tobytes()


class Writer(threading.Thread):
    """Writes its own keys b:<w>:<i> in one sequential stream of ops (new
    document, update of an earlier one, delete), pipelined 1-8 at a time.
    ops[m] = (key, fields or None); acked[m] = when its reply arrived."""

    def __init__(self, port, w, stop):
        super().__init__(daemon=True)
        self.r = redis.Redis(port=port, socket_timeout=60)
        self.w, self.stop_ev = w, stop
        self.rng = random.Random(w)
        self.ops, self.acked, self.sent_at = [], [], []
        self.live = []
        self.error = None

    def next_op(self, m):
        x = self.rng.random()
        if self.live and x < 0.15:
            key = self.live.pop(self.rng.randrange(len(self.live)))
            return key, None
        if self.live and x < 0.35:
            key = self.rng.choice(self.live)
        else:
            key = f"b:{self.w}:{m}".encode()
            self.live.append(key)
        return key, {b"tag": f"w{self.w}".encode(), b"seq": str(m).encode(), b"v": vec(self.w, m)}

    def run(self):
        try:
            while not self.stop_ev.is_set():
                p = self.r.pipeline(transaction=False)
                batch = []
                for _ in range(self.rng.randint(1, 8)):
                    key, fields = self.next_op(len(self.ops) + len(batch))
                    batch.append((key, fields))
                    if fields is None:
                        p.delete(key)
                    else:
                        p.hset(key, mapping=fields)
                t0 = time.monotonic()
                self.ops.extend(batch)
                self.sent_at.extend([t0] * len(batch))
                p.execute()
                t1 = time.monotonic()
                self.acked.extend([t1] * len(batch))
        except Exception as e:  # noqa: BLE001
            self.error = e


def state_after(ops, m):
    st = {}
    for key, fields in ops[:m]:
        if fields is None:
            st.pop(key, None)
        else:
            st[key] = fields
    return st


def prefix_match(ops, acked_before, sent_before, found):
    """The m in [acked_before, sent_before] whose state equals `found`, or None."""
    st = state_after(ops, acked_before)
    diff = {k for k in set(st) | set(found) if st.get(k) != found.get(k)}
    m = acked_before
    while True:
        if not diff:
            return m
        if m >= min(sent_before, len(ops)):
            return None
        key, fields = ops[m]
        if fields is None:
            st.pop(key, None)
        else:
            st[key] = fields
        if st.get(key) == found.get(key):
            diff.discard(key)
        else:
            diff.add(key)
        m += 1


def read_docs(r):
    keys = sorted(r.keys("b:*"))
    p = r.pipeline(transaction=False)
    for k in keys:
        p.hgetall(k)
    return dict(zip(keys, p.execute()))


def check_indexes(r, docs):
    """The restored copy's index agrees with its documents."""
    for w in range(WRITERS):
        want = sum(1 for d in docs.values() if d[b"tag"] == f"w{w}".encode())
        assert r.execute_command("FT.SEARCH", "bi", f"@tag:{{w{w}}}", "LIMIT", "0", "0")[0] == want
    for key in random.Random(5).sample(sorted(docs), min(20, len(docs))):
        res = r.execute_command("FT.SEARCH", "bi", "*=>[KNN 1 @v $q AS d]", "PARAMS", "2", "q",
                                docs[key][b"v"], "RETURN", "1", "d", "DIALECT", "2")
        assert res[1] == key and float(res[2][1]) == 0.0, (key, res)


def vela_cli(vela, *args, ok=True):
    p = subprocess.run([vela, *map(str, args)], capture_output=True, text=True, timeout=120)
    if ok:
        assert p.returncode == 0, p.stderr + p.stdout
    return p


def wait_bgsave(r, since, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = r.info("persistence")
        if info["rdb_bgsave_in_progress"] == 0 and r.lastsave().timestamp() >= since - 1:
            assert info["rdb_last_bgsave_status"] == "ok"
            return
        time.sleep(0.05)
    pytest.fail("BGSAVE did not finish")


def test_backup_under_write_load(velad_factory, vela, tmp_path):
    srv = velad_factory()
    r = srv.client(protocol=2)
    r.execute_command("FT.CREATE", "bi", "ON", "HASH", "PREFIX", "1", "b:", "SCHEMA", "tag",
                      "TAG", "seq", "NUMERIC", "v", "VECTOR", "FLAT", "6", "TYPE", "FLOAT32",
                      "DIM", str(DIM), "DISTANCE_METRIC", "L2")
    stop = threading.Event()
    writers = [Writer(srv.port, w, stop) for w in range(WRITERS)]
    for wr in writers:
        wr.start()
    backups = []  # (name, dir, t_start, t_end)

    def take(name, dest, fn):
        time.sleep(0.4)
        t0 = time.monotonic()
        fn()
        t1 = time.monotonic()
        assert sorted(os.listdir(dest)) == ["data.mdb"], name
        assert not os.path.exists(f"{dest}.old") and not os.path.exists(f"{dest}.tmp")
        # Restored at once (the load goes on): a later backup may replace dest.
        target = tmp_path / f"restored{len(backups)}"
        vela_cli(vela, "restore", dest, target)
        backups.append((name, target, t0, t1))

    b = tmp_path / "b"
    b.mkdir()
    take("SAVE", b / "save", lambda: r.execute_command("SAVE", str(b / "save")))

    def bgsave():
        since = time.time()
        # redis-py turns "+Background saving started" into True, as for Redis.
        assert r.execute_command("BGSAVE", str(b / "bgsave")) is True
        wait_bgsave(r, since)
    take("BGSAVE", b / "bgsave", bgsave)
    take("vela backup host:port", b / "remote",
         lambda: vela_cli(vela, "backup", f"127.0.0.1:{srv.port}", b / "remote"))
    take("vela backup dir", b / "offline", lambda: vela_cli(vela, "backup", srv.dir, b / "offline"))
    take("SAVE again (replaces)", b / "save", lambda: r.execute_command("SAVE", str(b / "save")))

    def bgsave_default():
        since = time.time()
        r.execute_command("BGSAVE")
        wait_bgsave(r, since)
    take("BGSAVE to backup-dir", os.path.join(srv.dir, "backup"), bgsave_default)
    time.sleep(0.3)
    stop.set()
    for wr in writers:
        wr.join(60)
        assert wr.error is None, wr.error
    assert all(len(wr.acked) == len(wr.ops) for wr in writers)
    assert sum(len(wr.ops) for wr in writers) > 300

    # The live server holds every acknowledged write.
    live = read_docs(r)
    assert live == {k: v for wr in writers for k, v in state_after(wr.ops, len(wr.ops)).items()}

    seen = {}
    for name, target, t0, t1 in backups:
        copy = velad_factory(data_dir=target)
        rc = copy.client(protocol=2)
        docs = read_docs(rc)
        for wr in writers:
            a = sum(1 for t in wr.acked if t < t0)           # acknowledged before it began
            s = sum(1 for t in wr.sent_at if t <= t1)         # sent before it ended
            mine = {k: v for k, v in docs.items() if k.startswith(f"b:{wr.w}:".encode())}
            m = prefix_match(wr.ops, a, s, mine)
            assert m is not None, (f"{name}: writer {wr.w}'s documents are no prefix of its "
                                   f"stream from op {a} (acknowledged before) to {s} (sent)")
            seen[(name, wr.w)] = (a, m, s)
            if a and name == "SAVE":  # the check is not vacuous: a lost write is caught
                last = {k: i for i, (k, _) in enumerate(wr.ops)}  # a key's last op
                key = next(k for k, i in last.items() if i < a and wr.ops[i][1] is not None)
                lost = {k: v for k, v in mine.items() if k != key}
                assert prefix_match(wr.ops, a, s, lost) is None
        check_indexes(rc, docs)
        rc.close()
        copy.stop_ok()
    print("backup: (acknowledged before, prefix found, sent before end) per writer:", seen)
    # The backups saw the load moving: later ones hold longer prefixes.
    assert seen[("vela backup dir", 0)][1] >= seen[("SAVE", 0)][1]


def test_backup_refusals(velad_factory, vela, tmp_path):
    srv = velad_factory("--user", "ro", "on", ">ropw", "+@read")
    r = srv.client(decode_responses=True)
    r.hset("k", "f", "v")
    with pytest.raises(redis.ResponseError, match="database directory itself"):
        r.execute_command("SAVE", srv.dir)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(redis.ResponseError, match="holds other files"):
        r.execute_command("SAVE", str(other))
    assert (other / "notes.txt").read_text() == "keep me"
    with pytest.raises(redis.ResponseError, match="does not exist"):
        r.execute_command("SAVE", str(tmp_path / "no" / "such" / "dir"))
    with pytest.raises(redis.ResponseError, match="syntax error"):
        r.execute_command("SAVE", "a", "b")
    # A relative path is under `dir`, as Redis's dump file.
    assert r.execute_command("SAVE", "snap1") is True
    assert os.path.exists(os.path.join(srv.dir, "snap1", "data.mdb"))
    # Read-only users may not save.
    ro = srv.client(username="ro", password="ropw")
    for cmd in (("SAVE",), ("BGSAVE",)):
        with pytest.raises(redis.exceptions.NoPermissionError, match="no permissions"):
            ro.execute_command(*cmd)
    assert ro.lastsave() is not None
    # restore never overwrites.
    p = vela_cli(vela, "restore", os.path.join(srv.dir, "snap1"), other, ok=False)
    assert p.returncode == 1 and "not empty" in p.stderr
    p = vela_cli(vela, "restore", tmp_path / "nothing", tmp_path / "x", ok=False)
    assert p.returncode == 1 and "not a directory" in p.stderr
    p = vela_cli(vela, "restore", other, tmp_path / "x", ok=False)
    assert p.returncode == 1 and "no database" in p.stderr
    p = vela_cli(vela, "backup", srv.dir, srv.dir, ok=False)
    assert p.returncode == 1 and "database directory itself" in p.stderr
    # LASTSAVE moves; INFO persistence counts the writes since.
    before = r.lastsave()
    time.sleep(1.1)
    r.hset("k2", "f", "v")
    assert r.info("persistence")["rdb_changes_since_last_save"] >= 1
    assert r.execute_command("SAVE") is True
    assert r.lastsave() > before
    assert r.info("persistence")["rdb_changes_since_last_save"] == 0
    r.hset("k3", "f", "v")
    r.delete("k3")
    assert r.info("persistence")["rdb_changes_since_last_save"] == 2
    assert r.info("persistence")["rdb_saves"] == 2


# ------------------------------------------------------------ format versions

class MDBVal(ctypes.Structure):
    _fields_ = [("mv_size", ctypes.c_size_t), ("mv_data", ctypes.c_void_p)]


def lmdb_put_meta(dbdir, name, value):
    """Write meta[name] = be64 value with liblmdb directly (no vela code)."""
    lib = ctypes.CDLL(ctypes.util.find_library("lmdb") or "liblmdb.so.0")
    env, txn, dbi = ctypes.c_void_p(), ctypes.c_void_p(), ctypes.c_uint()
    assert lib.mdb_env_create(ctypes.byref(env)) == 0
    lib.mdb_env_set_maxdbs(env, 32)
    assert lib.mdb_env_open(env, str(dbdir).encode(), 0, 0o644) == 0
    assert lib.mdb_txn_begin(env, None, 0, ctypes.byref(txn)) == 0
    assert lib.mdb_dbi_open(txn, b"meta", 0, ctypes.byref(dbi)) == 0
    k, v = name.encode(), struct.pack(">Q", value)
    kb, vb = ctypes.create_string_buffer(k, len(k)), ctypes.create_string_buffer(v, len(v))
    key = MDBVal(len(k), ctypes.cast(kb, ctypes.c_void_p))
    val = MDBVal(len(v), ctypes.cast(vb, ctypes.c_void_p))
    assert lib.mdb_put(txn, dbi, ctypes.byref(key), ctypes.byref(val), 0) == 0
    assert lib.mdb_txn_commit(txn) == 0
    lib.mdb_env_close(env)


def test_newer_format_is_refused(velad_factory, velad_path, vela, tmp_path):
    srv = velad_factory()
    r = srv.client()
    r.hset("k", "f", "v")
    assert r.execute_command("SAVE", str(tmp_path / "bk")) is True
    r.close()
    srv.stop_ok()
    lmdb_put_meta(tmp_path / "bk", "version", 2)
    p = vela_cli(vela, "restore", tmp_path / "bk", tmp_path / "new", ok=False)
    assert p.returncode == 1 and "format version 2 is newer" in p.stderr, p.stderr
    assert not os.path.exists(tmp_path / "new")
    p = subprocess.run([velad_path, "--port", "0", "--dir", str(tmp_path / "bk")],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and "format version 2 is newer" in p.stderr, p.stderr
    lmdb_put_meta(tmp_path / "bk", "magic", 0x1234)
    p = vela_cli(vela, "restore", tmp_path / "bk", tmp_path / "new", ok=False)
    assert p.returncode == 1 and "not a vela database" in p.stderr, p.stderr
