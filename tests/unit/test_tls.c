// SPDX-License-Identifier: MIT
/*
 * test_tls.c - unit tests for control/tls.c (ClientHello SNI reader).
 *
 * Usage: test_tls [datadir]   (default $EDGE_TEST_DATA or "tests/unit/data")
 * Real ClientHellos are read from <datadir>/clienthello/NAME.bin (see the
 * README.md and capture.sh there); the rest is built here.
 * Prints "FAIL test: detail" per failed check and a summary line; exits 1 if
 * any check failed.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tls.h"

#include "check.h"

static const char *rs(int res)
{
	return tls_result_str(res);
}

/*
 * Parse a heap copy of exactly len bytes, so that ASan flags any read past
 * buf[len - 1]; also check the out parameters are sane.
 */
static int parse(const uint8_t *data, size_t len, char *sni, size_t *end)
{
	uint8_t *copy = malloc(len ? len : 1);
	char name[TLS_SNI_MAX + 8];
	size_t e = (size_t)-1, i;
	int res;

	if (!copy) {
		perror("malloc");
		exit(2);
	}
	if (len)
		memcpy(copy, data, len);
	memset(name, 0xaa, sizeof(name));
	res = tls_sni_parse(copy, len, name, &e);
	free(copy);

	if (res < TLS_NEED_MORE || res > TLS_MALFORMED) {
		check(0, "parse", "result %d outside the enum", res);
	} else if (res == TLS_FOUND_SNI) {
		size_t n = strnlen(name, TLS_SNI_MAX);

		if (n < 1 || n > 253)
			check(0, "parse", "found_sni with name length %zu", n);
		for (i = 0; i < n; i++) {
			char ch = name[i];

			if (!((ch >= 'a' && ch <= 'z') ||
			      (ch >= '0' && ch <= '9') || ch == '.' ||
			      ch == '-' || ch == '_')) {
				check(0, "parse", "bad char 0x%02x in sni",
				      (unsigned char)ch);
				break;
			}
		}
	} else if (name[0] != '\0') {
		check(0, "parse", "%s but sni not empty", rs(res));
	}
	if ((res == TLS_FOUND_SNI || res == TLS_NO_SNI) && e > len)
		check(0, "parse", "hello_end %zu > len %zu", e, len);
	if (sni)
		memcpy(sni, name, TLS_SNI_MAX);
	if (end)
		*end = e;
	return res;
}

/* ---- byte builder ---------------------------------------------------- */

struct bb {
	uint8_t d[80000];
	size_t n;
};

static void put8(struct bb *b, unsigned int v)
{
	if (b->n >= sizeof(b->d)) {
		fprintf(stderr, "builder overflow\n");
		exit(2);
	}
	b->d[b->n++] = (uint8_t)v;
}

static void put16(struct bb *b, unsigned int v)
{
	put8(b, v >> 8 & 0xff);
	put8(b, v & 0xff);
}

static void put24(struct bb *b, unsigned int v)
{
	put8(b, v >> 16 & 0xff);
	put16(b, v & 0xffff);
}

static void putn(struct bb *b, const void *p, size_t n)
{
	const uint8_t *s = p;

	while (n--)
		put8(b, *s++);
}

