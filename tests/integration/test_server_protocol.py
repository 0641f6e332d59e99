"""Protocol robustness of velad over raw sockets (reference §1.2, §1.5, §1.6, §6):
exact protocol-error texts followed by a close, while other clients are still
served; skipped requests; split reads; seeded random bytes; output-buffer and
maxclients limits; NOAUTH / WRONGPASS / NOPERM flows."""
import random
import socket
import threading
import time

import numpy as np
import pytest
import redis


def no_retry():
    """redis-py 8 retries connection errors (AUTH failures included) with backoff."""
    from redis.backoff import NoBackoff
    from redis.retry import Retry
    return Retry(NoBackoff(), 0)


def connect(port, timeout=5.0, rcvbuf=None):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(timeout)
    s.connect(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def read_until_close(s, limit=1 << 20):
    """Everything the server sends until it closes (fails on a timeout)."""
    buf = b""
    while len(buf) < limit:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        buf += chunk
    return buf


def read_n(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(65536)
        assert chunk, f"closed after {buf!r}"
        buf += chunk
    return buf


def cmd(*args):
    args = [a if isinstance(a, bytes) else str(a).encode() for a in args]
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


def still_served(port):
    with connect(port) as s:
        s.sendall(cmd("PING"))
        rep = s.recv(64)
        assert rep in (b"+PONG\r\n", b"-NOAUTH Authentication required.\r\n"), rep


def expect_error_then_close(port, payload, err, prefix=b""):
    """Send payload (bytes or a list of chunks): the reply is `prefix` then
    `-ERR <err>\\r\\n`, then the server closes."""
    with connect(port) as s:
        for chunk in payload if isinstance(payload, list) else [payload]:
            try:
                s.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
        got = read_until_close(s)
    assert got == prefix + b"-ERR " + err + b"\r\n", got[:300]
    still_served(port)


BIG = 70000  # > 64 KiB


@pytest.mark.parametrize("payload,err", [
    (b"*3000000000\r\n", b"Protocol error: invalid multibulk length"),
    (b"*blabla\r\n", b"Protocol error: invalid multibulk length"),
    (b"*1\r\nfoo\r\n", b"Protocol error: expected '$', got 'f'"),
    (b"*2\r\n$4\r\nPING\r\n:1\r\n", b"Protocol error: expected '$', got ':'"),
    (b"*1\r\n$-10\r\n", b"Protocol error: invalid bulk length"),
    (b"*1\r\n$2000000000\r\n", b"Protocol error: invalid bulk length"),
    (b"*1\r\n$blabla\r\n", b"Protocol error: invalid bulk length"),
    (b"*" + b"1" * BIG, b"Protocol error: too big mbulk count string"),
    (b"*1\r\n$" + b"1" * BIG, b"Protocol error: too big bulk count string"),
    (b'set """test-key""" test-value\r\n', b"Protocol error: unbalanced quotes in request"),
    (b'set "foo bar\r\n', b"Protocol error: unbalanced quotes in request"),
    (b"set 'foo bar\r\n", b"Protocol error: unbalanced quotes in request"),
    (b"a" * BIG, b"Protocol error: too big inline request"),
    (b"a" * BIG + b"\r\n", b"Protocol error: too big inline request"),
], ids=lambda v: v[:24].decode(errors="replace") if isinstance(v, bytes) else None)
def test_protocol_errors(velad, payload, err):
    expect_error_then_close(velad.port, payload, err)


def test_error_after_good_commands_keeps_order(velad):
    # replies to the commands before the bad one come first, then the error, then close
    expect_error_then_close(velad.port, cmd("SET", "k", "v") + b"PING\r\n" + b"*1\r\nx\r\n",
                            b"Protocol error: expected '$', got 'x'", prefix=b"+OK\r\n+PONG\r\n")


@pytest.mark.parametrize("seq", [b"\x00", b"*\x00", b"$\x00"])
def test_protocol_desync(velad, seq):
    """protocol.tcl: garbage then an endless stream without a newline."""
    with connect(velad.port) as s:
        s.sendall(seq)
        t0 = time.monotonic()
        try:
            while time.monotonic() - t0 < 20:
                s.sendall(b"payload" * 100)
        except (BrokenPipeError, ConnectionResetError):
            pass
        else:
            pytest.fail("velad did not close the connection after a protocol desync")
        got = read_until_close(s)
    assert b"Protocol error" in got
    still_served(velad.port)


def test_skipped_requests(velad):
    with connect(velad.port) as s:
        s.sendall(b"*0\r\n*-1\r\n*-10\r\n\r\n\n   \r\n" + cmd("PING") + b"\r\n PING\r\n")
        assert read_n(s, 14) == b"+PONG\r\n+PONG\r\n"
        s.sendall(cmd("ECHO", "x"))
        assert read_n(s, 7) == b"$1\r\nx\r\n"


def test_inline_quoting(velad):
    with connect(velad.port) as s:
        s.sendall(b'ECHO "a\\x41\\n\\"b"\r\nECHO \'it\\\'s\'\nECHO  x\t\r\n')
        assert read_n(s, 27) == b'$5\r\naA\n"b\r\n$4\r\nit\'s\r\n$1\r\nx\r\n'


def test_unknown_and_arity_errors_keep_connection(velad):
    with connect(velad.port) as s:
        s.sendall(cmd("FOO", "a", "b") + cmd("HGET", "x") + cmd("PING"))
        want = (b"-ERR unknown command 'FOO', with args beginning with: 'a' 'b' \r\n"
                b"-ERR wrong number of arguments for 'hget' command\r\n+PONG\r\n")
        assert read_n(s, len(want)) == want


# ------------------------------------------------------------ split reads

def pipeline(key):
    """Requests and their replies; `key` is fresh per connection (so replies are fixed)."""
    req = (cmd("DEL", key) + cmd("HSET", key, "f", bytes(range(256)) * 2, "g", "x")
           + cmd("HGET", key, "g") + b"ECHO \"a b\"\r\n" + b"*0\r\n" + cmd("GET", "nokey")
           + cmd("HMGET", key, "g", "zz") + b"PING\r\n" + cmd("DEL", key))
    rep = (b":0\r\n:2\r\n$1\r\nx\r\n$3\r\na b\r\n$-1\r\n*2\r\n$1\r\nx\r\n$-1\r\n+PONG\r\n:1\r\n")
    return req, rep


def test_pipeline_split_at_every_offset(velad):
    req, rep = pipeline("h0000")
    with connect(velad.port) as s:
        s.sendall(req)
        assert read_n(s, len(rep)) == rep
    # two chunks at every offset, one connection per offset (16 at a time)
    conns = []
    for k in range(1, len(req)):
        data, _ = pipeline(f"h{k:04d}")
        s = connect(velad.port)
        s.sendall(data[:k])
        conns.append((s, k, data))
        if len(conns) == 16 or k == len(req) - 1:
            time.sleep(0.02)  # let the server read the first halves on their own
            for s, k, data in conns:
                s.sendall(data[k:])
            for s, k, data in conns:
                assert read_n(s, len(rep)) == rep, f"split at {k}"
                s.close()
            conns = []
    # byte by byte on one connection
    with connect(velad.port) as s:
        for i in range(len(req)):
            s.sendall(req[i:i + 1])
            if i % 64 == 0:
                time.sleep(0.002)
        assert read_n(s, len(rep)) == rep


def test_big_vector_blob_split_across_reads(velad):
    dim = 1536  # 6 KiB of FLOAT32
    r = velad.client()
    r.execute_command("FT.CREATE", "idx", "SCHEMA", "v", "VECTOR", "FLAT", "6", "TYPE",
                      "FLOAT32", "DIM", dim, "DISTANCE_METRIC", "L2")
    rng = np.random.default_rng(3)
    vecs = rng.standard_normal((4, dim)).astype(np.float32)
    with connect(velad.port) as s:
        for i, v in enumerate(vecs):
            req = cmd("HSET", f"doc:{i}", "v", v.tobytes())
            for off in range(0, len(req), 1000):
                s.sendall(req[off:off + 1000])
                time.sleep(0.002)
            assert read_n(s, 4) == b":1\r\n"
        q = cmd("FT.SEARCH", "idx", "*=>[KNN 1 @v $b AS d]", "PARAMS", "2", "b",
                vecs[2].tobytes(), "RETURN", "1", "d", "DIALECT", "2")
        for off in range(0, len(q), 777):
            s.sendall(q[off:off + 777])
            time.sleep(0.002)
        want = b"*3\r\n:1\r\n$5\r\ndoc:2\r\n*2\r\n$1\r\nd\r\n$1\r\n0\r\n"
        assert read_n(s, len(want)) == want
    assert r.hget("doc:3", "v") == vecs[3].tobytes()


# ------------------------------------------------------------ random bytes

TOKENS = [b"*", b"$", b"\r\n", b"\n", b"\r", b"1", b"2", b"-1", b"0", b"3", b"100", b"\"",
          b"'", b"\\", b"\\x4", b" ", b"PING", b"HSET", b"FT.SEARCH", b"FT.CREATE", b"idx",
          b"*=>[KNN", b"@v", b"$b", b"]", b"{", b"}", b"(", b")", b"|", b"-", b"@t:", b"\x00",
          b"\xff", b"SCHEMA", b"VECTOR", b"HNSW", b"MULTI", b"EXEC", b"HELLO", b"3"]


def random_payload(rng):
    if rng.random() < 0.3:
        return bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 400)))
    return b"".join(rng.choice(TOKENS) for _ in range(rng.randint(1, 80)))


