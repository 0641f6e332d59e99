#!/usr/bin/env python3
"""Long load run: the load of tests/integration/loadlib.py (the CI test runs
200 connections for 10 s) with 1,000 concurrent connections for minutes,
then the maxclients probe.

  bench/load_soak.py --velad build/release/velad [--conns 1000] [--seconds 300]

Starts its own velad (a temporary --dir), runs the mixed load (pipelined
HSET/DEL, KNN and hybrid FT.SEARCH, every reply checked against the
client-side model), four slow readers that must be cut by the output-buffer
limit, samples velad's RSS, then checks that with `maxclients` = --conns the
next connection gets "-ERR max number of clients reached". Prints the
figures as JSON (latency percentiles in ms); exits 1 on any wrong reply,
dropped connection or failed check. Needs numpy (tests/requirements.txt).
"""
import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "integration"))
import loadlib  # noqa: E402


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(port, proc, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("velad exited at start")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("velad did not answer PING")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--velad", required=True, help="path to the velad binary")
    ap.add_argument("--conns", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=300)
    ap.add_argument("--keys-per-conn", type=int, default=32)
    ap.add_argument("--think-ms", type=float, default=0.0,
                    help="mean pause between a worker's requests (0: none)")
    ap.add_argument("--workers", type=int, default=0, help="velad --workers (0: one per CPU)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workdir", default=None, help="data dir and log (default: a temp dir)")
    a = ap.parse_args()
    work = a.workdir or tempfile.mkdtemp(prefix="vela-load-")
    loadlib.raise_nofile(a.conns + 512)  # velad inherits it too
    port = free_port()
    log = open(os.path.join(work, "velad.log"), "ab")
    proc = subprocess.Popen([os.path.abspath(a.velad), "--port", str(port), "--dir",
                             os.path.join(work, "data"), "--workers", str(a.workers),
                             "--maxclients", str(a.conns + 16)], stdout=log,
                            stderr=subprocess.STDOUT)
    ok = False
    try:
        wait_ready(port, proc)
        t0 = time.monotonic()
        st = loadlib.run("127.0.0.1", port, proc.pid, conns=a.conns, seconds=a.seconds,
                         keys_per_conn=a.keys_per_conn, think_s=a.think_ms / 1000.0,
                         seed=a.seed, log=lambda m: print(m, flush=True))
        out = {"conns": a.conns, "seconds_asked": a.seconds, **st.final,
               "errors": st.n_errors, "dropped_connections": st.dropped,
               "max_concurrent_workers": st.max_connected_seen,
               "latency_ms": {k: " ".join(f"{n}={v}" for n, v in d.items())
                              for k, d in st.percentiles().items()},
               "slow_readers": [" ".join(f"{n}={v}" for n, v in s.items()) for s in st.slow]}
        # RSS over time, one sample in ~20.
        step = max(1, len(st.rss) // 20)
        out["rss_mib_timeline"] = " ".join(f"{t:.0f}s:{b / 2**20:.0f}"
                                           for t, b in st.rss[::step])
        # maxclients = conns: conns clients held, the next one refused.
        import redis
        r = redis.Redis(port=port)
        r.config_set("maxclients", a.conns)
        r.close()
        time.sleep(0.2)
        got = loadlib.maxclients_probe("127.0.0.1", port, a.conns)
        out["maxclients_probe"] = got.decode(errors="replace")
        out["total_seconds"] = round(time.monotonic() - t0, 1)
        checks = {
            "no wrong reply": st.n_errors == 0,
            "no dropped connection": st.dropped == 0,
            "all workers concurrent": st.max_connected_seen == a.conns,
            "connected_clients at start": st.final["connected_clients_at_start"] == a.conns + 1,
            "connected_clients at end": st.final["connected_clients_at_end"] == a.conns + 1,
            "slow readers cut by velad": all(s["closed_by_server"] for s in st.slow),
            "maxclients refusal": got == b"-ERR max number of clients reached\r\n",
        }
        out["checks"] = checks
        for e in st.errors:
            print("ERROR:", e)
        print(json.dumps(out, indent=1))
        ok = all(checks.values())
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        if ok and a.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"work dir (data + velad.log): {work}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