static void set16(uint8_t *p, unsigned int v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static void set24(uint8_t *p, unsigned int v)
{
	p[0] = (uint8_t)(v >> 16);
	set16(p + 1, v & 0xffff);
}

/* Concatenate the payloads of the records in buf (test-side walker). */
static int records_to_hs(const uint8_t *buf, size_t len, struct bb *hs)
{
	size_t pos = 0, rlen;
	int nrec = 0;

	hs->n = 0;
	while (pos + 5 <= len) {
		rlen = (size_t)buf[pos + 3] << 8 | buf[pos + 4];
		if (pos + 5 + rlen > len)
			return -1;
		putn(hs, buf + pos + 5, rlen);
		pos += 5 + rlen;
		nrec++;
	}
	return pos == len ? nrec : -1;
}

/* Frame handshake bytes into records of at most chunk bytes. */
static void hs_to_records(const uint8_t *hs, size_t n, size_t chunk,
			  struct bb *out)
{
	size_t off = 0, k;

	out->n = 0;
	while (off < n) {
		k = n - off < chunk ? n - off : chunk;
		put8(out, 22);
		put8(out, 3);
		put8(out, off ? 3 : 1);
		put16(out, (unsigned int)k);
		putn(out, hs + off, k);
		off += k;
	}
}

/*
 * Synthetic ClientHello handshake message. Offsets (from the handshake
 * header) that the corruption tests patch:
 */
#define H_LEN		1	/* 24-bit handshake length */
#define H_VER		4
#define H_SID_LEN	38
#define H_CS_LEN	71
#define H_COMP_LEN	77
#define H_EXT_LEN	79
#define H_EXT0		81	/* first extension; SNI when first */
#define H_SNI_EXT_LEN	83
#define H_SNI_LIST_LEN	85
#define H_SNI_TYPE	87
#define H_SNI_NAME_LEN	88
#define H_SNI_NAME	90

static void sni_ext(struct bb *e, const char *name, size_t nlen)
{
	put16(e, 0);
	put16(e, (unsigned int)(nlen + 5));
	put16(e, (unsigned int)(nlen + 3));
	put8(e, 0);
	put16(e, (unsigned int)nlen);
	putn(e, name, nlen);
}

static void raw_ext(struct bb *e, unsigned int type, size_t len, int fill)
{
	put16(e, type);
	put16(e, (unsigned int)len);
	while (len--)
		put8(e, (unsigned int)fill);
}

/* exts == NULL: no extensions block at all. */
static void build_hs(struct bb *hs, const struct bb *exts)
{
	int i;

	hs->n = 0;
	put8(hs, 1);
	put24(hs, 0);
	put16(hs, 0x0303);
	for (i = 0; i < 32; i++)
		put8(hs, (unsigned int)i);
	put8(hs, 32);
	for (i = 0; i < 32; i++)
		put8(hs, 0xee);
	put16(hs, 4);
	put16(hs, 0x1301);
	put16(hs, 0x002f);
	put8(hs, 1);
	put8(hs, 0);
	if (exts) {
		put16(hs, (unsigned int)exts->n);
		putn(hs, exts->d, exts->n);
	}
	set24(hs->d + H_LEN, (unsigned int)(hs->n - 4));
}

static struct bb hs_g, rec_g, ext_g, tmp_g;

/* A standard hello with one SNI extension for name, as one record. */
static void build_sni_hello(const char *name, size_t nlen)
{
	ext_g.n = 0;
	sni_ext(&ext_g, name, nlen);
	raw_ext(&ext_g, 0x002b, 3, 2);	/* supported_versions-ish */
	build_hs(&hs_g, &ext_g);
	hs_to_records(hs_g.d, hs_g.n, 16384, &rec_g);
}

/*
 * Every prefix must give NEED_MORE or, from some length on, the same final
 * result as the whole input (parsing is a pure function of a prefix).
 */
static void check_prefixes(const char *test, const char *what,
			   const uint8_t *buf, size_t len, int want_need_until)
{
	char sni[TLS_SNI_MAX], full_sni[TLS_SNI_MAX];
	size_t end, full_end, k;
	int full, res, final_at = -1, bad = 0;

	full = parse(buf, len, full_sni, &full_end);
	for (k = 0; k < len && !bad; k++) {
		res = parse(buf, k, sni, &end);
		if (res == TLS_NEED_MORE) {
			if (final_at >= 0) {
				check(0, test, "%s: prefix %zu need_more after "
				      "final result at %d", what, k, final_at);
				bad = 1;
			}
			continue;
		}
		if (want_need_until) {
			check(0, test, "%s: prefix %zu/%zu gave %s, want "
			      "need_more", what, k, len, rs(res));
			bad = 1;
		} else if (res != full || strcmp(sni, full_sni) ||
			   ((res == TLS_FOUND_SNI || res == TLS_NO_SNI) &&
			    end != full_end)) {
			check(0, test, "%s: prefix %zu gave %s, whole gave %s",
			      what, k, rs(res), rs(full));
			bad = 1;
		} else if (final_at < 0) {
			final_at = (int)k;
		}
	}
	check(!bad, test, "%s: prefix walk failed", what);
}

/* ---- captures ---------------------------------------------------------- */

static const struct capture {
	const char *file;
	int res;
	const char *sni;
	int min_records;
} captures[] = {
	{ "openssl-tls13-sni.bin", TLS_FOUND_SNI, "mta-sts.example.com", 1 },
	{ "openssl-tls12-sni.bin", TLS_FOUND_SNI, "mta-sts.example.com", 1 },
	{ "openssl-nosni.bin", TLS_NO_SNI, "", 1 },
	{ "openssl-alpn-9k.bin", TLS_FOUND_SNI, "mta-sts.example.com", 1 },
	{ "openssl-alpn-9k-frag512.bin", TLS_FOUND_SNI, "mta-sts.example.com",
	  19 },
	{ "openssl-upper-dot.bin", TLS_FOUND_SNI, "mta-sts.example.com", 1 },
	{ "curl-sni.bin", TLS_FOUND_SNI, "mta-sts.example.com", 1 },
	{ "gnutls-sni.bin", TLS_FOUND_SNI, "mta-sts.example.com", 1 },
	{ "python-sni.bin", TLS_FOUND_SNI, "mta-sts.example.com", 1 },
	{ "python-nosni.bin", TLS_NO_SNI, "", 1 },
};

#define N_CAPTURES (sizeof(captures) / sizeof(captures[0]))

static uint8_t *load(const char *dir, const char *file, size_t *len)
{
	char path[4096];
	uint8_t *buf;
	long n;
	FILE *f;

	snprintf(path, sizeof(path), "%s/clienthello/%s", dir, file);
	f = fopen(path, "rb");
	if (!f)
		return NULL;
	if (fseek(f, 0, SEEK_END) || (n = ftell(f)) <= 0 ||
	    fseek(f, 0, SEEK_SET)) {
		fclose(f);
		return NULL;
	}
	buf = malloc((size_t)n);
	if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
		free(buf);
		buf = NULL;
	}
	fclose(f);
	*len = (size_t)n;
	return buf;
}

/*
 * Cut the handshake body at every length, with the handshake and record
 * lengths rewritten to match: the framing is consistent, the ClientHello
 * is not, so the result must be MALFORMED, except for a cut just after the
 * compression methods (a valid hello without extensions).
 */
