"""Differential tests: the same command stream to Debian's redis-server and
to velad, replies compared exactly (the RESP type and bytes of every reply,
error texts included), for the commands both implement: strings, hashes,
key expiry, KEYS/SCAN, MULTI/EXEC, connection commands, and the errors for
wrong arity, wrong type and bad arguments. RESP2 and RESP3, pipelined and
one at a time, RESP and inline.

Not compared (velad does not implement them, by design or not yet): INCR
and the other numeric string commands, MGET, SET ... GET, EXPIRE's NX/XX/GT/
LT, SELECT of a database other than 0, HELLO's and INFO's contents (server
version, modules). Known differences are the xfail tests at the end.
"""
import random
import shutil
import socket
import subprocess
import time

import pytest

REDIS_SERVER = shutil.which("redis-server")
pytestmark = pytest.mark.skipif(REDIS_SERVER is None,
                                reason="redis-server not installed (scripts/bootstrap test)")


# ------------------------------------------------------------------ a raw RESP client

class Raw:
    """One connection; replies parsed into typed tuples, so a simple string
    and a bulk string, or a RESP3 map and an array, never compare equal."""

    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=20)
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def close(self):
        self.s.close()

    @staticmethod
    def enc(args):
        args = [a if isinstance(a, bytes) else str(a).encode() for a in args]
        return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)

    def send(self, cmds):
        self.s.sendall(b"".join(self.enc(c) for c in cmds))

    def sendraw(self, data):
        self.s.sendall(data)

    def _fill(self):
        d = self.s.recv(1 << 16)
        if not d:
            raise ConnectionError("closed")
        self.buf += d

    def _line(self):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line, self.buf = self.buf[:i], self.buf[i + 2:]
                return line
            self._fill()

    def _bytes(self, n):
        while len(self.buf) < n + 2:
            self._fill()
        d, self.buf = self.buf[:n], self.buf[n + 2:]
        return d

    def read(self):
        line = self._line()
        t, r = line[:1], line[1:]
        if t == b"+":
            return ("simple", r)
        if t == b"-":
            return ("error", r)
        if t == b":":
            return ("int", int(r))
        if t == b"$":
            return ("nullbulk",) if int(r) < 0 else ("bulk", self._bytes(int(r)))
        if t == b"*":
            n = int(r)
            return ("nullarray",) if n < 0 else ("array", [self.read() for _ in range(n)])
        if t == b"%":
            return ("map", [(self.read(), self.read()) for _ in range(int(r))])
        if t == b"~":
            return ("set", [self.read() for _ in range(int(r))])
        if t == b"_":
            return ("null",)
        if t == b"#":
            return ("bool", r == b"t")
        if t == b",":
            return ("double", r)
        if t == b"(":
            return ("bignum", r)
        if t == b"=":
            return ("verbatim", self._bytes(int(r)))
        if t == b"!":
            return ("bloberror", self._bytes(int(r)))
        raise AssertionError(f"unexpected reply line {line!r}")

    def call(self, *args):
        self.send([args])
        return self.read()


