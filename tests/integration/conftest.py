"""Shared fixtures for the integration tests.

`--vela` names the vela CLI; velad is found next to it (same build dir).
`velad_factory(*args)` starts a real velad on a free port with a temporary
--dir, waits until it answers PING and, at teardown, stops it with SIGTERM and
checks that it exits 0 promptly with no sanitizer report in its log.
"""
import os
import signal
import socket
import subprocess
import time

import pytest

STOP_TIMEOUT_S = 10.0  # SIGTERM to exit; ASan's leak check at exit takes a moment


def pytest_addoption(parser):
    parser.addoption("--vela", required=True, help="path to the vela CLI binary")


@pytest.fixture(scope="session")
def vela(request):
    return request.config.getoption("--vela")


@pytest.fixture(scope="session")
def velad_path(vela):
    p = os.path.join(os.path.dirname(os.path.abspath(vela)), "velad")
    if not os.access(p, os.X_OK):
        pytest.skip(f"velad not built next to {vela}")
    return p


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                   "WARNING: ThreadSanitizer")


class Velad:
    """One velad process. `args` are extra command-line flags."""

    def __init__(self, exe, data_dir, log_path, args=()):
        self.exe, self.dir, self.log_path, self.args = exe, str(data_dir), str(log_path), list(args)
        self.proc = None
        self.port = None
        self.password = None
        if "--requirepass" in self.args:
            self.password = self.args[self.args.index("--requirepass") + 1]

    def start(self, timeout=20.0):
        for _attempt in range(5):  # a free port can be taken before we bind it
            self.port = free_port()
            log = open(self.log_path, "ab")
            self.proc = subprocess.Popen(
                [self.exe, "--port", str(self.port), "--dir", self.dir, "--workers", "2",
                 *self.args], stdout=log, stderr=subprocess.STDOUT)
            log.close()
            if self._wait_ready(timeout):
                return self
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
                pytest.fail(f"velad did not answer PING on {self.port}:\n{self.log()}")
        pytest.fail(f"velad could not start:\n{self.log()}")

    def _wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    reply = s.recv(64)
                    # NOAUTH still means "serving" when a password is set.
                    if reply.startswith(b"+PONG") or reply.startswith(b"-NOAUTH"):
                        return True
            except OSError:
                pass
            time.sleep(0.03)
        return False

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def check_log(self):
        text = self.log()
        for m in SANITIZER_MARKS:
            assert m not in text, f"sanitizer report in velad log:\n{text[-6000:]}"

    def stop(self, timeout=STOP_TIMEOUT_S):
        """SIGTERM; returns (exit code, seconds it took)."""
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"velad did not exit within {timeout}s of SIGTERM:\n{self.log()[-4000:]}")
        return rc, time.monotonic() - t0

    def stop_ok(self):
        rc, took = self.stop()
        assert rc == 0, f"velad exited {rc} after SIGTERM:\n{self.log()[-6000:]}"
        self.check_log()
        return took

    def kill(self):
        self.proc.kill()
        self.proc.wait()

    def restart(self):
        # Two processes on one LMDB environment would hide real restart bugs
        # (and leave the first one running): stop or kill it first.
        assert not self.running(), "restart() of a velad still running: stop_ok() or kill() first"
        return self.start()

    def wait_builds(self, timeout=180.0):
        """Wait until no graph build runs or waits (velad builds graphs in
        the background: INFO persistence graph_builds_pending)."""
        r = self.client()
        deadline = time.monotonic() + timeout
        while r.info("persistence").get("graph_builds_pending", 0):
            assert time.monotonic() < deadline, "graph builds still pending"
            time.sleep(0.05)
        r.close()

    def client(self, **kw):
        import redis
        kw.setdefault("socket_timeout", 30)
        if self.password is not None:
            kw.setdefault("password", self.password)
        return redis.Redis(host="127.0.0.1", port=self.port, **kw)


@pytest.fixture
def velad_factory(velad_path, tmp_path):
    servers = []
    n = [0]

    def make(*args, data_dir=None):
        n[0] += 1
        d = data_dir or tmp_path / f"data{n[0]}"
        s = Velad(velad_path, d, tmp_path / f"velad{n[0]}.log", args)
        servers.append(s)
        return s.start()

    yield make
    for s in servers:
        if s.running():
            s.stop_ok()
        else:
            s.check_log()


@pytest.fixture
def velad(velad_factory):
    return velad_factory()
