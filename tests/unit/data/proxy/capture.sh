#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# capture.sh - record real HAProxy PROXY protocol headers as golden test data
# for tests/unit/test_proxy.c.
#
# Usage: tests/unit/data/proxy/capture.sh [OUTDIR]   (default: this directory)
#
# Everything runs on loopback (127.0.0.1, [::1] and UNIX sockets in a private
# temp dir) with a throwaway haproxy config. Every process started here is
# bounded by timeout(1) and is stopped by its PID on exit. Client source ports
# are pinned so the captured bytes are reproducible; the addresses each file
# encodes are written to OUTDIR/captures.txt.
#
# Needs: haproxy (Debian 12: 2.6), socat, timeout, ss.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here}
for t in haproxy socat timeout; do
	command -v "$t" >/dev/null || { echo "capture.sh: $t not found" >&2; exit 2; }
done

tmp=$(mktemp -d /tmp/proxy-capture.XXXXXX)
pids=()
cleanup() {
	local p
	for p in "${pids[@]}"; do
		kill "$p" 2>/dev/null || true
	done
	for p in "${pids[@]}"; do
		wait "$p" 2>/dev/null || true
	done
	rm -rf "$tmp"
}
trap cleanup EXIT

# Pick a base port with 40 free ports after it (listening or not).
port_free() { ! ss -Htan "( sport = :$1 )" 2>/dev/null | grep -q .; }
base=
for _ in $(seq 1 50); do
	b=$((20000 + (RANDOM % 2000) * 10))
	ok=1
	for i in $(seq 0 39); do
		port_free $((b + i)) || { ok=0; break; }
	done
	[ "$ok" = 1 ] && { base=$b; break; }
done
[ -n "$base" ] || { echo "capture.sh: no free port range" >&2; exit 2; }

# hex string -> raw bytes on stdout
hexbytes() { printf '%b' "$(printf '%s' "$1" | sed 's/../\\x&/g')"; }
hex16() { printf '%04x' "$1"; }

sig=0d0a0d0a000d0a515549540a

