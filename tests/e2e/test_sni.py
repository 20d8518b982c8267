"""End to end: SNI routing through edged with real TLS clients and servers.

Clients: curl, openssl s_client, gnutls-cli and Python ssl. Upstreams: nginx
TLS servers (one behind a PROXY v2 header), HAProxy and echo_check reporting
the PROXY v2 AUTHORITY TLV. Each server gets a throwaway self-signed
certificate made with openssl in a temporary directory. edged never
terminates TLS, so a server that names the SNI it saw proves the ClientHello
arrived untouched.

Also: ClientHellos over 8 KiB, cut into 76-byte TCP segments (in a network
namespace of our own whose loopback does no GSO, checked with a packet
capture) and over many TLS records, a flood of silent clients against
timeouts.client_hello, malformed hellos, and a listener without a default
route.
"""
import functools
import json
import os
import random
import re
import resource
import select
import selectors
import socket
import ssl
import struct
import subprocess
import threading
import time

import edgetest
from edgetest import *

PY = "/usr/bin/python3"
HELLOS = os.path.join(ROOT, "tests/unit/data/clienthello")
MAIL_NAMES = ["mta-sts.example.com", "autoconfig.example.com",
              "autodiscover.example.com"]
REQ = "GET / HTTP/1.0\r\nHost: %s\r\n\r\n"
# The answer of the nginx servers: "<server> <ssl_server_name>[ addr:port]".
ANSWER = re.compile(r"^(mail|web|wild) ([^ \n]*)(?: ([0-9.]+):([0-9]+))?$")

# The main listener of the brief: three mail names to A (no PROXY header),
# a wildcard to C (PROXY v2), everything else to B.
MAIN_LISTENER = """  - name: tls
    bind: ["127.0.0.1:%(port)d"]
    routes:
      - name: mail-http
        sni: ["mta-sts.example.com", "autoconfig.example.com", "autodiscover.example.com"]
        upstream: "127.0.0.1:%(pa)d"
        proxy_protocol: none
      - sni: ["*.example.org"]
        upstream: "127.0.0.1:%(pc)d"
        proxy_protocol: v2
      - upstream: "127.0.0.1:%(pb)d"
"""
ROUTE_OF = {"mail": "mail-http", "wild": "1", "web": "2"}


# ---------------------------------------------------------------- helpers

_scratch = [None]


def scratch():
    """A temporary directory for this test (removed at its end)."""
    if _scratch[0] is None:
        _scratch[0] = tmpdir()
        at_cleanup(lambda: _scratch.__setitem__(0, None))
    return _scratch[0]


_seq = [0]


