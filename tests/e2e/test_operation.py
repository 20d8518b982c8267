"""Production operation: limits, timeouts, failover, health checks,
reload under load, graceful drain (test_daemon), privilege drop,
EMFILE, systemd notifications."""
import json
import shutil
import os
import signal
import socket
import subprocess
import threading
import time

from edgetest import *

MiB = 1 << 20


def lst(name, port, upstream, extra="", routes_extra="", bind="127.0.0.1"):
    up = upstream if upstream.startswith("[") and upstream.endswith("]") and "," in upstream \
        else '"%s"' % upstream if not upstream.startswith("[\"") else upstream
    return """  - name: %s
    bind: ["%s"]%s
    routes:
      - upstream: %s%s
""" % (name, hostport(bind, port), extra, up, routes_extra)


def closed_at_once(port, host="127.0.0.1", src=None):
    s = socket.socket()
    if src:
        s.bind((src, 0))
    s.settimeout(3)
    s.connect((host, port))
    try:
        b = s.recv(1)
    except ConnectionResetError:
        b = b""
    except socket.timeout:
        b = None
    s.close()
    return b == b""


def hold(port, n, src=None):
    out = []
    for _ in range(n):
        s = socket.socket()
        if src:
            s.bind((src, 0))
        s.connect(("127.0.0.1", port))
        at_cleanup(s.close)
        out.append(s)
    return out


@test
def test_limits():
    srv = EchoServer()
    pg, pl, ps = free_port(), free_port(), free_port()
    e = Edged(lst("glob", pg, srv.addr) + lst("lis", pl, srv.addr, extra="\n    max_flows: 3") +
              lst("src", ps, srv.addr),
              extra="limits:\n  max_flows: 12\n  per_source: 4\n")
    # per_source: 4 live flows from 127.0.0.1, the 5th is closed at once,
    # while another source still gets through.
    held = hold(ps, 4)
    wait_for(lambda: len(e.flows()) == 4, 5, "4 flows")
    check(closed_at_once(ps), "5th flow from one source not closed")
    s = socket.socket()
    s.bind(("127.0.0.2", 0))
    s.connect(("127.0.0.1", ps))
    s.sendall(b"hello")
    s.settimeout(3)
    eq(s.recv(5), b"hello", "another source gets through")
    s.close()
    for h in held:
        h.close()
    wait_for(lambda: len(e.flows()) == 0, 5, "flows to end")
    # The listener's max_flows (sources spread over 127.0.0.x).
    held = [hold(pl, 1, src="127.0.0.%d" % (10 + i))[0] for i in range(3)]
    wait_for(lambda: len(e.flows()) == 3, 5, "3 flows")
    check(closed_at_once(pl, src="127.0.0.20"), "4th flow on the listener not closed")
    # The global max_flows: 12 live in all.
    more = [hold(pg, 1, src="127.0.0.%d" % (30 + i))[0] for i in range(9)]
    wait_for(lambda: len(e.flows()) == 12, 5, "12 flows")
    check(closed_at_once(pg, src="127.0.0.50"), "13th flow not closed")
    st = {l["name"]: l for l in e.stats()["listeners"]}
    eq(st["src"]["closed"]["limit_per_source"], 1, "per_source counter")
    eq(st["lis"]["closed"]["limit_listener"], 1, "listener limit counter")
    eq(st["glob"]["closed"]["limit_max_flows"], 1, "global limit counter")
    check("limit_per_source reached" in e.log(), e.log()[-2000:])


def blackhole():
    """A listener whose accept queue is full: the kernel drops SYNs."""
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(0)
    at_cleanup(ls.close)
    for _ in range(2):
        f = socket.socket()
        f.setblocking(False)
        try:
            f.connect(ls.getsockname())
        except BlockingIOError:
            pass
        at_cleanup(f.close)
    time.sleep(0.1)
    return "127.0.0.1:%d" % ls.getsockname()[1]


