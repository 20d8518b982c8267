"""edged as a daemon: config check, start-up, connect failures and
timeouts, fallback when the kernel path is unavailable, the userspace data
paths, SIGTERM, and edgectl's errors."""
import json
import os
import signal
import socket
import subprocess
import time

from edgetest import *

MiB = 1 << 20


def listener_yaml(port, upstream, name="t", extra="", bind="127.0.0.1"):
    return """  - name: %s
    bind: ["%s"]%s
    routes:
      - upstream: "%s"
""" % (name, hostport(bind, port), extra, upstream)


@test(root=False)
def test_check_mode():
    r = subprocess.run([EDGED, "-t", "-c", os.path.join(ROOT, "config/edge.yaml")],
                       capture_output=True, text=True, timeout=30)
    eq(r.returncode, 0, "edged -t on the example: %s" % r.stderr)
    d = tmpdir()
    bad = os.path.join(d, "bad.yaml")
    with open(bad, "w") as f:
        f.write("listeners:\n"
                "  - name: a\n"
                "    bind: [\"127.0.0.1:99999\"]\n"
                "    routes:\n"
                "      - upstream: \"127.0.0.1:25\"\n"
                "        proxy_protocol: v3\n"
                "        colour: blue\n")
    r = subprocess.run([EDGED, "-t", "-c", bad], capture_output=True, text=True, timeout=30)
    eq(r.returncode, 1, "exit status for an invalid file")
    check("%s:7:9: unknown key 'colour'" % bad in r.stderr, "stderr: %s" % r.stderr)
    # After removing the unknown key, the semantic errors all show.
    with open(bad, "w") as f:
        f.write("listeners:\n"
                "  - name: a\n"
                "    bind: [\"127.0.0.1:99999\"]\n"
                "    routes:\n"
                "      - upstream: \"${EDGE_TEST_UNSET_VAR}\"\n"
                "        proxy_protocol: v3\n")
    env = dict(os.environ)
    env.pop("EDGE_TEST_UNSET_VAR", None)
    r = subprocess.run([EDGED, "-t", "-c", bad], capture_output=True, text=True,
                       timeout=30, env=env)
    eq(r.returncode, 1, "exit status")
    lines = r.stderr.strip().splitlines()
    check(any(l.startswith("%s:3:12: bad bind address" % bad) for l in lines), r.stderr)
    check(any(l.startswith("%s:5:19: environment variable EDGE_TEST_UNSET_VAR is not set" % bad)
              for l in lines), r.stderr)
    check(any(l.startswith("%s:6:25: bad proxy_protocol 'v3'" % bad) for l in lines), r.stderr)
    # edged refuses to start on the same file.
    r = subprocess.run([EDGED, "-c", bad], capture_output=True, text=True, timeout=30, env=env)
    eq(r.returncode, 1, "edged refuses to start")


@test
def test_connect_failure_closes_client():
    dead = free_port()  # nothing listens there
    port = free_port()
    e = Edged(listener_yaml(port, "127.0.0.1:%d" % dead))
    t0 = time.time()
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.settimeout(5)
    try:
        b = s.recv(1)
    except ConnectionResetError:
        b = b""
    eq(b, b"", "client closed")
    check(time.time() - t0 < 1.0, "closed after %.2fs" % (time.time() - t0))
    line = wait_for(lambda: e.close_lines(), 5, "close line")[0]
    check("end=connect_failed" in line, line)
    st = e.stats()["listeners"][0]
    eq(st["connect_failures"], 1, "connect_failures")
    eq(st["closed"]["connect_failed"], 1, "closed.connect_failed")
    # Nothing else disturbed: a good listener on the same edged still works.
    srv = EchoServer()
    p2 = free_port()
    e2 = Edged(listener_yaml(p2, srv.addr))
    rc, out = client("127.0.0.1:%d" % p2, 4 * MiB)
    eq(rc, 0, out)


