// SPDX-License-Identifier: MIT
/*
 * proxy.c - HAProxy PROXY protocol v1/v2 header builder, pure code: no
 * syscalls, no allocation. Also a strict parser, for tests and tools.
 *
 * Reference: doc/proxy-protocol.txt in HAProxy, and HAProxy's own sender
 * (src/connection.c, make_proxy_line_v1() and make_proxy_line_v2()), which
 * this file reproduces byte for byte (tests/unit/data/proxy holds captures
 * of HAProxy 2.6), except where proxy.h asks otherwise:
 *
 *  - an IPv4-mapped IPv6 address (::ffff:a.b.c.d) is sent as plain IPv4,
 *    so a dual-stack listener gives TCP4 for IPv4 clients (HAProxy sends
 *    whatever the socket reports);
 *  - v1 with one IPv4 and one IPv6 side says "PROXY UNKNOWN\r\n"; HAProxy
 *    maps the IPv4 side and says "PROXY TCP6 ::ffff:a.b.c.d ...". v2 maps
 *    it too, as HAProxy does.
 *
 * A family other than IPv4/IPv6 (e.g. a client on a UNIX socket) gives v1
 * "PROXY UNKNOWN\r\n" and a v2 header with family UNSPEC and no address
 * block. For that v2 header HAProxy (checked against 2.6, same in 3.x) sends
 * the LOCAL command, "\x20\x00\x00\x00" after the signature, not PROXY
 * ("\x21"): the spec lets a receiver reject PROXY+UNSPEC but obliges it to
 * accept LOCAL and use the real endpoints, which is the right outcome here.
 * proxy_build() follows HAProxy and sends LOCAL.
 *
 * Version 1 (one US-ASCII line, at most 107 bytes with the CRLF):
 *
 *   "PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\r\n"
 *   "PROXY TCP6 2001:db8::1 2001:db8::2 56324 443\r\n"   (inet_ntop form)
 *   "PROXY UNKNOWN\r\n"
 *
 * Version 2 (binary; every multi-byte field is in network byte order):
 *
 *    0    1    2    3    4    5    6    7    8    9   10   11
 *  +----+----+----+----+----+----+----+----+----+----+----+----+
 *  | 0D | 0A | 0D | 0A | 00 | 0D | 0A | 51 | 55 | 49 | 54 | 0A |  signature
 *  +----+----+----+----+----+----+----+----+----+----+----+----+
 * \r\n\r\n\0\r\nQUIT\n 12   13   14   15
 *  +----+----+----+----+
 *  |ver |fam | length  |  ver_cmd: high nibble version 2, low nibble command:
 *  |cmd |    |         |           0 LOCAL, 1 PROXY (sent: 0x21, 0x20)
 *  +----+----+----+----+  fam: 0x00 UNSPEC, 0x11 TCP4, 0x21 TCP6 (sent);
 *                              0x12 UDP4, 0x22 UDP6, 0x31/0x32 UNIX (parsed)
 *                         length: number of bytes that follow (16 + length
 *                                 is the header's size)
 *
 *  address block, TCP4 (12 bytes):
 *   16                  20                  24        26        28
 *  +----+----+----+----+----+----+----+----+----+----+----+----+
 *  | source address    | destination addr. | src port| dst port|
 *  +----+----+----+----+----+----+----+----+----+----+----+----+
 *
 *  address block, TCP6 (36 bytes):
 *   16                       32                       48        50      52
 *  +----+----  -  -  ---+----+----+----  -  -  ---+----+----+----+----+----+
 *  | source address (16)     | destination address (16)| src port| dst port|
 *  +----+----  -  -  ---+----+----+----  -  -  ---+----+----+----+----+----+
 *
 *  address block, UNIX (216 bytes): source path (108), destination path (108)
 *  address block, UNSPEC: none (length 0 when nothing else follows)
 *
 *  then TLVs up to the end of length, each:
 *  +------+------+------+-------  -  -
 *  | type | length      | value (length bytes)
 *  +------+------+------+-------  -  -
 *  type 0x02 PP2_TYPE_AUTHORITY: the SNI, 1..255 bytes, no NUL (sent, parsed)
 *  type 0x03 PP2_TYPE_CRC32C: CRC32c of the header with this field zeroed
 *            (verified when parsed); every other type is skipped.
 */
