"""A truncated data.mdb (issue 8): velad must refuse it with a clear message
and a plain non-zero exit, never fault (SIGBUS) or serve what is left; a
file only shorter than its last page number — pages freed before they were
ever written, which LMDB leaves out of the file — must still open.

The reference for "what is left" is the client's own record of the
documents it wrote, and LMDB's meta pages as lmdb.h/mdb.c lay them out
(read here with struct, independently of velad's reader).
"""
import os
import shutil
import struct
import subprocess

import numpy as np
import pytest

PAGE = 4096
N_DOCS = 400


def metas(path):
    """(last_pg, txnid, psize) of both meta pages."""
    out = []
    with open(path, "rb") as f:
        for i in range(2):
            f.seek(i * PAGE + 16)
            m = f.read(136)
            magic, version = struct.unpack_from("<II", m, 0)
            assert (magic, version) == (0xBEEFC0DE, 1)
            psize = struct.unpack_from("<I", m, 24)[0]
            last_pg, txnid = struct.unpack_from("<QQ", m, 120)
            assert psize == PAGE
            out.append((last_pg, txnid, psize))
    return out


def needed(path):
    last_pg, _, psize = max(metas(path), key=lambda m: m[1])
    return (last_pg + 1) * psize


@pytest.fixture(scope="module")
def built(velad_path, tmp_path_factory):
    """A database with an HNSW and a FLAT field, big attributes (overflow
    pages) and deletes; stopped cleanly. Returns (dir, {key: vector bytes})."""
    from conftest import Velad
    base = tmp_path_factory.mktemp("trunc")
    srv = Velad(velad_path, base / "data", base / "velad.log").start()
    c = srv.client(protocol=2)
    c.execute_command("FT.CREATE", "ix", "ON", "HASH", "PREFIX", "1", "d:", "SCHEMA",
                      "v", "VECTOR", "HNSW", "6", "TYPE", "FLOAT32", "DIM", "32",
                      "DISTANCE_METRIC", "L2", "f", "VECTOR", "FLAT", "6", "TYPE", "FLOAT32",
                      "DIM", "32", "DISTANCE_METRIC", "L2")
    rng = np.random.default_rng(4)
    docs = {}
    for start in range(0, N_DOCS, 50):
        p = c.pipeline(transaction=False)
        for i in range(start, start + 50):
            v = rng.standard_normal(32).astype(np.float32).tobytes()
            docs[f"d:{i}"] = v
            p.hset(f"d:{i}", mapping={"v": v, "f": v, "blob": os.urandom(3000 + i)})
        p.execute()
    gone = [f"d:{i}" for i in range(0, N_DOCS, 7)]
    assert c.delete(*gone) == len(gone)
    for k in gone:
        del docs[k]
    rc, _ = srv.stop()
    assert rc == 0, srv.log()
    srv.check_log()
    return base / "data", docs


def run_velad(velad_path, d):
    return subprocess.run([velad_path, "--port", "0", "--dir", str(d)], capture_output=True,
                          timeout=60)


def cut_copy(built, tmp_path, size_of):
    src, _ = built
    d = tmp_path / "cut"
    shutil.copytree(src, d)
    f = d / "data.mdb"
    os.truncate(f, size_of(f.stat().st_size))
    return d


CUTS = {
    "half (whole pages)": lambda n: n // 2 // PAGE * PAGE,
    "half, inside a page": lambda n: n // 2 // PAGE * PAGE + 100,
    "the last 100 bytes": lambda n: n - 100,
    "to the two meta pages": lambda n: 2 * PAGE,
    "inside the second meta page": lambda n: PAGE + 1000,
}


@pytest.mark.parametrize("cut", list(CUTS))
def test_truncated_is_refused(velad_path, built, tmp_path, cut):
    src, _ = built
    assert os.path.getsize(src / "data.mdb") >= needed(src / "data.mdb")
    d = cut_copy(built, tmp_path, CUTS[cut])
    p = run_velad(velad_path, d)
    out = (p.stdout + p.stderr).decode(errors="replace")
    assert p.returncode == 1, (p.returncode, out[-3000:])  # an exit, not a signal
    assert "SIGBUS" not in out and "AddressSanitizer" not in out, out[-3000:]
    assert "data.mdb is shorter than its meta page" in out and "truncated" in out, out[-3000:]
    assert "restore it from a backup" in out, out


def check_docs(c, docs):
    keys = sorted(docs)
    assert c.dbsize() == len(docs)
    p = c.pipeline(transaction=False)
    for k in keys:
        p.hget(k, "v")
    assert p.execute() == [docs[k] for k in keys]
    for k in keys[:10]:
        r = c.execute_command("FT.SEARCH", "ix", "*=>[KNN 1 @f $q AS d]", "PARAMS", "2", "q",
                              docs[k], "RETURN", "1", "d", "DIALECT", "2")
        assert r[1] == k.encode() and float(r[2][1]) == 0.0, (k, r)


def test_uncut_copy_opens(velad_factory, built, tmp_path):
    src, docs = built
    d = tmp_path / "whole"
    shutil.copytree(src, d)
    srv = velad_factory(data_dir=d)
    check_docs(srv.client(protocol=2), docs)
    assert "pages before its last page number" not in srv.log()


def test_short_but_whole_opens(velad_factory, built, tmp_path):
    """Both meta pages claim 10 more pages than the file holds, none of them
    referenced (what unwritten freed pages at the end look like): velad
    walks the B-trees, finds every page, opens, and extends the file."""
    src, docs = built
    d = tmp_path / "short"
    shutil.copytree(src, d)
    f = d / "data.mdb"
    with open(f, "r+b") as fh:
        for i in range(2):
            fh.seek(i * PAGE + 16 + 120)
            last = struct.unpack("<Q", fh.read(8))[0]
            fh.seek(i * PAGE + 16 + 120)
            fh.write(struct.pack("<Q", last + 10))
    short = f.stat().st_size
    assert short < needed(f)
    srv = velad_factory(data_dir=d)
    assert "ends 10 pages before its last page number" in srv.log(), srv.log()
    assert f.stat().st_size >= needed(f) > short
    c = srv.client(protocol=2)
    check_docs(c, docs)
    # Writes go on, and after each commit the file covers its last page.
    v = np.ones(32, np.float32).tobytes()
    for i in range(20):
        c.hset(f"d:x{i}", mapping={"v": v, "f": v, "blob": os.urandom(5000)})
        docs[f"d:x{i}"] = v
        assert f.stat().st_size >= needed(f)
    srv.stop_ok()
    srv.restart()
    check_docs(srv.client(protocol=2), docs)