@test
def test_connect_timeout():
    """An upstream that never answers the SYN (its accept queue is full,
    so the kernel drops SYNs): the client is closed after timeouts.connect."""
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(0)
    at_cleanup(ls.close)
    filler = socket.create_connection(ls.getsockname())
    at_cleanup(filler.close)
    filler2 = socket.socket()
    filler2.setblocking(False)
    try:
        filler2.connect(ls.getsockname())
    except BlockingIOError:
        pass
    at_cleanup(filler2.close)
    port = free_port()
    e = Edged(listener_yaml(port, "127.0.0.1:%d" % ls.getsockname()[1]),
              extra="timeouts:\n  connect: 700ms\n")
    t0 = time.time()
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.settimeout(5)
    try:
        b = s.recv(1)
    except ConnectionResetError:
        b = b""
    dt = time.time() - t0
    eq(b, b"", "client closed")
    check(0.6 <= dt < 2.0, "closed after %.2fs, want ~0.7s" % dt)
    line = wait_for(lambda: e.close_lines(), 5, "close line")[0]
    check("end=connect_timeout" in line, line)


@test
def test_userspace_paths_integrity():
    """datapath: splice and copy move the same bytes, with half-close."""
    srv = EchoServer()
    for dp in ("splice", "copy"):
        port = free_port()
        e = Edged(listener_yaml(port, srv.addr, name=dp, extra="\n    datapath: %s" % dp))
        for w in (1024, 16384, 131072):
            rc, out = client("127.0.0.1:%d" % port, 256 * MiB, wsize=w, seed=w)
            eq(rc, 0, "%s at %d-byte writes: %s" % (dp, w, out))
        p = spawn([ECHO, "multi", "-c", "127.0.0.1:%d" % port, "-j", "100", "-k", "300",
                   "-M", str(2 * MiB)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                  text=True)
        out, _ = p.communicate(timeout=300)
        eq(p.returncode, 0, "%s multi: %s" % (dp, out[-1000:]))
        lines = wait_for(lambda: len(e.close_lines()) == 303 and e.close_lines(), 10,
                         "close lines")
        check(all(("path=%s" % dp) in l and "reason=datapath: %s configured" % dp in l
                  for l in lines), "paths: %s" % lines[:2])
        e.stop()


@test
def test_fallback_without_bpf():
    """No CAP_BPF/CAP_NET_ADMIN: auto falls back to splice and says why;
    datapath: sockmap refuses to start."""
    srv = EchoServer()
    port = free_port()
    drop = ["setpriv", "--inh-caps=-all", "--bounding-set=-bpf,-net_admin,-sys_admin,-perfmon"]
    d = tmpdir()
    conf = os.path.join(d, "e.yaml")
    sock = os.path.join(d, "ctl.sock")
    with open(conf, "w") as f:
        f.write("control_socket: %s\nlisteners:\n%s" % (sock, listener_yaml(port, srv.addr)))
    log = open(os.path.join(d, "log"), "w")
    p = spawn(drop + [EDGED, "-c", conf], stdout=log, stderr=log)
    wait_for(lambda: os.path.exists(sock) or p.poll() is not None, 10, "edged start")
    check(p.poll() is None, "edged exited: %s" % open(os.path.join(d, "log")).read())
    r = subprocess.run([EDGECTL, "-s", sock, "-j", "stats"], capture_output=True, text=True,
                       timeout=10)
    st = json.loads(r.stdout)
    eq(st["kernel_path"]["loaded"], False, "kernel path loaded without CAP_BPF")
    check("cannot load" in st["kernel_path"]["reason"], st["kernel_path"]["reason"])
    rc, out = client("127.0.0.1:%d" % port, 64 * MiB)
    eq(rc, 0, out)
    r = subprocess.run([EDGECTL, "-s", sock, "-j", "stats"], capture_output=True, text=True,
                       timeout=10)
    l0 = json.loads(r.stdout)["listeners"][0]
    eq(l0["fallback_reasons"]["kernel_path_unavailable"], 1, "fallback reason counted")
    stop(p)
    text = open(os.path.join(d, "log")).read()
    check("kernel path unavailable" in text, text)
    check("path=splice" in text and "reason=cannot load the BPF programs" in text, text)

    with open(conf, "w") as f:
        f.write("control_socket: %s\ndatapath: sockmap\nlisteners:\n%s"
                % (sock, listener_yaml(free_port(), srv.addr)))
    r = subprocess.run(drop + [EDGED, "-c", conf], capture_output=True, text=True, timeout=20)
    eq(r.returncode, 1, "datapath sockmap without BPF must not start")
    check("datapath sockmap: cannot load the BPF programs" in r.stderr, r.stderr)


@test
def test_sigterm_drains_then_closes():
    """SIGTERM: stop accepting, let live flows finish for drain_timeout,
    then close the rest (end=shutdown), remove the control socket, exit 0.
    SIGINT stops at once."""
    srv = EchoServer(mode="banner", banner="220 hi\r\n")
    port = free_port()
    e = Edged(listener_yaml(port, srv.addr), extra="drain_timeout: 1500ms\n")
    socks = []
    for i in range(10):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.settimeout(5)
        eq(s.recv(8), b"220 hi\r\n", "banner")
        socks.append(s)
    eq(len(e.flows()), 10, "live flows")
    t0 = time.time()
    os.kill(e.p.pid, signal.SIGTERM)
    # Draining: no new connections, live flows still work.
    wait_for(lambda: "draining" in e.log(), 5, "drain to start")
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        raise Fail("a new connection was accepted while draining")
    except (ConnectionRefusedError, socket.timeout):
        pass
    socks[0].sendall(b"ping\r\n")
    eq(socks[0].recv(6), b"ping\r\n", "a live flow still moves bytes while draining")
    socks[1].shutdown(socket.SHUT_WR)  # this one finishes during the drain
    eq(socks[1].recv(1), b"", "finished flow closed")
    rc = e.p.wait(10)
    dt = time.time() - t0
    eq(rc, 0, "edged exit status after SIGTERM")
    check(1.3 <= dt < 4, "exited after %.1fs, drain_timeout is 1.5s" % dt)
    for s in socks[2:]:
        try:
            eq(s.recv(1), b"", "client sees the close")
        except ConnectionResetError:
            raise Fail("client was reset instead of closed")
    check(not os.path.exists(e.sock), "control socket removed")
    lines = e.close_lines()
    eq(len([l for l in lines if "end=shutdown" in l]), 9, "flows closed at the deadline")
    eq(len([l for l in lines if "end=client_closed" in l]), 1, "flow that finished in time")

    e2 = Edged(listener_yaml(free_port(), srv.addr))
    t0 = time.time()
    eq(e2.stop(signal.SIGINT), 0, "exit status after SIGINT")
    check(time.time() - t0 < 2, "SIGINT took %.1fs" % (time.time() - t0))


@test(root=False)
def test_edgectl_errors():
    d = tmpdir()
    r = subprocess.run([EDGECTL, "-s", os.path.join(d, "none.sock"), "flows"],
                       capture_output=True, text=True, timeout=10)
    eq(r.returncode, 1, "exit status")
    check("edged is not running" in r.stderr, r.stderr)
    r = subprocess.run([EDGECTL, "-s", os.path.join(d, "none.sock"), "-j", "flows"],
                       capture_output=True, text=True, timeout=10)
    eq(r.returncode, 1, "exit status")
    check("error" in json.loads(r.stdout), r.stdout)
    r = subprocess.run([EDGECTL, "bogus"], capture_output=True, text=True, timeout=10)
    check(r.returncode != 0, "unknown command accepted")


@test
def test_control_socket_garbage():
    srv = EchoServer()
    port = free_port()
    e = Edged(listener_yaml(port, srv.addr))
    st = os.stat(e.sock)
    eq(oct(st.st_mode & 0o777), oct(0o660), "control socket mode")
    for junk in (b"\x00\xff" * 3000, b"flows json extra\n", b"", os.urandom(100) + b"\n"):
        c = socket.socket(socket.AF_UNIX)
        c.connect(e.sock)
        c.sendall(junk)
        c.shutdown(socket.SHUT_WR)
        c.settimeout(5)
        resp = c.recv(4096)
        c.close()
        check(resp == b"" or resp.startswith(b"error ") or resp.startswith(b"ok"), repr(resp[:80]))
    check(e.ping(), "edged still answers")
    rc, out = client("127.0.0.1:%d" % port, MiB)
    eq(rc, 0, out)


@test
def test_ipv6_and_names():
    srv = EchoServer(host="::1")
    port = free_port("::1")
    e = Edged(listener_yaml(port, "localhost:%d" % srv.port, bind="::1")
              .replace('"localhost', '"[::1]'))
    rc, out = client("[::1]:%d" % port, 8 * MiB)
    eq(rc, 0, out)
    line = wait_for(lambda: e.close_lines(), 5, "close line")[0]
    check("client=[::1]:" in line and "upstream=[::1]:%d" % srv.port in line, line)


if __name__ == "__main__":
    run_module("e2e/test_daemon")