#include <errno.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/un.h>

#include "proxy.h"

#define PP1_LINE_MAX 107 /* including the CRLF */

#define PP2_SIG_LEN 12
#define PP2_HDR_LEN 16
#define PP2_VERSION 0x20
#define PP2_CMD_LOCAL 0x00
#define PP2_CMD_PROXY 0x01
#define PP2_FAM_UNSPEC 0x00
#define PP2_FAM_TCP4 0x11
#define PP2_FAM_UDP4 0x12
#define PP2_FAM_TCP6 0x21
#define PP2_FAM_UDP6 0x22
#define PP2_FAM_UNIX_STREAM 0x31
#define PP2_FAM_UNIX_DGRAM 0x32
#define PP2_ADDR_LEN_INET 12
#define PP2_ADDR_LEN_INET6 36
#define PP2_ADDR_LEN_UNIX 216
#define PP2_UNIX_PATH_LEN 108
#define PP2_TLV_HDR_LEN 3
#define PP2_TYPE_AUTHORITY 0x02
#define PP2_TYPE_CRC32C 0x03
#define PP2_AUTHORITY_MAX 255

static const uint8_t pp2_sig[PP2_SIG_LEN] = {
	0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a,
};

const char *proxy_version_str(int ver)
{
	switch (ver) {
	case PROXY_V1:
		return "v1";
	case PROXY_V2:
		return "v2";
	default:
		return "none";
	}
}

/* ------------------------------------------------------------------ */
/* Builder                                                             */
/* ------------------------------------------------------------------ */

/* One endpoint, normalised: AF_INET (addr[0..3]), AF_INET6, or AF_UNSPEC. */
struct pp_end {
	int family;
	uint8_t addr[16];
	uint16_t port; /* host order */
};

static void pp_end_load(const struct sockaddr *sa, struct pp_end *e)
{
	memset(e, 0, sizeof(*e));
	e->family = AF_UNSPEC;
	if (sa->sa_family == AF_INET) {
		struct sockaddr_in sin;

		memcpy(&sin, sa, sizeof(sin));
		e->family = AF_INET;
		memcpy(e->addr, &sin.sin_addr, 4);
		e->port = ntohs(sin.sin_port);
	} else if (sa->sa_family == AF_INET6) {
		struct sockaddr_in6 sin6;

		memcpy(&sin6, sa, sizeof(sin6));
		e->port = ntohs(sin6.sin6_port);
		if (IN6_IS_ADDR_V4MAPPED(&sin6.sin6_addr)) {
			e->family = AF_INET;
			memcpy(e->addr, &sin6.sin6_addr.s6_addr[12], 4);
		} else {
			e->family = AF_INET6;
			memcpy(e->addr, &sin6.sin6_addr, 16);
		}
	}
}

static int pp_is_ip(const struct pp_end *e)
{
	return e->family == AF_INET || e->family == AF_INET6;
}

/* The 16 bytes of e's address as IPv6, IPv4 mapped into ::ffff:a.b.c.d. */
static void pp_end_v6(const struct pp_end *e, uint8_t *out)
{
	if (e->family == AF_INET6) {
		memcpy(out, e->addr, 16);
		return;
	}
	memset(out, 0, 10);
	out[10] = 0xff;
	out[11] = 0xff;
	memcpy(out + 12, e->addr, 4);
}

static size_t put_str(uint8_t *p, const char *s)
{
	size_t n = strlen(s);

	memcpy(p, s, n);
	return n;
}

