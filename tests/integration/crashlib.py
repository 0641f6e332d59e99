"""Crash-safety harness shared by tests/integration/test_crash_safety.py (20
kill cycles in CI) and bench/crash_soak.py (the long run).

A write-heavy load runs against velad from several connections (HSET of
documents with vectors, tag and numeric fields; partial HSET; DEL; EXPIRE
long and short; MULTI/EXEC; FT.CREATE / FT.DROPINDEX [DD]) and velad is
SIGKILLed at a random moment. After a restart on the same --dir the harness
checks, against its own record of what was acknowledged (never against
velad's own output):

- every acknowledged write is present with the value written, and nothing
  else is: a key is absent or holds exactly one of its written versions
  (the acknowledged one, or the one of a write in flight at the kill);
- MULTI/EXEC in flight at the kill was applied entirely or not at all;
  likewise FT.DROPINDEX DD and its documents;
- TTLs: no TTL where none was set, a TTL where a long one was, and keys
  past a short expiry are gone;
- every index that must exist exists, and each one is consistent with the
  documents: `*`, every tag value and numeric ranges return exactly the
  live documents that match (no ghost, none missing); every document is
  found by its unique tag and by KNN 1 with its own vector (FLAT exactly,
  the HNSW graph after a wider retry); KNN 10 over FLAT equals a numpy
  brute force; FT.INFO num_docs matches;
- graph snapshots are used when current (after a clean SIGTERM) and
  otherwise only ever rejected as stale, never as corrupt (they are written
  to a temporary file and renamed), and rebuilt.

Each key is written by one connection only, and a connection sends its next
write to a key only after the previous one's reply, so a key has at most one
write in flight when velad dies.
"""
import os
import random
import re
import signal
import socket
import subprocess
import threading
import time

import numpy as np
import redis
from redis.backoff import NoBackoff
from redis.connection import Connection
from redis.retry import Retry

DIM = 8
TAGS = ("red", "green", "blue", "cyan", "pink")
# More than DB_GRAPH_MIN_DOCS (1024): the HNSW field is then a real graph,
# built at open or loaded from its snapshot.
STABLE_N = 1100
CHURN_PER_WORKER = 40
N_WORKERS = 4          # 0, 1: one command at a time (1 speaks RESP3); 2: pipelines; 3: MULTI
LONG_TTL_S = 100000
SHORT_TTL_MS = (300, 2500)
CLOCK_SLACK_MS = 150   # between our clock readings and velad's (same host)
D_DOCS = 8             # documents under the FT.DROPINDEX DD index
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                   "WARNING: ThreadSanitizer")
NET_ERRORS = (redis.ConnectionError, redis.TimeoutError, ConnectionError, OSError)

IA = ("FT.CREATE", "ia", "ON", "HASH", "PREFIX", "1", "a:", "SCHEMA",
      "c", "TAG", "u", "TAG", "n", "NUMERIC",
      "v", "VECTOR", "FLAT", "6", "TYPE", "FLOAT32", "DIM", str(DIM), "DISTANCE_METRIC", "L2",
      "w", "VECTOR", "HNSW", "6", "TYPE", "FLOAT32", "DIM", str(DIM), "DISTANCE_METRIC", "L2")
# Created and dropped under load, over the same documents.
IB = ("FT.CREATE", "ib", "ON", "HASH", "PREFIX", "1", "a:", "SCHEMA",
      "c", "TAG", "w", "VECTOR", "HNSW", "6", "TYPE", "FLOAT32", "DIM", str(DIM),
      "DISTANCE_METRIC", "L2")
# Its own documents, deleted with it (FT.DROPINDEX id DD).
ID = ("FT.CREATE", "id", "ON", "HASH", "PREFIX", "1", "d:", "SCHEMA",
      "c", "TAG", "u", "TAG", "n", "NUMERIC",
      "v", "VECTOR", "FLAT", "6", "TYPE", "FLOAT32", "DIM", str(DIM), "DISTANCE_METRIC", "L2")
INDEX_PREFIX = {"ia": b"a:", "ib": b"a:", "id": b"d:"}
INDEX_FIELDS = {"ia": {"u", "n", "v", "w"}, "ib": {"w"}, "id": {"u", "n", "v"}}  # besides c