static void test_cut_body(const struct capture *cap, const struct bb *hs)
{
	static struct bb cut, rec;
	size_t body = hs->n - 4, no_ext, k, step;
	int res, bad = 0;

	no_ext = 2 + 32 + 1 + hs->d[4 + 34];
	no_ext += 2 + ((size_t)hs->d[4 + no_ext] << 8 | hs->d[4 + no_ext + 1]);
	no_ext += 1 + hs->d[4 + no_ext];
	step = body > 2048 ? 7 : 1;
	for (k = 0; k < body && !bad; k += k < 200 ? 1 : step) {
		cut.n = 0;
		putn(&cut, hs->d, 4 + k);
		set24(cut.d + 1, (unsigned int)k);
		hs_to_records(cut.d, cut.n, k % 2 ? 16384 : 50, &rec);
		res = parse(rec.d, rec.n, NULL, NULL);
		if (res != (k == no_ext ? TLS_NO_SNI : TLS_MALFORMED)) {
			check(0, "capture_cut_body", "%s body cut at %zu/%zu: "
			      "%s", cap->file, k, body, rs(res));
			bad = 1;
		}
	}
	check(!bad, "capture_cut_body", "%s", cap->file);
}

static void test_capture(const struct capture *cap, const uint8_t *buf,
			 size_t len)
{
	static const size_t chunks[] = { 1, 7, 100, 16384 };
	static const char *const trailers[] = {
		"\x17\x03\x03\x00\x05hello",	/* 0-RTT style data */
		"GET / HTTP/1.1\r\n\r\n",
		"\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00",
		"\x16",
	};
	static struct bb hs, rec, more;
	char sni[TLS_SNI_MAX], what[128];
	size_t end, i;
	int res, nrec;

	/* whole */
	res = parse(buf, len, sni, &end);
	check(res == cap->res, "capture_whole", "%s: got %s, want %s",
	      cap->file, rs(res), rs(cap->res));
	check(!strcmp(sni, cap->sni), "capture_whole", "%s: sni \"%s\", "
	      "want \"%s\"", cap->file, sni, cap->sni);
	check(end == len, "capture_whole", "%s: hello_end %zu, want %zu",
	      cap->file, end, len);
	nrec = records_to_hs(buf, len, &hs);
	check(nrec >= cap->min_records, "capture_whole", "%s: %d records, "
	      "want >= %d", cap->file, nrec, cap->min_records);

	/* byte by byte */
	check_prefixes("capture_bytewise", cap->file, buf, len, 1);

	/* re-framed into small records */
	for (i = 0; i < sizeof(chunks) / sizeof(chunks[0]); i++) {
		hs_to_records(hs.d, hs.n, chunks[i], &rec);
		res = parse(rec.d, rec.n, sni, &end);
		check(res == cap->res && !strcmp(sni, cap->sni) &&
		      end == rec.n, "capture_reframe",
		      "%s in %zu-byte records: got %s \"%s\" end %zu/%zu",
		      cap->file, chunks[i], rs(res), sni, end, rec.n);
		if (chunks[i] >= 7 && chunks[i] < 16384) {
			snprintf(what, sizeof(what), "%s in %zu-byte records",
				 cap->file, chunks[i]);
			check_prefixes("capture_reframe_bytewise", what,
				       rec.d, rec.n, 1);
		}
	}

	/* pipelined bytes after the hello */
	for (i = 0; i < sizeof(trailers) / sizeof(trailers[0]); i++) {
		more.n = 0;
		putn(&more, buf, len);
		putn(&more, trailers[i], strlen(trailers[i]));
		res = parse(more.d, more.n, sni, &end);
		check(res == cap->res && !strcmp(sni, cap->sni) && end == len,
		      "capture_trailing", "%s + trailer %zu: got %s \"%s\" "
		      "end %zu, want end %zu", cap->file, i, rs(res), sni,
		      end, len);
	}
	more.n = 0;
	putn(&more, buf, len);
	putn(&more, buf, len);
	res = parse(more.d, more.n, sni, &end);
	check(res == cap->res && end == len, "capture_trailing",
	      "%s twice: got %s end %zu", cap->file, rs(res), end);

	/* truncated: every prefix also with the record length kept */
	res = parse(buf, len - 1, sni, &end);
	check(res == TLS_NEED_MORE, "capture_truncated", "%s minus 1 byte: %s",
	      cap->file, rs(res));
	test_cut_body(cap, &hs);

	/*
	 * Corrupted: flip each byte in turn (parse() checks the result is in
	 * the enum, the sni is sane and hello_end <= len; ASan/UBSan builds
	 * check the memory accesses), and once per file also feed the
	 * prefixes of a few corruptions.
	 */
	more.n = 0;
	putn(&more, buf, len);
	for (i = 0; i < len; i++) {
		more.d[i] ^= 0xff;
		parse(more.d, more.n, NULL, NULL);
		more.d[i] ^= 0x01;	/* net: ^0xfe */
		parse(more.d, more.n, NULL, NULL);
		more.d[i] ^= 0xfe;
	}
	check(!memcmp(more.d, buf, len), "capture_flip", "restore");
	for (i = 0; i < 64 && i < len; i++) {
		size_t at = (i * 7919) % len;

		more.d[at] ^= 0x80;
		snprintf(what, sizeof(what), "%s flip at %zu", cap->file, at);
		if (len < 1024)
			check_prefixes("capture_flip_prefix", what, more.d,
				       more.n, 0);
		more.d[at] ^= 0x80;
	}
}

static void test_captures(const char *dir)
{
	uint8_t *buf;
	size_t i, len;

	for (i = 0; i < N_CAPTURES; i++) {
		buf = load(dir, captures[i].file, &len);
		check(buf != NULL, "capture_load", "cannot read %s/clienthello/"
		      "%s", dir, captures[i].file);
		if (!buf)
			continue;
		test_capture(&captures[i], buf, len);
		free(buf);
	}
}

