"""Load test of velad (issue 8, "Load"): many concurrent connections run
pipelined writes, KNN and hybrid FT.SEARCH for a fixed time, and every reply
is checked against the client's own model of what it wrote; meanwhile slow
readers (clients that pipeline big replies and never read) must be cut by
the output-buffer limit, velad's resident memory is sampled, and latency
percentiles are collected.

The CI test (test_load.py) and the long run (bench/load_soak.py) share this
file. It speaks RESP2 itself over asyncio streams (no client library in the
hot path: one Python process must drive 1,000 connections).

What one worker (one connection) does, until the deadline:

- owns keys `lt:<w>:<j>` (j < keys_per_conn) and the tag `t<w>`; nobody else
  writes them, and it sends its next request only after the replies to the
  previous ones, so its model (key -> (n, vector)) is exactly what velad
  must hold for its keys once a reply came;
- write: a pipeline of 1..max_pipeline HSET (all three fields) / DEL on
  distinct keys; HSET must answer 3 for a new key and 0 for an existing one,
  DEL 1 or 0 as the model says;
- knn: 1..4 pipelined `*=>[KNN 3 @v $B]` with the vector of one of its own
  documents: the first hit must be that document at distance 0;
- hybrid: 1..4 pipelined `(@tag:{t<w>})=>[KNN 5 @v $B]` with a random query
  vector: the hits must be exactly the model's 5 nearest (numpy brute force),
  with their true distances;
- count: 1..4 pipelined `@tag:{t<w>} @n:[lo hi]` LIMIT 0 0: the total must
  be the model's count.

A connection closed by velad, a timeout or any wrong reply is recorded.
"""
import asyncio
import os
import random
import resource
import socket
import time

import numpy as np

DIM = 8
INDEX = "lt"
PREFIX = "lt:"
BIG_KEY = "lt-big"            # no index prefix: not a document of `lt`
SEARCH_PIPE_MAX = 4
REPLY_TIMEOUT_S = 60.0        # one round trip; far above any healthy latency
MAX_ERRORS_KEPT = 50


