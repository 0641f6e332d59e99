"""SLOWLOG against Debian's redis-server: the same command stream to both
with `slowlog-log-slower-than 0`, then the logs compared entry by entry —
ids (relative to the first), argument vectors with Redis's truncation
("... (N more bytes)", "... (N more arguments)") and redaction, client
names, which commands are logged at all (refused ones are not, EXEC is not
but the commands it ran are) — ignoring times and client ports. Replies to
SLOWLOG's own subcommands and errors are compared exactly.

Times are checked against the client's own clock: an entry's duration is
never longer than the round trip the client measured for that command.
"""
import shutil
import subprocess
import time

import pytest

from test_differential import REDIS_SERVER, Raw, redis_port  # noqa: F401 (fixture)

pytestmark = pytest.mark.skipif(REDIS_SERVER is None,
                                reason="redis-server not installed (scripts/bootstrap test)")

LONG = b"x" * 200          # past the 128 bytes Redis keeps of an argument
MANY = [str(i) for i in range(40)]  # past the 32 arguments it keeps


def stream():
    """Commands run with slowlog-log-slower-than 0 (each logged or not as Redis does)."""
    return [
        ("CLIENT", "SETNAME", "slowpoke"),
        ("SET", "k1", "v1"),
        ("HSET", "h1", LONG, "v"),
        ("HSET", "h1", "f", b"y" * 129),
        ("HSET", "h1", "g", b"z" * 128),
        ("DEL", *MANY),
        ("DEL", *MANY[:31]),      # 32 arguments: kept whole
        ("DEL", *MANY[:32]),      # 33: 31 kept, "... (2 more arguments)"
        ("GET", "k1"),
        ("SLOWLOG", "LEN"),
        ("SLOWLOG", "GET", "x"),  # runs (error reply): logged
        ("SLOWLOG", "GET", "-2"),
        ("SLOWLOG", "LEN", "1"),  # arity: refused, not logged
        ("SLOWLOG", "NOPE"),      # unknown subcommand: not logged
        ("NOSUCHCOMMAND", "a"),   # not logged
        ("MULTI",),
        ("SET", "k2", "v2"),
        ("HSET", "h2", "a", "b"),
        ("EXEC",),                # EXEC itself is not logged, its commands are
        ("AUTH", "someone", "secret"),  # arguments redacted
        ("CLIENT", "SETNAME", "renamed"),
        ("ECHO", b"bin\x00\xffary"),
        ("SLOWLOG", "HELP"),
        ("SLOWLOG", "GET", "0"),
    ]


def run_stream(port):
    c = Raw(port)
    assert c.call("SLOWLOG", "RESET") == ("simple", b"OK")
    replies, rtts = [], []
    for cmd in stream():
        t0 = time.monotonic()
        replies.append(c.call(*cmd))
        rtts.append(time.monotonic() - t0)
    log = c.call("SLOWLOG", "GET", "-1")
    length = c.call("SLOWLOG", "LEN")
    addr = "%s:%d" % c.s.getsockname()
    c.close()
    return replies, rtts, log, length, addr


def entries(log, addr):
    """(relative id, argv, client name) of each entry, oldest first; checks
    the fields left out of the comparison have the right shape."""
    assert log[0] == "array", log
    out = []
    for e in log[1]:
        assert e[0] == "array" and len(e[1]) == 6, e
        eid, ts, us, argv, caddr, name = e[1]
        assert eid[0] == ts[0] == us[0] == "int", e
        assert abs(ts[1] - time.time()) < 60 and us[1] >= 0, e
        assert caddr == ("bulk", addr.encode()), (caddr, addr)
        assert argv[0] == "array" and all(a[0] == "bulk" for a in argv[1]), e
        out.append((eid[1], tuple(a[1] for a in argv[1]), name[1], us[1]))
    out.reverse()
    base = out[0][0]
    return [(i - base, argv, name) for i, argv, name, _ in out], [x[3] for x in out]