/* ---- synthetic inputs -------------------------------------------------- */

static void expect(const char *test, const char *what, const uint8_t *buf,
		   size_t len, int want, const char *want_sni)
{
	char sni[TLS_SNI_MAX];
	size_t end;
	int res;

	res = parse(buf, len, sni, &end);
	check(res == want, test, "%s: got %s, want %s", what, rs(res),
	      rs(want));
	if (res == want && want_sni)
		check(!strcmp(sni, want_sni), test, "%s: sni \"%s\", want "
		      "\"%s\"", what, sni, want_sni);
	if (res == want && (want == TLS_FOUND_SNI || want == TLS_NO_SNI))
		check(end == len, test, "%s: hello_end %zu, want %zu", what,
		      end, len);
	check_prefixes(test, what, buf, len, 0);
}

static void expect_bytes(const char *test, const char *what, const char *s,
			 size_t len, int want)
{
	expect(test, what, (const uint8_t *)s, len, want, NULL);
}

static void test_not_tls(void)
{
	static const struct {
		const char *s;
		size_t len;
		int want;
	} cases[] = {
		{ "EHLO x\r\n", 8, TLS_NOT_TLS },
		{ "GET / HTTP/1.1\r\n", 16, TLS_NOT_TLS },
		{ "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n", 32, TLS_NOT_TLS },
		{ "\x80\x2e\x01\x03\x01\x00\x15", 7, TLS_NOT_TLS },  /* SSLv2 */
		{ "\x16\x02\x00\x00\x10", 5, TLS_NOT_TLS },
		{ "\x15\x03\x01\x00\x02\x02\x28", 7, TLS_NOT_TLS },  /* alert */
		{ "\x16\x03\x03\x00\x04\x02\x00\x00\x00", 9, TLS_NOT_TLS },
		{ "\x16\x03\x01\x00\x04\x00\x00\x00\x00", 9, TLS_NOT_TLS },
		{ "E", 1, TLS_NOT_TLS },
		{ "", 0, TLS_NEED_MORE },
		{ "\x16", 1, TLS_NEED_MORE },
		{ "\x16\x03", 2, TLS_NEED_MORE },
		{ "\x16\x03\x01\x02", 4, TLS_NEED_MORE },
		{ "\x16\x03\x01\x02\x00", 5, TLS_NEED_MORE },
		{ "\x16\x03\x01\x02\x00\x01\x00", 7, TLS_NEED_MORE },
		{ "\x16\x03\x01\x00\x00", 5, TLS_MALFORMED },   /* empty rec */
		{ "\x16\x03\x01\x48\x01", 5, TLS_MALFORMED },   /* 18433 */
		{ "\x16\x03\x01\x48\x00", 5, TLS_NEED_MORE },   /* 18432 */
	};
	char what[64];
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		snprintf(what, sizeof(what), "case %zu", i);
		expect_bytes("not_tls", what, cases[i].s, cases[i].len,
			     cases[i].want);
	}
	check(tls_sni_parse(NULL, 0, NULL, NULL) == TLS_NEED_MORE, "not_tls",
	      "NULL buffer");
}

static void test_too_large(void)
{
	static struct bb b;
	uint8_t hdr[9] = { 22, 3, 1, 0x40, 0x00, 1, 0, 0, 0 };
	size_t i;

	set24(hdr + 6, 20000);
	expect("too_large", "hs len 20000", hdr, sizeof(hdr), TLS_TOO_LARGE,
	       NULL);
	set24(hdr + 6, 0xffffff);
	expect("too_large", "hs len 2^24-1", hdr, sizeof(hdr), TLS_TOO_LARGE,
	       NULL);
	set24(hdr + 6, TLS_HELLO_MAX - 3);
	expect("too_large", "hs len max+1", hdr, sizeof(hdr), TLS_TOO_LARGE,
	       NULL);
	set24(hdr + 6, TLS_HELLO_MAX - 4);
	expect("too_large", "hs len max", hdr, sizeof(hdr), TLS_NEED_MORE,
	       NULL);

	/* handshake header split over 1-byte records */
	set24(hdr + 6, 20000);
	hs_to_records(hdr + 5, 4, 1, &b);
	expect("too_large", "hs header in 1-byte records", b.d, b.n,
	       TLS_TOO_LARGE, NULL);

	/* largest hello accepted, SNI last, over two records */
	ext_g.n = 0;
	raw_ext(&ext_g, 0x0015, 0, 0);
	build_hs(&hs_g, &ext_g);
	i = TLS_HELLO_MAX - hs_g.n - 24;	/* padding; the SNI ext is 24 */
	ext_g.n = 0;
	raw_ext(&ext_g, 0x0015, i, 0);
	sni_ext(&ext_g, "big.example.com", 15);
	build_hs(&hs_g, &ext_g);
	check(hs_g.n == TLS_HELLO_MAX, "too_large", "built %zu bytes",
	      hs_g.n);
	hs_to_records(hs_g.d, hs_g.n, 16384 - 5, &rec_g);
	expect("too_large", "hello of TLS_HELLO_MAX", rec_g.d, rec_g.n,
	       TLS_FOUND_SNI, "big.example.com");
	/* one byte more */
	ext_g.n = 0;
	raw_ext(&ext_g, 0x0015, i + 1, 0);
	sni_ext(&ext_g, "big.example.com", 15);
	build_hs(&hs_g, &ext_g);
	hs_to_records(hs_g.d, hs_g.n, 16384, &rec_g);
	expect("too_large", "hello of TLS_HELLO_MAX + 1", rec_g.d, rec_g.n,
	       TLS_TOO_LARGE, NULL);
}

