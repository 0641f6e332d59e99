"""velad with the stock clients: redis-cli 7.0.15 (one-shot, -3, piped
inline text, --pipe), raw inline text over a socket, and a hiredis C program
compiled at test time (tests/integration/hiredis_smoke.c)."""
import os
import shutil
import socket
import subprocess
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope="module")
def cli():
    exe = shutil.which("redis-cli")
    if exe is None:
        pytest.skip("redis-cli is not installed")
    return exe


def rc(cli, port, *args, stdin=None, ok=True):
    p = subprocess.run([cli, "-p", str(port), *map(str, args)], input=stdin,
                       capture_output=True, timeout=60)
    if ok:
        assert p.returncode == 0, p.stderr
    return p.stdout.decode()


def test_redis_cli_oneshot(cli, velad):
    p = velad.port
    assert rc(cli, p, "PING") == "PONG\n"
    assert rc(cli, p, "HSET", "doc:1", "v", "AAAABBBB", "tag", "a") == "2\n"
    assert rc(cli, p, "HGET", "doc:1", "tag") == "a\n"
    assert rc(cli, p, "HGET", "doc:1", "nope") == "\n"  # nil prints empty when not a tty
    assert rc(cli, p, "FT.CREATE", "idx", "SCHEMA", "tag", "TAG", "v", "VECTOR", "FLAT", "6",
              "TYPE", "FLOAT32", "DIM", "2", "DISTANCE_METRIC", "L2") == "OK\n"
    out = rc(cli, p, "FT.SEARCH", "idx", "@tag:{a}", "RETURN", "1", "tag")
    assert out.split("\n")[:4] == ["1", "doc:1", "tag", "a"]
    assert "unknown command 'NOPE'" in rc(cli, p, "NOPE")
    assert rc(cli, p, "INFO", "server").splitlines()[1] == "redis_version:8.2.0"
    assert rc(cli, p, "DBSIZE") == "1\n"
    assert rc(cli, p, "-n", "0", "PING") == "PONG\n"  # sends SELECT 0 first


def test_redis_cli_resp3(cli, velad):
    p = velad.port
    rc(cli, p, "HSET", "h", "a", "1", "b", "2")
    out = rc(cli, p, "-3", "HGETALL", "h")
    assert out == "1# \"a\" => \"1\"\n2# \"b\" => \"2\"\n" or out.split() == ["a", "1", "b", "2"]
    assert rc(cli, p, "-3", "HGET", "h", "zz") in ("(nil)\n", "\n")
    hello = rc(cli, p, "-3", "HELLO", "3")
    assert "8.2.0" in hello and "proto" in hello


def test_redis_cli_piped_inline(cli, velad):
    out = rc(cli, velad.port, stdin=b"PING\nSET a b\nGET a\nECHO \"x y\"\nHGET nokey f\n")
    assert out.split("\n")[:4] == ["PONG", "OK", "b", "x y"]


def test_redis_cli_pipe_mode(cli, velad):
    n = 500
    data = b"".join(b"*4\r\n$4\r\nHSET\r\n$%d\r\nk:%d\r\n$1\r\nf\r\n$%d\r\n%d\r\n"
                    % (len(b"k:%d" % i), i, len(b"%d" % i), i) for i in range(n))
    p = subprocess.run([cli, "-p", str(velad.port), "--pipe"], input=data, capture_output=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    assert b"errors: 0, replies: %d" % n in p.stdout
    assert rc(cli, velad.port, "DBSIZE") == f"{n}\n"
    assert rc(cli, velad.port, "HGET", "k:321", "f") == "321\n"


def test_raw_inline_socket(velad):
    with socket.create_connection(("127.0.0.1", velad.port), timeout=5) as s:
        s.sendall(b"PING\r\nSET a b\r\nGET a\r\nHSET h f 'v w'\nHGETALL h\r\n")
        want = b"+PONG\r\n+OK\r\n$1\r\nb\r\n:1\r\n*2\r\n$1\r\nf\r\n$3\r\nv w\r\n"
        buf = b""
        t0 = time.monotonic()
        while len(buf) < len(want) and time.monotonic() - t0 < 5:
            buf += s.recv(4096)
        assert buf == want


def test_hiredis_program(velad, tmp_path):
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None or not os.path.exists("/usr/include/hiredis/hiredis.h"):
        pytest.skip("no C compiler or libhiredis-dev")
    exe = tmp_path / "hiredis_smoke"
    subprocess.run([cc, "-std=c11", "-Wall", "-Wextra", "-Werror", "-o", str(exe),
                    os.path.join(HERE, "hiredis_smoke.c"), "-lhiredis"], check=True, timeout=120)
    p = subprocess.run([str(exe), str(velad.port)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout == "OK\n"