def random_command(rng):
    """A well-framed command with random, often nonsensical arguments."""
    names = ["FT.SEARCH", "FT.CREATE", "FT.INFO", "FT.DROPINDEX", "HSET", "HGET", "HGETALL",
             "DEL", "EXPIRE", "SCAN", "KEYS", "SET", "CLIENT", "CONFIG", "HELLO", "MULTI",
             "EXEC", "DISCARD", "SELECT", "INFO", "COMMAND", "FT.CONFIG", "FT.EXPLAIN", "TTL"]
    q = ["*", "*=>[KNN 3 @v $b AS d]", "@t:{a|b}", "-@t:{a}", "@n:[(1 +inf]", "(@x:(foo)",
         "@v:[VECTOR_RANGE 0.5 $b]", "*=>[KNN $k @v $b]", "@t:{", "((((", "~@t:{a}", "a|b",
         "@n:[1 2] | @t:{x}", "@n:[$p $p]", "*=>[KNN 2 @v $b EF_RUNTIME 5 AS x]"]
    args = [rng.choice(names)]
    if args[0] == "FT.SEARCH":
        args += ["idx", rng.choice(q)]
    for _ in range(rng.randint(0, 8)):
        args.append(rng.choice(q + ["idx", "PARAMS", "2", "b", "k", "LIMIT", "0", "-1",
                                    "RETURN", "SORTBY", "d", "DIALECT", "FILTER", "n",
                                    "SCHEMA", "v", "VECTOR", "HNSW", "6", "TYPE", "FLOAT32",
                                    "DIM", "4", "DISTANCE_METRIC", "L2", "t", "TAG", "GET",
                                    "SET", "ID", "LIST", "SETNAME", "x" * rng.randint(0, 40),
                                    bytes(rng.getrandbits(8) for _ in range(16))]))
    return cmd(*args)