def raise_nofile(n):
    """Raise RLIMIT_NOFILE to at least n (up to the hard limit); returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < n:
        new = n if hard == resource.RLIM_INFINITY else min(n, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        soft = new
    return soft


def cpu_seconds(pid):
    """User + system CPU time of a process so far (from /proc/<pid>/stat)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def rss_bytes(pid):
    """Resident set size of a process, from /proc (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


# ------------------------------------------------------------ RESP2

class Err(str):
    """An error reply."""


_NEED = object()


def encode(args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if isinstance(a, str):
            a = a.encode()
        elif isinstance(a, int):
            a = b"%d" % a
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def _parse_at(buf, i):
    """(value, next index) of the reply at buf[i:], or (None, -1) if incomplete."""
    nl = buf.find(b"\r\n", i)
    if nl < 0:
        return None, -1
    t = buf[i]
    line = bytes(buf[i + 1:nl])
    j = nl + 2
    if t == 43:  # +
        return line.decode(), j
    if t == 45:  # -
        return Err(line.decode()), j
    if t == 58:  # :
        return int(line), j
    if t == 36:  # $
        n = int(line)
        if n < 0:
            return None, j
        if len(buf) < j + n + 2:
            return None, -1
        return bytes(buf[j:j + n]), j + n + 2
    if t == 42:  # *
        n = int(line)
        if n < 0:
            return None, j
        arr = []
        for _ in range(n):
            v, j = _parse_at(buf, j)
            if j < 0:
                return None, -1
            arr.append(v)
        return arr, j
    raise ConnectionError(f"protocol error: unexpected byte {t!r} in a reply")


class Conn:
    """One RESP2 connection: pipeline(cmds) sends them and returns the replies."""

    def __init__(self, reader, writer):
        self.r, self.w = reader, writer
        self.buf = bytearray()
        self.pos = 0

    @classmethod
    async def open(cls, host, port, timeout=30.0):
        r, w = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        return cls(r, w)

    def _next(self):
        v, end = _parse_at(self.buf, self.pos)
        if end < 0:
            return _NEED
        self.pos = end
        if self.pos > 65536 and self.pos * 2 > len(self.buf):
            del self.buf[:self.pos]
            self.pos = 0
        return v

    async def pipeline(self, cmds, timeout=REPLY_TIMEOUT_S):
        self.w.write(b"".join(encode(c) for c in cmds))
        await self.w.drain()
        out = []
        deadline = time.monotonic() + timeout
        while len(out) < len(cmds):
            v = self._next()
            if v is _NEED:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no reply within {timeout:.0f} s")
                data = await asyncio.wait_for(self.r.read(1 << 16), left)
                if not data:
                    raise ConnectionError("connection closed by the server")
                self.buf += data
                continue
            out.append(v)
        return out

    async def call(self, *args, timeout=REPLY_TIMEOUT_S):
        return (await self.pipeline([list(args)], timeout))[0]

    def close(self):
        self.w.close()


def info_dict(text):
    out = {}
    for line in (text.decode() if isinstance(text, bytes) else text).splitlines():
        if ":" in line and not line.startswith("#"):
            k, v = line.split(":", 1)
            out[k] = v
    return out


def client_names(text):
    """Names in a CLIENT LIST reply."""
    names = []
    for line in (text.decode() if isinstance(text, bytes) else text).splitlines():
        for kv in line.split(" "):
            if kv.startswith("name="):
                names.append(kv[5:])
    return names


def client_field(text, name, field):
    """A field of the client called `name` in a CLIENT LIST reply, or None."""
    for line in (text.decode() if isinstance(text, bytes) else text).splitlines():
        kv = dict(p.split("=", 1) for p in line.split(" ") if "=" in p)
        if kv.get("name") == name:
            return kv.get(field)
    return None


# ------------------------------------------------------------ statistics

class Stats:
    def __init__(self):
        self.lat = {"write": [], "knn": [], "hybrid": [], "count": []}
        self.commands = {"write": 0, "knn": 0, "hybrid": 0, "count": 0}
        self.errors = []
        self.n_errors = 0
        self.dropped = 0
        self.rss = []              # (seconds since start, bytes)
        self.slow = []             # one dict per slow reader
        self.connected = 0
        self.max_connected_seen = 0
        self.final = {}

    def error(self, msg):
        self.n_errors += 1
        if len(self.errors) < MAX_ERRORS_KEPT:
            self.errors.append(msg)

    def percentiles(self):
        out = {}
        for k, v in self.lat.items():
            if not v:
                continue
            a = np.array(v) * 1000.0
            out[k] = {"round_trips": len(v), "commands": self.commands[k],
                      **{f"p{p}": round(float(np.percentile(a, p)), 3)
                         for p in (50, 90, 99, 99.9)},
                      "max": round(float(a.max()), 3)}
        return out


# ------------------------------------------------------------ workers

def parse_search(reply):
    """[total, key, [f, v, ...], ...] -> (total, [(key, {f: v})])."""
    if isinstance(reply, Err) or not isinstance(reply, list) or not reply:
        raise ValueError(f"not a search reply: {reply!r:.200}")
    hits = []
    for i in range(1, len(reply), 2):
        fields = reply[i + 1] if i + 1 < len(reply) else []
        hits.append((reply[i], {fields[j]: fields[j + 1] for j in range(0, len(fields), 2)}))
    return reply[0], hits


class Worker:
    def __init__(self, wid, seed, cfg, stats):
        self.wid = wid
        self.tag = f"t{wid}"
        self.keys = [f"{PREFIX}{wid}:{j}".encode() for j in range(cfg["keys_per_conn"])]
        self.model = {}  # key (bytes) -> (n, float32 vector)
        self.rng = random.Random(seed)
        self.nrng = np.random.default_rng(seed)
        self.cfg = cfg
        self.stats = stats
        self.conn = None

    def check(self, ok, what):
        if not ok:
            self.stats.error(f"worker {self.wid}: {what}")

    async def timed(self, kind, cmds):
        t0 = time.perf_counter()
        replies = await self.conn.pipeline(cmds)
        self.stats.lat[kind].append(time.perf_counter() - t0)
        self.stats.commands[kind] += len(cmds)
        return replies

    async def op_write(self):
        n_ops = self.rng.randint(1, self.cfg["max_pipeline"])
        cmds, expect, updates = [], [], []
        for k in self.rng.sample(self.keys, min(n_ops, len(self.keys))):
            if k in self.model and self.rng.random() < self.cfg["p_del"]:
                cmds.append([b"DEL", k])
                expect.append(1)
                updates.append((k, None))
            elif k not in self.model and self.rng.random() < 0.03:
                cmds.append([b"DEL", k])  # a key that does not exist
                expect.append(0)
                updates.append((k, None))
            else:
                n = self.rng.randint(0, 999)
                v = self.nrng.random(DIM, dtype=np.float32)
                cmds.append([b"HSET", k, b"tag", self.tag, b"n", str(n), b"v", v.tobytes()])
                expect.append(0 if k in self.model else 3)
                updates.append((k, (n, v)))
        replies = await self.timed("write", cmds)
        for c, want, got, (k, new) in zip(cmds, expect, replies, updates):
            self.check(got == want, f"{c[0].decode()} {k!r} replied {got!r}, expected {want}")
            if new is None:
                self.model.pop(k, None)
            else:
                self.model[k] = new

    async def op_knn(self):
        keys = self.rng.sample(list(self.model), min(len(self.model),
                                                     self.rng.randint(1, SEARCH_PIPE_MAX)))
        cmds = [[b"FT.SEARCH", INDEX, "*=>[KNN 3 @v $B AS d]", "PARAMS", "2", "B",
                 self.model[k][1].tobytes(), "SORTBY", "d", "RETURN", "1", "d",
                 "DIALECT", "2"] for k in keys]
        for k, rep in zip(keys, await self.timed("knn", cmds)):
            try:
                total, hits = parse_search(rep)
            except (ValueError, IndexError, TypeError) as e:
                self.check(False, f"KNN of {k!r}: {e}")
                continue
            self.check(total == len(hits) and hits and hits[0][0] == k and
                       float(hits[0][1].get(b"d", b"nan")) <= 1e-6,
                       f"KNN of {k!r}'s own vector: {rep!r:.300}")

    def truth(self, q, kk):
        keys = list(self.model)
        m = np.stack([self.model[k][1] for k in keys]).astype(np.float64)
        d = ((m - q.astype(np.float64)) ** 2).sum(axis=1)
        order = np.argsort(d, kind="stable")[:kk]
        return {k: float(dd) for k, dd in zip(keys, d)}, [float(d[i]) for i in order]

    async def op_hybrid(self):
        kk = 5
        qs = [self.nrng.random(DIM, dtype=np.float32)
              for _ in range(self.rng.randint(1, SEARCH_PIPE_MAX))]
        cmds = [[b"FT.SEARCH", INDEX, f"(@tag:{{{self.tag}}})=>[KNN {kk} @v $B AS d]",
                 "PARAMS", "2", "B", q.tobytes(), "SORTBY", "d", "RETURN", "1", "d",
                 "LIMIT", "0", str(kk), "DIALECT", "2"] for q in qs]
        for q, rep in zip(qs, await self.timed("hybrid", cmds)):
            dist, best = self.truth(q, kk)
            try:
                total, hits = parse_search(rep)
                got = [(k, float(f[b"d"])) for k, f in hits]
            except (ValueError, IndexError, TypeError, KeyError) as e:
                self.check(False, f"hybrid: {e}")
                continue
            ok = total == len(got) == len(best)
            for (k, dd), want in zip(got, best):
                # Each hit is one of this worker's documents at its true
                # distance, and the distances are the brute force's top K.
                ok = ok and k in dist and abs(dist[k] - dd) <= 1e-4 * (1 + dd) \
                    and abs(dd - want) <= 1e-4 * (1 + want)
            self.check(ok, f"hybrid top-{kk}: got {got}, expected distances {best}")

    async def op_count(self):
        ranges = []
        for _ in range(self.rng.randint(1, SEARCH_PIPE_MAX)):
            lo = self.rng.randint(0, 999)
            ranges.append((lo, min(999, lo + self.rng.randint(0, 500))))
        cmds = [[b"FT.SEARCH", INDEX, f"@tag:{{{self.tag}}} @n:[{lo} {hi}]", "LIMIT", "0", "0",
                 "DIALECT", "2"] for lo, hi in ranges]
        for (lo, hi), rep in zip(ranges, await self.timed("count", cmds)):
            want = sum(1 for n, _ in self.model.values() if lo <= n <= hi)
            self.check(isinstance(rep, list) and rep and rep[0] == want,
                       f"count @n:[{lo} {hi}]: got {rep!r:.200}, model has {want}")

    async def run(self, deadline):
        """The load on self.conn (already open) until the deadline."""
        st, p = self.stats, self.cfg
        st.connected += 1
        st.max_connected_seen = max(st.max_connected_seen, st.connected)
        try:
            while time.monotonic() < deadline:
                x = self.rng.random()
                if x < p["p_write"] or not self.model:
                    await self.op_write()
                elif x < p["p_write"] + p["p_knn"]:
                    await self.op_knn()
                elif x < p["p_write"] + p["p_knn"] + p["p_hybrid"]:
                    await self.op_hybrid()
                else:
                    await self.op_count()
                if p["think_s"]:
                    await asyncio.sleep(self.rng.random() * 2 * p["think_s"])
        except (ConnectionError, OSError, TimeoutError, asyncio.TimeoutError) as e:
            st.dropped += 1
            st.error(f"worker {self.wid}: connection lost: {e!r}")
        finally:
            st.connected -= 1

    async def verify(self, conn):
        """After the run: every key of this worker reads back as the model says."""
        cmds = [[b"HMGET", k, b"tag", b"n", b"v"] for k in self.keys]
        for k, rep in zip(self.keys, await conn.pipeline(cmds)):
            m = self.model.get(k)
            want = [None, None, None] if m is None else \
                [self.tag.encode(), str(m[0]).encode(), m[1].tobytes()]
            self.check(rep == want, f"{k!r} reads back {rep!r:.200}, model {want!r:.200}")


# ------------------------------------------------------------ slow readers

async def slow_reader(host, port, name, requests, stats, deadline, monitor_names):
    """Pipeline `requests` HGETs of the big value without ever reading. velad
    must close the connection (output-buffer limit) while we still do not
    read: seen by the name leaving CLIENT LIST, then by EOF/RST."""
    rec = {"name": name, "sent": 0, "closed_by_server": False, "bytes_received": 0,
           "seen_in_client_list": False, "max_omem_seen": 0}
    stats.slow.append(rec)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: small window
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, port))
    r, w = await asyncio.open_connection(sock=sock)
    w.write(encode(["CLIENT", "SETNAME", name]))
    await w.drain()
    t0 = time.monotonic()
    while name not in monitor_names() and time.monotonic() - t0 < 10:
        await asyncio.sleep(0.05)  # the monitor's CLIENT LIST sees us first
    rec["seen_in_client_list"] = name in monitor_names()
    one = encode(["HGET", BIG_KEY, "f"])
    try:
        while rec["sent"] < requests and time.monotonic() < deadline:
            w.write(one * 32)
            rec["sent"] += 32
            await asyncio.wait_for(w.drain(), 10)
            await asyncio.sleep(0.005)
            if name not in monitor_names():
                break  # velad closed it already
    except (ConnectionError, OSError, asyncio.TimeoutError):
        pass
    # Still not reading: wait for velad to drop the client.
    t0 = time.monotonic()
    while name in monitor_names() and time.monotonic() - t0 < 15:
        await asyncio.sleep(0.1)
    rec["closed_by_server"] = name not in monitor_names()
    # Now read what reached us: EOF or RST must follow.
    got, eof = 0, False
    try:
        while got < 1 << 31:
            data = await asyncio.wait_for(r.read(1 << 20), 10)
            if not data:
                eof = True
                break
            got += len(data)
    except (ConnectionError, OSError):
        eof = True
    except asyncio.TimeoutError:
        pass
    rec["bytes_received"] = got
    rec["closed_by_server"] = rec["closed_by_server"] and eof
    w.close()
    return rec


# ------------------------------------------------------------ the run

DEFAULTS = dict(conns=200, seconds=10.0, keys_per_conn=32, max_pipeline=16, p_write=0.4,
                p_knn=0.25, p_hybrid=0.25, p_del=0.15, think_s=0.0, slow_readers=4,
                slow_requests=4000, big_value_bytes=256 << 10,
                obuf_limit="normal 8mb 2mb 2", seed=1, connect_parallel=64)


async def _run(host, port, pid, cfg, log):
    stats = Stats()
    t_start = time.monotonic()
    mon = await Conn.open(host, port)
    assert await mon.call("CLIENT", "SETNAME", "load-monitor") == "OK"
    await mon.call("FT.DROPINDEX", INDEX)  # a fresh index (an error if none: fine)
    rep = await mon.call("FT.CREATE", INDEX, "ON", "HASH", "PREFIX", "1", PREFIX, "SCHEMA",
                         "tag", "TAG", "n", "NUMERIC", "v", "VECTOR", "FLAT", "6", "TYPE",
                         "FLOAT32", "DIM", str(DIM), "DISTANCE_METRIC", "L2")
    assert rep == "OK", rep
    assert await mon.call("CONFIG", "SET", "client-output-buffer-limit",
                          cfg["obuf_limit"]) == "OK"
    big = os.urandom(cfg["big_value_bytes"])
    assert await mon.call("HSET", BIG_KEY, "f", big) == 1

    # RSS sampler and CLIENT LIST poller share the monitor connection.
    names = {"list": set(), "text": ""}
    stop = asyncio.Event()

    async def monitor():
        while not stop.is_set():
            stats.rss.append((round(time.monotonic() - t_start, 2), rss_bytes(pid)))
            try:
                text = await mon.call("CLIENT", "LIST")
                names["text"] = text
                names["list"] = set(client_names(text))
                for s in stats.slow:
                    if s["name"] in names["list"]:
                        s["seen_in_client_list"] = True
                        om = client_field(text, s["name"], "omem")
                        s["max_omem_seen"] = max(s["max_omem_seen"], int(om or 0))
            except (ConnectionError, OSError, TimeoutError, asyncio.TimeoutError) as e:
                stats.error(f"monitor connection: {e!r}")
                return
            await asyncio.sleep(0.25)

    workers = [Worker(w, cfg["seed"] * 100003 + w, cfg, stats) for w in range(cfg["conns"])]
    rss_before = rss_bytes(pid)
    log(f"connecting {cfg['conns']} clients (velad RSS {rss_before >> 20} MiB)")
    # Open every connection first (bounded parallelism: the listen backlog),
    # then start the load together.
    sem = asyncio.Semaphore(cfg["connect_parallel"])

    async def connect(wk):
        async with sem:
            wk.conn = await Conn.open(host, port)
            pong = await wk.conn.call("PING")
            if pong != "PONG":
                stats.error(f"worker {wk.wid}: PING -> {pong!r}")

    await asyncio.gather(*(connect(wk) for wk in workers))
    info = info_dict(await mon.call("INFO", "clients"))
    stats.final["connected_clients_at_start"] = int(info["connected_clients"])
    log(f"{cfg['conns']} clients connected in {time.monotonic() - t_start:.1f} s; "
        f"velad says connected_clients:{info['connected_clients']}")
    mon_task = asyncio.create_task(monitor())
    deadline = time.monotonic() + cfg["seconds"]
    cpu0_srv, cpu0_me = cpu_seconds(pid), time.process_time()

    # Slow readers start a second into the load, while it runs.
    async def slow(i):
        await asyncio.sleep(min(1.0, cfg["seconds"] / 4))
        return await slow_reader(host, port, f"slow-{i}", cfg["slow_requests"], stats, deadline,
                                 lambda: names["list"])

    tasks = [asyncio.create_task(wk.run(deadline)) for wk in workers]
    slow_tasks = [asyncio.create_task(slow(i)) for i in range(cfg["slow_readers"])]
    await asyncio.gather(*tasks)
    await asyncio.gather(*slow_tasks)
    took = time.monotonic() - (deadline - cfg["seconds"])
    # Where the time went: velad's CPU and this (single-threaded) client's.
    stats.final["velad_cpu_percent"] = round(100 * (cpu_seconds(pid) - cpu0_srv) / took)
    stats.final["client_cpu_percent"] = round(100 * (time.process_time() - cpu0_me) / took)
    stop.set()
    await mon_task

    # Quiescent: every key reads back as its model says; counts agree.
    for wk in workers:
        await wk.verify(mon)
    want_docs = sum(len(wk.model) for wk in workers)
    rep = await mon.call("FT.SEARCH", INDEX, "*", "LIMIT", "0", "0")
    if not (isinstance(rep, list) and rep[0] == want_docs):
        stats.error(f"FT.SEARCH {INDEX} * counts {rep!r:.100}, the workers wrote {want_docs}")
    dbsize = await mon.call("DBSIZE")
    if dbsize != want_docs + 1:
        stats.error(f"DBSIZE {dbsize}, the workers hold {want_docs} (+1 big value)")
    info = info_dict(await mon.call("INFO"))
    text = await mon.call("CLIENT", "LIST")
    stats.final.update({
        "connected_clients_at_end": int(info["connected_clients"]),
        "client_list_at_end": len(text.decode().splitlines()),
        "slow_still_listed": [n for n in client_names(text) if n.startswith("slow-")],
        "documents": want_docs,
        "seconds": round(took, 2),
        "rss_before_mib": round(rss_before / 2**20, 1),
        "rss_max_mib": round(max(b for _, b in stats.rss) / 2**20, 1) if stats.rss else None,
        "rss_end_mib": round(rss_bytes(pid) / 2**20, 1),
        "used_memory_mib": round(int(info["used_memory"]) / 2**20, 1),
        "client_output_buffer_limit_disconnections":
            int(info.get("client_output_buffer_limit_disconnections", -1)),
        "total_connections_received": int(info["total_connections_received"]),
        "rejected_connections": int(info["rejected_connections"]),
    })
    for wk in workers:
        wk.conn.close()
    mon.close()
    stats.final["commands"] = sum(stats.commands.values())
    stats.final["commands_per_s"] = round(stats.final["commands"] / max(took, 1e-9))
    return stats


def run(host, port, pid, log=print, **kw):
    """Run the load against a velad already serving on host:port (its pid for
    RSS). Keyword arguments override DEFAULTS. Returns Stats."""
    cfg = dict(DEFAULTS, **kw)
    raise_nofile(cfg["conns"] + cfg["slow_readers"] + 256)
    return asyncio.run(_run(host, port, pid, cfg, log))


def maxclients_probe(host, port, n, timeout=10.0):
    """Open n connections (each answers PING), then one more: returns the bytes
    the extra one got before the server closed it, and closes everything."""
    raise_nofile(n + 256)
    held = []
    try:
        for _ in range(n):
            s = socket.create_connection((host, port), timeout=timeout)
            held.append(s)
        for s in held:  # all accepted and registered before the extra one
            s.sendall(b"PING\r\n")
        for s in held:
            buf = b""
            while not buf.endswith(b"\r\n"):
                chunk = s.recv(64)
                if not chunk:
                    raise ConnectionError(f"connection {len(held)} closed: {buf!r}")
                buf += chunk
            if buf != b"+PONG\r\n":
                raise ConnectionError(f"PING -> {buf!r}")
        extra = socket.create_connection((host, port), timeout=timeout)
        got = b""
        try:
            while True:
                chunk = extra.recv(256)
                if not chunk:
                    break
                got += chunk
        except ConnectionResetError:
            pass
        extra.close()
        return got
    finally:
        for s in held:
            s.close()
