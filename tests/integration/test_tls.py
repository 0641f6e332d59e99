"""TLS on an optional port (issue 8, "Access control"): redis-cli --tls and
redis-py ssl=True against a self-signed certificate made here with the
openssl tool. What goes in over TLS is read back over the plain port (and
the other way round), so each path checks the other."""
import os
import shutil
import socket
import ssl
import subprocess
import time

import pytest
import redis

from conftest import free_port


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    exe = shutil.which("openssl")
    if exe is None:
        pytest.skip("the openssl tool is not installed")
    d = tmp_path_factory.mktemp("tls")
    key, crt = d / "key.pem", d / "cert.pem"
    subprocess.run([exe, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(crt), "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    return str(crt), str(key)


def start_tls(velad_factory, tmp_path, cert, *args):
    """velad with a TLS port; skips when the build has no TLS (velad says so
    in its log and exits), fails on any other start failure."""
    port = free_port()
    try:
        srv = velad_factory("--tls-port", str(port), "--tls-cert-file", cert[0],
                            "--tls-key-file", cert[1], *args)
    except BaseException:
        logs = "".join(p.read_text(errors="replace") for p in tmp_path.glob("velad*.log"))
        if "built without TLS" in logs:
            pytest.skip("velad was built without TLS")
        raise
    srv.tls_port = port
    return srv


@pytest.fixture
def tls_srv(velad_factory, cert, tmp_path):
    return start_tls(velad_factory, tmp_path, cert)


def tls_client(srv, cert=None, **kw):
    if cert:
        kw.update(ssl_cert_reqs="required", ssl_ca_certs=cert)
    else:
        kw.update(ssl_cert_reqs=None)
    kw.setdefault("socket_timeout", 30)
    kw.setdefault("protocol", 2)
    return redis.Redis(host="127.0.0.1", port=srv.tls_port, ssl=True, **kw)


def cli(*args, stdin=None):
    exe = shutil.which("redis-cli")
    if exe is None:
        pytest.skip("redis-cli is not installed")
    p = subprocess.run([exe, *map(str, args)], input=stdin, capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return p.stdout.decode()


def test_redis_cli_tls(tls_srv, cert):
    s = tls_srv
    base = ["--tls", "--insecure", "-p", s.tls_port]
    assert cli(*base, "PING") == "PONG\n"
    assert cli(*base, "HSET", "doc:1", "tag", "a", "v", "AAAABBBB") == "2\n"
    assert cli(*base, "FT.CREATE", "idx", "SCHEMA", "tag", "TAG", "v", "VECTOR", "FLAT", "6",
               "TYPE", "FLOAT32", "DIM", "2", "DISTANCE_METRIC", "L2") == "OK\n"
    out = cli(*base, "FT.SEARCH", "idx", "@tag:{a}", "RETURN", "1", "tag")
    assert out.split("\n")[:4] == ["1", "doc:1", "tag", "a"]
    # Verified against the certificate, not --insecure.
    assert cli("--tls", "--cacert", cert[0], "-h", "127.0.0.1", "-p", s.tls_port,
               "HGET", "doc:1", "tag") == "a\n"
    # Written over TLS, read over the plain port.
    assert s.client().hget("doc:1", "tag") == b"a"
    assert cli(*base, "CONFIG", "GET", "tls-port") == f"tls-port\n{s.tls_port}\n"
    # Many commands piped through one TLS connection.
    out = cli(*base, stdin=b"".join(b"SET k%d %d\n" % (i, i) for i in range(500)) + b"GET k499\n")
    assert out.splitlines()[-1] == "499"


def test_redis_py_tls(tls_srv, cert):
    s = tls_srv
    for c in (tls_client(s), tls_client(s, cert=cert[0]), tls_client(s, protocol=3)):
        assert c.ping() is True
        c.close()
    r = tls_client(s, cert=cert[0])
    plain = s.client(protocol=2)
    # A pipeline of 2,000 writes, then a 5 MB value both ways (replies cross
    # many TLS records and bufferevent chunks).
    p = r.pipeline(transaction=False)
    for i in range(2000):
        p.hset(f"h:{i}", mapping={"n": i})
    assert p.execute() == [1] * 2000
    assert plain.hget("h:1999", "n") == b"1999"
    big = os.urandom(5 << 20)
    r.set("big", big)
    assert plain.get("big") == big
    plain.set("big2", big[::-1])
    assert r.get("big2") == big[::-1]
    assert r.dbsize() == 2002
    r.close()
    plain.close()


def test_tls_auth_and_limits(velad_factory, cert, tmp_path):
    s = start_tls(velad_factory, tmp_path, cert, "--requirepass", "pw",
                  "--client-output-buffer-limit", "normal", "4mb", "0", "0")
    port = s.tls_port
    with pytest.raises(redis.AuthenticationError):
        tls_client(s).ping()
    r = tls_client(s, password="pw")
    assert r.ping() is True
    r.set("v", os.urandom(256 << 10))
    # A TLS client that never reads is cut by the output-buffer limit too.
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    t = ctx.wrap_socket(raw)
    t.sendall(b"AUTH pw\r\nCLIENT SETNAME slowtls\r\n" + b"GET v\r\n" * 400)  # 100 MB asked
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(c.get("name") == "slowtls"
                                              for c in r.client_list()):
        time.sleep(0.1)
    assert not any(c.get("name") == "slowtls" for c in r.client_list())
    t.close()
    assert r.info("stats")["client_output_buffer_limit_disconnections"] == 1
    # Plain text on the TLS port is a failed handshake, nothing more.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as p:
        p.sendall(b"PING\r\n")
        try:
            got = p.recv(100)
        except ConnectionResetError:
            got = b""
        assert b"PONG" not in got
    # TLS on the plain port fails; the server goes on.
    with pytest.raises(redis.ConnectionError):
        redis.Redis(port=s.port, ssl=True, ssl_cert_reqs=None, socket_timeout=5).ping()
    assert r.ping() is True
    r.close()


def test_tls_start_errors(velad_path, cert, tmp_path):
    def start(*args):
        return subprocess.run([velad_path, "--port", "0", "--dir", str(tmp_path / "d"),
                               "--tls-port", str(free_port()), *args],
                              capture_output=True, text=True, timeout=60)
    p = start("--tls-cert-file", cert[0])
    if "built without TLS" in p.stderr:
        pytest.skip("velad was built without TLS")
    assert p.returncode == 1 and "needs tls-cert-file and tls-key-file" in p.stderr
    p = start("--tls-cert-file", cert[0], "--tls-key-file", str(tmp_path / "missing.pem"))
    assert p.returncode == 1 and "tls-key-file" in p.stderr
    other = tmp_path / "other.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-out", str(other)], check=True,
                   capture_output=True, timeout=60)
    p = start("--tls-cert-file", cert[0], "--tls-key-file", str(other))
    assert p.returncode == 1 and ("does not match" in p.stderr or "mismatch" in p.stderr)
    p = start("--tls-cert-file", cert[0], "--tls-key-file", cert[1], "--tls-auth-clients", "yes")
    assert p.returncode == 2