# Input header for the authority captures (HAProxy's accept-proxy frontend
# takes addresses and the authority TLV from it and forwards them).
auth4=www.example.com
auth4_in=${sig}2111$(hex16 $((12 + 3 + ${#auth4})))
auth4_in+=c000020ac6336414c35001bb
auth4_in+=02$(hex16 ${#auth4})$(printf '%s' "$auth4" | od -An -v -tx1 | tr -d ' \n')

lbl() { printf "%0${2}d" 0 | tr 0 "$1"; }
auth6="$(lbl a 63).$(lbl b 63).$(lbl c 63).$(lbl d 63)"	# 255 bytes
auth6_in=${sig}2121$(hex16 $((36 + 3 + ${#auth6})))
auth6_in+=20010db8000000000000000000000010
auth6_in+=20010db8000000010000000000000020
auth6_in+=c35120fb
auth6_in+=02$(hex16 ${#auth6})$(printf '%s' "$auth6" | od -An -v -tx1 | tr -d ' \n')

# name ver fam client-addr(src) sport listen-addr(dst) dport authority expect
# dst/dport are filled in from the frontend port below; for the authority
# and mixed captures the addresses are the ones HAProxy was told about.
caps=(
	"v1_tcp4   1 tcp4  127.0.0.1 40011"
	"v2_tcp4   2 tcp4  127.0.0.1 40012"
	"v1_tcp6   1 tcp6  ::1       40013"
	"v2_tcp6   2 tcp6  ::1       40014"
	"v2_auth4  2 auth4 127.0.0.1 40015"
	"v2_auth6  2 auth6 127.0.0.1 40016"
	"v1_unix   1 unix  -         0"
	"v2_unix   2 unix  -         0"
	"v1_mixed  1 mixed ::1       40019"
	"v2_mixed  2 mixed ::1       40020"
	"v2_tlvs   2 tlvs  127.0.0.1 40021"
)

cfg=$tmp/haproxy.cfg
cat >"$cfg" <<CFG
global
	nbthread 1
	maxconn 100

defaults
	mode tcp
	timeout connect 2s
	timeout client 5s
	timeout server 5s
CFG

i=0
for c in "${caps[@]}"; do
	read -r name ver fam caddr sport <<<"$c"
	fe=$((base + i)); sv=$((base + 20 + i)); i=$((i + 1))
	opts=send-proxy
	[ "$ver" = 2 ] && opts=send-proxy-v2
	{
		echo "listen $name"
		case $fam in
		tcp4) echo "	bind 127.0.0.1:$fe" ;;
		tcp6) echo "	bind [::1]:$fe v6only" ;;
		auth4|auth6)
			echo "	bind 127.0.0.1:$fe accept-proxy"
			opts="$opts proxy-v2-options authority" ;;
		tlvs)
			echo "	bind 127.0.0.1:$fe accept-proxy"
			echo "	unique-id-format edge-%ci:%cp"
			opts="$opts proxy-v2-options crc32c,authority,unique-id" ;;
		unix) echo "	bind unix@$tmp/$name.sock" ;;
		mixed)
			echo "	bind [::1]:$fe v6only"
			echo "	tcp-request connection set-src ipv4(192.0.2.1)"
			echo "	tcp-request connection set-src-port int(40100)" ;;
		esac
		echo "	server s 127.0.0.1:$sv $opts"
	} >>"$cfg"
done

haproxy -c -q -f "$cfg"
timeout 60 haproxy -db -f "$cfg" >"$tmp/haproxy.log" 2>&1 &
pids+=("$!")
hapid=$!
# wait until the first frontend listens
for _ in $(seq 1 50); do
	port_free "$base" || break
	sleep 0.1
done
kill -0 "$hapid" || { cat "$tmp/haproxy.log" >&2; exit 1; }

meta=$tmp/captures.txt
{
	echo "# Written by capture.sh from $(haproxy -v | head -1 | cut -d' ' -f1-3)."
	echo "# name ver src sport dst dport authority expect"
	echo "# '-' = AF_UNIX (no address); expect: exact = proxy_build must produce"
	echo "# the same bytes, v1-unknown = by design proxy_build says PROXY UNKNOWN,"
	echo "# parse = only proxy_parse is checked (TLVs proxy_build does not send)."
} >"$meta"

i=0
for c in "${caps[@]}"; do
	read -r name ver fam caddr sport <<<"$c"
	fe=$((base + i)); sv=$((base + 20 + i)); i=$((i + 1))
	timeout 15 socat -u "TCP4-LISTEN:$sv,bind=127.0.0.1,reuseaddr" \
		"CREATE:$tmp/$name.bin" &
	rpid=$!
	pids+=("$rpid")
	for _ in $(seq 1 50); do
		port_free "$sv" || break
		sleep 0.1
	done

	payload=
	src=$caddr sp=$sport dst=$caddr dp=$fe auth=- expect=exact
	case $fam in
	tcp4) to="TCP4:127.0.0.1:$fe,bind=127.0.0.1:$sport,reuseaddr" ;;
	tcp6) to="TCP6:[::1]:$fe,bind=[::1]:$sport,reuseaddr" ;;
	auth4)
		to="TCP4:127.0.0.1:$fe,bind=127.0.0.1:$sport,reuseaddr"
		payload=$auth4_in
		src=192.0.2.10 sp=50000 dst=198.51.100.20 dp=443 auth=$auth4 ;;
	tlvs)
		to="TCP4:127.0.0.1:$fe,bind=127.0.0.1:$sport,reuseaddr"
		payload=$auth4_in
		src=192.0.2.10 sp=50000 dst=198.51.100.20 dp=443 auth=$auth4
		expect=parse ;;
	auth6)
		to="TCP4:127.0.0.1:$fe,bind=127.0.0.1:$sport,reuseaddr"
		payload=$auth6_in
		src=2001:db8::10 sp=50001 dst=2001:db8:0:1::20 dp=8443 auth=$auth6 ;;
	unix)
		to="UNIX-CONNECT:$tmp/$name.sock"
		src=- sp=0 dst=- dp=0 ;;
	mixed)
		to="TCP6:[::1]:$fe,bind=[::1]:$sport,reuseaddr"
		src=192.0.2.1 sp=40100 dst=::1
		[ "$ver" = 1 ] && expect=v1-unknown ;;
	esac
	{
		[ -z "$payload" ] || hexbytes "$payload"
		sleep 1
	} | timeout 10 socat - "$to" >/dev/null
	timeout 10 tail --pid="$rpid" -f /dev/null || true
	kill "$rpid" 2>/dev/null || true
	wait "$rpid" 2>/dev/null || true
	if [ ! -s "$tmp/$name.bin" ]; then
		echo "capture.sh: nothing captured for $name" >&2
		cat "$tmp/haproxy.log" >&2
		exit 1
	fi
	echo "$name.bin $ver $src $sp $dst $dp $auth $expect" >>"$meta"
	echo "captured $name.bin ($(stat -c %s "$tmp/$name.bin") bytes)"
done

mkdir -p "$out"
cp "$tmp"/*.bin "$meta" "$out"/
echo "wrote $out/captures.txt"