def test_slowlog_matches_redis(redis_port, velad_factory):  # noqa: F811
    r = Raw(redis_port)
    assert r.call("CONFIG", "SET", "slowlog-log-slower-than", "0") == ("simple", b"OK")
    assert r.call("CONFIG", "SET", "slowlog-max-len", "128") == ("simple", b"OK")
    r.close()
    srv = velad_factory("--slowlog-log-slower-than", "0")
    rr, _, rlog, rlen, raddr = run_stream(redis_port)
    vr, vrtt, vlog, vlen, vaddr = run_stream(srv.port)
    for cmd, a, b in zip(stream(), rr, vr):
        if cmd[0] in ("AUTH", "NOSUCHCOMMAND"):
            assert a[0] == b[0] == "error", (cmd, a, b)  # wording differs; logging compared below
        else:
            assert a == b, f"{cmd!r}:\n  redis-server: {a!r}\n  velad:        {b!r}"
    re_, _ = entries(rlog, raddr)
    ve, vus = entries(vlog, vaddr)
    assert ve == re_, "\n".join(f"{x!r}\n{y!r}\n" for x, y in zip(re_, ve) if x != y) or (re_, ve)
    assert rlen == vlen == ("int", len(re_) + 1)  # + the SLOWLOG GET -1 itself
    # The logged argv of the 40-argument DEL, spelled out as Redis does.
    dels = [argv for _, argv, _ in ve if argv[0] == b"DEL"]
    assert dels[0] == (b"DEL", *[m.encode() for m in MANY[:30]], b"... (10 more arguments)")
    assert len(dels[1]) == 32 and dels[2][-1] == b"... (2 more arguments)"
    assert (b"HSET", b"h1", LONG[:128] + b"... (72 more bytes)", b"v") in [a for _, a, _ in ve]
    assert (b"AUTH", b"(redacted)", b"(redacted)") in [a for _, a, _ in ve]
    # Each logged command took no longer than the client's round trip for it.
    logged = [cmd for cmd in stream()
              if cmd[0] not in ("NOSUCHCOMMAND", "EXEC")
              and cmd[:2] != ("SLOWLOG", "NOPE") and cmd != ("SLOWLOG", "LEN", "1")]
    # entries: the RESET, then one per logged command (MULTI's SET/HSET at EXEC).
    assert len(vus) == 1 + len(logged)
    for cmd, us, rtt in zip(logged, vus[1:], [t for c, t in zip(stream(), vrtt) if c in logged]):
        if cmd[0] not in ("SET", "HSET") or cmd[1] not in ("k2", "h2"):  # queued: ran at EXEC
            assert us <= rtt * 1e6 + 1000, (cmd, us, rtt)


def test_threads_threshold_and_length(velad_factory):
    """Commands that run on the loop (KEYS), the writer (HSET, FT.CREATE) and
    a search worker (FT.SEARCH) are all timed; the threshold and the length
    limit behave as in Redis."""
    srv = velad_factory("--slowlog-log-slower-than", "0")
    c = srv.client()
    import numpy as np
    rng = np.random.default_rng(1)
    c.execute_command("FT.CREATE", "ix", "ON", "HASH", "PREFIX", "1", "d:", "SCHEMA",
                      "v", "VECTOR", "FLAT", "6", "TYPE", "FLOAT32", "DIM", "16",
                      "DISTANCE_METRIC", "L2")
    p = c.pipeline(transaction=False)
    for i in range(500):
        p.hset(f"d:{i}", "v", rng.standard_normal(16).astype(np.float32).tobytes())
    p.execute()
    c.execute_command("SLOWLOG", "RESET")
    q = rng.standard_normal(16).astype(np.float32).tobytes()
    c.execute_command("FT.SEARCH", "ix", "*=>[KNN 3 @v $q]", "PARAMS", "2", "q", q, "DIALECT", "2")
    c.keys("d:*")
    c.hset("d:x", "v", q)
    log = c.slowlog_get(-1)
    names = [e["command"].split(b" ")[0].upper() for e in log]
    assert names == [b"HSET", b"KEYS", b"FT.SEARCH", b"SLOWLOG"], names
    ids = [e["id"] for e in log]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == 4

    # -1 logs nothing; a threshold above every command's time logs nothing.
    for th in ("-1", "1000000000"):
        c.config_set("slowlog-log-slower-than", th)
        c.execute_command("SLOWLOG", "RESET")
        for _ in range(20):
            c.ping()
        c.keys("d:*")
        assert c.execute_command("SLOWLOG", "LEN") == 0, th
    # A middle threshold: every entry logged is at least that slow, and a
    # SAVE (a copy of the database and an fsync, on the writer) is one.
    c.config_set("slowlog-log-slower-than", "200")
    c.execute_command("SLOWLOG", "RESET")
    c.execute_command("SAVE")
    for _ in range(5):
        c.execute_command("FT.SEARCH", "ix", "*=>[KNN 3 @v $q]", "PARAMS", "2", "q", q,
                          "DIALECT", "2")
        c.keys("*")
    log = c.slowlog_get(-1)
    assert b"SAVE" in [e["command"] for e in log], log
    assert all(e["duration"] >= 200 for e in log), log

    # slowlog-max-len keeps the newest entries.
    c.config_set("slowlog-log-slower-than", "0")
    c.config_set("slowlog-max-len", "5")
    for i in range(12):
        c.echo(f"e{i}")
    log = c.slowlog_get(-1)
    assert [e["command"] for e in log] == [f"ECHO e{i}".encode() for i in range(11, 6, -1)]
    assert c.execute_command("SLOWLOG", "LEN") == 5
    assert [e["command"] for e in c.slowlog_get(2)] == [b"SLOWLOG LEN", b"SLOWLOG GET -1"]
    assert c.config_get("slowlog-*") == {"slowlog-log-slower-than": "0", "slowlog-max-len": "5"}
    for name, bad in (("slowlog-log-slower-than", "-2"), ("slowlog-max-len", "-1"),
                      ("slowlog-max-len", "abc")):
        with pytest.raises(Exception, match="Invalid argument"):
            c.config_set(name, bad)
    c.config_set("slowlog-max-len", "0")
    c.ping()
    assert c.execute_command("SLOWLOG", "LEN") == 0