@test
def test_failover():
    srv = EchoServer()
    dead = "127.0.0.1:%d" % free_port()
    hole = blackhole()
    p1, p2 = free_port(), free_port()
    e = Edged(lst("refused", p1, '["%s", "%s"]' % (dead, srv.addr)) +
              lst("hole", p2, '["%s", "%s"]' % (hole, srv.addr)),
              extra="timeouts:\n  connect: 2s\n")
    rc, out = client("127.0.0.1:%d" % p1, MiB)
    eq(rc, 0, "failover after a refused connect: " + out)
    t0 = time.time()
    rc, out = client("127.0.0.1:%d" % p2, MiB)
    dt = time.time() - t0
    eq(rc, 0, "failover after a black hole: " + out)
    check(dt < 1.8, "black-holed first address took %.1fs of the 2s budget" % dt)
    log = e.log()
    check("connect to %s: Connection refused" % dead in log, log[-1500:])
    check("connect to %s: timed out, trying the next address" % hole in log, log[-1500:])
    lines = e.close_lines()
    check(all("upstream=%s" % srv.addr in l for l in lines), lines)


@test
def test_failover_iptables_blackhole():
    """The issue's recipe: in a namespace of the test's own, iptables drops
    SYNs to the first upstream; edged moves on to the second within the
    connect budget."""
    if not shutil.which("iptables"):
        raise Skip("iptables not installed (make deps installs it)")
    ns = netns("bh")
    srv = EchoServer(prefix=ns, port=20002)
    hole_port = 20001
    EchoServer(prefix=ns, port=hole_port)  # listening, but SYNs are dropped
    r = subprocess.run(ns + ["iptables", "-A", "INPUT", "-p", "tcp", "--dport", str(hole_port),
                             "--syn", "-j", "DROP"], capture_output=True, text=True)
    check(r.returncode == 0, "iptables: %s" % r.stderr)
    e = Edged(lst("bh", 20000, '["127.0.0.1:%d", "%s"]' % (hole_port, srv.addr)),
              extra="timeouts:\n  connect: 2s\n", prefix=ns)
    t0 = time.time()
    rc, out = client("127.0.0.1:20000", MiB, prefix=ns)
    dt = time.time() - t0
    eq(rc, 0, "through the second address: " + out)
    check(dt < 1.8, "took %.1fs of the 2s budget" % dt)
    check("connect to 127.0.0.1:%d: timed out, trying the next address" % hole_port in e.log(),
          e.log()[-1000:])


@test
def test_health_check_down_and_up():
    a = EchoServer()
    b = EchoServer()
    port = free_port()
    e = Edged(lst("h", port, '["%s", "%s"]' % (a.addr, b.addr),
                  routes_extra="\n        health_check: { interval: 200ms, timeout: 200ms, rise: 2, fall: 2 }"))
    rc, out = client("127.0.0.1:%d" % port, 1000)
    eq(rc, 0, out)
    check("upstream=%s" % a.addr in e.close_lines()[-1], "first choice is A")
    stop(a.p)
    wait_for(lambda: "upstream %s is DOWN" % a.addr in e.log(), 5, "A marked down")
    n_warn = e.log().count("connect to %s" % a.addr)
    rc, out = client("127.0.0.1:%d" % port, 1000)
    eq(rc, 0, out)
    check("upstream=%s" % b.addr in e.close_lines()[-1], "B while A is down")
    eq(e.log().count("connect to %s" % a.addr), n_warn, "a down address was tried")
    # A comes back on the same port.
    a2 = spawn([ECHO, "server", "-l", a.addr, "-m", "echo"], stdout=subprocess.DEVNULL)
    wait_for(lambda: "upstream %s is UP" % a.addr in e.log(), 5, "A marked up")
    rc, out = client("127.0.0.1:%d" % port, 1000)
    eq(rc, 0, out)
    check("upstream=%s" % a.addr in e.close_lines()[-1], "A again once up")


def write_conf(e, listeners, extra=""):
    with open(e.conf, "w") as f:
        f.write("control_socket: %s\n%s\nlisteners:\n%s\n" % (e.sock, extra, listeners))