def wait_port(port, proc, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "redis-server exited"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("redis-server did not start")


@pytest.fixture(scope="module")
def redis_port(tmp_path_factory):
    from conftest import free_port
    d = tmp_path_factory.mktemp("redis")
    port = free_port()
    p = subprocess.Popen([REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1",
                          "--save", "", "--appendonly", "no", "--dir", str(d)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, p)
        yield port
    finally:
        p.terminate()
        p.wait(10)


class Pair:
    """The same commands to both servers; replies compared."""

    def __init__(self, redis_port, velad_port, proto):
        self.r, self.v = Raw(redis_port), Raw(velad_port)
        self.proto = proto
        self.compared = 0
        self.queued = []  # MULTI: the commands EXEC will answer for
        if proto == 3:
            for c in (self.r, self.v):
                rep = c.call("HELLO", "3")
                assert rep[0] == "map" and dict(rep[1])[("bulk", b"proto")] == ("int", 3), rep
        self.both(("FLUSHALL",))

    def close(self):
        self.r.close()
        self.v.close()

    def both(self, *cmds):
        """Send cmds (pipelined) to both; return the pairs of replies."""
        for c in (self.r, self.v):
            c.send(cmds)
        return [(self.r.read(), self.v.read()) for _ in cmds]

    def check(self, cmds, pipelined=True):
        """Run cmds (tuples) and assert every pair of replies is equal."""
        batches = [cmds] if pipelined else [[c] for c in cmds]
        for batch in batches:
            for cmd, (r, v) in zip(batch, self.both(*batch)):
                name = cmd[0].upper() if isinstance(cmd[0], str) else cmd[0].decode().upper()
                if name == "MULTI" and r == ("simple", b"OK"):
                    self.queued = []
                elif r == ("simple", b"QUEUED"):
                    self.queued.append(cmd)
                if name == "EXEC" and r[0] == "array" and v[0] == "array":
                    assert len(r[1]) == len(v[1]) == len(self.queued), (cmd, r, v)
                    for qc, rr, vv in zip(self.queued, r[1], v[1]):
                        self.same(qc, rr, vv, inside=cmd)
                    self.compared += 1
                    continue
                self.same(cmd, r, v)

    def same(self, cmd, r, v, inside=None):
        self.compared += 1
        name = (cmd[0] if isinstance(cmd[0], str) else cmd[0].decode()).upper()
        r, v = normalise(name, r), normalise(name, v)
        if name == "SCAN" and len(cmd) > 1 and cmd[1] not in ("0", b"0") and r[0] == "array":
            r = ("array", "a page from an opaque cursor")  # what it holds is not specified
            v = ("array", "a page from an opaque cursor") if v[0] == "array" else v
        if name in ("TTL", "PTTL") and r[0] == v[0] == "int" and r[1] >= 0 and v[1] >= 0:
            tol = 1 if name == "TTL" else 1500
            ok = abs(r[1] - v[1]) <= tol
        else:
            ok = r == v
        assert ok, (f"{cmd!r}{' in ' + repr(inside) if inside else ''} (RESP{self.proto}):\n"
                    f"  redis-server: {r!r}\n  velad:        {v!r}")


def normalise(name, rep):
    """Where Redis leaves an order unspecified (KEYS, a SCAN page, the fields
    of a big hash), sort."""
    if name == "HGETALL" and rep[0] in ("array", "map"):
        # Field order: insertion order in a small (listpack) hash, hash order
        # in a big one (a value over 64 bytes): compare as pairs.
        pairs = rep[1] if rep[0] == "map" else list(zip(rep[1][::2], rep[1][1::2]))
        return (rep[0], sorted(pairs))
    if name == "KEYS" and rep[0] in ("array", "set"):
        return (rep[0], sorted(rep[1]))
    if name == "SCAN" and rep[0] == "array" and len(rep[1]) == 2:
        cur, keys = rep[1]
        return ("array", [cur, (keys[0], sorted(keys[1]))])
    return rep


@pytest.fixture
def pair_factory(redis_port, velad):
    made = []

    def make(proto):
        p = Pair(redis_port, velad.port, proto)
        made.append(p)
        return p
    yield make
    for p in made:
        p.close()


# ------------------------------------------------------------------ hand-written cases

def future_s(dt):
    return str(int(time.time()) + dt)


FIXED = [
    # connection
    ("PING",), ("PING", "hello"), ("PING", "a", "b"), ("ECHO", "x"), ("ECHO",), ("ECHO", "a", "b"),
    ("SELECT", "0"), ("SELECT", "x"), ("SELECT",), ("DBSIZE",), ("DBSIZE", "x"),
    ("NOSUCHCMD",), ("NOSUCHCMD", "a", "b"), ("CLIENT", "GETNAME"), ("CLIENT", "SETNAME", "n1"),
    ("CLIENT", "GETNAME"), ("CLIENT", "SETNAME", "a b"), ("CLIENT", "SETNAME", "a\x01"),
    ("CLIENT", "SETNAME", ""), ("CLIENT", "GETNAME"),
    # strings
    ("SET", "k", "v"), ("GET", "k"), ("SET", "k", "v", "NX"), ("SET", "k", "w", "XX"), ("GET", "k"),
    ("SET", "k2", "v", "XX"), ("GET", "k2"), ("SET", "k", "v", "NX", "XX"), ("SET", "k", "v", "XX", "NX"),
    ("SET", "k", "v", "EX", "0"), ("SET", "k", "v", "EX", "-1"), ("SET", "k", "v", "EX", "abc"),
    ("SET", "k", "v", "EX", "abc", "junk"), ("SET", "k", "v", "EX"), ("SET", "k", "v", "PX", "1", "EX", "1"),
    ("SET", "k", "v", "EX", "100", "KEEPTTL"), ("SET", "k", "v", "KEEPTTL", "EX", "100"),
    ("SET", "k", "v", "EX", "9223372036854775"), ("SET", "k", "v", "PX", "9223372036854775807"),
    ("SET", "k", "v", "EXAT", "9223372036854775807"), ("SET", "k", "v", "PXAT", "9223372036854775807"),
    ("SET", "k", "v", "EX", "1000"), ("TTL", "k"), ("SET", "k", "v2", "KEEPTTL"), ("TTL", "k"),
    ("SET", "k", "v3"), ("TTL", "k"), ("SET", "k", "v", "EXAT", future_s(500)), ("TTL", "k"),
    ("SET", "k", "v", "PXAT", future_s(500) + "000"), ("TTL", "k"), ("SET", "k", "v", "foo"),
    ("SET", "k"), ("GET",), ("GET", "k", "k"), ("GET", "nokey"),
    ("SET", b"bin\x00\r\nkey", b"\x00\xff\r\n"), ("GET", b"bin\x00\r\nkey"), ("SET", "big", "x" * 70000),
    ("GET", "big"), ("SET", "e", ""), ("GET", "e"), ("EXISTS", "e"),
    # hashes
    ("HSET", "h", "f1", "v1", "f2", "v2"), ("HSET", "h", "f1"), ("HSET", "h", "f1", "v1", "f2"),
    ("HSET", "h", "f1", "x", "f3", "y", "f1", "z"), ("HGETALL", "h"), ("HGET", "h", "f1"),
    ("HGET", "h", "nofield"), ("HGET", "nokey", "f"), ("HGET", "k", "f"), ("HSET", "k", "f", "v"),
    ("GET", "h"), ("HGETALL", "k"), ("HGETALL", "nokey"), ("HMGET", "h", "f1", "nofield", "f2"),
    ("HMGET", "k", "f1"), ("HMGET", "nokey", "a", "b"), ("HDEL", "h", "nofield"),
    ("HDEL", "h", "f1", "f1"), ("HDEL", "k", "f"), ("HDEL", "nokey", "f"), ("HEXISTS", "h", "f2"),
    ("HEXISTS", "h", "f1"), ("HEXISTS", "k", "f"), ("HLEN", "h"), ("HLEN", "k"), ("HLEN", "nokey"),
    ("HSETNX", "h", "f2", "x"), ("HSETNX", "h", "f9", "x"), ("HSETNX", "k", "f", "x"),
    ("HSETNX", "h", "f"), ("HMSET", "h", "a", "1", "b", "2"), ("HMSET", "h", "a"),
    ("HMSET", "k", "a", "1"), ("HSET", "h", "", "empty-name"), ("HGET", "h", ""),
    ("HSET", "h", b"\x00f", b"\x00v"), ("HGETALL", "h"), ("HDEL", "h", "a", "b", "", b"\x00f", "f2", "f3", "f9"),
    ("HGETALL", "h"), ("EXISTS", "h"), ("HDEL", "h"), ("HGET", "h"), ("HMGET", "h"),
    # keys and expiry
    ("SET", "k", "v"), ("HSET", "h", "f", "v"), ("DEL",), ("EXISTS",), ("EXISTS", "k", "k", "nokey", "h"),
    ("TYPE", "k"), ("TYPE", "h"), ("TYPE", "nokey"), ("TYPE",), ("TYPE", "a", "b"),
    ("EXPIRE", "k", "100"), ("TTL", "k"), ("PTTL", "k"), ("EXPIRE", "k", "abc"), ("EXPIRE", "k"),
    ("EXPIRE", "nokey", "100"), ("EXPIRE", "k", "9223372036854775807"),
    ("EXPIRE", "k", "9223372036854775"), ("PEXPIRE", "k", "9223372036854775807"),
    ("EXPIREAT", "k", "9223372036854775807"), ("EXPIRE", "k", "-9223372036854775807"),
    ("EXISTS", "k"), ("SET", "k", "v"), ("PERSIST", "k"), ("EXPIRE", "k", "100"),
    ("PERSIST", "k"), ("PERSIST", "k"), ("TTL", "k"), ("PERSIST", "nokey"), ("TTL", "nokey"),
    ("PTTL", "nokey"), ("TTL",), ("PERSIST",), ("PEXPIRE", "h", "100000"), ("TTL", "h"),
    ("EXPIREAT", "h", "1"), ("EXISTS", "h"), ("EXPIRE", "k", "0"), ("EXISTS", "k"),
    ("SET", "k", "v"), ("EXPIRE", "k", "-5"), ("EXISTS", "k"), ("SET", "k", "v"),
    ("EXPIREAT", "k", future_s(1000)), ("TTL", "k"), ("HSET", "h", "f", "v"),
    ("EXPIRE", "h", "1000"), ("HSET", "h", "g", "w"), ("TTL", "h"), ("HDEL", "h", "f", "g"),
    ("TTL", "h"), ("SET", "k", "v", "EX", "1000"), ("HSET", "k", "f", "v"), ("TTL", "k"),
    ("SET", "s", "v", "EX", "1000"), ("SET", "s", "w"), ("TTL", "s"),
    ("HSET", "kh", "f", "v"), ("EXPIRE", "kh", "1000"), ("SET", "kh", "v", "KEEPTTL"), ("TTL", "kh"),
    ("TYPE", "kh"), ("HSET", "kh2", "f", "v"), ("EXPIRE", "kh2", "1000"), ("SET", "kh2", "v"),
    ("TTL", "kh2"), ("DEL", "kh", "kh2"), ("DEL", "k", "h", "s", "nokey"),
    ("UNLINK", "e", "big", "nokey"), ("UNLINK",),
    # KEYS and SCAN with Redis's glob (stringmatchlen), binary keys included
    ("SET", "abc", "1"), ("SET", "abd", "1"), ("SET", b"a\x00c", "1"), ("SET", b"a\xffz", "1"),
    ("SET", "a]", "1"), ("SET", "a[", "1"), ("SET", "a\\", "1"), ("SET", "a-", "1"), ("SET", "a^", "1"),
    ("HSET", "ah", "f", "v"),
    ("KEYS", "*"), ("KEYS", "a*"), ("KEYS", "a?c"), ("KEYS", "a[bc]?"), ("KEYS", "a[^b]?"),
    ("KEYS", "a[!b]?"), ("KEYS", "a[c-a]*"), ("KEYS", "a[]]"), ("KEYS", "a["), ("KEYS", "a[a"),
    ("KEYS", "a[\\]]"), ("KEYS", "a\\*"), ("KEYS", "a\\"), ("KEYS", "*c"), ("KEYS", b"a[\x80-\xff]z"),
    ("KEYS", b"a[\x01-\xff]z"), ("KEYS", "**"), ("KEYS", "a[-]"), ("KEYS", "a[--z]"), ("KEYS", "a[^]"),
    ("KEYS", "nomatch*"), ("KEYS",), ("KEYS", "a", "b"),
    ("SCAN", "0", "COUNT", "1000"), ("SCAN", "0", "COUNT", "1000", "MATCH", "a[a-c]*"),
    ("SCAN", "0", "COUNT", "1000", "TYPE", "hash"), ("SCAN", "0", "COUNT", "1000", "TYPE", "string"),
    ("SCAN", "0", "COUNT", "1000", "TYPE", "list"), ("SCAN", "x"), ("SCAN", "-1"), ("SCAN", " 1"),
    ("SCAN", "1x"), ("SCAN", "18446744073709551615"), ("SCAN", "18446744073709551616"),
    ("SCAN", "0", "COUNT", "0"), ("SCAN", "0", "COUNT", "x"), ("SCAN", "0", "MATCH"),
    ("SCAN", "0", "FOO", "bar"), ("SCAN",),
    # MULTI / EXEC
    ("MULTI",), ("SET", "a", "1"), ("GET", "a"), ("HSET", "a", "f", "v"), ("EXPIRE", "a", "100"),
    ("TTL", "a"), ("EXEC",), ("EXEC",), ("DISCARD",), ("MULTI",), ("MULTI",), ("DISCARD",),
    ("MULTI",), ("SET", "a"), ("GET", "a"), ("EXEC",), ("GET", "a"),
    ("MULTI",), ("NOSUCHCMD",), ("EXEC",), ("MULTI",), ("DEL", "a"), ("DISCARD",), ("GET", "a"),
    ("MULTI",), ("EXEC",),
    ("FLUSHALL",), ("DBSIZE",), ("KEYS", "*"),
]


@pytest.mark.parametrize("proto", [2, 3])
@pytest.mark.parametrize("pipelined", [False, True], ids=["one-by-one", "pipelined"])
def test_fixed_cases(pair_factory, proto, pipelined):
    p = pair_factory(proto)
    p.check(FIXED, pipelined=pipelined)


# ------------------------------------------------------------------ a random stream

KEYS = [b"s1", b"s2", b"h1", b"h2", b"x", b"bin\x00\r\n", b"k:\xff", b"{tag}"]
FIELDS = [b"f1", b"f2", b"f3", b"\x00f", b"", b"long-field-name"]
VALUES = [b"", b"v", b"1", b"-5", b"3.5", b"\x00\xff\r\n", b"x" * 100, b"y" * 3000]
PATTERNS = [b"*", b"s*", b"h?", b"[hs]*", b"*\xff", b"b[a-j]n*", b"{*}", b"[^s]*", b"x"]


def gen_command(rng):
    k = rng.choice(KEYS)
    f = rng.choice(FIELDS)
    v = rng.choice(VALUES)
    big_s = str(rng.choice([100, 1000, 5000, 99999]))
    choices = [
        (8, lambda: ("SET", k, v)),
        (4, lambda: ("SET", k, v, *rng.choice([("NX",), ("XX",), ("EX", big_s), ("PX", big_s + "000"),
                                               ("KEEPTTL",), ("XX", "KEEPTTL"),
                                               ("EXAT", future_s(int(big_s))), ("NX", "EX", big_s),
                                               ("EX", "0"), ("PX", "-3"), ("EX", "x"), ("NX", "XX")]))),
        (8, lambda: ("GET", k)),
        (3, lambda: ("DEL", *rng.sample(KEYS, rng.randint(1, 3)))),
        (1, lambda: ("UNLINK", k)),
        (3, lambda: ("EXISTS", *rng.choices(KEYS, k=rng.randint(1, 4)))),
        (3, lambda: ("TYPE", k)),
        (3, lambda: ("EXPIRE", k, rng.choice([big_s, "0", "-1", "abc"]))),
        (1, lambda: ("PEXPIRE", k, rng.choice([big_s + "000", "-1"]))),
        (1, lambda: ("EXPIREAT", k, rng.choice([future_s(int(big_s)), "1"]))),
        (2, lambda: ("PERSIST", k)),
        (3, lambda: ("TTL", k)),
        (2, lambda: ("PTTL", k)),
        (10, lambda: ("HSET", k, *[x for _ in range(rng.randint(1, 3))
                                  for x in (rng.choice(FIELDS), rng.choice(VALUES))])),
        (2, lambda: ("HMSET", k, f, v)),
        (2, lambda: ("HSETNX", k, f, v)),
        (6, lambda: ("HGET", k, f)),
        (3, lambda: ("HMGET", k, *rng.sample(FIELDS, rng.randint(1, 3)))),
        (4, lambda: ("HGETALL", k)),
        (4, lambda: ("HDEL", k, *rng.sample(FIELDS, rng.randint(1, 3)))),
        (2, lambda: ("HEXISTS", k, f)),
        (2, lambda: ("HLEN", k)),
        (1, lambda: ("DBSIZE",)),
        (1, lambda: ("PING",)),
        (1, lambda: ("PING", v)),
        (1, lambda: ("ECHO", v)),
        (2, lambda: ("KEYS", rng.choice(PATTERNS))),
        (2, lambda: ("SCAN", "0", "COUNT", "1000", *rng.choice([(), ("MATCH", rng.choice(PATTERNS)),
                                                                ("TYPE", rng.choice(["hash", "string"]))]))),
        (1, lambda: ("SELECT", "0")),
        # errors: arity, unknown commands, bad arguments
        (1, lambda: rng.choice([("GET",), ("GET", k, k), ("SET", k), ("HSET", k, f), ("HGET", k),
                                ("HSETNX", k, f), ("HLEN",), ("TTL", k, k), ("EXPIRE", k),
                                ("TYPE",), ("PERSIST",), ("HGETALL",), ("HEXISTS", k),
                                ("NOSUCH", k), ("ECHO",), ("EXISTS",), ("DEL",), ("HDEL", k),
                                ("SCAN",), ("SCAN", "0", "COUNT", "0"), ("SELECT", "x"),
                                ("HMSET", k, f), ("HSET", k, f, v, f)])),
    ]
    total = sum(w for w, _ in choices)
    x = rng.uniform(0, total)
    for w, make in choices:
        x -= w
        if x <= 0:
            return make()
    return choices[-1][1]()


def gen_stream(seed, n):
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        r = rng.random()
        if r < 0.04:  # a transaction, sometimes aborted by a queuing error or discarded
            body = [gen_command(rng) for _ in range(rng.randint(0, 6))]
            end = ("DISCARD",) if rng.random() < 0.2 else ("EXEC",)
            out += [("MULTI",), *body, end]
        elif r < 0.045:
            out.append(("FLUSHALL",))
        else:
            out.append(gen_command(rng))
    return out


@pytest.mark.parametrize("proto", [2, 3])
@pytest.mark.parametrize("seed", [1, 2])
def test_random_stream(pair_factory, proto, seed):
    rng = random.Random(seed * 10 + proto)
    p = pair_factory(proto)
    stream = gen_stream(seed * 100 + proto, 3000)
    i = 0
    while i < len(stream):  # batches of 1..60 commands, pipelined
        n = rng.choice([1, 1, 1, 2, 5, 20, 60])
        p.check(stream[i:i + n])
        i += n
    assert p.compared >= 3000


# ------------------------------------------------------------------ inline commands, timing

def test_inline_commands(redis_port, velad):
    """Inline (telnet-style) commands, quoting and escapes as Redis parses them."""
    lines = [b"PING", b"PING hello", b"SET k v", b"GET k", b'SET "a b" "c\\td\\x41"', b'GET "a b"',
             b"SET q 'single quoted'", b"GET q", b"HSET h f1 v1 f2 v2", b"HGETALL h",
             b"EXISTS k q h nokey", b"DEL k", b"NOSUCH x", b"GET", b"  GET   q  ", b"ECHO ''",
             b'ECHO "\\x00\\xff"']
    for proto in (2, 3):
        r, v = Raw(redis_port), Raw(velad.port)
        if proto == 3:
            for c in (r, v):
                c.sendraw(b"HELLO 3\r\n")
                c.read()
        for c in (r, v):
            c.sendraw(b"FLUSHALL\r\n")
            c.read()
            c.sendraw(b"".join(line + b"\r\n" for line in lines))
        for line in lines:
            a, b = r.read(), v.read()
            assert a == b, f"inline {line!r} (RESP{proto}): redis {a!r}, velad {b!r}"
        r.close()
        v.close()


def test_expiry_takes_effect(pair_factory):
    """Short expiries: gone on both once their time has passed."""
    p = pair_factory(2)
    p.check([("SET", "a", "1", "PX", "150"), ("HSET", "b", "f", "v"), ("PEXPIRE", "b", "150"),
             ("SET", "c", "1"), ("EXPIREAT", "c", str(int(time.time()) + 1)),
             ("SET", "d", "1", "PXAT", str(int(time.time() * 1000) + 150))])
    time.sleep(1.3)
    p.check([("EXISTS", "a", "b", "c", "d"), ("GET", "a"), ("HGETALL", "b"), ("TTL", "c"),
             ("PTTL", "d"), ("TYPE", "b"), ("KEYS", "*"), ("DBSIZE",)])


def test_full_scan_iteration(pair_factory):
    """A SCAN loop with a small COUNT visits the same keys on both."""
    p = pair_factory(2)
    cmds = [("SET", f"s{i}", "v") for i in range(150)] + \
           [("HSET", f"h{i}", "f", "v") for i in range(150)]
    p.check(cmds)
    for extra in ([], ["MATCH", "s1*"], ["TYPE", "hash"], ["MATCH", "h[0-4]?", "TYPE", "hash"]):
        seen = []
        for c in (p.r, p.v):
            cur, keys = b"0", []
            while True:
                rep = c.call("SCAN", cur, "COUNT", "7", *extra)
                cur = rep[1][0][1]
                keys += [k[1] for k in rep[1][1][1]]
                if cur == b"0":
                    break
            seen.append(keys)
        assert sorted(set(seen[0])) == sorted(set(seen[1])), extra
        assert len(seen[1]) == len(set(seen[1])), "velad returned a key twice"


# ------------------------------------------------------------------ known differences

@pytest.mark.xfail(strict=True, reason="velad refuses the empty key (LMDB keys are 1 byte or "
                   "more); Redis accepts it")
def test_empty_key(pair_factory):
    pair_factory(2).check([("SET", "", "v"), ("GET", ""), ("DEL", "")])


@pytest.mark.xfail(strict=True, reason="vela_scan takes a NUL-terminated pattern: a pattern "
                   "with a NUL byte is cut there")
def test_pattern_with_nul(pair_factory):
    pair_factory(2).check([("SET", b"a\x00c", "1"), ("KEYS", b"a[\x00-\x01]c")])
