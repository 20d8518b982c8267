"""edgectl and observability against a running edged with real flows:
flows (table and JSON, sort and filters), kill and kill --reset, stats
after known traffic, route explain, /metrics, permissions."""
import json
import os
import socket
import struct
import subprocess
import threading
import time
import urllib.request

from edgetest import *


def two_listeners(up, extra=""):
    pa, pb = free_port(), free_port()
    e = Edged("""  - name: alpha
    bind: ["127.0.0.1:%d"]
    routes:
      - upstream: "%s"
  - name: beta
    bind: ["127.0.0.1:%d"]
    routes:
      - name: web
        upstream: "%s"
""" % (pa, up, pb, up), extra=extra)
    return e, pa, pb


def conn(port, host="127.0.0.1"):
    s = socket.create_connection((host, port), timeout=10)
    at_cleanup(s.close)
    return s


def echo_n(s, n):
    data = os.urandom(n)
    s.sendall(data)
    got = bytearray()
    s.settimeout(10)
    while len(got) < n:
        b = s.recv(65536)
        if not b:
            raise Fail("EOF")
        got += b
    eq(bytes(got), data, "echo")


@test
def test_flows_json_table_sort_filter():
    srv = EchoServer()
    e, pa, pb = two_listeners(srv.addr)
    a = conn(pa)
    echo_n(a, 300000)
    time.sleep(0.05)
    b = conn(pb)
    echo_n(b, 5000)
    time.sleep(0.05)
    c = conn(pa)
    echo_n(c, 70000)
    t_last = time.time()
    time.sleep(1.0)
    fl = e.flows()
    eq(len(fl), 3, "live flows")
    by = {f["client"]: f for f in fl}
    for s, n, lname in ((a, 300000, "alpha"), (b, 5000, "beta"), (c, 70000, "alpha")):
        f = by["127.0.0.1:%d" % s.getsockname()[1]]
        eq(f["listener"], lname, "listener")
        eq(f["bytes_up"], n, "bytes_up")
        eq(f["bytes_down"], n, "bytes_down")
        eq(f["path"], "sockmap", "path")
        eq(f["state"], "established", "state")
        eq(f["local"], "127.0.0.1:%d" % s.getpeername()[1], "local")
        eq(f["upstream"], srv.addr, "upstream")
        check(f["upstream_local"].startswith("127.0.0.1:"), f["upstream_local"])
        eq(f["proxy_protocol"], "none", "proxy_protocol")
        eq(f["route"], "web" if lname == "beta" else "0", "route")
        eq(f["sni"], None, "sni")
        check("reason" not in f, "reason on a sockmap flow")
        for k in ("client_tcp", "upstream_tcp"):
            t = f[k]
            eq(t["state"], "established", k + ".state")
            for fld in ("rtt_us", "retrans", "unacked"):
                check(isinstance(t[fld], int), "%s.%s" % (k, fld))
    idle = by["127.0.0.1:%d" % c.getsockname()[1]]["idle_ms"]
    since = (time.time() - t_last) * 1000
    check(900 <= idle <= since + 200, "idle_ms %d, %d ms since the last byte" % (idle, since))
    fa = by["127.0.0.1:%d" % a.getsockname()[1]]
    check(fa["age_ms"] >= 1100 and fa["idle_ms"] <= fa["age_ms"], "age %r" % fa)
    # Bytes while the kernel moves them: one more exchange, no new flow.
    echo_n(c, 1000)
    f = [x for x in e.flows() if x["client"].endswith(":%d" % c.getsockname()[1])][0]
    eq(f["bytes_up"], 71000, "bytes_up after more traffic")
    check(f["idle_ms"] < 500, "idle_ms after traffic: %d" % f["idle_ms"])

    out = e.ctl("flows").stdout.splitlines()
    check(out[0].split()[:4] == ["ID", "LISTENER", "CLIENT", "UPSTREAM"], out[0])
    check(all(len(l) <= 80 for l in out), "table wider than 80 columns:\n" + "\n".join(out))
    ids = [int(l.split()[0]) for l in out[1:]]
    eq(ids, sorted(ids), "table sorted by age (oldest first)")
    out = e.ctl("flows", "--sort", "bytes").stdout.splitlines()
    eq(out[1].split()[2], "127.0.0.1:%d" % a.getsockname()[1], "--sort bytes first row")
    out = e.ctl("flows", "--sort", "idle").stdout.splitlines()
    eq(out[1].split()[2], "127.0.0.1:%d" % a.getsockname()[1], "--sort idle first row")
    js = json.loads(e.ctl("-j", "flows", "--listener", "beta").stdout)
    eq([x["listener"] for x in js], ["beta"], "--listener")
    js = json.loads(e.ctl("-j", "flows", "--client", "127.0.0.1:%d" % b.getsockname()[1]).stdout)
    eq(len(js), 1, "--client ip:port")
    js = json.loads(e.ctl("-j", "flows", "--client", "127.0.0.1").stdout)
    eq(len(js), 3, "--client ip")
    r = e.ctl("flows", "--sort", "size", check_rc=False)
    check(r.returncode != 0, "bad --sort accepted")