@test
def test_reload_under_load():
    """100 flows carry traffic through an invalid and a valid reload: all
    intact, none reset; new connections take the new route at once."""
    s1, s2 = EchoServer(), EchoServer()
    port = free_port()
    e = Edged(lst("r", port, s1.addr))
    p = spawn([ECHO, "multi", "-c", "127.0.0.1:%d" % port, "-j", "100", "-k", "100",
               "-M", str(48 * MiB), "-s", "9", "-t", "20"],
              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for(lambda: len(e.flows()) >= 50, 10, "flows to start")
    with open(e.conf, "a") as f:
        f.write("bogus_key: 1\n")
    r = e.ctl("reload", check_rc=False)
    eq(r.returncode, 1, "invalid reload exit status")
    check("reload refused, nothing changed" in r.stderr and "unknown key 'bogus_key'" in r.stderr,
          r.stderr)
    write_conf(e, lst("r", port, s2.addr))
    r = e.ctl("reload")
    check("reloaded" in r.stdout, r.stdout)
    rc, out = client("127.0.0.1:%d" % port, 1000)
    eq(rc, 0, out)
    eq(len(s2.conns()), 1, "new connection on the new route")
    os.kill(e.p.pid, signal.SIGHUP)  # the same through SIGHUP
    wait_for(lambda: e.log().count("reloaded:") == 2, 5, "SIGHUP reload")
    out, _ = p.communicate(timeout=300)
    eq(p.returncode, 0, "multi across reloads: " + out[-1500:])
    check("failed=0" in out, out[-300:])
    lines = [l for l in e.close_lines() if "upstream=%s" % s1.addr in l]
    eq(len(lines), 100, "flows of the old route")
    check(not any("reset" in l for l in lines), "a flow was reset")


@test
def test_reload_adds_and_removes_listeners():
    srv = EchoServer()
    pa, pb, pc = free_port(), free_port(), free_port()
    e = Edged(lst("a", pa, srv.addr) + lst("b", pb, srv.addr))
    refused = []
    stop_flag = threading.Event()

    def hammer():
        while not stop_flag.is_set():
            try:
                s = socket.create_connection(("127.0.0.1", pa), timeout=2)
                s.close()
            except OSError as ex:
                refused.append(repr(ex))
            time.sleep(0.002)
    t = threading.Thread(target=hammer)
    t.start()
    live = socket.create_connection(("127.0.0.1", pb), timeout=3)
    at_cleanup(live.close)
    live.sendall(b"before")
    live.settimeout(3)
    eq(live.recv(6), b"before", "echo on b")
    write_conf(e, lst("a", pa, srv.addr) + lst("c", pc, srv.addr))
    e.ctl("reload")
    time.sleep(0.3)
    stop_flag.set()
    t.join(5)
    eq(refused, [], "the unchanged listener refused connections during the reload")
    rc, out = client("127.0.0.1:%d" % pc, 1000)
    eq(rc, 0, "new listener: " + out)
    try:
        socket.create_connection(("127.0.0.1", pb), timeout=1).close()
        raise Fail("removed listener still accepts")
    except ConnectionRefusedError:
        pass
    live.sendall(b"after")
    eq(live.recv(5), b"after", "a live flow of the removed listener goes on")
    flows = e.flows()
    eq([f["listener"] for f in flows], ["b"], "flows")


@test
def test_privilege_drop():
    srv = EchoServer()
    port = free_port()
    d = tmpdir()
    os.chmod(d, 0o711)
    # edged creates the socket's directory and hands it to the user, so
    # the unprivileged process can remove the socket at exit.
    e = Edged(lst("p", port, srv.addr), extra="user: nobody\n",
              sock=os.path.join(d, "run", "ctl.sock"))
    status = open("/proc/%d/status" % e.p.pid).read()
    uid = [l for l in status.splitlines() if l.startswith("Uid:")][0].split()
    eq(uid[1:], ["65534"] * 4, "uids")
    caps = {l.split(":")[0]: int(l.split()[1], 16) for l in status.splitlines()
            if l.startswith("Cap")}
    eq(caps["CapEff"], 1 << 10, "effective capabilities: only CAP_NET_BIND_SERVICE")
    eq(caps["CapBnd"], 1 << 10, "bounding set")
    rc, out = client("127.0.0.1:%d" % port, 32 * MiB)
    eq(rc, 0, out)
    line = wait_for(lambda: e.close_lines(), 5, "close line")[0]
    check("path=sockmap" in line, "kernel path after the drop: " + line)
    # A reload may add a listener below 1024: CAP_NET_BIND_SERVICE stayed.
    low = None
    for cand in range(990, 900, -1):
        try:
            t = socket.socket()
            t.bind(("127.0.0.1", cand))
            t.close()
            low = cand
            break
        except OSError:
            continue
    check(low, "no free port below 1024")
    write_conf(e, lst("p", port, srv.addr) + lst("low", low, srv.addr), extra="user: nobody\n")
    os.chmod(e.dir, 0o755)  # the unprivileged process re-reads the file
    os.chmod(e.conf, 0o644)
    e.ctl("reload")
    rc, out = client("127.0.0.1:%d" % low, MiB)
    eq(rc, 0, "new listener on port %d after the drop: %s" % (low, out))
    eq(e.stop(), 0, "exit status")
    check(not os.path.exists(e.sock), "control socket removed by the unprivileged process")


@test
def test_emfile_pauses_accept():
    srv = EchoServer()
    port = free_port()
    d = tmpdir()
    conf = os.path.join(d, "e.yaml")
    sock = os.path.join(d, "ctl.sock")
    with open(conf, "w") as f:
        f.write("control_socket: %s\nlisteners:\n%s" % (sock, lst("f", port, srv.addr)))
    log = open(os.path.join(d, "log"), "w")
    p = spawn(["prlimit", "--nofile=48:48", EDGED, "-c", conf], stdout=log, stderr=log)
    wait_for(lambda: os.path.exists(sock), 10, "edged")
    socks = []
    for i in range(40):
        s = socket.socket()
        s.settimeout(3)
        s.connect(("127.0.0.1", port))
        socks.append(s)
        at_cleanup(s.close)
    wait_for(lambda: "pausing accept" in open(os.path.join(d, "log")).read(), 5, "EMFILE")

    def cpu():
        st = open("/proc/%d/stat" % p.pid).read().rsplit(")", 1)[1].split()
        return (int(st[11]) + int(st[12])) / os.sysconf("SC_CLK_TCK")
    c0 = cpu()
    time.sleep(2)
    used = cpu() - c0
    check(used < 0.3, "edged used %.2fs of CPU in 2s at EMFILE (busy loop?)" % used)
    for s in socks:
        s.close()
    time.sleep(0.5)
    rc, out = client("127.0.0.1:%d" % port, 1000, stall=5)
    eq(rc, 0, "accepting again after EMFILE: " + out)
    check(p.poll() is None, "edged died")


@test
def test_sd_notify():
    d = tmpdir()
    ns = os.path.join(d, "notify")
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(ns)
    at_cleanup(rx.close)
    rx.settimeout(5)
    srv = EchoServer()
    e = Edged(lst("n", free_port(), srv.addr), env={"NOTIFY_SOCKET": ns, "WATCHDOG_USEC": "200000"})
    msgs = []

    def until(word):
        while True:
            m = rx.recv(4096).decode()
            msgs.append(m)
            if word in m:
                return m
    until("READY=1")
    until("WATCHDOG=1")
    os.kill(e.p.pid, signal.SIGHUP)
    until("RELOADING=1")
    until("READY=1")
    os.kill(e.p.pid, signal.SIGTERM)
    until("STOPPING=1")
    eq(e.p.wait(10), 0, "exit")


@test
def test_idle_and_half_closed_timeouts():
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", 0))
    ls.listen(8)
    at_cleanup(ls.close)
    srv = EchoServer()
    pi, ph = free_port(), free_port()
    e = Edged(lst("idle", pi, srv.addr), extra="timeouts:\n  idle: 600ms\n")
    e2 = Edged(lst("half", ph, "127.0.0.1:%d" % ls.getsockname()[1]),
               extra="timeouts:\n  half_closed: 600ms\n")
    # Bytes moving in the kernel keep a flow alive past the idle timeout.
    s = socket.create_connection(("127.0.0.1", pi), timeout=3)
    for i in range(15):
        s.sendall(b"x")
        eq(s.recv(1), b"x", "echo %d" % i)
        time.sleep(0.1)
    check(len(e.flows()) == 1, "busy flow closed by the idle timeout")
    t0 = time.time()
    eq(s.recv(1), b"", "idle flow closed")
    dt = time.time() - t0
    check(0.5 <= dt <= 1.5, "idle close after %.2fs" % dt)
    check("end=idle_timeout" in e.close_lines()[-1], e.close_lines())
    # Half-closed: the client finished, the upstream says nothing.
    c = socket.create_connection(("127.0.0.1", ph), timeout=3)
    u, _ = ls.accept()
    at_cleanup(u.close)
    c.shutdown(socket.SHUT_WR)
    u.settimeout(3)
    eq(u.recv(1), b"", "FIN passed on")
    t0 = time.time()
    c.settimeout(3)
    try:
        c.recv(1)
    except ConnectionResetError:
        pass
    dt = time.time() - t0
    check(0.4 <= dt <= 1.5, "half-closed close after %.2fs" % dt)
    line = wait_for(lambda: e2.close_lines(), 3, "close line")[-1]
    check("end=half_closed_timeout" in line, line)


@test
def test_reresolve_names():
    """Host names are looked up again every resolve_interval, off the event
    loop; a failed lookup keeps the last good answer. edged runs in its own
    mount namespace with a test /etc/hosts bind-mounted over the real one."""
    port = free_port()
    a = EchoServer(host="127.0.0.1")
    b_port = a.port
    b = spawn([ECHO, "server", "-l", "127.0.0.2:%d" % b_port, "-m", "echo", "-o",
               os.path.join(tmpdir(), "b.txt")], stdout=subprocess.PIPE, text=True)
    check(b.stdout.readline().startswith("listening"), "second server")
    d = tmpdir()
    hosts = os.path.join(d, "hosts")
    with open(hosts, "w") as f:
        f.write("127.0.0.1 up.edge-test\n")
    conf = os.path.join(d, "e.yaml")
    sock = os.path.join(d, "ctl.sock")
    with open(conf, "w") as f:
        f.write("control_socket: %s\nresolve_interval: 300ms\nlisteners:\n%s"
                % (sock, lst("n", port, "up.edge-test:%d" % b_port)))
    logp = os.path.join(d, "log")
    log = open(logp, "w")
    p = spawn(["unshare", "-m", "sh", "-c",
               "mount --bind %s /etc/hosts && exec %s -c %s" % (hosts, EDGED, conf)],
              stdout=log, stderr=log)
    wait_for(lambda: os.path.exists(sock), 10, "edged")

    def served_by():
        rc, out = client("127.0.0.1:%d" % port, 100)
        eq(rc, 0, out)
        lines = [l for l in open(logp).read().splitlines() if " end=" in l]
        return lines[-1].split(" upstream=")[1].split()[0]
    eq(served_by(), "127.0.0.1:%d" % b_port, "first answer")
    with open(hosts, "r+") as f:  # same inode: the bind mount sees it
        f.truncate(0)
        f.write("127.0.0.2 up.edge-test\n")
    wait_for(lambda: "up.edge-test:%d now has 1 address" % b_port in open(logp).read(), 5,
             "the new answer")
    eq(served_by(), "127.0.0.2:%d" % b_port, "after the change")
    with open(hosts, "r+") as f:
        f.truncate(0)
        f.write("# nothing\n")
    wait_for(lambda: "keeping the last good addresses" in open(logp).read(), 5, "a failed lookup")
    eq(served_by(), "127.0.0.2:%d" % b_port, "after a failed lookup")


if __name__ == "__main__":
    run_module("e2e/test_operation")