def now_ms():
    return int(time.time() * 1000)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class HarnessError(Exception):
    """velad misbehaved in a way that stops the run (did not start, hung)."""


# ------------------------------------------------------------------ the server

class Server:
    """One velad on a fixed --dir, restarted many times; one log file."""

    def __init__(self, exe, data_dir, log_path, args=()):
        self.exe, self.dir, self.log_path, self.args = exe, str(data_dir), str(log_path), list(args)
        self.proc = None
        self.port = None
        self.log_start = 0  # offset of this run's first log byte

    def start(self, timeout=60.0):
        for _ in range(5):  # a free port can be taken before velad binds it
            self.port = free_port()
            with open(self.log_path, "ab") as log:
                self.log_start = log.tell()
                self.proc = subprocess.Popen(
                    [self.exe, "--port", str(self.port), "--dir", self.dir, "--workers", "2",
                     *self.args], stdout=log, stderr=subprocess.STDOUT)
            if self._wait_ready(timeout):
                return self
            if self.proc.poll() is None:
                self.kill()
                raise HarnessError(f"velad did not answer PING within {timeout}s:\n"
                                   f"{self.run_log()[-4000:]}")
            if "cannot listen" not in self.run_log():
                raise HarnessError(f"velad exited {self.proc.returncode} at start:\n"
                                   f"{self.run_log()[-4000:]}")
        raise HarnessError("velad could not bind a port")

    def _wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return True
            except OSError:
                pass
            time.sleep(0.02)
        return False

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self):
        if self.running():
            self.proc.send_signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait()

    def term(self, timeout=20.0):
        """SIGTERM; the exit code, or None if it had to be killed."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def run_log(self):
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self.log_start)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def wait_builds(self, timeout=300.0):
        """Wait for the background graph builds (INFO graph_builds_pending)."""
        r = self.client()
        deadline = time.monotonic() + timeout
        while r.info("persistence").get("graph_builds_pending", 0):
            if time.monotonic() > deadline:
                raise HarnessError("graph builds still pending")
            time.sleep(0.05)
        r.close()

    def client(self, protocol=2):
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=60, protocol=protocol)

    def snapshots(self):
        return sorted(f for f in os.listdir(self.dir) if re.fullmatch(r"graph-\d+-\d+\.snap", f))


# ------------------------------------------------------------------ the model

# A key's state: (fields, exp). fields: dict bytes -> bytes, or None when
# absent. exp: None (no TTL), "long", or (lo, hi): the key expires at a unix
# ms time in [lo, hi].
ABSENT = (None, None)


class KeyRec:
    __slots__ = ("acked", "inflight")

    def __init__(self, state=ABSENT):
        self.acked = state
        self.inflight = None  # the state if the write in flight committed

    def candidates(self):
        return [self.acked] + ([self.inflight] if self.inflight is not None else [])


def doc_fields(rng, token, full=True):
    vec = np.array([rng.gauss(0, 1) for _ in range(DIM)], np.float32).tobytes()
    d = {b"c": TAGS[rng.randrange(len(TAGS))].encode(), b"w": vec}
    if full:
        d.update({b"v": vec, b"u": token.encode(), b"n": str(rng.randrange(1000)).encode()})
    return d


def flat(d):
    out = []
    for k, v in d.items():
        out += [k, v]
    return out


class Stats:
    def __init__(self):
        self.acked_writes = 0     # write replies received (each is checked later)
        self.inflight_at_kill = 0
        self.lost = 0             # acknowledged writes missing or changed after restart
        self.violations = []      # every check that failed, as text
        self.cycles = 0
        self.kills = 0
        self.snapshot_loads = 0   # graphs loaded from their snapshot after a clean stop
        self.graph_builds = 0     # graphs built at open (no snapshot, or a stale one)
        self.snapshot_rejects = {}  # reason -> count
        self.graph_retries = 0    # HNSW self-queries that needed the wider retry
        self.graph_unreachable = 0  # indexed vectors the graph walk could not reach
        self.queries = 0

    def fail(self, msg):
        if len(self.violations) < 200:
            self.violations.append(msg)

    def summary(self):
        return {"cycles": self.cycles, "kills": self.kills, "acked_writes": self.acked_writes,
                "inflight_at_kill": self.inflight_at_kill, "lost_acked_writes": self.lost,
                "violations": len(self.violations), "snapshot_loads": self.snapshot_loads,
                "graph_builds": self.graph_builds,
                "snapshot_rejects": dict(self.snapshot_rejects),
                "graph_retries": self.graph_retries,
                "graph_unreachable": self.graph_unreachable, "check_queries": self.queries}


# ------------------------------------------------------------------ load

class Worker(threading.Thread):
    """One connection writing its own keys until the connection fails."""

    def __init__(self, h, wid, port, seed):
        super().__init__(daemon=True)
        self.h, self.wid, self.port = h, wid, port
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.error = None

    def conn(self):
        c = Connection(host="127.0.0.1", port=self.port, socket_timeout=30,
                       protocol=3 if self.wid == 1 else 2, retry=Retry(NoBackoff(), 0))
        c.connect()
        return c

    def run(self):
        try:
            c = self.conn()
            while not self.stop.is_set():
                if self.wid == 2:
                    self.pipeline(c)
                elif self.wid == 3:
                    self.multi(c)
                else:
                    self.single(c)
        except NET_ERRORS:
            return
        except Exception as e:  # a wrong reply: recorded, the run goes on
            self.error = e
            self.h.stats.fail(f"worker {self.wid}: {type(e).__name__}: {e}")

    # -- choosing a write
    def token(self):
        self.h.seq += 1
        return f"k{self.h.cycle}w{self.wid}n{self.h.seq}"

    def pick_op(self, allow_short):
        """(args, key, new_state, expected_reply) for one write of this worker."""
        h, rng, w = self.h, self.rng, self.wid
        r = rng.random()
        if r < 0.45:  # a new version of a stable document
            key = f"a:s:{rng.randrange(w, STABLE_N, N_WORKERS)}".encode()
            return self.hset_op(key, doc_fields(rng, self.token()))
        churn = f"a:c{w}:{rng.randrange(CHURN_PER_WORKER)}".encode()
        rec = h.keys.setdefault(churn, KeyRec())
        present = rec.acked[0] is not None
        if r < 0.55:  # partial update: only the tag and the HNSW vector
            key = churn if present else f"a:s:{rng.randrange(w, STABLE_N, N_WORKERS)}".encode()
            return self.hset_op(key, doc_fields(rng, "", full=False))
        if r < 0.75:
            return self.hset_op(churn, doc_fields(rng, self.token()))
        if r < 0.87:
            return ["DEL", churn], churn, ABSENT, int(present)
        if r < 0.93 or not allow_short:
            if rng.random() < 0.2 and present and rec.acked[1] == "long":
                return ["PERSIST", churn], churn, (rec.acked[0], None), 1
            new = (rec.acked[0], "long") if present else ABSENT
            return ["EXPIRE", churn, LONG_TTL_S], churn, new, int(present)
        return None  # a short-lived key (two steps, see single())

    def hset_op(self, key, fields):
        rec = self.h.keys.setdefault(key, KeyRec())
        old, exp = rec.acked
        merged = dict(old or {})
        merged.update(fields)
        added = len(set(fields) - set(old or {}))
        return ["HSET", key, *flat(fields)], key, (merged, exp if old is not None else None), added

    # -- sending
    def send_one(self, c, op):
        args, key, new, want = op
        rec = self.h.keys.setdefault(key, KeyRec())
        rec.inflight = new
        c.send_command(*args)
        got = c.read_response()
        rec.acked, rec.inflight = new, None
        self.h.stats.acked_writes += 1
        if got != want:
            self.h.stats.fail(f"{args[0]} {key!r}: reply {got!r}, expected {want!r}")

    def single(self, c):
        op = self.pick_op(allow_short=True)
        if op is not None:
            self.send_one(c, op)
            return
        # HSET a fresh key, then PEXPIRE it: it must be gone after [lo, hi].
        self.h.seq += 1
        key = f"a:x{self.wid}:{self.h.cycle}:{self.h.seq}".encode()
        self.send_one(c, self.hset_op(key, doc_fields(self.rng, self.token())))
        ttl = self.rng.randint(*SHORT_TTL_MS)
        rec = self.h.keys[key]
        lo = now_ms() + ttl
        rec.inflight = (rec.acked[0], (lo, None))  # hi: filled in at the kill
        c.send_command("PEXPIRE", key, ttl)
        got = c.read_response()
        rec.acked, rec.inflight = (rec.acked[0], (lo, now_ms() + ttl)), None
        self.h.stats.acked_writes += 1
        if got != 1:
            self.h.stats.fail(f"PEXPIRE {key!r}: reply {got!r}, expected 1")

    def distinct_ops(self, n):
        ops, seen = [], set()
        for _ in range(n * 3):
            op = self.pick_op(allow_short=False)
            if op[1] not in seen:
                seen.add(op[1])
                ops.append(op)
            if len(ops) == n:
                break
        return ops

    def pipeline(self, c):
        ops = self.distinct_ops(self.rng.randint(2, 24))
        for op in ops:
            self.h.keys[op[1]].inflight = op[2]
        c.send_packed_command(c.pack_commands([op[0] for op in ops]))
        for args, key, new, want in ops:  # replies in order: ack each as it comes
            got = c.read_response()
            rec = self.h.keys[key]
            rec.acked, rec.inflight = new, None
            self.h.stats.acked_writes += 1
            if got != want:
                self.h.stats.fail(f"pipelined {args[0]} {key!r}: reply {got!r}, expected {want!r}")

    def multi(self, c):
        ops = self.distinct_ops(self.rng.randint(2, 6))
        group = []
        for args, key, new, want in ops:
            rec = self.h.keys[key]
            group.append((key, rec.acked, new))
            rec.inflight = new
        self.h.txns.append(group)  # until EXEC's reply: all or nothing
        cmds = [("MULTI",)] + [op[0] for op in ops] + [("EXEC",)]
        c.send_packed_command(c.pack_commands(cmds))
        for _ in range(len(ops) + 1):
            c.read_response()  # OK, QUEUED...
        got = c.read_response()
        self.h.txns.remove(group)
        for args, key, new, want in ops:
            rec = self.h.keys[key]
            rec.acked, rec.inflight = new, None
        self.h.stats.acked_writes += len(ops)
        want = [op[3] for op in ops]
        if list(got) != want:
            self.h.stats.fail(f"EXEC: reply {got!r}, expected {want!r}")


class DdlWorker(Worker):
    """FT.CREATE / FT.DROPINDEX of ib (over the a: documents) and of id with
    its own d: documents, dropped with DD."""

    def run(self):
        try:
            c = self.conn()
            while not self.stop.is_set():
                self.step(c)
                time.sleep(self.rng.uniform(0, 0.15))
        except NET_ERRORS:
            return
        except Exception as e:
            self.error = e
            self.h.stats.fail(f"ddl: {type(e).__name__}: {e}")

    def call(self, c, args, want):
        c.send_command(*args)
        try:
            got = c.read_response()
        except redis.ResponseError as e:
            got = f"-{e}"
        if got not in (want, want.encode() if isinstance(want, str) else want):
            self.h.stats.fail(f"{' '.join(map(str, args[:2]))}: reply {got!r}, expected {want!r}")

    def step(self, c):
        h, rng = self.h, self.rng
        name = "ib" if rng.random() < 0.5 else "id"
        exists = h.indexes[name][0]
        if name == "ib":
            h.indexes["ib"] = (exists, not exists)
            self.call(c, ("FT.DROPINDEX", "ib") if exists else IB, "OK")
            h.indexes["ib"] = (not exists, None)
        elif not exists:
            h.indexes["id"] = (False, True)
            self.call(c, ID, "OK")
            h.indexes["id"] = (True, None)
            for i in range(D_DOCS):
                key = f"d:{i}".encode()
                rec = h.keys.setdefault(key, KeyRec())
                op = self.hset_op(key, doc_fields(rng, self.token()))
                self.send_one(c, op)
        else:
            # DD: the index and its documents go in one transaction.
            group = [(b"#index:id", True, False)]
            for i in range(D_DOCS):
                rec = h.keys.setdefault(f"d:{i}".encode(), KeyRec())
                group.append((f"d:{i}".encode(), rec.acked, ABSENT))
                rec.inflight = ABSENT
            h.indexes["id"] = (True, False)
            h.txns.append(group)
            self.call(c, ("FT.DROPINDEX", "id", "DD"), "OK")
            h.txns.remove(group)
            h.indexes["id"] = (False, None)
            for key, _, _ in group[1:]:
                h.keys[key].acked, h.keys[key].inflight = ABSENT, None
        h.stats.acked_writes += 1


# ------------------------------------------------------------------ the harness

SNAP_NOT_USED = re.compile(r"graph snapshot \S+ not used \(([^)]*)\)")
BUILD_CANCELLED = re.compile(r"graph build cancelled \(closing\)")
GRAPH_BUILT = re.compile(r"field '(\w+)': graph over (\d+) vectors built")


class Harness:
    def __init__(self, velad, workdir, seed=1, log=print, args=()):
        os.makedirs(workdir, exist_ok=True)
        self.srv = Server(velad, os.path.join(workdir, "data"),
                          os.path.join(workdir, "velad.log"), args)
        self.rng = random.Random(seed)
        self.nprng = np.random.default_rng(seed)
        self.seed = seed
        self.log = log
        self.stats = Stats()
        self.keys = {}        # key -> KeyRec
        self.txns = []        # groups in flight: [(key, before, after)]
        self.indexes = {"ia": (True, None), "ib": (False, None), "id": (False, None)}
        self.cycle = 0
        self.seq = 0

    # -- set-up
    def setup(self):
        self.srv.start()
        r = self.srv.client()
        r.execute_command(*IA)
        rng = random.Random(self.seed)
        p = r.pipeline(transaction=False)
        for i in range(STABLE_N):
            key = f"a:s:{i}".encode()
            d = doc_fields(rng, f"init{i}")
            self.keys[key] = KeyRec((d, None))
            p.hset(key, mapping=d)
        p.execute()
        r.close()
        self.srv.wait_builds()

    # -- one kill cycle
    def cycle_once(self, mode=None):
        """mode: 'kill' (SIGKILL under load), 'term' (SIGTERM under load),
        'term-kill' (SIGKILL during the SIGTERM shutdown: snapshot writing),
        'recovery-kill' (SIGKILL under load, then again while reopening)."""
        self.cycle += 1
        st = self.stats
        mode = mode or self.rng.choices(("kill", "term", "term-kill", "recovery-kill"),
                                        (70, 10, 10, 10))[0]
        workers = [Worker(self, i, self.srv.port, self.rng.random()) for i in range(N_WORKERS)]
        workers.append(DdlWorker(self, N_WORKERS, self.srv.port, self.rng.random()))
        for w in workers:
            w.start()
        time.sleep(self.rng.uniform(0.05, 0.8))
        clean = False
        if mode == "term":
            rc = self.srv.term()
            clean = rc == 0
            if rc != 0:
                st.fail(f"cycle {self.cycle}: SIGTERM: velad exited {rc} (None: hung)")
        elif mode == "term-kill":
            self.srv.proc.send_signal(signal.SIGTERM)
            time.sleep(self.rng.uniform(0, 0.05))
            self.srv.kill()
        else:
            self.srv.kill()
        st.kills += mode != "term"
        t_kill = now_ms()
        for w in workers:
            w.stop.set()
        for w in workers:
            w.join(60)
            if w.is_alive():
                raise HarnessError(f"worker {w.wid} stuck after the kill")
        self.check_log(f"cycle {self.cycle} ({mode})")
        # A short expiry whose PEXPIRE was in flight ends by t_kill + ttl.
        for rec in self.keys.values():
            for attr in ("acked", "inflight"):
                s = getattr(rec, attr)
                if s is not None and isinstance(s[1], tuple) and s[1][1] is None:
                    setattr(rec, attr, (s[0], (s[1][0], t_kill + SHORT_TTL_MS[1])))
            st.inflight_at_kill += rec.inflight is not None
        snaps_before = self.srv.snapshots()
        # A clean stop cancels a graph build in flight: rebuilt at the open.
        cancelled = bool(BUILD_CANCELLED.search(self.srv.run_log()))
        if mode == "recovery-kill":
            self.srv.start()
            time.sleep(self.rng.uniform(0, 0.3))
            self.srv.kill()
            st.kills += 1
            self.check_log(f"cycle {self.cycle} (killed while reopening)")
        self.srv.start()
        self.srv.wait_builds()  # as at a synchronous open: verify the built graphs
        self.check_snapshots(clean and not cancelled, snaps_before)
        self.verify()
        st.cycles += 1

    def check_log(self, what):
        text = self.srv.run_log()
        for m in SANITIZER_MARKS:
            if m in text:
                self.stats.fail(f"{what}: sanitizer report in the velad log:\n{text[-3000:]}")
                return

    def check_snapshots(self, clean, snaps_before):
        """After a clean stop every graph loads from its snapshot; after any
        stop a snapshot is only ever rejected as stale."""
        text = self.srv.run_log()
        rejects = SNAP_NOT_USED.findall(text)
        built = GRAPH_BUILT.findall(text)
        for reason in rejects:
            self.stats.snapshot_rejects[reason] = self.stats.snapshot_rejects.get(reason, 0) + 1
            if reason != "stale":
                self.stats.fail(f"cycle {self.cycle}: a graph snapshot was rejected as "
                                f"'{reason}': snapshots must be written atomically")
        self.stats.graph_builds += len(built)
        if clean and not built and not rejects:
            self.stats.snapshot_loads += len(snaps_before)
        if clean and built:
            self.stats.fail(f"cycle {self.cycle}: after a clean SIGTERM a graph was rebuilt "
                            f"instead of loaded from its snapshot: {built} ({snaps_before})")
        if clean and rejects:
            self.stats.fail(f"cycle {self.cycle}: after a clean SIGTERM snapshots were "
                            f"rejected: {rejects}")

    # -- verification
    def verify(self):
        st = self.stats
        r = self.srv.client()
        what = f"cycle {self.cycle}"
        # 1. Documents and TTLs.
        keys = sorted(self.keys)
        p = r.pipeline(transaction=False)
        for k in keys:
            p.hgetall(k)
            p.pttl(k)
        t0 = now_ms()
        out = p.execute()
        t1 = now_ms()
        actual = {}
        for i, k in enumerate(keys):
            fields, pttl = out[2 * i], out[2 * i + 1]
            rec = self.keys[k]
            state = self.match(k, rec, fields or None, pttl, t0, t1, what)
            actual[k] = state
        # 2. Transactions in flight: all or nothing.
        names = set(r.execute_command("FT._LIST"))
        names = {n.decode() if isinstance(n, bytes) else n for n in names}
        for group in self.txns:
            applied = set()
            for key, before, after in group:
                if key == b"#index:id":
                    now = "id" in names
                    if before != after:
                        applied.add(now == after)
                    continue
                a = actual.get(key)
                if a is None or before[0] == after[0]:
                    continue
                applied.add(a[0] == after[0])
            if len(applied) > 1:
                st.fail(f"{what}: a transaction in flight was applied in part: "
                        f"{[g[0] for g in group]}")
        self.txns = []
        # 3. Index existence.
        for name, (acked, inflight) in self.indexes.items():
            ok = {acked} | ({inflight} if inflight is not None else set())
            if (name in names) not in ok:
                st.fail(f"{what}: index {name} {'exists' if name in names else 'is missing'}"
                        f" (acknowledged: {'created' if acked else 'dropped'})")
            self.indexes[name] = (name in names, None)
        if "ia" not in names:
            raise HarnessError("index ia is gone")
        # The model now holds what velad holds.
        for k, state in actual.items():
            rec = self.keys[k]
            rec.acked, rec.inflight = state, None
        for k in [k for k, s in actual.items() if s[0] is None and k.startswith(b"a:x")]:
            del self.keys[k]  # expired for good
        # 4. Every index against the documents.
        for name in sorted(names & set(INDEX_PREFIX)):
            self.check_index(r, name, actual, t0)
        r.close()

    def match(self, key, rec, fields, pttl, t0, t1, what):
        """The actual state, checked against the candidates."""
        cands = rec.candidates()
        for fs, exp in cands:
            if isinstance(exp, tuple):
                lo, hi = exp
                if fields is None and fs is not None and t1 + CLOCK_SLACK_MS >= lo:
                    return ABSENT  # expired
                if fields is not None and fields == fs and t0 - CLOCK_SLACK_MS <= hi and pttl > 0:
                    return (fs, exp)
                continue
            if fields != fs:
                continue
            if fs is None:
                return ABSENT
            if (exp == "long") == (pttl > 0) and (exp is not None or pttl == -1):
                return (fs, exp)
        # No candidate matches: lost, partial or a ghost.
        acked = rec.acked
        if acked[0] is not None and fields is None:
            kind = "acknowledged document is missing"
            self.stats.lost += 1
        elif acked[0] is not None and fields is not None and fields != acked[0] and \
                all(fields != c[0] for c in cands):
            kind = "document is none of its written versions (partial or lost update)"
            self.stats.lost += 1
        elif acked[0] is None and fields is not None:
            kind = "deleted document is back"
            self.stats.lost += 1
        else:
            kind = f"TTL is wrong (PTTL {pttl})"
        self.stats.fail(f"{what}: {key!r}: {kind}; have "
                        f"{sorted(fields) if fields else None}, candidates "
                        f"{[(sorted(c[0]) if c[0] else None, c[1]) for c in cands]}")
        return (fields, "long" if pttl > 0 else None)

    def check_index(self, r, name, actual, t0):
        st = self.stats
        what = f"cycle {self.cycle}: index {name}"
        prefix = INDEX_PREFIX[name]
        has = INDEX_FIELDS[name]
        docs = {k: s[0] for k, s in actual.items() if s[0] is not None and k.startswith(prefix)}
        # Keys whose expiry time has come may still be in search results until
        # the active cycle deletes them (vela.h: lazy expiry).
        maybe = {k for k, s in self.keys.items() if isinstance(s.acked[1], tuple) and
                 s.acked[1][0] <= now_ms() + 2000 and k.startswith(prefix)}
        maybe |= {k for k, s in actual.items() if s[0] is None and k.startswith(prefix) and
                  k.startswith(b"a:x")}

        def same(got, want, q):
            got = set(got)
            ghost = got - want - maybe
            missing = want - got - maybe
            if ghost or missing:
                st.fail(f"{what}: {q}: {len(ghost)} ghost key(s) {sorted(ghost)[:3]}, "
                        f"{len(missing)} missing {sorted(missing)[:3]}")

        def search(*args):
            st.queries += 1
            res = r.execute_command("FT.SEARCH", name, *args)
            return res[0], res[1:]

        n, got = search("*", "NOCONTENT", "LIMIT", "0", "100000")
        same(got, set(docs), "*")
        info = r.execute_command("FT.INFO", name)
        info = dict(zip(info[::2], info[1::2]))
        num_docs = int(info[b"num_docs"])
        if num_docs != n and not maybe:
            st.fail(f"{what}: FT.INFO num_docs {num_docs}, '*' matched {n}")
        for t in TAGS:
            _, got = search(f"@c:{{{t}}}", "NOCONTENT", "LIMIT", "0", "100000")
            same(got, {k for k, d in docs.items() if d[b"c"] == t.encode()}, f"@c:{{{t}}}")
        if "n" in has:
            for lo, hi in ((0, 99), (100, 499), (500, 999)):
                _, got = search(f"@n:[{lo} {hi}]", "NOCONTENT", "LIMIT", "0", "100000")
                same(got, {k for k, d in docs.items() if lo <= int(d[b"n"]) <= hi},
                     f"@n:[{lo} {hi}]")
        keys = sorted(docs)
        # Each document by queries that target it.
        p = r.pipeline(transaction=False)
        for k in keys:
            d = docs[k]
            if "u" in has:
                p.execute_command("FT.SEARCH", name, f"@u:{{{d[b'u'].decode()}}}", "NOCONTENT")
            for f in ("v", "w"):
                if f in has:
                    p.execute_command("FT.SEARCH", name, f"*=>[KNN 1 @{f} $b AS d]", "PARAMS",
                                      "2", "b", d[f.encode()], "RETURN", "1", "d", "DIALECT", "2")
        out = p.execute()
        st.queries += len(out)
        per = len(has & {"u", "v", "w"})
        retry = []
        for i, k in enumerate(keys):
            res = out[per * i: per * i + per]
            if "u" in has:
                if res[0][1:] != [k] and k not in maybe:
                    st.fail(f"{what}: @u:{{{docs[k][b'u'].decode()}}} returned {res[0][1:3]}, "
                            f"expected {k!r}")
            if "v" in has:
                hit = res[1 if "u" in has else 0]
                if (hit[1:2] != [k] or abs(float(hit[2][1])) > 1e-5) and k not in maybe:
                    st.fail(f"{what}: FLAT KNN 1 with the vector of {k!r} returned {hit[1:3]}")
            if "w" in has:
                hit = res[-1]
                if hit[0] >= 1 and hit[1] not in docs and hit[1] not in maybe:
                    st.fail(f"{what}: HNSW KNN 1 returned a ghost {hit[1]!r}")
                if hit[1:2] != [k]:
                    retry.append(k)
        # The graph is approximate: a miss is retried with a wide window; a
        # document the graph still cannot reach is not in the index.
        for k in retry:
            st.graph_retries += 1
            res = r.execute_command("FT.SEARCH", name, "*=>[KNN 10 @w $b EF_RUNTIME 2000 AS d]",
                                    "PARAMS", "2", "b", docs[k][b"w"], "NOCONTENT", "LIMIT",
                                    "0", "10", "DIALECT", "2")
            if k in res[1:] or k in maybe:
                continue
            # Still missed: is the vector in the field at all? An exact scan
            # of the field's vectors (ADHOC_BF over the document's own tag)
            # tells an index that lost it from a node the graph walk cannot
            # reach. Both are failures: every live node is kept reachable
            # (graph_connect, index/index.h), so a restart cannot leave one.
            tag = docs[k][b"c"].decode()
            res = r.execute_command(
                "FT.SEARCH", name, f"(@c:{{{tag}}})=>[KNN 10 @w $b HYBRID_POLICY ADHOC_BF AS d]",
                "PARAMS", "2", "b", docs[k][b"w"], "NOCONTENT", "LIMIT", "0", "10", "DIALECT", "2")
            if k in res[1:]:
                st.graph_unreachable += 1
                st.fail(f"{what}: {k!r} is indexed but the graph walk cannot reach it")
            else:
                st.fail(f"{what}: the index does not hold {k!r} (exact scan of its vectors)")
        # KNN 10 over FLAT equals the brute force; graph results have true distances.
        index_of = {k: i for i, k in enumerate(keys)}
        for f in sorted(has & {"v", "w"}) if keys else ():
            X = np.array([np.frombuffer(docs[k][f.encode()], np.float32) for k in keys], np.float64)
            for _ in range(5):
                q = self.nprng.standard_normal(DIM).astype(np.float32)
                dist = ((X - q) ** 2).sum(1)
                st.queries += 1
                res = r.execute_command("FT.SEARCH", name, f"*=>[KNN 10 @{f} $b AS d]", "PARAMS",
                                        "2", "b", q.tobytes(), "RETURN", "1", "d", "SORTBY", "d",
                                        "LIMIT", "0", "10", "DIALECT", "2")
                hits = [(res[i], float(res[i + 1][1])) for i in range(1, len(res), 2)]
                for hk, hd in hits:
                    if hk not in docs:
                        if hk not in maybe:
                            st.fail(f"{what}: KNN @{f} returned a ghost {hk!r}")
                        continue
                    true = dist[index_of[hk]]
                    if abs(hd - true) > 1e-3 * max(1.0, true):
                        st.fail(f"{what}: KNN @{f}: {hk!r} at distance {hd}, true {true}")
                if f == "v" and not maybe and len(docs) >= 10:
                    want = {keys[j] for j in np.argsort(dist, kind="stable")[:10]}
                    got = {hk for hk, _ in hits}
                    if got != want:
                        st.fail(f"{what}: FLAT KNN 10 differs from brute force: "
                                f"{sorted(got - want)[:3]} instead of {sorted(want - got)[:3]}")

    def close(self):
        """Stop velad cleanly (exit 0, no sanitizer report)."""
        if self.srv.running():
            rc = self.srv.term()
            if rc != 0:
                self.stats.fail(f"final SIGTERM: velad exited {rc}")
            self.check_log("final stop")


def run(velad, workdir, cycles, seed=1, minutes=None, log=print, modes=None):
    """Set up, run `cycles` kill cycles (or until `minutes` pass), stop.
    Returns the Stats. `modes` forces the first cycles' modes."""
    h = Harness(velad, workdir, seed, log)
    t0 = time.monotonic()
    try:
        h.setup()
        for i in range(cycles):
            if minutes is not None and time.monotonic() - t0 > minutes * 60:
                break
            h.cycle_once(modes[i] if modes and i < len(modes) else None)
            if log:
                s = h.stats
                log(f"cycle {s.cycles}: acked {s.acked_writes} writes, lost {s.lost}, "
                    f"violations {len(s.violations)}, {time.monotonic() - t0:.0f}s")
    except BaseException:
        h.srv.kill()
        raise
    h.close()
    return h.stats
