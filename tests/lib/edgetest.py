"""edgetest - a small harness for edge's kernel and end-to-end tests.

Real sockets, real kernel, real peers. Every process a test starts is
recorded and stopped by PID when the test ends (pass or fail). Traffic goes
only to loopback or to namespaces the test created.

A test module defines functions decorated with @test and ends with
`run_module()`. Each test prints PASS/FAIL/SKIP; the module prints
"NAME: N passed, N failed, N skipped" and exits 1 on any failure.
"""
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("EDGE_BUILD", os.path.join(ROOT, "build"))
EDGED = os.path.join(BUILD, "edged")
EDGECTL = os.path.join(BUILD, "edgectl")
ECHO = os.path.join(BUILD, "echo_check")

_tests = []
_procs = []
_cleanups = []


class Skip(Exception):
    """Raised to skip a test (printed loudly as SKIP with the reason)."""


class Fail(AssertionError):
    pass


def test(fn=None, *, root=True, kernel=False):
    """Register a test. root: needs uid 0. kernel: needs the sockmap path."""
    def wrap(f):
        f._edge_root = root
        f._edge_kernel = kernel
        _tests.append(f)
        return f
    return wrap(fn) if fn else wrap


def check(cond, msg):
    if not cond:
        raise Fail(msg)


def eq(got, want, what):
    if got != want:
        raise Fail("%s: got %r, want %r" % (what, got, want))


def at_cleanup(fn):
    _cleanups.append(fn)


def spawn(cmd, stdout=None, stderr=None, env=None, **kw):
    """Start a process and record it so it is stopped by PID at the end."""
    p = subprocess.Popen(cmd, stdout=stdout, stderr=stderr, env=env,
                         stdin=subprocess.DEVNULL, **kw)
    _procs.append(p)
    return p


def stop(p, sig=signal.SIGTERM, timeout=5.0):
    """Stop one process by PID; SIGKILL if it does not go. Returns rc."""
    if p.poll() is None:
        try:
            os.kill(p.pid, sig)
        except ProcessLookupError:
            pass
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(p.pid, signal.SIGKILL)
            p.wait(5)
    return p.returncode


def _stop_all():
    while _cleanups:
        fn = _cleanups.pop()
        try:
            fn()
        except Exception:
            traceback.print_exc()
    while _procs:
        stop(_procs.pop())


def tmpdir():
    d = tempfile.mkdtemp(prefix="edgetest-")
    at_cleanup(lambda: shutil.rmtree(d, ignore_errors=True))
    return d


def free_port(host="127.0.0.1"):
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def hostport(host, port):
    return "[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port)


def wait_for(pred, timeout=5.0, what="condition", interval=0.02):
    end = time.time() + timeout
    while time.time() < end:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    raise Fail("timed out after %.1fs waiting for %s" % (timeout, what))


def wait_port(host, port, timeout=5.0):
    def ok():
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(fam, socket.SOCK_STREAM) as s:
            s.settimeout(0.2)
            try:
                s.connect((host, port))
                return True
            except OSError:
                return False
    wait_for(ok, timeout, "%s to listen" % hostport(host, port))


class Edged:
    """edged on a generated route file in a temporary directory.

    listeners: list of dicts rendered as YAML (values are inserted verbatim,
    so quote strings). extra: top-level YAML text."""

    def __init__(self, listeners_yaml, extra="", env=None, args=(), wait=True, sock=None,
                 prefix=()):
        self.dir = tmpdir()
        self.sock = sock or os.path.join(self.dir, "ctl.sock")
        self.conf = os.path.join(self.dir, "edge.yaml")
        with open(self.conf, "w") as f:
            f.write("control_socket: %s\n%s\nlisteners:\n%s\n"
                    % (self.sock, extra, listeners_yaml))
        self.logpath = os.path.join(self.dir, "edged.log")
        self.logf = open(self.logpath, "w")
        e = dict(os.environ)
        if env:
            e.update(env)
        self.p = spawn(list(prefix) + [EDGED, "-c", self.conf] + list(args),
                       stdout=self.logf, stderr=self.logf, env=e)
        if wait:
            wait_for(lambda: self.p.poll() is not None or self.ping(),
                     10, "edged to answer on its control socket")
            if self.p.poll() is not None:
                raise Fail("edged exited with %s:\n%s" % (self.p.returncode, self.log()))

    def ping(self):
        r = subprocess.run([EDGECTL, "-s", self.sock, "ping"],
                           capture_output=True, text=True, timeout=10)
        return r.returncode == 0

    def ctl(self, *args, check_rc=True):
        r = subprocess.run([EDGECTL, "-s", self.sock] + list(args),
                           capture_output=True, text=True, timeout=30)
        if check_rc and r.returncode != 0:
            raise Fail("edgectl %s failed (%d): %s%s"
                       % (" ".join(args), r.returncode, r.stdout, r.stderr))
        return r

    def flows(self):
        return json.loads(self.ctl("-j", "flows").stdout)

    def stats(self):
        return json.loads(self.ctl("-j", "stats").stdout)

    def log(self):
        self.logf.flush()
        with open(self.logpath) as f:
            return f.read()

    def close_lines(self):
        return [l for l in self.log().splitlines() if "info: flow id=" in l
                and " end=" in l]

    def stop(self, sig=signal.SIGTERM):
        rc = stop(self.p, sig, timeout=10)
        return rc


