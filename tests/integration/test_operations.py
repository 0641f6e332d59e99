"""Monitoring (issue 8, "Operations"): INFO carries the fields Redis names,
with values that agree with what the test itself did, so existing tools read
velad unchanged — checked with `redis-cli --stat` (redis-cli 7.0) and
redis-py's INFO parser."""
import os
import re
import shutil
import subprocess
import time

import pytest


def redis_cli():
    exe = shutil.which("redis-cli")
    if exe is None:
        pytest.skip("redis-cli is not installed")
    return exe


def test_info_fields(velad_factory):
    srv = velad_factory()
    r = srv.client(protocol=2)
    others = [srv.client(protocol=2) for _ in range(3)]
    for o in others:
        assert o.ping() is True
    n_hash, n_str, n_ttl = 40, 25, 7
    p = r.pipeline(transaction=False)
    for i in range(n_hash):
        p.hset(f"h:{i}", mapping={"a": i})
    for i in range(n_str):
        p.set(f"s:{i}", i)
    for i in range(n_ttl):
        p.expire(f"s:{i}", 1000)
    p.execute()
    info = r.info("everything")
    # Sections and names as in Redis; values from our own counts.
    assert info["connected_clients"] == 4
    assert info["blocked_clients"] == 0
    assert info["maxclients"] == 10000
    assert info["db0"] == {"keys": n_hash + n_str, "expires": n_ttl, "avg_ttl": 0}
    assert info["total_commands_processed"] >= n_hash + n_str + n_ttl
    assert info["total_connections_received"] >= 4
    assert info["uptime_in_seconds"] >= 0 and info["process_id"] == srv.proc.pid
    assert info["rdb_bgsave_in_progress"] == 0 and info["aof_rewrite_in_progress"] == 0
    assert info["loading"] == 0 and info["aof_enabled"] == 0
    assert info["rdb_changes_since_last_save"] == n_hash + n_str + n_ttl
    assert abs(info["rdb_last_save_time"] - time.time()) < 120
    assert info["used_memory"] > 0 and info["used_memory_peak"] >= info["used_memory"] // 2
    # RSS as the kernel sees it (velad's own figure, read from /proc/self).
    with open(f"/proc/{srv.proc.pid}/status") as f:
        rss = next(int(ln.split()[1]) * 1024 for ln in f if ln.startswith("VmRSS:"))
    assert abs(info["used_memory_rss"] - rss) < max(rss // 4, 16 << 20)
    for k in ("used_memory_human", "used_memory_rss_human"):
        assert re.fullmatch(r"[0-9.]+[BKMGTP]", info[k]), info[k]
    for k in ("client_output_buffer_limit_disconnections", "rejected_connections",
              "expired_keys", "instantaneous_ops_per_sec", "client_recent_max_output_buffer"):
        assert isinstance(info[k], int), k
    # instantaneous_ops_per_sec follows a steady load (samples every 100 ms).
    t0 = time.monotonic()
    sent = 0
    while time.monotonic() - t0 < 2.0:
        p = r.pipeline(transaction=False)
        for _ in range(200):
            p.get("s:1")
        p.execute()
        sent += 200
    rate = sent / (time.monotonic() - t0)
    ops = r.info("stats")["instantaneous_ops_per_sec"]
    assert rate / 3 < ops < rate * 3, (ops, rate)
    for o in others:
        o.close()


def test_redis_cli_stat(velad_factory):
    """`redis-cli --stat` prints one line per interval; its numbers must be
    the keys we wrote, the clients we hold and a growing request count."""
    cli = redis_cli()
    srv = velad_factory()
    r = srv.client(protocol=2)
    held = [srv.client(protocol=2) for _ in range(2)]
    for h in held:
        h.ping()
    for i in range(123):
        r.hset(f"k:{i}", "f", i)
    # stdbuf: redis-cli's stdout is a pipe here, so line-buffer it.
    cmd = [cli, "-p", str(srv.port), "--stat", "-i", "0.5"]
    if shutil.which("stdbuf"):
        cmd = ["stdbuf", "-oL"] + cmd
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for i in range(30):  # traffic between the samples
            r.hget(f"k:{i}", "f")
            time.sleep(0.1)
    finally:
        proc.terminate()
        out, err = proc.communicate(10)
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert lines[0].startswith("------- data ------"), out + err
    assert lines[1].split()[:5] == ["keys", "mem", "clients", "blocked", "requests"], out
    rows = [ln.split() for ln in lines[2:]]
    assert len(rows) >= 3, out
    reqs = []
    for row in rows:
        # keys mem clients blocked requests (+delta) connections
        assert row[0] == "123", out
        assert re.fullmatch(r"[0-9.]+[BKMGTP]", row[1]), out
        assert row[2] == "4", out  # r, two held, redis-cli itself
        assert row[3] == "0", out
        reqs.append(int(row[4]))
        assert re.fullmatch(r"\(\+\d+\)", row[5]), out
        assert int(row[6]) >= 4, out
        assert len(row) == 7, f"a child column appeared (SAVE/AOF/LOAD): {row}"
    assert reqs == sorted(reqs) and reqs[-1] > reqs[0], out
    for h in held:
        h.close()


def count_syncs(pid, seconds, during):
    """fsync/fdatasync calls velad makes while `during()` runs (strace)."""
    strace = shutil.which("strace")
    if strace is None:
        pytest.skip("strace is not installed")
    p = subprocess.Popen([strace, "-f", "-qq", "-e", "trace=fsync,fdatasync", "-p", str(pid)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)  # attached to every thread
    if p.poll() is not None:
        pytest.skip("strace cannot attach here: " + p.stderr.read()[:200])
    t0 = time.monotonic()
    during()
    time.sleep(max(0.0, seconds - (time.monotonic() - t0)))
    p.terminate()
    err = p.communicate(10)[1]
    return sum(1 for ln in err.splitlines() if re.search(r"\b(fsync|fdatasync)\(", ln))


@pytest.mark.parametrize("mode", ["always", "everysec"])
def test_appendfsync_modes(velad_factory, mode):
    """always: each (group) commit is fsync'd before its reply; everysec: the
    commits are fsync'd once a second by a background thread, whatever their
    number, and acknowledged writes survive a velad crash."""
    srv = velad_factory("--appendfsync", mode)
    r = srv.client(protocol=2)
    assert r.config_get("appendfsync") == {"appendfsync": mode}  # redis-py decodes CONFIG GET
    n = 150

    def writes():
        for i in range(n):  # one at a time: one commit each
            r.hset(f"k:{i}", "f", i)

    syncs = count_syncs(srv.proc.pid, 3.0, writes)
    if mode == "always":
        assert syncs >= n, syncs
    else:
        assert 2 <= syncs <= 8, syncs
        srv.kill()
        srv.restart()
        r = srv.client(protocol=2)
        assert [r.hget(f"k:{i}", "f") for i in range(n)] == [str(i).encode() for i in range(n)]
