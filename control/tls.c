// SPDX-License-Identifier: MIT
/*
 * tls.c - incremental TLS ClientHello reader (SNI extraction), pure code.
 *
 * The approach follows HAProxy's src/payload.c (smp_fetch_ssl_hello_sni):
 * walk the structure field by field and check every length against what
 * remains of its parent by subtraction ("if (n > left) bad; left -= n"), so
 * no offset is ever computed that could overflow or point past the data.
 * Unlike payload.c the ClientHello may be fragmented over several handshake
 * records: the handshake bytes are read through a small cursor that steps
 * over record headers, so nothing is copied and nothing is allocated.
 *
 * Every helper returns TLS_CONTINUE (parsing goes on) or a final result:
 * TLS_NEED_MORE when the data ends before the field being read (what is there
 * is a consistent prefix), a failure (TLS_NOT_TLS, TLS_TOO_LARGE,
 * TLS_MALFORMED) as soon as the bytes that prove it are visible, or, at the
 * very end, TLS_FOUND_SNI / TLS_NO_SNI.
 */
#include <errno.h>
#include <string.h>

#include "tls.h"

/*
 * Wire format (RFC 8446 sections 4 and 5.1, RFC 6066 section 3), big endian.
 *
 * TLS record (TLSPlaintext), repeated; the handshake message below is the
 * concatenation of the payloads of consecutive records of type 22:
 *
 *     0        1        2        3        4        5
 *   +--------+--------+--------+--------+--------+--------  -  -
 *   | type   | version major,  | length (16)     | payload (length bytes,
 *   | 22     | 3      | minor  | 1..2^14+2048    |  a fragment of the
 *   +--------+--------+--------+--------+--------+--------  -  -  handshake)
 *
 * Handshake message (may span records, even its 4-byte header may):
 *
 *   +--------+--------+--------+--------+--------  -  -
 *   | type   | length (24)              | body (length bytes)
 *   | 1      | <= TLS_HELLO_MAX - 4     |
 *   +--------+--------+--------+--------+--------  -  -
 *
 * ClientHello body:
 *
 *   +--------+--------+-----------  -  -  ---+--------+------  -  -
 *   | legacy_version  | random (32 bytes)    | sid len| session id
 *   | 3      | minor  |                      | 0..32  | (sid len bytes)
 *   +--------+--------+-----------  -  -  ---+--------+------  -  -
 *   +--------+--------+------  -  -  +--------+------  -  -
 *   | cipher suites   | suites       | comp   | compression methods
 *   | length, even >=2| (2 each)     | len>=1 | (1 each)
 *   +--------+--------+------  -  -  +--------+------  -  -
 *   +--------+--------+------  -  -  -  -  -  -  -  -  -  -  -  -  +
 *   | extensions len  | extensions, exactly filling the rest of the |
 *   | (16), optional  | body (absent in SSLv3-era hellos)           |
 *   +--------+--------+------  -  -  -  -  -  -  -  -  -  -  -  -  +
 *
 * Extension, repeated:
 *
 *   +--------+--------+--------+--------+------  -  -
 *   | ext type (16)   | ext data length | ext data
 *   | 0 = server_name | (16)            |
 *   +--------+--------+--------+--------+------  -  -
 *
 * server_name extension data (only once per hello):
 *
 *   +--------+--------+--------+--------+--------+------  -  -
 *   | server_name_list| name   | name length     | name
 *   | length (16) =   | type   | (16), >= 1      | (name length bytes)
 *   | ext len - 2, >=1| 0=host |                 |
 *   +--------+--------+--------+--------+--------+------  -  -
 *                     \___________ repeated, fills the list ___________/
 *
 * The first entry of name_type 0 (host_name) is the SNI; entries of other
 * name types (none are defined) are skipped by their 16-bit length.
 * Everything else, including an ECH extension (0xfe0d) whose inner hello is
 * encrypted, is skipped: the outer SNI is what we route on.
 */

#define TLS_CT_HANDSHAKE 22
#define TLS_HS_CLIENT_HELLO 1
#define TLS_EXT_SERVER_NAME 0
#define TLS_SNI_HOST_NAME 0
/* TLSCiphertext limit; a plaintext record is at most 2^14 bytes. */
#define TLS_RECORD_MAX (16384 + 2048)
#define TLS_DNS_NAME_MAX 253
/* Internal: "parsed, go on"; distinct from every enum tls_parse_result. */
#define TLS_CONTINUE (-1)