ROUNDS = 60  # connections per thread


def test_random_bytes(velad):
    r = velad.client()
    r.execute_command("FT.CREATE", "idx", "SCHEMA", "v", "VECTOR", "HNSW", "6", "TYPE",
                      "FLOAT32", "DIM", "4", "DISTANCE_METRIC", "L2", "t", "TAG", "n", "NUMERIC")
    r.hset("doc:1", mapping={"v": np.ones(4, np.float32).tobytes(), "t": "a", "n": 3})
    errors = []
    replied = [0]

    def worker(seed):
        rng = random.Random(seed)
        try:
            for _ in range(ROUNDS):
                framed = rng.random() < 0.5  # well-framed commands only: they all run
                with connect(velad.port, timeout=10) as s:
                    for _ in range(rng.randint(1, 12)):
                        data = (random_command(rng) if framed or rng.random() < 0.5
                                else random_payload(rng))
                        try:
                            s.sendall(data)
                        except (BrokenPipeError, ConnectionResetError):
                            break
                    try:  # a marker: every reply before it has arrived
                        s.sendall(cmd("DISCARD") + cmd("ECHO", "END-MARK"))
                    except OSError:
                        pass  # the server closed it already (protocol error)
                    buf = b""
                    while b"END-MARK" not in buf[-64:]:
                        try:
                            chunk = s.recv(1 << 16)
                        except ConnectionResetError:
                            break
                        if not chunk:
                            break
                        buf += chunk
                    replied[0] += len(buf)
        except Exception as e:  # noqa: BLE001
            errors.append(f"seed {seed}: {e!r}")

    threads = [threading.Thread(target=worker, args=(1000 + i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert replied[0] > 10000
    assert velad.running(), velad.log()[-4000:]
    still_served(velad.port)
    assert r.hget("doc:1", "t") == b"a"


# ------------------------------------------------------------ limits

def test_output_buffer_limit(velad_factory):
    srv = velad_factory("--client-output-buffer-limit", "1mb")
    r = srv.client()
    r.hset("big", mapping={f"f{i}": b"x" * 100_000 for i in range(4)})  # ~400 KB per HGETALL
    slow = connect(srv.port, rcvbuf=4096, timeout=10)
    n = 150  # 60 MB of replies: far past the socket buffers and the 1 MB limit
    slow.sendall(cmd("HGETALL", "big") * n)
    time.sleep(0.5)
    assert r.ping() is True  # others are served meanwhile
    assert r.hlen("big") == 4
    got = 0
    slow.settimeout(10)
    try:
        while True:
            chunk = slow.recv(1 << 20)
            if not chunk:
                break
            got += len(chunk)
    except ConnectionResetError:
        pass
    slow.close()
    assert got < n * 400_000, "the client that stopped reading was not disconnected"
    assert "output buffer" in srv.log()
    assert r.ping() is True


def test_maxclients(velad_factory):
    srv = velad_factory("--maxclients", "3")
    held = [connect(srv.port) for _ in range(3)]
    for s in held:
        s.sendall(b"PING\r\n")
        assert read_n(s, 7) == b"+PONG\r\n"
    with connect(srv.port) as s:
        assert read_until_close(s) == b"-ERR max number of clients reached\r\n"
    with pytest.raises(redis.ConnectionError, match="max number of clients reached"):
        srv.client(retry=no_retry()).ping()
    held.pop().close()
    for _ in range(100):  # the server notices the close on its next loop turn
        with connect(srv.port) as s:
            s.sendall(b"PING\r\n")
            if s.recv(64) == b"+PONG\r\n":
                break
        time.sleep(0.02)
    else:
        pytest.fail("a slot freed by a closed client was not reused")
    for s in held:
        s.close()


# ------------------------------------------------------------ auth and ACL

@pytest.fixture
def secured(velad_factory):
    return velad_factory("--requirepass", "s3cret", "--user", "ro", "on", ">ropw", "+@read",
                         "--user", "admin", "on", ">adminpw", "+@all",
                         "--user", "off1", "off", ">x", "+@all")


def exchange(s, data):
    """Send; return what arrives until the server has been quiet for 0.2 s."""
    s.sendall(data)
    buf = s.recv(65536)
    s.settimeout(0.2)
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    except socket.timeout:
        pass
    finally:
        s.settimeout(5)
    return buf


def test_noauth_and_auth_flows(secured):
    with connect(secured.port) as s:
        assert exchange(s, cmd("PING")) == b"-NOAUTH Authentication required.\r\n"
        assert exchange(s, cmd("HSET", "k", "f", "v")) == b"-NOAUTH Authentication required.\r\n"
        assert exchange(s, cmd("AUTH", "nope")) == \
            b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"
        assert exchange(s, cmd("AUTH", "off1", "x")) == \
            b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"
        assert exchange(s, cmd("AUTH", "a", "b", "c")) == b"-ERR syntax error\r\n"
        assert exchange(s, cmd("HELLO", "3")).startswith(
            b"-NOAUTH HELLO must be called with the client already authenticated, otherwise the "
            b"HELLO <proto> AUTH <user> <pass> option can be used")
        assert exchange(s, cmd("AUTH", "s3cret")) == b"+OK\r\n"
        assert exchange(s, cmd("PING")) == b"+PONG\r\n"
        assert exchange(s, cmd("ACL", "WHOAMI")) == b"$7\r\ndefault\r\n"
    with connect(secured.port) as s:
        rep = exchange(s, cmd("HELLO", "3", "AUTH", "default", "s3cret", "SETNAME", "n1"))
        assert rep.startswith(b"%7\r\n$6\r\nserver\r\n")
        assert exchange(s, cmd("CLIENT", "GETNAME")) == b"$2\r\nn1\r\n"
    with connect(secured.port) as s:
        assert exchange(s, cmd("HELLO", "3", "AUTH", "default", "bad")) == \
            b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"
        assert exchange(s, cmd("PING")) == b"-NOAUTH Authentication required.\r\n"
    # redis-py maps the errors to its exception classes
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=secured.port, password="bad", protocol=2, retry=no_retry()).ping()
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=secured.port, password="bad", retry=no_retry()).ping()  # HELLO 3 AUTH
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=secured.port, protocol=2, retry=no_retry()).ping()
    assert redis.Redis(port=secured.port, password="s3cret").ping() is True
    assert redis.Redis(port=secured.port, username="admin", password="adminpw").ping() is True