class EchoServer:
    """build/echo_check server: echo | sink | source | banner, optional -p."""

    def __init__(self, host="127.0.0.1", mode="echo", proxy=False, banner=None,
                 nbytes=None, seed=None, prefix=(), port=None):
        self.host = host
        self.port = port or free_port(host)
        self.dir = tmpdir()
        self.out = os.path.join(self.dir, "conns.txt")
        cmd = list(prefix) + [ECHO, "server", "-l", hostport(host, self.port), "-m", mode,
               "-o", self.out]
        if proxy:
            cmd.append("-p")
        if banner is not None:
            cmd += ["-b", banner]
        if nbytes is not None:
            cmd += ["-n", str(nbytes)]
        if seed is not None:
            cmd += ["-s", str(seed)]
        self.p = spawn(cmd, stdout=subprocess.PIPE,
                       stderr=open(os.path.join(self.dir, "err"), "w"), text=True)
        line = self.p.stdout.readline()  # "listening HOST:PORT"
        check(line.startswith("listening"), "echo_check server did not start: %r" % line)

    @property
    def addr(self):
        return hostport(self.host, self.port)

    def conns(self):
        try:
            with open(self.out) as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            return []
        out = []
        for l in lines:
            d = {}
            for kv in l.split():
                k, _, v = kv.partition("=")
                d[k] = v
            out.append(d)
        return out


def client(addr, nbytes, wsize=16384, seed=1, direction="both", stall=20,
           banner=None, timeout=600, extra=(), prefix=()):
    """Run build/echo_check client; returns (rc, output)."""
    cmd = list(prefix) + [ECHO, "client", "-c", addr, "-n", str(nbytes), "-w", str(wsize),
           "-s", str(seed), "-d", direction, "-t", str(stall)] + list(extra)
    if banner is not None:
        cmd += ["-e", banner]
    p = spawn(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop(p, signal.SIGKILL)
        return -1, "client timed out after %ds" % timeout
    return p.returncode, out.strip()


def client_hello(server_name):
    """The bytes of a real ClientHello from Python's ssl (OpenSSL) for
    server_name (None: no SNI), made in memory without a network."""
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname=server_name)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()


def netns(tag):
    """A network namespace of the test's own with lo up; deleted at the
    end. Returns the command prefix that runs a program inside it."""
    name = "edgetest-%s-%d" % (tag, os.getpid())
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    subprocess.run(["ip", "netns", "add", name], check=True)
    at_cleanup(lambda: subprocess.run(["ip", "netns", "del", name], capture_output=True))
    subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
    return ["ip", "netns", "exec", name]


def run_module(name=None):
    name = name or os.path.basename(sys.argv[0]).replace(".py", "")
    only = set(sys.argv[1:])
    passed = failed = skipped = 0
    for t in _tests:
        if only and t.__name__ not in only:
            continue
        t0 = time.time()
        try:
            if t._edge_root and os.geteuid() != 0:
                raise Skip("needs root (CAP_BPF, CAP_NET_ADMIN, namespaces)")
            t()
            passed += 1
            print("PASS %s (%.1fs)" % (t.__name__, time.time() - t0), flush=True)
        except Skip as e:
            skipped += 1
            print("SKIP %s: %s  <<<<<< SKIPPED" % (t.__name__, e), flush=True)
        except Exception as e:
            failed += 1
            print("FAIL %s (%.1fs): %s" % (t.__name__, time.time() - t0, e), flush=True)
            if not isinstance(e, Fail):
                traceback.print_exc()
        finally:
            _stop_all()
    print("%s: %d passed, %d failed, %d skipped" % (name, passed, failed, skipped), flush=True)
    sys.exit(1 if failed else 0)