#if TLS_SNI_MAX < TLS_DNS_NAME_MAX + 2
#error "TLS_SNI_MAX must hold a 253-character name, a trailing dot and NUL"
#endif

/* Reads the handshake bytes carried by consecutive records at buf[0..len). */
struct tls_cursor {
	const uint8_t *buf;
	size_t len; /* bytes available in buf */
	size_t pos; /* offset of the next byte to read, <= len */
	size_t rec_left; /* payload bytes of the current record unread */
	unsigned int nrec; /* records entered so far */
};

static unsigned int get16(const uint8_t *p)
{
	return (unsigned int)p[0] << 8 | p[1];
}

/*
 * Enter the record whose header starts at c->pos. A bad type or version on
 * the first record means the peer does not speak TLS at all; later on it
 * means a non-handshake record inside the ClientHello.
 */
static int cur_next_record(struct tls_cursor *c)
{
	size_t avail = c->len - c->pos;
	int bad = c->nrec ? TLS_MALFORMED : TLS_NOT_TLS;
	const uint8_t *p;
	unsigned int rlen;

	if (avail < 1)
		return TLS_NEED_MORE;
	p = c->buf + c->pos;
	if (p[0] != TLS_CT_HANDSHAKE)
		return bad;
	if (avail < 2)
		return TLS_NEED_MORE;
	if (p[1] != 3)
		return bad;
	if (avail < 5)
		return TLS_NEED_MORE;
	rlen = get16(p + 3);
	if (rlen == 0 || rlen > TLS_RECORD_MAX)
		return TLS_MALFORMED;
	c->pos += 5;
	c->rec_left = rlen;
	c->nrec++;
	return TLS_CONTINUE;
}

/* Copy (or skip, if dst is NULL) the next n handshake bytes. */
static int cur_read(struct tls_cursor *c, uint8_t *dst, size_t n)
{
	size_t chunk, avail;
	int ret;

	while (n) {
		if (!c->rec_left) {
			ret = cur_next_record(c);
			if (ret != TLS_CONTINUE)
				return ret;
		}
		avail = c->len - c->pos;
		if (!avail)
			return TLS_NEED_MORE;
		chunk = n;
		if (chunk > c->rec_left)
			chunk = c->rec_left;
		if (chunk > avail)
			chunk = avail;
		if (dst) {
			memcpy(dst, c->buf + c->pos, chunk);
			dst += chunk;
		}
		c->pos += chunk;
		c->rec_left -= chunk;
		n -= chunk;
	}
	return TLS_CONTINUE;
}

/* Take n bytes out of a vector with *left bytes remaining. */
static int take(struct tls_cursor *c, size_t *left, uint8_t *dst, size_t n)
{
	if (n > *left)
		return TLS_MALFORMED;
	*left -= n;
	return cur_read(c, dst, n);
}

/* Read a 16-bit length and carve that many bytes out of *left into *sub. */
static int take_vec16(struct tls_cursor *c, size_t *left, size_t *sub)
{
	uint8_t b[2];
	size_t n;
	int ret;

	ret = take(c, left, b, 2);
	if (ret != TLS_CONTINUE)
		return ret;
	n = get16(b);
	if (n > *left)
		return TLS_MALFORMED;
	*left -= n;
	*sub = n;
	return TLS_CONTINUE;
}

static int lower(int ch)
{
	return ch >= 'A' && ch <= 'Z' ? ch - 'A' + 'a' : ch;
}

static int is_ldh(int ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
	       (ch >= '0' && ch <= '9') || ch == '-' || ch == '_';
}

/*
 * Validate the raw host_name (n bytes, n <= TLS_DNS_NAME_MAX + 1) and store
 * it lower-cased, without one trailing dot, NUL-terminated, into out
 * (TLS_SNI_MAX bytes; may be NULL). Only [A-Za-z0-9._-] and no empty label.
 */
static int store_host_name(const uint8_t *raw, size_t n, char *out)
{
	size_t i;

	if (n && raw[n - 1] == '.')
		n--;
	if (n < 1 || n > TLS_DNS_NAME_MAX)
		return TLS_MALFORMED;
	for (i = 0; i < n; i++) {
		if (raw[i] == '.') {
			if (i == 0 || raw[i - 1] == '.')
				return TLS_MALFORMED;
		} else if (!is_ldh(raw[i])) {
			return TLS_MALFORMED; /* NUL, space, 8-bit */
		}
	}
	if (raw[n - 1] == '.')
		return TLS_MALFORMED; /* "a.b.." */
	if (out) {
		for (i = 0; i < n; i++)
			out[i] = (char)lower(raw[i]);
		out[n] = '\0';
	}
	return TLS_CONTINUE;
}