/* Patch the standard SNI hello, frame as one record, expect. */
static void patched(const char *what, size_t off, int width, unsigned int v,
		    int want)
{
	build_sni_hello("mta-sts.example.com", 19);
	if (width == 1)
		hs_g.d[off] = (uint8_t)v;
	else if (width == 2)
		set16(hs_g.d + off, v);
	else
		set24(hs_g.d + off, v);
	hs_to_records(hs_g.d, hs_g.n, 16384, &rec_g);
	expect("malformed", what, rec_g.d, rec_g.n, want, NULL);
	/* the same through 3-byte records */
	hs_to_records(hs_g.d, hs_g.n, 3, &rec_g);
	expect("malformed", what, rec_g.d, rec_g.n, want, NULL);
}

static void test_malformed(void)
{
	unsigned int sni_ext_len = 19 + 5, list_len = 19 + 3;
	size_t n;

	build_sni_hello("mta-sts.example.com", 19);
	expect("malformed", "baseline", rec_g.d, rec_g.n, TLS_FOUND_SNI,
	       "mta-sts.example.com");
	n = hs_g.n - 4;

	patched("list len > ext len", H_SNI_LIST_LEN, 2, list_len + 1,
		TLS_MALFORMED);
	patched("list len < ext len", H_SNI_LIST_LEN, 2, list_len - 1,
		TLS_MALFORMED);
	patched("list len 0", H_SNI_LIST_LEN, 2, 0, TLS_MALFORMED);
	patched("list len 0xffff", H_SNI_LIST_LEN, 2, 0xffff, TLS_MALFORMED);
	patched("name len > list", H_SNI_NAME_LEN, 2, 20, TLS_MALFORMED);
	patched("name len 0", H_SNI_NAME_LEN, 2, 0, TLS_MALFORMED);
	patched("sni ext len > exts", H_SNI_EXT_LEN, 2, 0xff00, TLS_MALFORMED);
	patched("sni ext len + 1", H_SNI_EXT_LEN, 2, sni_ext_len + 1,
		TLS_MALFORMED);
	patched("sni ext len 0", H_SNI_EXT_LEN, 2, 0, TLS_MALFORMED);
	patched("exts len > body", H_EXT_LEN, 2, (unsigned int)(n - 75),
		TLS_MALFORMED);
	patched("exts len < body", H_EXT_LEN, 2, (unsigned int)(n - 78),
		TLS_MALFORMED);
	patched("sid len 33", H_SID_LEN, 1, 33, TLS_MALFORMED);
	patched("sid len 255", H_SID_LEN, 1, 255, TLS_MALFORMED);
	patched("cipher suites len odd", H_CS_LEN, 2, 3, TLS_MALFORMED);
	patched("cipher suites len 0", H_CS_LEN, 2, 0, TLS_MALFORMED);
	patched("cipher suites len > body", H_CS_LEN, 2, 0xfffe,
		TLS_MALFORMED);
	patched("compression len 0", H_COMP_LEN, 1, 0, TLS_MALFORMED);
	patched("legacy_version 2.0", H_VER, 1, 2, TLS_MALFORMED);
	patched("hs len - 1", H_LEN, 3, (unsigned int)n - 1, TLS_MALFORMED);
	patched("hs len 0", H_LEN, 3, 0, TLS_MALFORMED);
	patched("hs type 2", 0, 1, 2, TLS_NOT_TLS);
	patched("name with NUL", H_SNI_NAME + 3, 1, 0, TLS_MALFORMED);
	patched("name with space", H_SNI_NAME + 3, 1, ' ', TLS_MALFORMED);
	patched("name with 8-bit", H_SNI_NAME + 3, 1, 0xc3, TLS_MALFORMED);
	patched("name with '*'", H_SNI_NAME, 1, '*', TLS_MALFORMED);
	patched("name type 1 only", H_SNI_TYPE, 1, 1, TLS_NO_SNI);

	/* a 33-byte session id, everything else consistent */
	build_sni_hello("mta-sts.example.com", 19);
	tmp_g.n = 0;
	putn(&tmp_g, hs_g.d, H_SID_LEN + 1);
	put8(&tmp_g, 0xee);
	putn(&tmp_g, hs_g.d + H_SID_LEN + 1, hs_g.n - H_SID_LEN - 1);
	tmp_g.d[H_SID_LEN] = 33;
	set24(tmp_g.d + H_LEN, (unsigned int)(tmp_g.n - 4));
	hs_to_records(tmp_g.d, tmp_g.n, 16384, &rec_g);
	expect("malformed", "consistent 33-byte session id", rec_g.d, rec_g.n,
	       TLS_MALFORMED, NULL);
	tmp_g.d[H_SID_LEN] = 32;	/* then 0xee is a cipher-suite byte */
	hs_to_records(tmp_g.d, tmp_g.n, 16384, &rec_g);
	expect("malformed", "sid 32, one byte shifted", rec_g.d, rec_g.n,
	       TLS_MALFORMED, NULL);

	/* handshake longer than the data: a consistent prefix */
	build_sni_hello("mta-sts.example.com", 19);
	hs_to_records(hs_g.d, hs_g.n - 10, 16384, &rec_g);
	expect("malformed", "hello cut at a record end", rec_g.d, rec_g.n,
	       TLS_NEED_MORE, NULL);
	/* ... followed by a record of another type */
	tmp_g.n = 0;
	putn(&tmp_g, rec_g.d, rec_g.n);
	putn(&tmp_g, "\x17\x03\x03\x00\x0a", 5);
	putn(&tmp_g, hs_g.d + hs_g.n - 10, 10);
	expect("malformed", "application data inside hello", tmp_g.d,
	       tmp_g.n, TLS_MALFORMED, NULL);
	tmp_g.d[rec_g.n] = 20;
	expect("malformed", "change_cipher_spec inside hello", tmp_g.d,
	       tmp_g.n, TLS_MALFORMED, NULL);
	tmp_g.d[rec_g.n] = 22;
	expect("malformed", "continued hello", tmp_g.d, tmp_g.n,
	       TLS_FOUND_SNI, "mta-sts.example.com");
	tmp_g.d[rec_g.n + 1] = 2;
	expect("malformed", "continuation record version 2", tmp_g.d,
	       tmp_g.n, TLS_MALFORMED, NULL);
	tmp_g.d[rec_g.n + 1] = 3;
	set16(tmp_g.d + rec_g.n + 3, 0);
	expect("malformed", "zero-length continuation record", tmp_g.d,
	       tmp_g.n, TLS_MALFORMED, NULL);
	set16(tmp_g.d + rec_g.n + 3, 16384 + 2049);
	expect("malformed", "oversized continuation record", tmp_g.d,
	       tmp_g.n, TLS_MALFORMED, NULL);

	/*
	 * Two bytes in the body after the extensions block, in a record of
	 * their own (so the record boundary falls where the extensions end).
	 */
	build_sni_hello("mta-sts.example.com", 19);
	put16(&hs_g, 0);
	set24(hs_g.d + H_LEN, (unsigned int)(hs_g.n - 4));
	hs_to_records(hs_g.d, hs_g.n - 2, 16384, &rec_g);
	put8(&rec_g, 22);
	put16(&rec_g, 0x0303);
	put16(&rec_g, 2);
	put16(&rec_g, 0);
	expect("malformed", "bytes after extensions, own record", rec_g.d,
	       rec_g.n, TLS_MALFORMED, NULL);

	/* the hello's last record carries one byte more */
	build_sni_hello("mta-sts.example.com", 19);
	set16(rec_g.d + 3, (unsigned int)hs_g.n + 1);
	put8(&rec_g, 0);
	expect("malformed", "byte after hello in its record", rec_g.d,
	       rec_g.n, TLS_MALFORMED, NULL);
	/* ... even before that byte arrived */
	rec_g.n--;
	expect("malformed", "record longer than hello", rec_g.d, rec_g.n,
	       TLS_MALFORMED, NULL);

	/* first record of zero length, of oversize */
	build_sni_hello("mta-sts.example.com", 19);
	set16(rec_g.d + 3, 0);
	expect("malformed", "first record empty", rec_g.d, rec_g.n,
	       TLS_MALFORMED, NULL);
	set16(rec_g.d + 3, 0xffff);
	expect("malformed", "first record 65535", rec_g.d, rec_g.n,
	       TLS_MALFORMED, NULL);
	/* first record version 2 */
	build_sni_hello("mta-sts.example.com", 19);
	rec_g.d[1] = 2;
	expect("malformed", "first record version 2", rec_g.d, rec_g.n,
	       TLS_NOT_TLS, NULL);
}