def test_config_file(velad_factory, tmp_path):
    conf = tmp_path / "vela.conf"
    conf.write_text("slowlog-log-slower-than 0\nslowlog-max-len 3\n")
    srv = velad_factory(data_dir=tmp_path / "d")  # defaults first
    c = srv.client()
    assert c.config_get("slowlog-*") == {"slowlog-log-slower-than": "10000",
                                         "slowlog-max-len": "128"}
    c.ping()
    assert c.execute_command("SLOWLOG", "LEN") == 0  # PING is far under 10 ms
    srv.stop_ok()
    # The same database with a config file given first on the command line.
    srv2 = _start_with_file(srv, conf)
    c = srv2.client()
    assert c.config_get("slowlog-*") == {"slowlog-log-slower-than": "0", "slowlog-max-len": "3"}
    for i in range(5):
        c.echo(f"f{i}")
    assert [e["command"] for e in c.slowlog_get()] == [b"ECHO f4", b"ECHO f3", b"ECHO f2"]


def _start_with_file(srv, conf):
    """velad reads a config file given as its first argument; the factory
    puts --port first, so start this one by hand."""
    from conftest import free_port
    srv.port = free_port()
    log = open(srv.log_path, "ab")
    srv.proc = subprocess.Popen([srv.exe, str(conf), "--port", str(srv.port), "--dir", srv.dir],
                                stdout=log, stderr=subprocess.STDOUT)
    log.close()
    assert srv._wait_ready(20), srv.log()
    return srv


EXPORTER = shutil.which("prometheus-redis-exporter")


@pytest.mark.skipif(EXPORTER is None, reason="Debian's prometheus-redis-exporter not installed "
                    "(optional: apt-get install prometheus-redis-exporter)")
def test_redis_exporter(velad_factory):
    """redis_exporter scrapes velad without a scrape error, and what it
    reports (SLOWLOG, INFO fields) equals what velad says itself."""
    import urllib.request
    from conftest import free_port
    srv = velad_factory("--slowlog-log-slower-than", "0")
    c = srv.client(protocol=2)
    c.hset("k", "a", "b")
    c.set("s", "v", ex=1000)
    port = free_port()
    p = subprocess.Popen([EXPORTER, "--redis.addr", f"redis://127.0.0.1:{srv.port}",
                          "--web.listen-address", f"127.0.0.1:{port}"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        text = ""
        for _ in range(100):
            try:
                text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",
                                              timeout=5).read().decode()
                break
            except OSError:
                time.sleep(0.1)
    finally:
        p.terminate()
        p.wait(10)
    m = {}
    for line in text.splitlines():
        if line.startswith("redis_"):
            name, _, value = line.rpartition(" ")
            m[name] = float(value)
    assert m["redis_up"] == 1 and m['redis_exporter_last_scrape_error{err=""}'] == 0, text[:3000]
    assert m['redis_db_keys{db="db0"}'] == 2 and m['redis_db_keys_expiring{db="db0"}'] == 1
    assert m["redis_connected_clients"] >= 1
    assert m["redis_config_maxclients"] == 10000
    # The exporter's own SLOWLOG LEN / GET 1 came after these: velad's log holds them now.
    log = c.slowlog_get(-1)
    cmds = [e["command"] for e in log]
    assert b"SLOWLOG LEN" in cmds and b"SLOWLOG GET 1" in cmds, cmds
    exp_len = [e for e in log if e["command"] == b"SLOWLOG LEN"][0]
    assert m["redis_slowlog_length"] == exp_len["id"]  # entries 0..id-1 existed at its LEN
    assert m["redis_slowlog_last_id"] == exp_len["id"]  # GET 1 then saw the LEN's entry