def _listener():
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", 0))
    ls.listen(8)
    at_cleanup(ls.close)
    return ls


@test
def test_kill_and_reset():
    ls = _listener()
    port = free_port()
    e = Edged("""  - name: k
    bind: ["127.0.0.1:%d"]
    routes:
      - upstream: "127.0.0.1:%d"
""" % (port, ls.getsockname()[1]))
    data = os.urandom(1 << 20)
    res = {}

    def upstream(tag):
        c, _ = ls.accept()
        c.settimeout(10)
        got = bytearray()
        try:
            while True:
                b = c.recv(65536)
                if not b:
                    res[tag] = ("eof", bytes(got))
                    break
                got += b
        except ConnectionResetError:
            res[tag] = ("reset", bytes(got))
        c.close()

    t = threading.Thread(target=upstream, args=("graceful",))
    t.start()
    s = conn(port)
    s.sendall(data)
    fid = wait_for(lambda: e.flows() and e.flows()[0]["bytes_up"] == len(data) and e.flows()[0]["id"],
                   5, "the bytes to be counted")
    out = e.ctl("kill", str(fid)).stdout
    check("closing" in out, out)
    s.settimeout(5)
    try:
        got = s.recv(1)
        client = "eof" if got == b"" else "data"
    except ConnectionResetError:
        client = "reset"
    eq(client, "eof", "client after kill")
    t.join(10)
    eq(res["graceful"][0], "eof", "upstream after kill")
    check(res["graceful"][1] == data, "upstream got %d of %d bytes" % (len(res["graceful"][1]), len(data)))
    line = wait_for(lambda: e.close_lines(), 5, "close line")[-1]
    check("end=killed" in line, line)

    t = threading.Thread(target=upstream, args=("reset",))
    t.start()
    s = conn(port)
    s.sendall(b"x" * 1000)
    fid = wait_for(lambda: e.flows() and e.flows()[0]["id"], 5, "flow")
    e.ctl("kill", str(fid), "--reset")
    s.settimeout(5)
    try:
        client = "eof" if s.recv(1) == b"" else "data"
    except ConnectionResetError:
        client = "reset"
    eq(client, "reset", "client after kill --reset")
    t.join(10)
    eq(res["reset"][0], "reset", "upstream after kill --reset")

    r = e.ctl("kill", "999999", check_rc=False)
    eq(r.returncode, 1, "unknown id exit status")
    check("no flow with id 999999" in r.stderr, r.stderr)
    r = e.ctl("-j", "kill", "abc", check_rc=False)
    eq(r.returncode, 1, "bad id")
    check("error" in json.loads(r.stdout), r.stdout)