static size_t put_dec(uint8_t *p, unsigned int v)
{
	char tmp[10];
	size_t n = 0, i;

	do {
		tmp[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	for (i = 0; i < n; i++)
		p[i] = (uint8_t)tmp[n - 1 - i];
	return n;
}

static void put_be16(uint8_t *p, unsigned int v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

/* Writes at most PP1_LINE_MAX bytes; returns the length or -EINVAL. */
static int build_v1(uint8_t *p, const struct pp_end *s, const struct pp_end *d)
{
	char a[INET6_ADDRSTRLEN];
	const char *proto;
	size_t n = 0;

	if (s->family == AF_INET && d->family == AF_INET)
		proto = "TCP4";
	else if (s->family == AF_INET6 && d->family == AF_INET6)
		proto = "TCP6";
	else
		return (int)put_str(p, "PROXY UNKNOWN\r\n");

	n += put_str(p + n, "PROXY ");
	n += put_str(p + n, proto);
	p[n++] = ' ';
	if (!inet_ntop(s->family, s->addr, a, sizeof(a)))
		return -EINVAL;
	n += put_str(p + n, a);
	p[n++] = ' ';
	if (!inet_ntop(d->family, d->addr, a, sizeof(a)))
		return -EINVAL;
	n += put_str(p + n, a);
	p[n++] = ' ';
	n += put_dec(p + n, s->port);
	p[n++] = ' ';
	n += put_dec(p + n, d->port);
	p[n++] = '\r';
	p[n++] = '\n';
	return (int)n;
}

/* Writes at most 16 + 36 + 3 + 255 = 310 bytes; returns the length. */
static int build_v2(uint8_t *p, const struct pp_end *s, const struct pp_end *d,
		    const char *authority, size_t alen)
{
	size_t n = PP2_HDR_LEN;

	memcpy(p, pp2_sig, PP2_SIG_LEN);
	if (!pp_is_ip(s) || !pp_is_ip(d)) {
		/* As HAProxy: LOCAL, UNSPEC, no address block. */
		p[12] = PP2_VERSION | PP2_CMD_LOCAL;
		p[13] = PP2_FAM_UNSPEC;
	} else if (s->family == AF_INET && d->family == AF_INET) {
		p[12] = PP2_VERSION | PP2_CMD_PROXY;
		p[13] = PP2_FAM_TCP4;
		memcpy(p + n, s->addr, 4);
		memcpy(p + n + 4, d->addr, 4);
		put_be16(p + n + 8, s->port);
		put_be16(p + n + 10, d->port);
		n += PP2_ADDR_LEN_INET;
	} else {
		p[12] = PP2_VERSION | PP2_CMD_PROXY;
		p[13] = PP2_FAM_TCP6;
		pp_end_v6(s, p + n);
		pp_end_v6(d, p + n + 16);
		put_be16(p + n + 32, s->port);
		put_be16(p + n + 34, d->port);
		n += PP2_ADDR_LEN_INET6;
	}
	if (alen) {
		p[n] = PP2_TYPE_AUTHORITY;
		put_be16(p + n + 1, (unsigned int)alen);
		memcpy(p + n + PP2_TLV_HDR_LEN, authority, alen);
		n += PP2_TLV_HDR_LEN + alen;
	}
	put_be16(p + 14, (unsigned int)(n - PP2_HDR_LEN));
	return (int)n;
}

int proxy_build(int ver, const struct sockaddr *src, const struct sockaddr *dst,
		const char *authority, uint8_t *out, size_t outlen)
{
	uint8_t tmp[PROXY_HDR_MAX];
	struct pp_end s, d;
	size_t alen = 0;
	int n;

	if ((ver != PROXY_V1 && ver != PROXY_V2) || !src || !dst || !out)
		return -EINVAL;
	if (ver == PROXY_V2 && authority) {
		while (alen <= PP2_AUTHORITY_MAX && authority[alen])
			alen++;
		if (alen > PP2_AUTHORITY_MAX)
			return -EINVAL;
	}
	pp_end_load(src, &s);
	pp_end_load(dst, &d);

	/* Build aside so that nothing is written when it does not fit. */
	if (ver == PROXY_V1)
		n = build_v1(tmp, &s, &d);
	else
		n = build_v2(tmp, &s, &d, authority, alen);
	if (n < 0)
		return n;
	if ((size_t)n > outlen)
		return -ENOSPC;
	memcpy(out, tmp, (size_t)n);
	return n;
}

/* ------------------------------------------------------------------ */
/* Parser                                                              */
/* ------------------------------------------------------------------ */

static unsigned int get_be16(const uint8_t *p)
{
	return ((unsigned int)p[0] << 8) | p[1];
}

static uint32_t get_be32(const uint8_t *p)
{
	return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
	       ((uint32_t)p[2] << 8) | p[3];
}

/* CRC32c (Castagnoli, reflected 0x82f63b78), RFC 4960 appendix B. */
static uint32_t crc32c_update(uint32_t crc, const uint8_t *p, size_t n)
{
	int k;

	while (n--) {
		crc ^= *p++;
		for (k = 0; k < 8; k++)
			crc = (crc >> 1) ^ (0x82f63b78u & (0u - (crc & 1u)));
	}
	return crc;
}

static void set_in4(struct sockaddr_storage *ss, const uint8_t *addr,
		    unsigned int port)
{
	struct sockaddr_in sin;

	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	memcpy(&sin.sin_addr, addr, 4);
	sin.sin_port = htons((uint16_t)port);
	memcpy(ss, &sin, sizeof(sin));
}

static void set_in6(struct sockaddr_storage *ss, const uint8_t *addr,
		    unsigned int port)
{
	struct sockaddr_in6 sin6;

	memset(&sin6, 0, sizeof(sin6));
	sin6.sin6_family = AF_INET6;
	memcpy(&sin6.sin6_addr, addr, 16);
	sin6.sin6_port = htons((uint16_t)port);
	memcpy(ss, &sin6, sizeof(sin6));
}

static void set_un(struct sockaddr_storage *ss, const uint8_t *path)
{
	struct sockaddr_un sun;
	size_t n = sizeof(sun.sun_path);

	if (n > PP2_UNIX_PATH_LEN)
		n = PP2_UNIX_PATH_LEN;
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	memcpy(sun.sun_path, path, n);
	memcpy(ss, &sun, sizeof(sun));
}

static int pp2_ver_cmd_ok(uint8_t v)
{
	return v == (PP2_VERSION | PP2_CMD_LOCAL) ||
	       v == (PP2_VERSION | PP2_CMD_PROXY);
}

/* Address block size for a valid fam byte, or -1 for an invalid one. */
static int pp2_addr_len(uint8_t fam)
{
	switch (fam) {
	case PP2_FAM_UNSPEC:
		return 0;
	case PP2_FAM_TCP4:
	case PP2_FAM_UDP4:
		return PP2_ADDR_LEN_INET;
	case PP2_FAM_TCP6:
	case PP2_FAM_UDP6:
		return PP2_ADDR_LEN_INET6;
	case PP2_FAM_UNIX_STREAM:
	case PP2_FAM_UNIX_DGRAM:
		return PP2_ADDR_LEN_UNIX;
	default:
		return -1;
	}
}

static void pp2_load_addrs(uint8_t fam, const uint8_t *p, struct proxy_info *pi)
{
	switch (pp2_addr_len(fam)) {
	case PP2_ADDR_LEN_INET:
		pi->family = AF_INET;
		set_in4(&pi->src, p, get_be16(p + 8));
		set_in4(&pi->dst, p + 4, get_be16(p + 10));
		break;
	case PP2_ADDR_LEN_INET6:
		pi->family = AF_INET6;
		set_in6(&pi->src, p, get_be16(p + 32));
		set_in6(&pi->dst, p + 16, get_be16(p + 34));
		break;
	case PP2_ADDR_LEN_UNIX:
		pi->family = AF_UNIX;
		set_un(&pi->src, p);
		set_un(&pi->dst, p + PP2_UNIX_PATH_LEN);
		break;
	default:
		pi->family = AF_UNSPEC;
		break;
	}
}

static int parse_v2(const uint8_t *buf, size_t len, struct proxy_info *pi)
{
	const uint8_t *p, *crc = NULL;
	size_t left, body, alen, tlen;
	int seen_authority = 0;

	if (memcmp(buf, pp2_sig, len < PP2_SIG_LEN ? len : PP2_SIG_LEN))
		return -EINVAL;
	if (len > 12 && !pp2_ver_cmd_ok(buf[12]))
		return -EINVAL;
	if (len > 13 && pp2_addr_len(buf[13]) < 0)
		return -EINVAL;
	if (len < PP2_HDR_LEN)
		return 0;
	body = get_be16(buf + 14);
	if (body > len - PP2_HDR_LEN)
		return 0;

	p = buf + PP2_HDR_LEN;
	left = body;
	alen = (size_t)pp2_addr_len(buf[13]);
	if ((buf[12] & 0x0f) == PP2_CMD_PROXY) {
		if (alen > left)
			return -EINVAL;
		pp2_load_addrs(buf[13], p, pi);
		p += alen;
		left -= alen;
	} else {
		/*
		 * LOCAL: the address block is ignored. A block too short for
		 * its family is skipped whole, as opaque bytes.
		 */
		pi->family = AF_UNSPEC;
		if (alen > left)
			alen = left;
		p += alen;
		left -= alen;
	}

	while (left) {
		if (left < PP2_TLV_HDR_LEN)
			return -EINVAL;
		tlen = get_be16(p + 1);
		left -= PP2_TLV_HDR_LEN;
		if (tlen > left)
			return -EINVAL;
		switch (p[0]) {
		case PP2_TYPE_AUTHORITY:
			if (seen_authority || tlen > PP2_AUTHORITY_MAX ||
			    memchr(p + PP2_TLV_HDR_LEN, 0, tlen))
				return -EINVAL;
			memcpy(pi->authority, p + PP2_TLV_HDR_LEN, tlen);
			pi->authority[tlen] = '\0';
			seen_authority = 1;
			break;
		case PP2_TYPE_CRC32C:
			if (crc || tlen != 4)
				return -EINVAL;
			crc = p + PP2_TLV_HDR_LEN;
			break;
		default:
			break;
		}
		p += PP2_TLV_HDR_LEN + tlen;
		left -= tlen;
	}

	if (crc) {
		static const uint8_t zero[4];
		size_t off = (size_t)(crc - buf);
		uint32_t c = 0xffffffffu;

		c = crc32c_update(c, buf, off);
		c = crc32c_update(c, zero, 4);
		c = crc32c_update(c, crc + 4, PP2_HDR_LEN + body - off - 4);
		if (~c != get_be32(crc))
			return -EINVAL;
	}

	pi->version = PROXY_V2;
	pi->hdr_len = PP2_HDR_LEN + body;
	return (int)pi->hdr_len;
}

/* Strict dotted quad: exactly 4 decimal numbers 0..255, no leading zero. */
static int parse_ip4(const uint8_t *s, size_t n, uint8_t *a)
{
	size_t i = 0, digits;
	unsigned int v;
	int part;

	for (part = 0; part < 4; part++) {
		if (part) {
			if (i >= n || s[i] != '.')
				return -1;
			i++;
		}
		v = 0;
		digits = 0;
		while (i < n && s[i] >= '0' && s[i] <= '9') {
			if (digits && v == 0)
				return -1;
			v = v * 10 + (unsigned int)(s[i] - '0');
			if (v > 255)
				return -1;
			digits++;
			i++;
		}
		if (!digits)
			return -1;
		a[part] = (uint8_t)v;
	}
	return i == n ? 0 : -1;
}

static int parse_ip6(const uint8_t *s, size_t n, uint8_t *a)
{
	char str[INET6_ADDRSTRLEN];

	if (n == 0 || n >= sizeof(str))
		return -1;
	memcpy(str, s, n);
	str[n] = '\0';
	return inet_pton(AF_INET6, str, a) == 1 ? 0 : -1;
}

/* Decimal 0..65535, no leading zero. */
static int parse_port(const uint8_t *s, size_t n, unsigned int *port)
{
	unsigned int v = 0;
	size_t i;

	if (n == 0 || n > 5 || (n > 1 && s[0] == '0'))
		return -1;
	for (i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (unsigned int)(s[i] - '0');
	}
	if (v > 65535)
		return -1;
	*port = v;
	return 0;
}

/* Next space-separated field of [*p, *p + *left); consumes one ' ' after it
 * unless it is the last one. Returns its length, 0 if empty or misplaced.
 */
static size_t v1_field(const uint8_t **p, size_t *left, const uint8_t **f,
		       int last)
{
	const uint8_t *sp = memchr(*p, ' ', *left);
	size_t n = sp ? (size_t)(sp - *p) : *left;

	if (n == 0 || (last && sp) || (!last && !sp))
		return 0;
	*f = *p;
	*p += n;
	*left -= n;
	if (!last) {
		*p += 1;
		*left -= 1;
	}
	return n;
}

static int v1_char_ok(uint8_t c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
	       (c >= 'A' && c <= 'F') || c == '.' || c == ':' || c == ' ';
}

static int parse_v1(const uint8_t *buf, size_t len, struct proxy_info *pi)
{
	static const char *const protos[] = {"TCP4 ", "TCP6 ", "UNKNOWN"};
	const uint8_t *p, *f[4];
	size_t i, n, left, flen[4], end = 0;
	size_t lim = len < PP1_LINE_MAX ? len : PP1_LINE_MAX;
	unsigned int sport, dport;
	uint8_t sa[16], da[16];
	int tcp = -1, k;

	if (memcmp(buf, "PROXY ", len < 6 ? len : 6))
		return -EINVAL;
	/* Reject early a protocol token that cannot become a valid one. */
	if (len > 6) {
		for (k = 0; k < 3; k++) {
			n = strlen(protos[k]);
			if (len - 6 < n)
				n = len - 6;
			if (!memcmp(buf + 6, protos[k], n))
				break;
		}
		if (k == 3)
			return -EINVAL;
		if (k < 2 && len >= 11)
			tcp = k;
	}
	for (i = 6; i < lim; i++) {
		if (buf[i] == '\n')
			return -EINVAL;
		if (buf[i] == '\r') {
			if (i + 1 >= PP1_LINE_MAX)
				return -EINVAL;
			if (i + 1 >= len)
				return 0;
			if (buf[i + 1] != '\n')
				return -EINVAL;
			end = i + 2;
			break;
		}
		if (tcp >= 0 && i >= 11 && !v1_char_ok(buf[i]))
			return -EINVAL;
	}
	if (!end)
		return len >= PP1_LINE_MAX ? -EINVAL : 0;

	p = buf + 6;
	left = end - 2 - 6;
	pi->version = PROXY_V1;
	pi->hdr_len = end;
	if (left >= 7 && !memcmp(p, "UNKNOWN", 7)) {
		/* The rest of the line, if any, is ignored. */
		if (left > 7 && p[7] != ' ')
			return -EINVAL;
		pi->family = AF_UNSPEC;
		return (int)end;
	}
	if (left < 5 || (memcmp(p, "TCP4 ", 5) && memcmp(p, "TCP6 ", 5)))
		return -EINVAL;
	tcp = p[3] == '4' ? 0 : 1;
	p += 5;
	left -= 5;
	for (k = 0; k < 4; k++) {
		flen[k] = v1_field(&p, &left, &f[k], k == 3);
		if (!flen[k])
			return -EINVAL;
	}
	if (parse_port(f[2], flen[2], &sport) ||
	    parse_port(f[3], flen[3], &dport))
		return -EINVAL;
	if (tcp == 0) {
		if (parse_ip4(f[0], flen[0], sa) ||
		    parse_ip4(f[1], flen[1], da))
			return -EINVAL;
		pi->family = AF_INET;
		set_in4(&pi->src, sa, sport);
		set_in4(&pi->dst, da, dport);
	} else {
		if (parse_ip6(f[0], flen[0], sa) ||
		    parse_ip6(f[1], flen[1], da))
			return -EINVAL;
		pi->family = AF_INET6;
		set_in6(&pi->src, sa, sport);
		set_in6(&pi->dst, da, dport);
	}
	return (int)end;
}

int proxy_parse(const uint8_t *buf, size_t len, struct proxy_info *out)
{
	struct proxy_info pi;
	int ret;

	if (!out)
		return -EINVAL;
	memset(out, 0, sizeof(*out));
	if (!len)
		return 0;
	if (!buf)
		return -EINVAL;

	memset(&pi, 0, sizeof(pi));
	if (buf[0] == pp2_sig[0])
		ret = parse_v2(buf, len, &pi);
	else if (buf[0] == 'P')
		ret = parse_v1(buf, len, &pi);
	else
		ret = -EINVAL;
	if (ret > 0)
		*out = pi;
	return ret;
}
