#!/bin/sh
# SPDX-License-Identifier: MIT
#
# capture.sh - record the first bytes real TLS clients send (their ClientHello)
# into *.bin files next to this script.
#
# For every capture a throwaway python3 TCP listener is bound to 127.0.0.1 on
# a kernel-chosen port; the client is started against it; the listener reads
# TLS records until the whole ClientHello handshake message is in hand (it
# follows the record and handshake length fields), writes exactly those
# records to the file and closes the connection. The client is then stopped
# by its PID. Loopback only, no server certificate, every step bounded by a
# timeout of a few seconds.
#
# Usage: tests/unit/data/clienthello/capture.sh [outdir]
# Needs: python3, openssl, curl, gnutls-cli (Debian: openssl curl gnutls-bin).

set -u

here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM

NAME=mta-sts.example.com

cat >"$tmp/listen.py" <<'EOF'
import socket, sys

out, portfile = sys.argv[1], sys.argv[2]
ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("127.0.0.1", 0))
ls.listen(1)
ls.settimeout(5)
with open(portfile + ".tmp", "w") as f:
    f.write(str(ls.getsockname()[1]))
import os
os.rename(portfile + ".tmp", portfile)

conn, _ = ls.accept()
conn.settimeout(5)
data = b""

def need(n):
    global data
    while len(data) < n:
        chunk = conn.recv(65536)
        if not chunk:
            sys.exit("client closed after %d bytes" % len(data))
        data += chunk

# Walk records of type 22, collecting handshake bytes, until the first
# handshake message (the ClientHello) is complete; keep whole records.
pos, hs = 0, b""
while True:
    need(pos + 5)
    if data[pos] != 22:
        sys.exit("record type %d, not handshake" % data[pos])
    rlen = int.from_bytes(data[pos + 3:pos + 5], "big")
    need(pos + 5 + rlen)
    hs += data[pos + 5:pos + 5 + rlen]
    pos += 5 + rlen
    if len(hs) >= 4 and len(hs) >= 4 + int.from_bytes(hs[1:4], "big"):
        break
conn.close()
ls.close()
with open(out, "wb") as f:
    f.write(data[:pos])
print("%s: %d bytes, handshake %d bytes" % (os.path.basename(out), pos,
                                           4 + int.from_bytes(hs[1:4], "big")))
EOF

cat >"$tmp/pyclient.py" <<'EOF'
import socket, ssl, sys

port, name = int(sys.argv[1]), (sys.argv[2] if len(sys.argv) > 2 else None)
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
s = socket.create_connection(("127.0.0.1", port), timeout=5)
try:
    ctx.wrap_socket(s, server_hostname=name).close()
except (OSError, ssl.SSLError):
    pass
EOF

# capture FILE CLIENT-ARGS... ; "@PORT@" in the client arguments is replaced
# by the listener's port.
capture() {
	file=$1
	shift
	rm -f "$tmp/port"
	python3 "$tmp/listen.py" "$out/$file" "$tmp/port" &
	lpid=$!
	i=0
	while [ ! -s "$tmp/port" ] && [ $i -lt 50 ]; do
		sleep 0.1
		i=$((i + 1))
	done
	if [ ! -s "$tmp/port" ]; then
		echo "$file: listener did not start" >&2
		kill "$lpid" 2>/dev/null
		wait "$lpid" 2>/dev/null
		return 1
	fi
	port=$(cat "$tmp/port")
	args=
	for a in "$@"; do
		a=$(printf '%s' "$a" | sed "s/@PORT@/$port/g")
		args="$args $(printf '%s' "$a" | sed "s/'/'\\\\''/g; s/^/'/; s/\$/'/")"
	done
	eval "set -- $args"
	"$@" </dev/null >"$tmp/client.log" 2>&1 &
	cpid=$!
	wait "$lpid"
	lrc=$?
	kill "$cpid" 2>/dev/null
	wait "$cpid" 2>/dev/null
	if [ $lrc -ne 0 ]; then
		echo "$file: capture failed" >&2
		rm -f "$out/$file"
		return 1
	fi
}

# A comma-separated ALPN list of 40 protocol names of 230 characters each
# (~9.3 KiB of extension data).
alpn9k=$(python3 -c 'print(",".join(("p%02d" % i) + "x" * 227 for i in range(40)))')

rc=0
capture openssl-tls13-sni.bin openssl s_client -connect 127.0.0.1:@PORT@ \
	-servername $NAME || rc=1
capture openssl-tls12-sni.bin openssl s_client -tls1_2 \
	-connect 127.0.0.1:@PORT@ -servername $NAME || rc=1
capture openssl-nosni.bin openssl s_client -connect 127.0.0.1:@PORT@ \
	-noservername || rc=1
capture openssl-alpn-9k.bin openssl s_client -connect 127.0.0.1:@PORT@ \
	-servername $NAME -alpn "$alpn9k" || rc=1
capture openssl-alpn-9k-frag512.bin openssl s_client \
	-connect 127.0.0.1:@PORT@ -servername $NAME -alpn "$alpn9k" \
	-max_send_frag 512 || rc=1
capture openssl-upper-dot.bin openssl s_client -connect 127.0.0.1:@PORT@ \
	-servername MTA-STS.Example.COM. || rc=1
capture curl-sni.bin curl -sk --max-time 5 \
	--resolve $NAME:@PORT@:127.0.0.1 https://$NAME:@PORT@/ || rc=1
capture gnutls-sni.bin gnutls-cli --insecure --sni-hostname $NAME \
	-p @PORT@ 127.0.0.1 || rc=1
capture python-sni.bin python3 "$tmp/pyclient.py" @PORT@ $NAME || rc=1
capture python-nosni.bin python3 "$tmp/pyclient.py" @PORT@ || rc=1
exit $rc