def run_tool(cmd, stdin_data=None, timeout=20):
    """Run a command to its end, spawned (so stopped by PID if the test
    fails). stdin_data is given through a file. Returns (rc, out, err)."""
    if stdin_data is not None:
        _seq[0] += 1
        path = os.path.join(scratch(), "stdin.%d" % _seq[0])
        with open(path, "w") as f:
            f.write(stdin_data)
        cmd = ["sh", "-c", 'exec "$@" <"$0"', path] + list(cmd)
    p = spawn(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop(p, timeout=2)
        raise Fail("%s did not finish in %ds" % (" ".join(cmd), timeout))
    return (p.returncode, out.decode("utf-8", "replace"),
            err.decode("utf-8", "replace"))


def make_cert(d):
    """Self-signed EC certificate for example.com / example.org names."""
    cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
    rc, out, err = run_tool([
        "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
        "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out",
        cert, "-days", "2", "-subj", "/CN=example.com", "-addext",
        "subjectAltName=DNS:example.com,DNS:*.example.com,DNS:example.org,"
        "DNS:*.example.org"])
    eq(rc, 0, "openssl req: %s" % err)
    return cert, key


def netns_cmd(netns, cmd):
    return (["ip", "netns", "exec", netns] if netns else []) + list(cmd)


class Nginx:
    """nginx serving TLS in an http block. servers: (port, listen options,
    answer) where the answer is an nginx string with $variables; it is
    returned with status 200 and a newline."""

    def __init__(self, servers, netns=None):
        self.dir = d = tmpdir()
        cert, key = make_cert(d)
        blocks = "".join(
            "  server {\n    listen 127.0.0.1:%d ssl%s;\n"
            "    location / { return 200 \"%s\\n\"; }\n  }\n" % s
            for s in servers)
        conf = os.path.join(d, "nginx.conf")
        with open(conf, "w") as f:
            f.write("""worker_processes 1;
events { worker_connections 4096; }
http {
  access_log %(d)s/access.log;
  client_body_temp_path %(d)s/body;
  proxy_temp_path %(d)s/proxy;
  fastcgi_temp_path %(d)s/fastcgi;
  uwsgi_temp_path %(d)s/uwsgi;
  scgi_temp_path %(d)s/scgi;
  ssl_certificate %(cert)s;
  ssl_certificate_key %(key)s;
  ssl_protocols TLSv1.2 TLSv1.3;
  default_type text/plain;
%(blocks)s}
""" % dict(d=d, cert=cert, key=key, blocks=blocks))
        self.errlog = os.path.join(d, "error.log")
        pidfile = os.path.join(d, "nginx.pid")
        out = open(os.path.join(d, "stdout"), "w")
        self.p = spawn(netns_cmd(netns, [
            "nginx", "-e", self.errlog, "-p", d, "-c", conf, "-g",
            "daemon off; master_process off; pid %s; error_log %s info;"
            % (pidfile, self.errlog)]), stdout=out, stderr=out)
        # nginx writes its pid file once its sockets listen.
        wait_for(lambda: self.p.poll() is not None or os.path.exists(pidfile),
                 10, "nginx to start")
        if self.p.poll() is not None:
            raise Fail("nginx exited with %s: %s" % (self.p.returncode,
                                                     self.log()[-2000:]))

    def log(self):
        try:
            with open(self.errlog) as f:
                return f.read()
        except FileNotFoundError:
            return ""


class HAProxy:
    """HAProxy 2.6 terminating TLS behind accept-proxy; it answers with the
    AUTHORITY TLV, the SNI it saw and the source from the PROXY header."""

    def __init__(self):
        self.port = free_port()
        d = tmpdir()
        cert, key = make_cert(d)
        pem = os.path.join(d, "combined.pem")
        with open(pem, "w") as f:
            f.write(open(cert).read() + open(key).read())
        cfg = os.path.join(d, "haproxy.cfg")
        with open(cfg, "w") as f:
            f.write("""global
  log stderr format raw local0 info
defaults
  mode http
  log global
  timeout connect 5s
  timeout client 10s
  timeout server 10s
frontend fe
  bind 127.0.0.1:%d accept-proxy ssl crt %s
  http-request return status 200 content-type text/plain lf-string "authority=%%[fc_pp_authority] sni=%%[ssl_fc_sni] src=%%[src]:%%[src_port]\\n"
""" % (self.port, pem))
        self.logpath = os.path.join(d, "haproxy.log")
        lf = open(self.logpath, "w")
        self.p = spawn(["haproxy", "-db", "-f", cfg], stdout=lf, stderr=lf)
        wait_for(lambda: self.p.poll() is not None or _listening(self.port),
                 10, "haproxy to listen")
        if self.p.poll() is not None:
            raise Fail("haproxy exited: %s" % open(self.logpath).read())


def _listening(port):
    """Is a TCP socket listening on 127.0.0.1:port? (reads /proc, connects
    nowhere)."""
    want = ":%04X" % port
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            parts = line.split()
            if parts[1] == "0100007F" + want and parts[3] == "0A":
                return True
    return False


_edgeds = []


def edged(listeners, extra=""):
    """Edged, remembered so that sni_test checks how it exits."""
    e = Edged(listeners, extra=extra)
    _edgeds.append(e)
    at_cleanup(lambda: _edgeds.remove(e) if e in _edgeds else None)
    return e


def sni_test(fn):
    """@test, and then: every edged the test started stops on SIGTERM with
    status 0 and without a sanitizer report in its log (run the module
    with EDGE_BUILD=build-asan to make that mean something)."""
    @functools.wraps(fn)
    def run():
        fn()
        for e in list(_edgeds):
            rc = e.stop()
            log = e.log()
            eq(rc, 0, "edged exit status (log tail: %s)" % log[-1500:])
            for bad in ("AddressSanitizer", "LeakSanitizer", "runtime error:"):
                check(bad not in log, "edged log reports %s: %s" % (bad, log[-3000:]))
    return test(run)


def require_kernel(e):
    st = e.stats()
    if not st["kernel_path"]["loaded"]:
        raise Fail("kernel path not loaded: %s" % st["kernel_path"].get("reason"))


def main_setup(extra="", netns=None):
    """nginx A (mail), B (web), C (wild, PROXY header) and edged's main
    listener. Returns (edged, listener port, nginx)."""
    pa, pb, pc = free_port(), free_port(), free_port()
    ngx = Nginx([(pa, "", "mail $ssl_server_name"),
                 (pb, "", "web $ssl_server_name"),
                 (pc, " proxy_protocol",
                  "wild $ssl_server_name $proxy_protocol_addr:"
                  "$proxy_protocol_port")], netns=netns)
    port = free_port()
    listeners = MAIN_LISTENER % dict(port=port, pa=pa, pb=pb, pc=pc)
    e = edged_in(netns, listeners, extra) if netns else edged(listeners, extra)
    return e, port, ngx


def edged_in(netns, listeners, extra=""):
    """Edged, run inside a network namespace (its control socket is a path,
    reachable from here)."""
    w = os.path.join(tmpdir(), "edged-in-netns")
    with open(w, "w") as f:
        f.write('#!/bin/sh\nexec ip netns exec %s %s "$@"\n' % (netns, EDGED))
    os.chmod(w, 0o755)
    old = edgetest.EDGED
    edgetest.EDGED = w
    try:
        return edged(listeners, extra)
    finally:
        edgetest.EDGED = old


def body_of(out):
    """The first line of the HTTP body in a client's output."""
    i = out.find("\r\n\r\n")
    if i < 0:
        return None
    return out[i + 4:].split("\n")[0]


def answer(text, what):
    m = ANSWER.match(text or "")
    if not m:
        raise Fail("%s: unexpected answer %r" % (what, text))
    return m.group(1), m.group(2), m.group(3), m.group(4)


def curl_get(port, name):
    rc, out, err = run_tool([
        "curl", "-sk", "--max-time", "10", "--resolve",
        "%s:%d:127.0.0.1" % (name, port), "https://%s:%d/" % (name, port)])
    return rc, out.rstrip("\n"), err


def openssl_get(port, name, extra=()):
    sni = ["-servername", name] if name else ["-noservername"]
    rc, out, err = run_tool(
        ["openssl", "s_client", "-connect", "127.0.0.1:%d" % port, "-quiet"]
        + sni + list(extra), stdin_data=REQ % (name or "x"))
    return rc, body_of(out), err


def gnutls_get(port, name):
    sni = ["--sni-hostname", name] if name else []
    rc, out, err = run_tool(
        ["gnutls-cli", "--insecure", "-p", str(port), "127.0.0.1"] + sni,
        stdin_data=REQ % (name or "x"))
    return rc, body_of(out), err


def tls_context(alpn=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


def read_all_tls(t):
    data = b""
    while True:
        try:
            b = t.recv(65536)
        except (ssl.SSLEOFError, ssl.SSLZeroReturnError):
            break
        if not b:
            break
        data += b
    return data


def py_connect(port, name, timeout=10, alpn=None):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    return tls_context(alpn).wrap_socket(s, server_hostname=name)


def py_get(port, name, timeout=10, alpn=None):
    """Python ssl: returns (first body line, our (addr, port))."""
    t = py_connect(port, name, timeout, alpn)
    try:
        local = t.getsockname()
        t.sendall((REQ % (name or "x")).encode())
        out = read_all_tls(t).decode("utf-8", "replace")
    finally:
        t.close()
    return body_of(out), local


def refragment(wire, frag):
    """Re-cut the handshake bytes carried by the TLS records in wire into
    records of at most frag bytes."""
    hs, pos = b"", 0
    while pos < len(wire):
        n = int.from_bytes(wire[pos + 3:pos + 5], "big")
        hs += wire[pos + 5:pos + 5 + n]
        pos += 5 + n
    out = b""
    for i in range(0, len(hs), frag):
        piece = hs[i:i + frag]
        out += b"\x16\x03\x01" + len(piece).to_bytes(2, "big") + piece
    return out


def make_hello(name, alpn=None):
    """The ClientHello records Python's ssl would send for name."""
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = tls_context(alpn).wrap_bio(inc, out, server_hostname=name)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()


def tls_over(sock, name, alpn=None, frag=None, pieces=None, delay=0.0,
             request=None, timeout=10):
    """A TLS client over a plain connected socket, through memory BIOs, so
    that the ClientHello is ours to send: re-cut into TLS records of frag
    handshake bytes, written in pieces (a list of sizes, the last one
    repeated) with delay seconds between writes. Then an HTTP request.
    Returns a dict: hello (the bytes written), version, data (the reply)."""
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = tls_context(alpn).wrap_bio(inc, out, server_hostname=name)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    wire = out.read()
    if frag:
        wire = refragment(wire, frag)
    if pieces:
        pos, i = 0, 0
        while pos < len(wire):
            n = pieces[min(i, len(pieces) - 1)]
            sock.sendall(wire[pos:pos + n])
            pos += n
            i += 1
            if delay:
                time.sleep(delay)
    else:
        sock.sendall(wire)
    sock.settimeout(timeout)

    def feed():
        b = sock.recv(65536)
        if not b:
            raise RuntimeError("EOF from the server during the handshake")
        inc.write(b)

    while True:
        try:
            obj.do_handshake()
            break
        except ssl.SSLWantReadError:
            o = out.read()
            if o:
                sock.sendall(o)
            feed()
    o = out.read()
    if o:
        sock.sendall(o)
    obj.write((request or REQ % (name or "x")).encode())
    sock.sendall(out.read())
    data = b""
    while True:
        try:
            d = obj.read(65536)
            if not d:
                break
            data += d
        except ssl.SSLWantReadError:
            b = sock.recv(65536)
            if not b:
                break
            inc.write(b)
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            break
        o = out.read()
        if o:
            sock.sendall(o)
    return {"hello": wire, "version": obj.version(),
            "data": data.decode("utf-8", "replace")}


def tcp_info(sock):
    """(snd_mss, data_segs_out) from TCP_INFO."""
    ti = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 232)
    return struct.unpack_from("I", ti, 16)[0], struct.unpack_from("I", ti, 156)[0]


def parse_kv(line):
    return dict(kv.split("=", 1) for kv in line.split() if "=" in kv)


def close_lines(e, n, timeout=10):
    """Wait for n close lines; returns them parsed."""
    got = wait_for(lambda: len(e.close_lines()) >= n and e.close_lines(),
                   timeout, "%d close lines (have %d)" % (n, len(e.close_lines())))
    return [parse_kv(l) for l in got]


def line_for(lines, local):
    """The close line of the flow from our local (addr, port)."""
    c = "%s:%d" % local[:2]
    m = [l for l in lines if l.get("client") == c]
    eq(len(m), 1, "close lines for client %s" % c)
    return m[0]


def recv_all(s, timeout=5):
    """Read until EOF. Returns (data, how): how is 'eof' or 'reset'."""
    s.settimeout(timeout)
    data = b""
    while True:
        try:
            b = s.recv(65536)
        except ConnectionResetError:
            return data, "reset"
        except socket.timeout:
            return data, "timeout"
        if not b:
            return data, "eof"
        data += b


def raw(port, payload, fin=False):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if payload:
        s.sendall(payload)
    if fin:
        s.shutdown(socket.SHUT_WR)
    return s


def listener_stats(e, i=0):
    """Counters of listener i. The ClientHello counters are read under
    their names "hello_failures" / "hello_timeouts", whichever of those or
    "client_hello_failures" / "client_hello_timeouts" edged reports."""
    st = dict(e.stats()["listeners"][i])
    for k in ("failures", "timeouts"):
        for name in ("hello_" + k, "client_hello_" + k):
            if name in st:
                st["hello_" + k] = st[name]
                break
        else:
            raise Fail("edged stats have no hello_%s counter: %r" % (k, sorted(st)))
    return st


# The four clients, as f(port, name) -> (rc, first body line, stderr), and
# the name each one puts in its ClientHello for a name typed on its command
# line (None: compare without case and trailing dot, the client may change
# them: curl lowercases and drops the dot, gnutls-cli drops the dot).
def _py_client(port, name):
    body, _ = py_get(port, name)
    return 0, body, ""


CLIENTS = [("curl", curl_get, None), ("openssl", openssl_get, "exact"),
           ("gnutls", gnutls_get, None), ("python", _py_client, "exact")]


def norm(name):
    return name.lower().rstrip(".")


def check_answer(client, how, name, body, want_server, what):
    server, seen, _, _ = answer(body, "%s %s" % (client, what))
    eq(server, want_server, "%s %r reached" % (client, name))
    if how == "exact":
        eq(seen, name, "%s: the name %s saw" % (client, want_server))
    else:
        eq(norm(seen), norm(name), "%s: the name %s saw" % (client, want_server))
    return seen


def run_cases(e, port, cases):
    """cases: (name, server). Every client, every name; then every close
    line must carry the normalised SNI and the route."""
    want = []
    for client, fn, how in CLIENTS:
        for name, server in cases:
            rc, body, err = fn(port, name)
            if body is None:
                raise Fail("%s %r: rc=%d, no answer; stderr: %s"
                           % (client, name, rc, err[-500:]))
            check_answer(client, how, name, body, server, "for %r" % name)
            want.append((norm(name), ROUTE_OF[server]))
    lines = close_lines(e, len(want))
    got = sorted((l["sni"], l["route"]) for l in lines)
    eq(got, sorted(want), "(sni, route) of the close lines")
    # openssl s_client answers nginx's close_notify after nginx has closed
    # its socket: nginx's kernel resets, and edged passes that on
    # (upstream_reset). Any other end is a failure.
    check(all(l["end"] in ("client_closed", "upstream_closed", "upstream_reset")
              for l in lines), "ends: %r" % sorted(set(l["end"] for l in lines)))


# ------------------------------------------------------- routing by SNI

@sni_test
def test_mail_names_every_client():
    """The three mail names reach A (no PROXY header) from curl, openssl,
    gnutls-cli and Python, in any case and with a trailing dot; the
    server names the SNI exactly as the client sent it."""
    e, port, _ = main_setup()
    cases = []
    for n in MAIL_NAMES:
        cases.append((n, "mail"))
    cases += [("MTA-STS.Example.com", "mail"), ("AutoDiscover.EXAMPLE.COM", "mail"),
              ("mta-sts.example.com.", "mail"), ("Autoconfig.Example.Com.", "mail")]
    run_cases(e, port, cases)


@sni_test
def test_wildcard_to_proxy_v2_upstream():
    """*.example.org matches one or more labels: a.example.org,
    a.b.example.org, A.Example.ORG. reach C behind a PROXY v2 header, and
    the address C got from the header is the client's own socket."""
    e, port, _ = main_setup()
    run_cases(e, port, [("a.example.org", "wild"), ("a.b.example.org", "wild"),
                        ("A.Example.ORG.", "wild"), ("x-1.y_2.example.org", "wild")])
    for name in ["a.example.org", "a.b.example.org", "deep.er.still.example.org"]:
        body, local = py_get(port, name)
        server, seen, addr, cport = answer(body, "python %s" % name)
        eq((server, seen), ("wild", name), "python %s" % name)
        eq((addr, int(cport)), local, "client address C read from the PROXY header")


@sni_test
def test_other_names_default_route():
    """example.org itself (not matched by *.example.org), lookalikes and
    unknown names reach the default route B."""
    e, port, _ = main_setup()
    run_cases(e, port, [
        ("example.org", "web"), ("example.org.", "web"), ("aexample.org", "web"),
        ("example.org.example.net", "web"), ("unknown.example.net", "web"),
        ("www.mta-sts.example.com", "web"), ("mta-sts.example.com.example.net", "web"),
        ("example.com", "web")])


@sni_test
def test_no_sni_default_route():
    """A ClientHello without SNI goes to the default route: openssl
    -noservername, Python server_hostname=None, curl and gnutls-cli to an
    IP address (they send no SNI for an IP literal)."""
    e, port, _ = main_setup()
    results = []
    rc, body, err = openssl_get(port, None)
    results.append(("openssl -noservername", body, err))
    b, _ = py_get(port, None)
    results.append(("python server_hostname=None", b, ""))
    rc, out, err = run_tool(["curl", "-sk", "--max-time", "10",
                             "https://127.0.0.1:%d/" % port])
    results.append(("curl https://127.0.0.1", out.rstrip("\n"), err))
    rc, body, err = gnutls_get(port, None)
    results.append(("gnutls-cli 127.0.0.1", body, err))
    for what, body, err in results:
        if body is None:
            raise Fail("%s: no answer: %s" % (what, err[-500:]))
        server, seen, _, _ = answer(body, what)
        eq((server, seen), ("web", ""), what)
    lines = close_lines(e, len(results))
    eq(sorted((l["sni"], l["route"]) for l in lines), [("-", "2")] * len(results),
       "(sni, route) of the close lines")


@sni_test
def test_plain_bytes_default_untouched():
    """Bytes that are not TLS go to the default route untouched: nginx B
    answers a plain HTTP request with its 400 page; through an echo
    default the bytes come back exactly."""
    e, port, _ = main_setup()
    s = raw(port, b"GET / HTTP/1.0\r\n\r\n")
    data, how = recv_all(s, 10)
    s.close()
    text = data.decode("latin-1")
    check(text.startswith("HTTP/1.1 400"), "status line: %r" % text[:80])
    check("The plain HTTP request was sent to HTTPS port" in text,
          "nginx's answer: %r" % text[:400])
    eq(how, "eof", "end of the answer")
    line = close_lines(e, 1)[0]
    eq((line["sni"], line["route"]), ("-", "2"), "(sni, route)")

    echo = EchoServer(mode="echo")
    p2 = free_port()
    e2 = edged("""  - name: tls2
    bind: ["127.0.0.1:%d"]
    routes:
      - sni: ["mta-sts.example.com"]
        upstream: "127.0.0.1:1"
      - upstream: "%s"
""" % (p2, echo.addr))
    rnd = random.Random(5)
    payloads = [b"GET / HTTP/1.0\r\n\r\n", b"\x00", b"EHLO x\r\n",
                b"\x15\x03\x01\x00\x02\x02\x28",  # a TLS alert record
                b"\x16\x04\x01\x00\x10" + bytes(16),  # TLS major version 4
                b"\x80\x2e\x01\x03\x01" + rnd.randbytes(43),  # SSLv2-style hello
                bytes(rnd.randrange(256) for _ in range(3000)).replace(b"\x16", b"\x17")]
    for i, pl in enumerate(payloads):
        s = raw(p2, pl, fin=True)
        data, how = recv_all(s)
        s.close()
        eq((data, how), (pl, "eof"), "echo of non-TLS payload %d through the default" % i)
    eq(listener_stats(e2)["hello_failures"], 0, "hello_failures")


def _alpn_list(n=40, size=230):
    return [("p%02d" % i) + "x" * (size - 3) for i in range(n)] + ["http/1.1"]


@sni_test
def test_long_alpn_hello_over_8k():
    """A ClientHello over 8 KiB (a long ALPN list) still routes by SNI:
    openssl s_client -alpn and Python ssl, to A and to C. The size is
    checked from openssl's -msg record header and from edged's flow."""
    e, port, _ = main_setup()
    alpn = _alpn_list()
    msgfile = os.path.join(scratch(), "msg")
    sizes = {}
    for name, server in [("mta-sts.example.com", "mail"), ("a.example.org", "wild"),
                         ("example.net", "web")]:
        rc, body, err = openssl_get(port, name, ["-alpn", ",".join(alpn),
                                                 "-msgfile", msgfile, "-msg"])
        if body is None:
            raise Fail("openssl -alpn %s: no answer: %s" % (name, err[-500:]))
        check_answer("openssl", "exact", name, body, server, "with -alpn")
        msg = open(msgfile).read()
        m = re.search(r">>> [^\n]*RecordHeader \[length 0005\]\n\s+16 03 0[0-9] "
                      r"([0-9a-f]{2}) ([0-9a-f]{2})", msg)
        check(m, "no ClientHello record header in -msg output: %r" % msg[:300])
        size = 5 + int(m.group(1) + m.group(2), 16)
        check(size > 8192, "ClientHello of %d bytes, not over 8 KiB" % size)
        sizes[name] = size
        body, _ = py_get(port, name, alpn=alpn)
        check_answer("python", "exact", name, body, server, "with a long ALPN")
    lines = close_lines(e, 6)
    eq(sorted((l["sni"], l["route"]) for l in lines),
       sorted([("mta-sts.example.com", "mail-http"), ("a.example.org", "1"),
               ("example.net", "2")] * 2), "(sni, route)")

    # edged's view of the size: a sink behind the route, the hello is all
    # that crosses.
    sink = EchoServer(mode="sink")
    p2 = free_port()
    e2 = edged("""  - name: cap
    bind: ["127.0.0.1:%d"]
    routes:
      - sni: ["mta-sts.example.com"]
        upstream: "%s"
""" % (p2, sink.addr))
    p = spawn(["openssl", "s_client", "-connect", "127.0.0.1:%d" % p2,
               "-servername", "mta-sts.example.com", "-alpn", ",".join(alpn),
               "-ign_eof"],
              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    fl = wait_for(lambda: [f for f in e2.flows() if f["state"] == "established"
                           and f["bytes_up"] > 0], 10, "the flow to the sink")[0]
    eq(fl["sni"], "mta-sts.example.com", "sni in flows")
    check(fl["bytes_up"] > 8192, "bytes_up %d: hello not over 8 KiB" % fl["bytes_up"])
    eq(fl["bytes_up"], sizes["mta-sts.example.com"], "hello bytes edged moved vs openssl's record")
    stop(p)


@sni_test
def test_flows_show_sni_route_sockmap():
    """While a TLS connection is open, edgectl flows shows its SNI, route
    (name, or index when unnamed) and path sockmap."""
    e, port, _ = main_setup()
    require_kernel(e)
    conns = []
    for name, route in [("MTA-STS.Example.com", "mail-http"), ("a.b.example.org", "1"),
                        ("example.org", "2"), (None, "2")]:
        t = py_connect(port, name)
        at_cleanup(t.close)
        conns.append((t, name, route))
    by_client = {}
    for f in e.flows():
        by_client[f["client"]] = f
    for t, name, route in conns:
        c = "%s:%d" % t.getsockname()
        check(c in by_client, "no flow for %s: %r" % (c, list(by_client)))
        f = by_client[c]
        eq(f["sni"], norm(name) if name else None, "sni of %s" % c)
        eq(f["route"], route, "route of %r" % name)
        eq(f["path"], "sockmap", "path of %r" % name)
        eq(f["state"], "established", "state of %r" % name)
    # And the connections still work after the look.
    for t, name, route in conns:
        t.sendall((REQ % "x").encode())
        body = body_of(read_all_tls(t).decode())
        server, _, _, _ = answer(body, "python %r" % name)
        eq(ROUTE_OF[server], route, "answer for %r" % name)
        t.close()
    lines = close_lines(e, 4)
    check(all(l["path"] == "sockmap" for l in lines), "paths: %r" % lines)


@sni_test
def test_route_patterns_case_and_dot():
    """Route patterns written in mixed case or with a trailing dot match
    like their lower-case form; a wildcard under a longer suffix too."""
    pa, pb = free_port(), free_port()
    Nginx([(pa, "", "mail $ssl_server_name"), (pb, "", "web $ssl_server_name")])
    port = free_port()
    edged("""  - name: pat
    bind: ["127.0.0.1:%d"]
    routes:
      - name: a
        sni: ["Upper.Example.NET.", "*.Wild.Example.NET"]
        upstream: "127.0.0.1:%d"
      - upstream: "127.0.0.1:%d"
""" % (port, pa, pb))
    for name, server in [("upper.example.net", "mail"), ("UPPER.Example.net.", "mail"),
                         ("x.wild.example.net", "mail"), ("X.Y.WILD.example.NET", "mail"),
                         ("wild.example.net", "web"), ("example.net", "web"),
                         ("x.upper.example.net", "web")]:
        body, _ = py_get(port, name)
        check_answer("python", "exact", name, body, server, "pattern")
        rc, out, err = curl_get(port, name)
        check_answer("curl", None, name, out, server, "pattern")


# --------------------------------------------------- the AUTHORITY TLV

@sni_test
def test_authority_tlv_haproxy():
    """PROXY v2 to HAProxy (accept-proxy, fc_pp_authority): the AUTHORITY
    TLV carries the SNI (normalised: lower case, no trailing dot), the
    source is the client's socket; without SNI there is no TLV."""
    hp = HAProxy()
    port = free_port()
    edged("""  - name: pp
    bind: ["127.0.0.1:%d"]
    routes:
      - name: named
        sni: ["*.example.org", "mta-sts.example.com"]
        upstream: "127.0.0.1:%d"
        proxy_protocol: v2
      - upstream: "127.0.0.1:%d"
        proxy_protocol: v2
""" % (port, hp.port, hp.port))
    for name, want in [("a.example.org", "a.example.org"),
                       ("MTA-STS.Example.COM.", "mta-sts.example.com"),
                       ("other.example.net", "other.example.net"), (None, "")]:
        body, local = py_get(port, name)
        kv = parse_kv(body or "")
        check(body and body.startswith("authority="), "haproxy answered %r" % body)
        eq(body.split()[0], "authority=" + want, "AUTHORITY TLV for %r" % name)
        eq(kv.get("sni", ""), name or "", "SNI HAProxy saw")
        eq(kv["src"], "%s:%d" % local, "source in the PROXY header")
    rc, out, err = curl_get(port, "Sub.Example.ORG")
    eq(out.split()[0] if out else out, "authority=sub.example.org", "curl: %s" % err)


@sni_test
def test_authority_tlv_echo_check():
    """PROXY v2 to echo_check -p: per connection it logs authority=NAME;
    the ClientHello after the header comes back byte for byte."""
    srv = EchoServer(mode="echo", proxy=True)
    port = free_port()
    edged("""  - name: pp
    bind: ["127.0.0.1:%d"]
    routes:
      - name: mail
        sni: ["mta-sts.example.com"]
        upstream: "%s"
        proxy_protocol: v2
      - upstream: "%s"
        proxy_protocol: v2
""" % (port, srv.addr, srv.addr))
    cases = [(open(os.path.join(HELLOS, "openssl-tls13-sni.bin"), "rb").read(),
              "mta-sts.example.com"),
             (open(os.path.join(HELLOS, "openssl-upper-dot.bin"), "rb").read(),
              "mta-sts.example.com"),
             (open(os.path.join(HELLOS, "gnutls-sni.bin"), "rb").read(),
              "mta-sts.example.com"),
             (open(os.path.join(HELLOS, "openssl-alpn-9k-frag512.bin"), "rb").read(),
              "mta-sts.example.com"),
             (make_hello("x.example.org"), "x.example.org"),
             (make_hello("a" * 63 + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * 57),
              "a" * 63 + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * 57),
             (open(os.path.join(HELLOS, "openssl-nosni.bin"), "rb").read(), "-"),
             (make_hello(None), "-"),
             (b"GET / HTTP/1.0\r\n\r\n", "-")]
    locals_ = []
    for hello, want in cases:
        s = raw(port, hello, fin=True)
        locals_.append(s.getsockname())
        data, how = recv_all(s)
        s.close()
        eq(how, "eof", "end of the echo")
        check(data == hello, "echo of the hello for %s differs (%d vs %d bytes)"
              % (want, len(data), len(hello)))
    conns = wait_for(lambda: len(srv.conns()) >= len(cases) and srv.conns(), 5,
                     "echo_check log lines")
    by_src = {c["src"]: c for c in conns}
    for (hello, want), local in zip(cases, locals_):
        c = by_src.get("%s:%d" % local)
        check(c, "no upstream connection from %s:%d: %r" % (local + (conns,)))
        eq((c["proxy"], c["authority"]), ("v2", want), "header for sni %s" % want)


# ----------------------------------------- a ClientHello in tiny segments

def netns_create():
    """A network namespace of our own with loopback up and no GSO on it
    (gso_max_segs 1), so every TCP segment is its own packet. Deleted at
    cleanup, after the processes inside it are stopped."""
    ns = "edgetest-sni-%d" % os.getpid()
    if os.path.exists("/run/netns/" + ns):  # left by a killed earlier run
        run_tool(["ip", "netns", "del", ns])
    rc, out, err = run_tool(["ip", "netns", "add", ns])
    if rc:
        raise Skip("cannot create a network namespace: %s" % err.strip())
    inside = []

    def cleanup():
        for p in reversed(inside):
            stop(p)
        run_tool(["ip", "netns", "del", ns])
    at_cleanup(cleanup)
    for cmd in (["ip", "-n", ns, "link", "set", "lo", "up"],
                ["ip", "-n", ns, "link", "set", "lo", "gso_max_segs", "1"]):
        rc, out, err = run_tool(cmd)
        eq(rc, 0, "%s: %s" % (" ".join(cmd), err))
    return ns, inside


def netns_client_main(args):
    """Run inside the namespace (see test_hello_in_tiny_segments): a TLS
    client with TCP_MAXSEG 88 and a packet capture on lo; prints JSON."""
    a = json.loads(args)
    cap = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
    cap.setsockopt(socket.SOL_SOCKET, 33, 32 << 20)  # SO_RCVBUFFORCE
    cap.bind(("lo", 0))
    cap.setblocking(False)
    s = socket.socket()
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, a["mss"])
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.settimeout(10)
    s.connect(("127.0.0.1", a["port"]))
    lport = s.getsockname()[1]
    mss0, segs0 = tcp_info(s)
    r = tls_over(s, a["name"], alpn=a.get("alpn"), frag=a.get("frag"))
    s.close()
    time.sleep(0.1)
    segs = {}
    while True:
        try:
            pkt, addr = cap.recvfrom(65536)
        except BlockingIOError:
            break
        if addr[2] == socket.PACKET_OUTGOING:  # lo: each packet twice
            continue
        ip = pkt[14:]
        ihl = (ip[0] & 15) * 4
        if ip[9] != 6:
            continue
        tcp = ip[ihl:]
        sport, dport, seq = struct.unpack_from("!HHI", tcp)
        plen = struct.unpack_from("!H", ip, 2)[0] - ihl - (tcp[12] >> 4) * 4
        if sport == lport and dport == a["port"] and plen > 0:
            segs[seq] = plen
    sizes = [segs[k] for k in sorted(segs)]  # no wrap in a few KiB
    n, tot = 0, 0
    while tot < len(r["hello"]) and n < len(sizes):
        tot += sizes[n]
        n += 1
    print(json.dumps({"local": lport, "snd_mss": mss0, "hello_len": len(r["hello"]),
                      "hello_segments": sizes[:n], "version": r["version"],
                      "body": body_of(r["data"])}))


@sni_test
def test_hello_in_tiny_segments():
    """In a namespace whose loopback does no GSO, a client with TCP_MAXSEG
    88 sends its ClientHello in 76-byte segments (checked by a packet
    capture next to it): a 517-byte hello, a 9.5 KiB one (long ALPN) and one
    also cut into 61-byte TLS records. edged reassembles, routes by SNI and
    the TLS handshake with nginx completes."""
    ns, inside = netns_create()
    e, port, ngx = main_setup(netns=ns)
    inside += [e.p, ngx.p]
    require_kernel(e)
    here = os.path.dirname(os.path.abspath(__file__))
    cases = [dict(name="mta-sts.example.com", want="mail"),
             dict(name="a.b.example.org", want="wild"),
             dict(name="Autoconfig.Example.com", want="mail", alpn=_alpn_list()),
             dict(name="autodiscover.example.com", want="mail", frag=61),
             dict(name="x.example.org", want="wild", alpn=_alpn_list(), frag=200)]
    for c in cases:
        args = dict(port=port, mss=88, name=c["name"], alpn=c.get("alpn"),
                    frag=c.get("frag"))
        code = ("import sys; sys.path[:0] = [%r, %r]; import test_sni; "
                "test_sni.netns_client_main(sys.argv[1])" % (here, os.path.join(ROOT, "tests/lib")))
        rc, out, err = run_tool(["ip", "netns", "exec", ns, PY, "-c", code,
                                 json.dumps(args)], timeout=30)
        eq(rc, 0, "client in the namespace: %s" % err[-1500:])
        r = json.loads(out.strip().splitlines()[-1])
        what = "%s (%d-byte hello)" % (c["name"], r["hello_len"])
        check(r["snd_mss"] <= 88, "%s: snd_mss %d" % (what, r["snd_mss"]))
        segs = r["hello_segments"]
        check(sum(segs) >= r["hello_len"] and max(segs) <= 88,
              "%s: hello segments %r" % (what, segs))
        check(len(segs) >= r["hello_len"] // 88 and len(segs) >= 6,
              "%s: only %d segments" % (what, len(segs)))
        server, seen, addr, cport = answer(r["body"], what)
        eq((server, seen), (c["want"], c["name"]), what)
        if server == "wild":
            eq(int(cport), r["local"], "%s: client port in the PROXY header" % what)
        if c.get("alpn"):
            check(r["hello_len"] > 8192, "%s: not over 8 KiB" % what)
        print("  %s: %d bytes in %d segments of <= %d bytes, %s" % (
            c["name"], r["hello_len"], len(segs), max(segs), r["version"]))
    lines = close_lines(e, len(cases))
    eq(sorted((l["sni"], l["route"]) for l in lines),
       sorted((norm(c["name"]), ROUTE_OF[c["want"]]) for c in cases), "(sni, route)")
    check(all(l["path"] == "sockmap" for l in lines), "paths: %r" % [l["path"] for l in lines])


@sni_test
def test_hello_trickled_on_loopback():
    """On the host's loopback, TCP_MAXSEG 88 alone does not split what the
    receiver reads (GSO keeps the segments in one packet), so the hello is
    also written a few bytes at a time, 2 ms apart: the record header byte
    by byte, then 7-byte pieces, and as 1-byte TLS records. Each arrives
    in its own reads; edged still routes and the handshake completes."""
    e, port, _ = main_setup()
    for name, want, frag, pieces in [
            ("mta-sts.example.com", "mail", None, [1, 1, 1, 1, 1, 1, 1, 1, 7]),
            ("q.example.org", "wild", None, [3, 2, 4, 50]),
            ("autoconfig.example.com", "mail", 1, [6, 5, 6, 12, 60])]:
        s = socket.socket()
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 88)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.settimeout(10)
        s.connect(("127.0.0.1", port))
        at_cleanup(s.close)
        t0 = time.time()
        r = tls_over(s, name, frag=frag, pieces=pieces, delay=0.002)
        mss, segs = tcp_info(s)
        s.close()
        check(mss <= 88, "snd_mss %d" % mss)
        check(segs >= len(r["hello"]) // 88, "data_segs_out %d for %d bytes" % (segs, len(r["hello"])))
        server, seen, _, _ = answer(body_of(r["data"]), name)
        eq((server, seen), (want, name), "trickled hello for %s" % name)
        print("  %s: %d hello bytes trickled in %.2fs, %s" % (
            name, len(r["hello"]), time.time() - t0, r["version"]))
    lines = close_lines(e, 3)
    eq(sorted(l["route"] for l in lines), ["1", "mail-http", "mail-http"], "routes")


# ------------------------------------------------ a flood of silent clients

@sni_test
def test_silent_flood_hello_timeout():
    """2000 connections that send nothing (timeouts.client_hello 2s): real
    handshakes keep completing quickly meanwhile; after ~2 s edged closes
    each silent one with a FIN, counts it in hello_timeouts and logs it with
    end=client_hello_timeout."""
    N = 2000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < N + 1000:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, N + 4000), hard))
        at_cleanup(lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard)))
    e, port, _ = main_setup(extra="timeouts:\n  client_hello: 2s\n")
    silent = []

    def close_all():
        for s, _ in silent:
            s.close()
    at_cleanup(close_all)
    t_start = time.time()
    for i in range(N):
        s = socket.socket()
        s.setblocking(False)
        err = s.connect_ex(("127.0.0.1", port))
        check(err in (0, 115), "connect %d: errno %d" % (i, err))  # EINPROGRESS
        silent.append((s, time.time()))
    t_sent = time.time()
    wait_for(lambda: listener_stats(e)["accepted"] >= N, 5, "edged to accept %d" % N)
    t_acc = time.time()

    # Real handshakes all through the flood and the mass close.
    lat, errors, stop_ev = [], [], threading.Event()

    def worker(k):
        names = ["mta-sts.example.com", "a.example.org", "www.example.net"]
        i = 0
        while not stop_ev.is_set():
            name = names[(i + k) % 3]
            t0 = time.time()
            try:
                body, _ = py_get(port, name, timeout=5)
                server, seen, _, _ = answer(body, name)
                if seen != name:
                    errors.append("%s: saw %r" % (name, seen))
            except Exception as ex:
                errors.append("%s: %r" % (name, ex))
            lat.append(time.time() - t0)
            i += 1
            time.sleep(0.02)
    th = [threading.Thread(target=worker, args=(k,)) for k in range(3)]
    for t in th:
        t.start()
    try:
        fl = e.flows()
        hello_state = sum(1 for f in fl if f["state"] == "client_hello")
        check(hello_state >= N - 10, "flows in client_hello: %d" % hello_state)
        curl_lat = []
        for i in range(5):
            t0 = time.time()
            rc, out, err = curl_get(port, "autoconfig.example.com")
            curl_lat.append(time.time() - t0)
            eq(out, "mail autoconfig.example.com", "curl during the flood: %s" % err)

        sel = selectors.DefaultSelector()
        for s, t in silent:
            sel.register(s, selectors.EVENT_READ, t)
        ages, bad = [], []
        deadline = t_sent + 6
        while len(ages) + len(bad) < N and time.time() < deadline:
            for key, _ in sel.select(0.2):
                s, t = key.fileobj, key.data
                try:
                    b = s.recv(1)
                    if b:
                        bad.append("data %r" % b)
                    else:
                        ages.append(time.time() - t)
                except ConnectionResetError:
                    bad.append("reset")
                except BlockingIOError:
                    continue
                sel.unregister(s)
        sel.close()
        time.sleep(0.5)  # handshakes after the mass close too
    finally:
        stop_ev.set()
        for t in th:
            t.join(15)
    check(not bad, "silent clients saw %d non-EOF ends: %r" % (len(bad), bad[:5]))
    eq(len(ages), N, "silent clients closed by edged within 6 s")
    check(min(ages) >= 1.9, "a silent client was closed after %.2fs" % min(ages))
    check(max(ages) <= 3.5, "a silent client was closed only after %.2fs" % max(ages))
    check(not errors, "handshakes during the flood: %r" % errors[:5])
    check(len(lat) >= 20, "only %d handshakes during the flood" % len(lat))
    check(max(lat) < 1.0, "slowest handshake during the flood %.2fs" % max(lat))
    check(max(curl_lat) < 2.0, "slowest curl during the flood %.2fs" % max(curl_lat))
    st = listener_stats(e)
    eq(st["hello_timeouts"], N, "hello_timeouts")
    eq(st["closed"]["client_hello_timeout"], N, "closed.client_hello_timeout")
    eq(st["hello_failures"], 0, "hello_failures")
    lines = close_lines(e, N + len(lat) + 5)
    to = [l for l in lines if l["end"] == "client_hello_timeout"]
    eq(len(to), N, "close lines with end=client_hello_timeout")
    check(all(l["sni"] == "-" and l["route"] == "-" for l in to), "timeouts: %r" % to[:2])
    durs = sorted(int(l["duration_ms"]) for l in to)
    check(durs[0] >= 2000 and durs[-1] <= 3000, "durations %d..%d ms" % (durs[0], durs[-1]))
    wait_for(lambda: listener_stats(e)["active"] == 0, 5, "no active flows")
    print("  %d silent: accepted in %.2fs, closed after %.2f..%.2fs; %d handshakes "
          "meanwhile, median %.0f ms, max %.0f ms" % (
              N, t_acc - t_start, min(ages), max(ages), len(lat),
              1000 * sorted(lat)[len(lat) // 2], 1000 * max(lat)))


@sni_test
def test_client_hello_timeout_is_a_deadline():
    """timeouts.client_hello bounds the whole ClientHello, not the gap
    between bytes: a hello trickled a byte every 150 ms is closed at about
    1 s (end=client_hello_timeout); one that completes in 0.5 s, slowly,
    is routed."""
    e, port, _ = main_setup(extra="timeouts:\n  client_hello: 1s\n")
    hello = make_hello("mta-sts.example.com")
    s = raw(port, b"")
    trickler = s.getsockname()
    t0 = time.time()
    sent, how = 0, None
    while time.time() - t0 < 4 and how is None:
        s.sendall(hello[sent:sent + 1])
        sent += 1
        r, _, _ = select_read(s, 0.15)
        if r:
            try:
                how = "eof" if s.recv(1) == b"" else "data"
            except ConnectionResetError:
                how = "reset"
    dt = time.time() - t0
    s.close()
    eq(how, "eof", "trickling client after %d bytes" % sent)
    check(0.9 <= dt <= 1.6, "trickling client closed after %.2fs" % dt)
    st = listener_stats(e)
    eq(st["hello_timeouts"], 1, "hello_timeouts")
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    slow = s.getsockname()
    t0 = time.time()
    r = tls_over(s, "mta-sts.example.com", pieces=[20], delay=0.02)
    s.close()
    check(time.time() - t0 > 0.4, "the slow hello was not slow")
    eq(body_of(r["data"]), "mail mta-sts.example.com", "slow but complete hello")
    lines = close_lines(e, 2)
    l = line_for(lines, trickler)
    eq((l["end"], l["bytes_up"]), ("client_hello_timeout", "0"), "the trickler's close line")
    check(1000 <= int(l["duration_ms"]) <= 1500, "duration %s ms" % l["duration_ms"])
    l = line_for(lines, slow)
    eq((l["route"], l["sni"]), ("mail-http", "mta-sts.example.com"), "the slow hello's route")


def select_read(s, timeout):
    return select.select([s], [], [], timeout)


# ------------------------------------------------------------ bad input

def bad_setup():
    """A listener whose routes both go to echo servers, so that anything
    edged forwards shows: the SNI route and the default."""
    named, dflt = EchoServer(mode="echo"), EchoServer(mode="echo")
    port = free_port()
    e = edged("""  - name: bad
    bind: ["127.0.0.1:%d"]
    routes:
      - name: m
        sni: ["mta-sts.example.com"]
        upstream: "%s"
      - upstream: "%s"
""" % (port, named.addr, dflt.addr))
    return e, port, named, dflt


def check_served(port):
    hello = open(os.path.join(HELLOS, "openssl-tls13-sni.bin"), "rb").read()
    s = raw(port, hello, fin=True)
    data, how = recv_all(s)
    s.close()
    check(data == hello and how == "eof", "a good client after bad ones: %d bytes, %s"
          % (len(data), how))


@sni_test
def test_bad_hellos_closed_and_counted():
    """A truncated ClientHello then FIN, a record header claiming a
    20000-byte record, a handshake header claiming 20000 bytes, a
    ClientHello of garbage: edged closes at once (FIN, not after the
    client_hello timeout), counts hello_failures, logs one close line,
    forwards nothing, and serves the next client."""
    e, port, named, dflt = bad_setup()
    hello = open(os.path.join(HELLOS, "openssl-tls13-sni.bin"), "rb").read()
    rnd = random.Random(20000)
    cases = [
        ("truncated hello + FIN", hello[:100], True, "client_closed"),
        ("hello cut inside the SNI + FIN", hello[:hello.find(b"mta-sts") + 3], True,
         "client_closed"),
        ("record of 20000 bytes", b"\x16\x03\x01" + (20000).to_bytes(2, "big")
         + b"\x01" + (19996).to_bytes(3, "big") + rnd.randbytes(300), False,
         "client_hello_error"),
        ("handshake of 20000 bytes", b"\x16\x03\x01\x01\x00\x01"
         + (20000).to_bytes(3, "big") + rnd.randbytes(252), False, "client_hello_error"),
        ("garbage ClientHello", b"\x16\x03\x01\x00\xc8\x01\x00\x00\xc4"
         + rnd.randbytes(196), False, "client_hello_error"),
        ("record length 0", b"\x16\x03\x01\x00\x00" + rnd.randbytes(100), False,
         "client_hello_error"),
    ]
    locals_ = []
    for i, (what, payload, fin, end) in enumerate(cases):
        t0 = time.time()
        s = raw(port, payload, fin=fin)
        locals_.append(s.getsockname())
        data, how = recv_all(s, 5)
        s.close()
        dt = time.time() - t0
        eq((data, how), (b"", "eof"), what)
        check(dt < 1.0, "%s: closed after %.2fs" % (what, dt))
        eq(listener_stats(e)["hello_failures"], i + 1, "hello_failures after %s" % what)
        check_served(port)
    lines = close_lines(e, 2 * len(cases))
    log = e.log()
    for (what, payload, fin, end), local in zip(cases, locals_):
        l = line_for(lines, local)
        eq((l["end"], l["route"], l["upstream"], l["bytes_up"]), (end, "-", "-", "0"),
           "close line of %s" % what)
        # One line per flow: the close line carries the reason.
        check(re.search(r"flow id=%s .* end=\S+ reason=ClientHello \w+" % l["id"], log),
              "no reason in the close line for %s (flow %s)" % (what, l["id"]))
        check(not re.search(r"flow %s: " % l["id"], log),
              "a second log line for %s (flow %s)" % (what, l["id"]))
    st = listener_stats(e)
    eq(st["hello_failures"], len(cases), "hello_failures")
    eq(st["active"], 0, "active flows")
    eq(len(dflt.conns()), 0, "connections edged made to the default route")
    eq(len(named.conns()), len(cases), "connections to the SNI route (the good ones)")


def garbage_rule(g):
    """What edged does with bytes g that start with 16 03 01, from their
    first six bytes: a record length of 0 or over 2^14+2048 is a broken
    record ("closed"); a valid record header followed by a handshake type
    other than ClientHello (1) is not the start of a TLS client and goes to
    the default route like any non-TLS bytes ("forwarded", as nginx's
    ssl_preread and HAProxy's req.ssl_sni do; tests/unit/test_tls.c pins it:
    "hs type 2" -> not_tls); a ClientHello type with garbage after it is a
    bad ClientHello ("closed")."""
    n = int.from_bytes(g[3:5], "big")
    if n == 0 or n > 16384 + 2048 or len(g) < 6:
        return "closed"
    return "forwarded" if g[5] != 1 else "closed"


@sni_test
def test_garbage_after_tls_record_header():
    """200 random byte strings that start with 16 03 01 (a TLS handshake
    record header), then FIN. Each is either closed by edged at once (EOF,
    counted in hello_failures, one close line with no route) or, when its
    sixth byte is not a ClientHello type, passed to the default route byte
    for byte (see garbage_rule). Never anything else, and edged keeps
    serving."""
    e, port, named, dflt = bad_setup()
    N = 200
    got = {"closed": 0, "forwarded": 0}
    locals_ = []
    for seed in range(N):
        rnd = random.Random(seed)
        g = b"\x16\x03\x01" + rnd.randbytes(rnd.randrange(2, 600))
        if seed % 4 == 0:  # a ClientHello type more often than 1 in 256
            g = g[:5] + b"\x01" + g[6:]
        want = garbage_rule(g)
        t0 = time.time()
        s = raw(port, g, fin=True)
        locals_.append((s.getsockname(), want))
        data, how = recv_all(s, 5)
        s.close()
        eq(how, "eof", "seed %d: end" % seed)
        check(time.time() - t0 < 1.0, "seed %d: took %.2fs" % (seed, time.time() - t0))
        if want == "forwarded":
            check(data == g, "seed %d (%s...): want it forwarded untouched, got %d "
                  "bytes back" % (seed, g[:8].hex(" "), len(data)))
        else:
            check(data == b"", "seed %d (%s...): want it closed, got %d bytes back "
                  "(forwarded)" % (seed, g[:8].hex(" "), len(data)))
        got[want] += 1
    check_served(port)
    print("  %r" % got)
    check(got["closed"] >= 50 and got["forwarded"] >= 20, "case mix: %r" % got)
    st = listener_stats(e)
    eq(st["hello_failures"], got["closed"], "hello_failures")
    eq(len(dflt.conns()), got["forwarded"], "connections to the default route")
    lines = close_lines(e, N + 1)
    for local, want in locals_:
        l = line_for(lines, local)
        if want == "closed":
            check(l["end"] in ("client_hello_error", "client_closed") and l["route"] == "-"
                  and l["bytes_up"] == "0", "closed garbage: %r" % l)
        else:
            eq((l["route"], l["sni"]), ("1", "-"), "forwarded garbage's route")


@sni_test
def test_no_default_route_closes():
    """A listener with SNI routes and no default: an unmatched name, no SNI
    and non-TLS bytes are closed (EOF) and logged with end=no_route; a
    matching name still works."""
    pa = free_port()
    Nginx([(pa, "", "mail $ssl_server_name")])
    port = free_port()
    e = edged("""  - name: nodefault
    bind: ["127.0.0.1:%d"]
    routes:
      - name: mail-http
        sni: ["mta-sts.example.com", "*.example.org"]
        upstream: "127.0.0.1:%d"
""" % (port, pa))
    cases = [("other.example.com", make_hello("other.example.com"), "other.example.com"),
             ("example.org", make_hello("example.org"), "example.org"),
             ("no SNI", make_hello(None), "-"),
             ("plain HTTP", b"GET / HTTP/1.0\r\n\r\n", "-")]
    locals_ = []
    for what, payload, sni in cases:
        s = raw(port, payload)
        locals_.append(s.getsockname())
        data, how = recv_all(s, 5)
        s.close()
        eq((data, how), (b"", "eof"), what)
    rc, out, err = curl_get(port, "unmatched.example.net")
    check(rc != 0 and out == "", "curl unmatched: rc=%d out=%r" % (rc, out))
    rc, out, err = curl_get(port, "mta-sts.example.com")
    eq(out, "mail mta-sts.example.com", "curl matched: %s" % err)
    body, _ = py_get(port, "Z.example.org")
    eq(body, "mail Z.example.org", "python matched")
    lines = close_lines(e, len(cases) + 3)
    for (what, payload, sni), local in zip(cases, locals_):
        l = line_for(lines, local)
        eq((l["end"], l["sni"], l["route"], l["upstream"]), ("no_route", sni, "-", "-"),
           "close line of %s" % what)
    st = listener_stats(e)
    eq(st["closed"]["no_route"], len(cases) + 1, "closed.no_route")
    eq(st["hello_failures"], 0, "hello_failures")


if __name__ == "__main__":
    run_module("e2e/test_sni")
