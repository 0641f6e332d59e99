"""A full disk (issue 8): SAVE/BGSAVE into a directory on a tmpfs too small
for the copy, graph snapshots written at shutdown into a data directory
with no room left for them, and data.mdb's own disk filling up. Needs root
(mount); skipped otherwise.

References: the client's record of its acknowledged writes (a later backup
and every restart must hold exactly those), a numpy brute force for the
graph answers, LASTSAVE's value before the failure.
"""
import contextlib
import glob
import os
import re
import shutil
import subprocess
import time

import numpy as np
import pytest

DIM = 64


@contextlib.contextmanager
def tmpfs(path, size_bytes):
    os.makedirs(path, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(path)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root): {r.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def load(c, n, seed, prefix="d:"):
    rng = np.random.default_rng(seed)
    docs = {}
    p = c.pipeline(transaction=False)
    for i in range(n):
        v = rng.standard_normal(DIM).astype(np.float32)
        docs[f"{prefix}{i}"] = v
        p.hset(f"{prefix}{i}", mapping={"v": v.tobytes(), "t": "x" * 64})
    assert p.execute() == [2] * n
    return docs


def make_index(c, algo="HNSW"):
    c.execute_command("FT.CREATE", "ix", "ON", "HASH", "PREFIX", "1", "d:", "SCHEMA",
                      "v", "VECTOR", algo, "6", "TYPE", "FLOAT32", "DIM", str(DIM),
                      "DISTANCE_METRIC", "L2")


def check_docs(c, docs, graph=False):
    """Exactly `docs`; each found by KNN with its own vector; KNN 10 close to
    a brute force (HNSW is approximate: recall >= 0.9 over 20 queries)."""
    assert c.dbsize() == len(docs)
    keys = sorted(docs)
    p = c.pipeline(transaction=False)
    for k in keys:
        p.hget(k, "v")
    assert p.execute() == [docs[k].tobytes() for k in keys]
    mat = np.stack([docs[k] for k in keys])
    rng = np.random.default_rng(3)
    hits = total = 0
    for k in rng.choice(keys, 20, replace=False):
        ef = " EF_RUNTIME 400" if graph else ""
        r = c.execute_command("FT.SEARCH", "ix", f"*=>[KNN 10 @v $q{ef} AS d]", "PARAMS", "2", "q",
                              docs[k].tobytes(), "RETURN", "1", "d", "DIALECT", "2")
        got = [r[i].decode() for i in range(1, len(r), 2)]
        assert got[0] == k, (k, got[:3])
        want = {keys[i] for i in np.argsort(((mat - docs[k]) ** 2).sum(1))[:10]}
        hits += len(want & set(got))
        total += 10
    assert hits / total >= (0.9 if graph else 1.0), hits / total


def info(c, key):
    return c.info("persistence")[key]


def test_save_to_full_disk(velad_factory, tmp_path):
    srv = velad_factory()
    c = srv.client(protocol=2)
    make_index(c, "FLAT")
    docs = load(c, 3000, 1)  # data.mdb ~1.6 MiB: more than the 256 KiB tmpfs holds
    assert c.execute_command("SAVE", str(tmp_path / "first")) is True
    t_ok = c.lastsave()
    time.sleep(1.1)  # a later successful save would show a later LASTSAVE
    saves = info(c, "rdb_saves")
    small = tmp_path / "small"
    with tmpfs(small, 256 * 1024):
        with pytest.raises(Exception) as e:
            c.execute_command("SAVE", str(small / "b1"))
        assert "No space left on device" in str(e.value), e.value
        assert os.listdir(small) == [], "a failed SAVE left files behind"
        assert c.lastsave() == t_ok and info(c, "rdb_saves") == saves

        assert c.execute_command("BGSAVE", str(small / "b2"))  # redis-py: True for "+Background saving started"
        deadline = time.monotonic() + 30
        while info(c, "rdb_bgsave_in_progress") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert info(c, "rdb_bgsave_in_progress") == 0
        assert info(c, "rdb_last_bgsave_status") == "err"
        assert os.listdir(small) == [], "a failed BGSAVE left files behind"
        assert c.lastsave() == t_ok and info(c, "rdb_saves") == saves
        assert re.search(r"BGSAVE to \S+ failed: .*No space left on device", srv.log())

        # The server goes on: writes, reads, searches.
        docs.update(load(c, 50, 2, prefix="d:n"))
        check_docs(c, docs)
        # Room made on the same tmpfs is used at once: a small database fits.
    roomy = tmp_path / "roomy"
    assert c.execute_command("SAVE", str(roomy)) is True
    assert c.lastsave() > t_ok and info(c, "rdb_saves") == saves + 1
    assert sorted(os.listdir(roomy)) == ["data.mdb"]
    # The backup holds exactly the acknowledged documents.
    copy = velad_factory(data_dir=roomy)
    check_docs(copy.client(protocol=2), docs)


def fill(d, leave):
    """Take all the free space of d's filesystem but `leave` bytes."""
    st = os.statvfs(d)
    with open(os.path.join(d, "filler"), "wb") as f:
        f.write(b"\0" * max(0, st.f_bavail * st.f_frsize - leave))


def snap_files(d):
    return sorted(os.path.basename(p) for p in glob.glob(os.path.join(d, "graph-*")))


def test_snapshot_on_full_disk(velad_factory, tmp_path):
    # Build the database and its graph snapshot on a roomy disk first.
    srv = velad_factory(data_dir=tmp_path / "build")
    c = srv.client(protocol=2)
    make_index(c)
    docs = load(c, 2500, 5)
    srv.wait_builds()
    srv.stop_ok()
    snaps = snap_files(srv.dir)
    assert len(snaps) == 1 and snaps[0].endswith(".snap"), snaps
    data_sz = os.path.getsize(os.path.join(srv.dir, "data.mdb"))
    snap_sz = os.path.getsize(os.path.join(srv.dir, snaps[0]))
    assert snap_sz > 256 * 1024, snap_sz

    # A tmpfs with room for the database, its snapshot and some growth; once
    # the new documents are in, a filler file takes all but 8 KiB of it.
    small = tmp_path / "small"
    with tmpfs(small, data_sz + snap_sz + (2 << 20)):
        for f in ("data.mdb", snaps[0]):
            shutil.copy(os.path.join(srv.dir, f), small / f)
        s2 = velad_factory(data_dir=small)
        assert "not used" not in s2.log() and "graph over" not in s2.log()  # loaded
        c = s2.client(protocol=2)
        check_docs(c, docs, graph=True)
        # New documents: the graph changes, so a new snapshot is due at stop.
        docs.update(load(c, 100, 6, prefix="d:new"))
        check_docs(c, docs, graph=True)
        fill(small, 8 * 1024)
        s2.stop_ok()  # exits 0: a snapshot that cannot be written is only a warning
        log = s2.log()
        assert re.search(r"cannot write graph snapshot \S+: ", log), log[-3000:]
        # The old snapshot stays (stale), no half-written file is left.
        assert snap_files(small) == snaps, snap_files(small)
        assert not glob.glob(str(small / "*.tmp"))

        # Restart: the stale snapshot is refused, the graph rebuilt from LMDB
        # and it finds the documents added after the snapshot.
        n_log = len(log)
        s2.restart()
        s2.wait_builds()
        later = s2.log()[n_log:]
        assert re.search(r"graph snapshot \S+ not used \(stale\): rebuilding", later), later
        assert re.search(r"graph over 2600 vectors built", later), later
        check_docs(s2.client(protocol=2), docs, graph=True)
        s2.kill()  # no clean stop on the full disk: the next test leaves it alone
    srv.check_log()


def test_data_disk_full(velad_factory, tmp_path):
    """The disk under data.mdb fills: the commit that needs a new page fails
    and its writes are answered with an error (never acknowledged); every
    acknowledged write stays readable, also after a restart, and writes go
    on once there is room again."""
    small = tmp_path / "small"
    with tmpfs(small, 3 << 20):
        srv = velad_factory(data_dir=small / "d")
        c = srv.client(protocol=2)
        rng = np.random.default_rng(9)
        acked, err = {}, None
        for i in range(100_000):
            v = rng.bytes(2000)
            try:
                c.hset(f"k{i}", "v", v)
            except Exception as e:  # noqa: BLE001 - the refusal is what is tested
                err = str(e)
                break
            acked[f"k{i}"] = v
        assert err is not None and len(acked) > 100, (len(acked), err)
        # The reply names the cause and the disk (operations.md), not just "I/O".
        assert err == f"commit failed: No space left on device (the disk under {small / 'd'} " \
                      "is full)", err
        assert c.dbsize() == len(acked)
        assert all(c.hget(k, "v") == v for k, v in acked.items())
        subprocess.run(["mount", "-o", "remount,size=8m", str(small)], check=True)
        for i in range(20):
            v = rng.bytes(2000)
            assert c.hset(f"n{i}", "v", v) == 1
            acked[f"n{i}"] = v
        srv.stop_ok()
        srv.restart()
        c = srv.client(protocol=2)
        assert c.dbsize() == len(acked)
        assert all(c.hget(k, "v") == v for k, v in acked.items())
        srv.stop_ok()