static void test_extensions(void)
{
	char name[300];

	/* no extensions block at all */
	build_hs(&hs_g, NULL);
	hs_to_records(hs_g.d, hs_g.n, 16384, &rec_g);
	expect("extensions", "no extensions block", rec_g.d, rec_g.n,
	       TLS_NO_SNI, "");
	/* empty extensions block */
	ext_g.n = 0;
	build_hs(&hs_g, &ext_g);
	hs_to_records(hs_g.d, hs_g.n, 16384, &rec_g);
	expect("extensions", "empty extensions block", rec_g.d, rec_g.n,
	       TLS_NO_SNI, "");

	/* SNI last after a 9 KiB extension, in 1000-byte records */
	ext_g.n = 0;
	raw_ext(&ext_g, 0x0010, 9000, 'h');
	raw_ext(&ext_g, 0xfe0d, 300, 0x42);	/* ECH, before the SNI */
	sni_ext(&ext_g, "Last.Example.NET", 16);
	raw_ext(&ext_g, 0x0015, 0, 0);
	build_hs(&hs_g, &ext_g);
	hs_to_records(hs_g.d, hs_g.n, 1000, &rec_g);
	expect("extensions", "sni after 9k and ech", rec_g.d, rec_g.n,
	       TLS_FOUND_SNI, "last.example.net");

	/* ECH after the outer SNI */
	ext_g.n = 0;
	sni_ext(&ext_g, "public.example.com", 18);
	raw_ext(&ext_g, 0xfe0d, 200, 0x17);
	build_hs(&hs_g, &ext_g);
	hs_to_records(hs_g.d, hs_g.n, 16384, &rec_g);
	expect("extensions", "outer sni with ech", rec_g.d, rec_g.n,
	       TLS_FOUND_SNI, "public.example.com");

	/* duplicate server_name extension */
	ext_g.n = 0;
	sni_ext(&ext_g, "a.example.com", 13);
	sni_ext(&ext_g, "b.example.com", 13);
	build_hs(&hs_g, &ext_g);
	hs_to_records(hs_g.d, hs_g.n, 16384, &rec_g);
	expect("extensions", "two server_name extensions", rec_g.d, rec_g.n,
	       TLS_MALFORMED, NULL);

	/* list: unknown name type first, then host_name, then another */
	ext_g.n = 0;
	put16(&ext_g, 0);
	put16(&ext_g, 2 + 3 + 4 + 3 + 13 + 3 + 13);
	put16(&ext_g, 3 + 4 + 3 + 13 + 3 + 13);
	put8(&ext_g, 7);
	put16(&ext_g, 4);
	putn(&ext_g, "\x00\x01\x02\x03", 4);
	put8(&ext_g, 0);
	put16(&ext_g, 13);
	putn(&ext_g, "A.example.com", 13);
	put8(&ext_g, 0);
	put16(&ext_g, 13);
	putn(&ext_g, "b.example.com", 13);
	build_hs(&hs_g, &ext_g);
	hs_to_records(hs_g.d, hs_g.n, 16384, &rec_g);
	expect("extensions", "first host_name wins", rec_g.d, rec_g.n,
	       TLS_FOUND_SNI, "a.example.com");
	/* the second host_name need not be a valid name: it is not used */
	hs_g.d[hs_g.n - 5] = ' ';
	hs_to_records(hs_g.d, hs_g.n, 16384, &rec_g);
	expect("extensions", "second host_name ignored", rec_g.d, rec_g.n,
	       TLS_FOUND_SNI, "a.example.com");

	/* an extension header cut short inside the extensions block */
	ext_g.n = 0;
	sni_ext(&ext_g, "a.example.com", 13);
	put16(&ext_g, 0x0017);
	put8(&ext_g, 0);
	build_hs(&hs_g, &ext_g);
	hs_to_records(hs_g.d, hs_g.n, 16384, &rec_g);
	expect("extensions", "3 stray bytes", rec_g.d, rec_g.n,
	       TLS_MALFORMED, NULL);

	/* names */
	build_sni_hello("MTA-STS.Example.COM", 19);
	expect("sni_name", "upper case", rec_g.d, rec_g.n, TLS_FOUND_SNI,
	       "mta-sts.example.com");
	build_sni_hello("mta-sts.example.com.", 20);
	expect("sni_name", "trailing dot", rec_g.d, rec_g.n, TLS_FOUND_SNI,
	       "mta-sts.example.com");
	build_sni_hello("localhost", 9);
	expect("sni_name", "one label", rec_g.d, rec_g.n, TLS_FOUND_SNI,
	       "localhost");
	build_sni_hello("_acme.x-y.example", 17);
	expect("sni_name", "underscore", rec_g.d, rec_g.n, TLS_FOUND_SNI,
	       "_acme.x-y.example");
	build_sni_hello("192.0.2.1", 9);
	expect("sni_name", "ip literal", rec_g.d, rec_g.n, TLS_FOUND_SNI,
	       "192.0.2.1");
	build_sni_hello("a.b..", 5);
	expect("sni_name", "two trailing dots", rec_g.d, rec_g.n,
	       TLS_MALFORMED, NULL);
	build_sni_hello(".", 1);
	expect("sni_name", "only a dot", rec_g.d, rec_g.n, TLS_MALFORMED,
	       NULL);
	build_sni_hello(".example.com", 12);
	expect("sni_name", "leading dot", rec_g.d, rec_g.n, TLS_MALFORMED,
	       NULL);
	build_sni_hello("a..example.com", 14);
	expect("sni_name", "empty label", rec_g.d, rec_g.n, TLS_MALFORMED,
	       NULL);
	build_sni_hello("a.example.com\0evil.org", 22);
	expect("sni_name", "embedded NUL", rec_g.d, rec_g.n, TLS_MALFORMED,
	       NULL);
	build_sni_hello("a.example.com/", 14);
	expect("sni_name", "slash", rec_g.d, rec_g.n, TLS_MALFORMED, NULL);

	memset(name, 'a', sizeof(name));
	name[63] = name[127] = name[191] = '.';
	build_sni_hello(name, 253);
	expect("sni_name", "253 chars", rec_g.d, rec_g.n, TLS_FOUND_SNI, NULL);
	name[253] = '.';
	build_sni_hello(name, 254);
	expect("sni_name", "253 chars + dot", rec_g.d, rec_g.n, TLS_FOUND_SNI,
	       NULL);
	name[253] = 'a';
	build_sni_hello(name, 254);
	expect("sni_name", "254 chars", rec_g.d, rec_g.n, TLS_MALFORMED, NULL);
	build_sni_hello(name, 300);
	expect("sni_name", "300 chars", rec_g.d, rec_g.n, TLS_MALFORMED, NULL);
}