/* server_name extension data, left = its length. */
static int parse_server_name(struct tls_cursor *c, size_t left, char *sni,
			     int *found)
{
	uint8_t raw[TLS_DNS_NAME_MAX + 1];
	uint8_t type;
	size_t list, name;
	int ret;

	ret = take_vec16(c, &left, &list);
	if (ret != TLS_CONTINUE)
		return ret;
	if (list == 0 || left != 0)
		return TLS_MALFORMED; /* list must fill the extension */

	while (list) {
		ret = take(c, &list, &type, 1);
		if (ret != TLS_CONTINUE)
			return ret;
		ret = take_vec16(c, &list, &name);
		if (ret != TLS_CONTINUE)
			return ret;
		if (type != TLS_SNI_HOST_NAME || *found) {
			ret = cur_read(c, NULL, name);
			if (ret != TLS_CONTINUE)
				return ret;
			continue;
		}
		if (name < 1 || name > sizeof(raw))
			return TLS_MALFORMED;
		ret = cur_read(c, raw, name);
		if (ret != TLS_CONTINUE)
			return ret;
		ret = store_host_name(raw, name, sni);
		if (ret != TLS_CONTINUE)
			return ret;
		*found = 1;
	}
	return TLS_CONTINUE;
}

/* ClientHello body, left = handshake length. */
static int parse_client_hello(struct tls_cursor *c, size_t left, char *sni)
{
	uint8_t fixed[2 + 32 + 1]; /* legacy_version, random, sid len */
	uint8_t b[4];
	size_t n, exts, ext;
	int ret, seen_sni = 0, found = 0;

	ret = take(c, &left, fixed, sizeof(fixed));
	if (ret != TLS_CONTINUE)
		return ret;
	if (fixed[0] != 3 || fixed[34] > 32)
		return TLS_MALFORMED;
	ret = take(c, &left, NULL, fixed[34]);
	if (ret != TLS_CONTINUE)
		return ret;

	ret = take_vec16(c, &left, &n); /* cipher_suites */
	if (ret != TLS_CONTINUE)
		return ret;
	if (n < 2 || n % 2)
		return TLS_MALFORMED;
	ret = cur_read(c, NULL, n);
	if (ret != TLS_CONTINUE)
		return ret;

	ret = take(c, &left, b, 1); /* compression_methods */
	if (ret != TLS_CONTINUE)
		return ret;
	if (b[0] < 1)
		return TLS_MALFORMED;
	ret = take(c, &left, NULL, b[0]);
	if (ret != TLS_CONTINUE)
		return ret;

	if (!left)
		return TLS_NO_SNI; /* no extensions at all */
	ret = take_vec16(c, &left, &exts);
	if (ret != TLS_CONTINUE)
		return ret;
	if (left)
		return TLS_MALFORMED; /* bytes after the extensions */

	while (exts) {
		ret = take(c, &exts, b, 2);
		if (ret != TLS_CONTINUE)
			return ret;
		ret = take_vec16(c, &exts, &ext);
		if (ret != TLS_CONTINUE)
			return ret;
		if (get16(b) != TLS_EXT_SERVER_NAME) {
			ret = cur_read(c, NULL, ext);
			if (ret != TLS_CONTINUE)
				return ret;
			continue;
		}
		if (seen_sni)
			return TLS_MALFORMED; /* duplicate extension */
		seen_sni = 1;
		ret = parse_server_name(c, ext, sni, &found);
		if (ret != TLS_CONTINUE)
			return ret;
	}
	return found ? TLS_FOUND_SNI : TLS_NO_SNI;
}