@test
def test_stats_after_known_traffic():
    srv = EchoServer()
    dead = free_port()
    pa, pt = free_port(), free_port()
    e = Edged("""  - name: good
    bind: ["127.0.0.1:%d"]
    routes:
      - upstream: "%s"
  - name: tls
    bind: ["127.0.0.1:%d"]
    routes:
      - name: dead
        sni: ["dead.example.com"]
        upstream: "127.0.0.1:%d"
      - upstream: "%s"
""" % (pa, srv.addr, pt, dead, srv.addr), extra="timeouts:\n  client_hello: 400ms\n")
    for n in (1000, 20000, 300000):
        rc, out = client("127.0.0.1:%d" % pa, n)
        eq(rc, 0, out)
    # A ClientHello timeout: connect and say nothing.
    s = conn(pt)
    s.settimeout(3)
    eq(s.recv(1), b"", "silent client closed")
    # Non-TLS bytes go to the default route (and are echoed there).
    s = conn(pt)
    s.sendall(b"EHLO not tls\r\n")
    s.settimeout(3)
    eq(s.recv(100), b"EHLO not tls\r\n", "non-TLS bytes via the default route")
    s.close()
    # A failed connect through the SNI route.
    hello = client_hello("dead.example.com")
    s = conn(pt)
    s.sendall(hello)
    s.settimeout(3)
    try:
        s.recv(1)
    except ConnectionResetError:
        pass
    wait_for(lambda: len(e.close_lines()) == 6, 5, "6 close lines")
    st = e.stats()
    g, t = st["listeners"]
    eq(g["accepted"], 3, "good.accepted")
    eq(g["bytes_up"], 321000, "good.bytes_up")
    eq(g["bytes_down"], 321000, "good.bytes_down")
    eq(g["closed"]["client_closed"], 3, "good.closed.client_closed")
    # Small flows may send their FIN before the hand-off: those are relayed
    # in userspace and counted as fallbacks.
    eq(g["paths"]["sockmap"] + g["paths"]["splice"], 3, "good.paths")
    eq(g["fallbacks"], g["paths"]["splice"], "good.fallbacks")
    eq(g["fallback_reasons"]["client_half_closed"], g["fallbacks"], "fallback reasons")
    eq(g["active"], 0, "good.active")
    eq(t["accepted"], 3, "tls.accepted")
    eq(t["client_hello_timeouts"], 1, "tls.client_hello_timeouts")
    eq(t["closed"]["client_hello_timeout"], 1, "tls.closed.client_hello_timeout")
    r_dead, r_def = t["routes"]
    eq(r_dead["route"], "dead", "route name")
    eq(r_dead["connect_failures"], 1, "dead.connect_failures")
    eq(r_dead["closed"]["connect_failed"], 1, "dead.closed.connect_failed")
    eq(r_def["route"], "1", "unnamed route name")
    eq(r_def["accepted"], 1, "default.accepted")
    eq(r_def["bytes_up"], 14, "default.bytes_up")
    eq(t["connect_failures"], 1, "tls.connect_failures")
    check(st["kernel_path"]["loaded"] is True, st["kernel_path"])
    check(st["uptime_ms"] > 0, "uptime")
    text = e.ctl("stats").stdout
    check("LISTENER" in text and "good" in text and "dead" in text, text)
    return e


@test
def test_metrics_endpoint():
    srv = EchoServer()
    mport = free_port()
    pa = free_port()
    e = Edged("""  - name: m
    bind: ["127.0.0.1:%d"]
    routes:
      - name: r
        upstream: "%s"
""" % (pa, srv.addr), extra='metrics: "127.0.0.1:%d"\n' % mport)
    for n in (5000, 7000):
        rc, out = client("127.0.0.1:%d" % pa, n)
        eq(rc, 0, out)
    wait_for(lambda: len(e.close_lines()) == 2, 5, "close lines")
    body = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % mport, timeout=5).read().decode()
    helps, types, samples = set(), {}, {}
    for l in body.splitlines():
        if l.startswith("# HELP "):
            helps.add(l.split()[2])
        elif l.startswith("# TYPE "):
            types[l.split()[2]] = l.split()[3]
        elif l:
            name_labels, value = l.rsplit(" ", 1)
            samples[name_labels] = float(value)
            fam = name_labels.split("{")[0]
            check(fam in types and fam in helps, "sample without HELP/TYPE: %s" % l)
    eq(samples['edge_connections_total{listener="m",route="r"}'], 2, "connections_total")
    eq(samples['edge_bytes_total{listener="m",route="r",direction="up"}'], 12000, "bytes up")
    eq(samples['edge_bytes_total{listener="m",route="r",direction="down"}'], 12000, "bytes down")
    eq(samples['edge_connections_closed_total{listener="m",route="r",cause="client_closed"}'], 2, "closed")
    eq(samples['edge_flows_by_path_total{listener="m",route="r",path="sockmap"}']
       + samples['edge_flows_by_path_total{listener="m",route="r",path="splice"}'], 2, "paths")
    eq(samples["edge_kernel_path_loaded"], 1, "kernel path loaded")
    check('edge_kernel_path_exits_total{listener="m",route="r",reason="client_half_closed"}' in samples,
          "exits by reason")
    eq(types["edge_bytes_total"], "counter", "type")
    eq(types["edge_connections_active"], "gauge", "type")
    try:
        urllib.request.urlopen("http://127.0.0.1:%d/other" % mport, timeout=5)
        raise Fail("/other did not 404")
    except urllib.error.HTTPError as ex:
        eq(ex.code, 404, "status of /other")