/* ---- patterns ---------------------------------------------------------- */

static void test_pattern_valid(void)
{
	static const struct {
		const char *p;
		int ok;
	} cases[] = {
		{ "mail.example.com", 1 },
		{ "MAIL.Example.COM", 1 },
		{ "mail.example.com.", 1 },
		{ "*.example.com", 1 },
		{ "*.example.com.", 1 },
		{ "*.com", 1 },
		{ "localhost", 1 },
		{ "_dmarc.example.com", 1 },
		{ "a-b.c-d.example", 1 },
		{ "xn--bcher-kva.example", 1 },
		{ "1.2.3.4", 1 },
		{ "*", 0 },
		{ "*.", 0 },
		{ "**.example.com", 0 },
		{ "*a.example.com", 0 },
		{ "a*.example.com", 0 },
		{ "a.*.com", 0 },
		{ "*.*.example.com", 0 },
		{ "example.*", 0 },
		{ "-a.com", 0 },
		{ "a-.com", 0 },
		{ "a.-b.com", 0 },
		{ "a..com", 0 },
		{ ".a.com", 0 },
		{ "a.com..", 0 },
		{ ".", 0 },
		{ "", 0 },
		{ "a b.com", 0 },
		{ "a/b.com", 0 },
		{ "a:443", 0 },
		{ "caf\xc3\xa9.example", 0 },
	};
	char buf[400];
	const char *why;
	size_t i;
	int ret;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		why = NULL;
		ret = sni_pattern_valid(cases[i].p, &why);
		check(cases[i].ok ? ret == 0 : ret < 0 && why && *why,
		      "pattern_valid", "\"%s\": got %d (%s)", cases[i].p, ret,
		      why ? why : "no reason");
	}
	check(sni_pattern_valid(NULL, &why) < 0, "pattern_valid", "NULL");
	check(sni_pattern_valid("-x", NULL) < 0, "pattern_valid", "why NULL");

	/* label lengths: 63 ok, 64 not */
	memset(buf, 'a', 63);
	strcpy(buf + 63, ".example.com");
	check(sni_pattern_valid(buf, NULL) == 0, "pattern_valid", "63 label");
	memset(buf, 'a', 64);
	strcpy(buf + 64, ".example.com");
	check(sni_pattern_valid(buf, &why) < 0, "pattern_valid", "64 label");
	strcpy(buf, "*.");
	memset(buf + 2, 'b', 64);
	strcpy(buf + 66, ".com");
	check(sni_pattern_valid(buf, &why) < 0, "pattern_valid",
	      "64 label after *");

	/* total lengths: 253 ok (+ a dot), 254 not */
	for (i = 0; i < 253; i++)
		buf[i] = i % 50 == 49 ? '.' : 'a';
	buf[253] = '\0';
	check(sni_pattern_valid(buf, NULL) == 0, "pattern_valid", "253 total");
	buf[253] = '.';
	buf[254] = '\0';
	check(sni_pattern_valid(buf, NULL) == 0, "pattern_valid",
	      "253 total + dot");
	buf[253] = 'a';
	check(sni_pattern_valid(buf, &why) < 0, "pattern_valid", "254 total");
	memcpy(buf, "*.", 2);
	check(sni_pattern_valid(buf, &why) < 0, "pattern_valid",
	      "254 total wildcard");
}