int tls_sni_parse(const uint8_t *buf, size_t len, char *sni, size_t *hello_end)
{
	struct tls_cursor c = {.buf = buf, .len = buf ? len : 0};
	uint8_t hs[4];
	size_t hs_len;
	int ret;

	if (sni)
		sni[0] = '\0';

	/* Handshake type first, so "not a ClientHello" shows up early. */
	ret = cur_read(&c, hs, 1);
	if (ret != TLS_CONTINUE)
		return ret;
	if (hs[0] != TLS_HS_CLIENT_HELLO)
		return TLS_NOT_TLS;
	ret = cur_read(&c, hs + 1, 3);
	if (ret != TLS_CONTINUE)
		return ret;
	hs_len = (size_t)hs[1] << 16 | (size_t)hs[2] << 8 | hs[3];
	if (hs_len > TLS_HELLO_MAX - 4)
		return TLS_TOO_LARGE;

	ret = parse_client_hello(&c, hs_len, sni);
	if (ret != TLS_FOUND_SNI && ret != TLS_NO_SNI) {
		if (sni)
			sni[0] = '\0';
		return ret;
	}
	/*
	 * A client sends nothing after its ClientHello before the server
	 * answers, so the record holding its last byte must end with it.
	 */
	if (c.rec_left) {
		if (sni)
			sni[0] = '\0';
		return TLS_MALFORMED;
	}
	if (ret == TLS_NO_SNI && sni)
		sni[0] = '\0';
	if (hello_end)
		*hello_end = c.pos;
	return ret;
}

const char *tls_result_str(int res)
{
	switch (res) {
	case TLS_NEED_MORE:
		return "need_more";
	case TLS_FOUND_SNI:
		return "found_sni";
	case TLS_NO_SNI:
		return "no_sni";
	case TLS_NOT_TLS:
		return "not_tls";
	case TLS_TOO_LARGE:
		return "too_large";
	case TLS_MALFORMED:
		return "malformed";
	}
	return "unknown";
}

int sni_pattern_valid(const char *pattern, const char **why)
{
	const char *msg = NULL;
	size_t n, i, label = 0;

	if (!pattern || !*pattern) {
		msg = "empty pattern";
		goto bad;
	}
	n = strlen(pattern);
	if (pattern[n - 1] == '.')
		n--;
	if (n == 0) {
		msg = "empty pattern";
		goto bad;
	}
	if (n > TLS_DNS_NAME_MAX) {
		msg = "name longer than 253 characters";
		goto bad;
	}
	i = 0;
	if (pattern[0] == '*') {
		if (n == 1) {
			msg = "'*' needs a suffix, as in \"*.example.com\"";
			goto bad;
		}
		if (pattern[1] != '.') {
			msg = "'*' must be the whole first label";
			goto bad;
		}
		i = 2;
		if (i == n) {
			msg = "'*' needs a suffix, as in \"*.example.com\"";
			goto bad;
		}
	}
	for (; i <= n; i++) {
		char ch = i < n ? pattern[i] : '.';

		if (ch == '.') {
			if (!label) {
				msg = "empty label";
				goto bad;
			}
			if (pattern[i - 1] == '-') {
				msg = "label ends with '-'";
				goto bad;
			}
			label = 0;
			continue;
		}
		if (ch == '*') {
			msg = "'*' allowed only as the whole first label";
			goto bad;
		}
		if (!is_ldh((unsigned char)ch)) {
			msg = "character not in [A-Za-z0-9_-]";
			goto bad;
		}
		if (!label && ch == '-') {
			msg = "label starts with '-'";
			goto bad;
		}
		if (++label > 63) {
			msg = "label longer than 63 characters";
			goto bad;
		}
	}
	return 0;
bad:
	if (why)
		*why = msg;
	return -EINVAL;
}

/* Compare n bytes ASCII case-insensitively; 1 if equal. */
static int same_name(const char *a, const char *b, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (lower((unsigned char)a[i]) != lower((unsigned char)b[i]))
			return 0;
	return 1;
}

int sni_match(const char *pattern, const char *name)
{
	size_t plen, nlen;

	if (!pattern || !name)
		return 0;
	plen = strlen(pattern);
	nlen = strlen(name);
	if (plen && pattern[plen - 1] == '.')
		plen--;
	if (nlen && name[nlen - 1] == '.')
		nlen--;
	if (!plen || !nlen)
		return 0;

	if (plen >= 2 && pattern[0] == '*' && pattern[1] == '.') {
		/* ".example.org": the name ends with it, after >= 1 label */
		const char *suffix = pattern + 1;
		size_t slen = plen - 1, pre;

		if (nlen <= slen)
			return 0;
		pre = nlen - slen;
		if (name[0] == '.' || name[pre - 1] == '.')
			return 0;
		return same_name(name + pre, suffix, slen);
	}
	return plen == nlen && same_name(pattern, name, plen);
}