@test
def test_route_explain():
    srv = EchoServer()
    pt = free_port()
    e = Edged("""  - name: https
    bind: ["127.0.0.1:%d"]
    routes:
      - name: mail-http
        sni: ["mta-sts.example.com"]
        upstream: "localhost:%d"
      - sni: ["*.example.org"]
        upstream: "127.0.0.1:%d"
        proxy_protocol: v2
  - name: nodefault
    bind: ["127.0.0.1:%d"]
    routes:
      - sni: ["a.example.com"]
        upstream: "127.0.0.1:%d"
""" % (pt, srv.port, srv.port, free_port(), srv.port))
    j = json.loads(e.ctl("-j", "route", "https", "MTA-STS.example.com.").stdout)
    eq(j["route"], "mail-http", "route")
    eq(j["sni"], "mta-sts.example.com", "normalised sni")
    check("127.0.0.1:%d" % srv.port in j["addresses"], "addresses %r" % j["addresses"])
    eq(j["proxy_protocol"], "none", "proxy")
    j = json.loads(e.ctl("-j", "route", "https", "x.y.example.org").stdout)
    eq((j["route"], j["proxy_protocol"], j["authority_tlv"]), ("1", "v2", True), "wildcard route")
    j = json.loads(e.ctl("-j", "route", "https", "example.org").stdout)
    eq(j["route"], None, "example.org matches no route and there is no default")
    j = json.loads(e.ctl("-j", "route", "nodefault").stdout)
    eq(j["action"], "close", "no SNI, no default")
    text = e.ctl("route", "https", "mta-sts.example.com").stdout
    check("route:          mail-http" in text and "upstream:       localhost:%d" % srv.port in text, text)
    r = e.ctl("route", "nosuch", check_rc=False)
    eq(r.returncode, 1, "unknown listener")
    check("no listener named 'nosuch'" in r.stderr, r.stderr)
    eq(len(e.flows()), 0, "route explain connected somewhere")


@test
def test_control_socket_permissions():
    srv = EchoServer()
    pa = free_port()
    e = Edged("""  - name: p
    bind: ["127.0.0.1:%d"]
    routes:
      - upstream: "%s"
""" % (pa, srv.addr), extra="control_socket_group: nogroup\n")
    os.chmod(e.dir, 0o755)
    st = os.stat(e.sock)
    eq(oct(st.st_mode & 0o777), oct(0o660), "mode")
    import grp
    eq(st.st_gid, grp.getgrnam("nogroup").gr_gid, "group")
    nobody = ["setpriv", "--reuid=65534", "--regid=1", "--clear-groups"]  # gid 1: daemon
    r = subprocess.run(nobody + [EDGECTL, "-s", e.sock, "flows"], capture_output=True,
                       text=True, timeout=10)
    eq(r.returncode, 1, "a user outside the group is refused")
    check("permission denied" in r.stderr, r.stderr)
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--groups=65534",
                        EDGECTL, "-s", e.sock, "ping"], capture_output=True, text=True,
                       timeout=10)
    eq(r.returncode, 0, "a member of control_socket_group may: %s" % r.stderr)
    check(e.ping(), "edged still answers")


if __name__ == "__main__":
    run_module("e2e/test_edgectl")