static void test_match(void)
{
	static const struct {
		const char *p, *n;
		int m;
	} cases[] = {
		{ "mail.example.com", "mail.example.com", 1 },
		{ "MAIL.Example.com", "mail.example.com", 1 },
		{ "mail.example.com", "MAIL.EXAMPLE.COM", 1 },
		{ "mail.example.com.", "mail.example.com", 1 },
		{ "mail.example.com", "mail.example.com.", 1 },
		{ "mail.example.com", "mail.example.co", 0 },
		{ "mail.example.com", "xmail.example.com", 0 },
		{ "mail.example.com", "a.mail.example.com", 0 },
		{ "mail.example.com", "", 0 },
		{ "*.example.org", "a.example.org", 1 },
		{ "*.example.org", "A.Example.ORG", 1 },
		{ "*.example.org", "a.b.example.org", 1 },
		{ "*.example.org", "a.example.org.", 1 },
		{ "*.example.org.", "a.example.org", 1 },
		{ "*.example.org", "example.org", 0 },
		{ "*.example.org", ".example.org", 0 },
		{ "*.example.org", "aexample.org", 0 },
		{ "*.example.org", "a.example.org.evil", 0 },
		{ "*.example.org", "a.badexample.org", 0 },
		{ "*.example.org", "a..example.org", 0 },
		{ "*.example.org", "a.example.net", 0 },
		{ "*.org", "example.org", 1 },
		{ "*", "a", 0 },
		{ "", "", 0 },
		{ "a", "a", 1 },
	};
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		check(sni_match(cases[i].p, cases[i].n) == cases[i].m, "match",
		      "sni_match(\"%s\", \"%s\") != %d", cases[i].p,
		      cases[i].n, cases[i].m);
	check(!sni_match(NULL, "a") && !sni_match("a", NULL), "match", "NULL");
}

static void test_result_str(void)
{
	static const char *const want[] = {
		"need_more", "found_sni", "no_sni", "not_tls", "too_large",
		"malformed",
	};
	int i;

	for (i = TLS_NEED_MORE; i <= TLS_MALFORMED; i++)
		check(!strcmp(tls_result_str(i), want[i]), "result_str",
		      "%d -> %s", i, tls_result_str(i));
	check(!strcmp(tls_result_str(99), "unknown") &&
	      !strcmp(tls_result_str(-1), "unknown"), "result_str", "unknown");
}

int main(int argc, char **argv)
{
	const char *dir = getenv("EDGE_TEST_DATA");

	if (argc > 1)
		dir = argv[1];
	if (!dir || !*dir)
		dir = "tests/unit/data";

	test_captures(dir);
	test_not_tls();
	test_too_large();
	test_malformed();
	test_extensions();
	test_pattern_valid();
	test_match();
	test_result_str();

	printf("test_tls: %d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