def test_unauthenticated_limits(secured):
    expect_error_then_close(secured.port, b"*20\r\n",
                            b"Protocol error: unauthenticated multibulk length")
    expect_error_then_close(secured.port, b"*2\r\n$4\r\nAUTH\r\n$20000\r\n",
                            b"Protocol error: unauthenticated bulk length")
    # the same sizes are fine once authenticated
    with connect(secured.port) as s:
        s.sendall(cmd("AUTH", "s3cret") + cmd("ECHO", "y" * 20000))
        assert read_n(s, 5 + 8 + 20000 + 2)[:5] == b"+OK\r\n"
        s.sendall(cmd("DEL", *[f"k{i}" for i in range(20)]))
        assert read_n(s, 4) == b":0\r\n"


def test_readonly_user_gets_noperm(secured):
    admin = redis.Redis(port=secured.port, username="admin", password="adminpw", protocol=2)
    admin.execute_command("FT.CREATE", "idx", "SCHEMA", "v", "VECTOR", "FLAT", "6", "TYPE",
                          "FLOAT32", "DIM", "2", "DISTANCE_METRIC", "L2")
    admin.hset("doc:1", "v", np.array([1, 2], np.float32).tobytes())
    ro = redis.Redis(port=secured.port, username="ro", password="ropw")
    assert ro.hget("doc:1", "v") == np.array([1, 2], np.float32).tobytes()
    res = ro.execute_command("FT.SEARCH", "idx", "*=>[KNN 1 @v $b AS d]", "PARAMS", "2", "b",
                             np.array([1, 2], np.float32).tobytes(), "RETURN", "1", "d",
                             "DIALECT", "2")
    assert res is not None
    for args in [("HSET", "doc:2", "f", "v"), ("DEL", "doc:1"), ("EXPIRE", "doc:1", "10"),
                 ("FLUSHALL",), ("FT.DROPINDEX", "idx"), ("SET", "a", "b"),
                 ("CONFIG", "SET", "maxclients", "10")]:
        with pytest.raises(redis.exceptions.NoPermissionError, match="^User ro has no permissions"):
            ro.execute_command(*args)
    with connect(secured.port) as s:
        assert exchange(s, cmd("AUTH", "ro", "ropw")) == b"+OK\r\n"
        assert exchange(s, cmd("HSET", "x", "f", "v")) == \
            b"-NOPERM User ro has no permissions to run the 'hset' command\r\n"
        # a denied command inside MULTI aborts the transaction
        assert exchange(s, cmd("MULTI") + cmd("HSET", "x", "f", "v") + cmd("EXEC")) == \
            (b"+OK\r\n-NOPERM User ro has no permissions to run the 'hset' command\r\n"
             b"-EXECABORT Transaction discarded because of previous errors.\r\n")
    assert admin.exists("doc:1", "doc:2", "x") == 1


def test_auth_without_password_configured(velad):
    with connect(velad.port) as s:
        assert exchange(s, cmd("AUTH", "pw")) == (
            b"-ERR AUTH <password> called without any password configured for the default "
            b"user. Are you sure your configuration is correct?\r\n")


def test_hello_errors(velad):
    with connect(velad.port) as s:
        assert exchange(s, cmd("HELLO", "x")) == \
            b"-ERR Protocol version is not an integer or out of range\r\n"
        assert exchange(s, cmd("HELLO", "4")) == b"-NOPROTO unsupported protocol version\r\n"
        assert exchange(s, cmd("HELLO", "3", "BOGUS")) == \
            b"-ERR Syntax error in HELLO option 'BOGUS'\r\n"
        assert exchange(s, cmd("PING")) == b"+PONG\r\n"  # still RESP2
        assert exchange(s, cmd("HELLO", "3")).startswith(b"%7\r\n")
        assert exchange(s, cmd("HGET", "nokey", "f")) == b"_\r\n"


def test_multi_exec_semantics(velad):
    with connect(velad.port) as s:
        rep = exchange(s, cmd("MULTI") + cmd("HSET", "x", "a", "1") + cmd("HGET", "x", "a")
                       + cmd("CLIENT", "ID") + cmd("EXEC") + cmd("PING"))
        assert rep.startswith(b"+OK\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n*3\r\n:1\r\n$1\r\n1\r\n-")
        assert rep.endswith(b"+PONG\r\n")
        assert exchange(s, cmd("MULTI") + cmd("NOPE") + cmd("EXEC")) == (
            b"+OK\r\n-ERR unknown command 'NOPE', with args beginning with: \r\n"
            b"-EXECABORT Transaction discarded because of previous errors.\r\n")
        assert exchange(s, cmd("EXEC")) == b"-ERR EXEC without MULTI\r\n"
        assert exchange(s, cmd("DISCARD")) == b"-ERR DISCARD without MULTI\r\n"
