/*
 * echo_check - byte-exact TCP stream checker for proxy tests.
 *
 * One self-contained program (libc + pthreads only) with a server side
 * (echo / sink / source / banner, optional PROXY protocol v1/v2 parsing and
 * a per-connection log) and a client side (single flow, or many concurrent
 * flows) that verifies every byte against a deterministic pattern.
 *
 * Pattern: byte i of the stream with seed S is byte (i % 8) (little-endian)
 * of splitmix64(splitmix64(S) ^ (i / 8)).  Consecutive 8-byte words are distinct
 * pseudo-random values, so loss, duplication, reordering, shifts, foreign
 * data and corruption are detected at the exact offset, and a shift can be
 * measured by searching the received bytes in the pattern near the offset.
 * Generation and checking work on whole 64-bit words (several GB/s/core).
 *
 * Build: gcc -std=gnu11 -O2 -Wall -Wextra -Werror -pthread echo_check.c
 * Run "echo_check help" for usage.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

/* Exit codes (client / multi). */
enum {
	EXIT_OK = 0,
	EXIT_USAGE = 1,    /* bad arguments or local error */
	EXIT_MISMATCH = 2, /* wrong byte, extra bytes, wrong banner */
	EXIT_STALL = 3,    /* nothing moved for STALL seconds */
	EXIT_EOF = 4,      /* EOF before all expected bytes arrived */
	EXIT_CONNECT = 5,  /* connect failed or timed out */
	EXIT_RESET = 6,    /* connection reset / socket error mid-stream */
};

static const char usage_text[] =
"echo_check - byte-exact TCP stream checker for proxy tests\n"
"\n"
"usage:\n"
"  echo_check server -l HOST:PORT [-m echo|sink|source|banner] [-p] [-o FILE]\n"
"                    [-n BYTES] [-s SEED] [-b BANNER] [-v]\n"
"  echo_check client -c HOST:PORT [-d both|up|down] [-n BYTES] [-w WRITE_SIZE]\n"
"                    [-s SEED] [-t STALL_SECONDS] [-e BANNER] [-N] [-R] [-H] [-q]\n"
"  echo_check multi  -c HOST:PORT -j CONCURRENCY -k COUNT [-s SEED]\n"
"                    [-M MAXBYTES] [-t STALL_SECONDS] [-e BANNER] [-q]\n"
"  echo_check selftest      (pattern/checker self-test and speed)\n"
"\n"
"HOST:PORT is 127.0.0.1:9000, [::1]:9000, localhost:9000, or *:PORT / :PORT\n"
"(server: any address).  Port 0 for the server picks a free port.  BYTES\n"
"accept K, M, G, T suffixes (powers of 1024).  BANNER strings understand the\n"
"escapes \\r \\n \\t \\\\ \\xHH, e.g. -b '220 hi\\r\\n'.\n"
"\n"
"Pattern: byte i of the stream with seed S is byte i%8 (little-endian) of\n"
"splitmix64(splitmix64(S) ^ (i/8)).  Client and server must use the same\n"
"-s SEED (default 1).\n"
"\n"
"server: listens (SO_REUSEADDR, backlog 4096), one thread per connection, and\n"
"runs until SIGTERM/SIGINT (then exits 0).  Prints 'listening ADDR:PORT' on\n"
"stdout once the socket is listening.\n"
"  -m echo     (default) write back every byte read (256 KiB buffer, reads\n"
"              and writes interleave, never deadlocks); on client half-close\n"
"              flush everything, shutdown(SHUT_WR), close.  Reset/error: close.\n"
"  -m sink     read and discard until EOF, then close.\n"
"  -m source   write -n BYTES (default 0) of the pattern with seed -s (default\n"
"              1), shutdown(SHUT_WR), read (discarding) until EOF, close.  A\n"
"              client half-close does not stop the sending.\n"
"  -m banner   write -b BANNER right after accept, then behave like echo.\n"
"  -p          every connection starts with a HAProxy PROXY header (v1 text\n"
"              or v2 binary).  It is parsed, stripped and logged.  With -p it\n"
"              is read before the banner is sent.  An invalid or incomplete\n"
"              header is logged as proxy=invalid and the connection closed.\n"
"  -o FILE     append one line per accepted connection, flushed at once:\n"
"              conn=N proxy=v1|v2|none|invalid src=IP:PORT dst=IP:PORT authority=NAME|-\n"
"              (IPv6 as [ip]:port; without -p src/dst are the socket peer\n"
"              and local address; with -p those from the header, '-' if the\n"
"              header has none (v1 UNKNOWN, v2 LOCAL/UNSPEC/UNIX); authority\n"
"              is the v2 PP2_TYPE_AUTHORITY TLV; with -p, proxy=none means\n"
"              the peer closed before sending any byte).\n"
"  -v          also print those lines and per-connection errors on stderr.\n"
"\n"
"client: one connection.  If -e is given, first reads exactly that banner and\n"
"compares it (sends nothing before).  Then:\n"
"  -d both     (default) send BYTES (default 1M) of the pattern in writes of\n"
"              at most WRITE_SIZE (default 16384) while reading and verifying\n"
"              the echo, then shutdown(SHUT_WR) and read until EOF.  Success\n"
"              = exactly BYTES came back, all matching, then EOF.\n"
"  -d up       send BYTES, shutdown(SHUT_WR), wait for EOF (server sink);\n"
"              any byte received is an error.\n"
"  -d down     send nothing, read and verify BYTES (server source), then EOF.\n"
"  -t SECS     stall detector: fail if nothing moves in either direction for\n"
"              SECS (default 10, fractions allowed).  Also the connect timeout.\n"
"  -R          at the end, instead of shutdown(SHUT_WR)+EOF, close with\n"
"              SO_LINGER {1,0} (RST) and exit 0.  'End' = after all BYTES were\n"
"              sent (up), sent and echoed back verified (both), or received\n"
"              verified (down).\n"
"  -N          TCP_NODELAY: every write leaves as its own segment (as with\n"
"              iperf3 -l SIZE against a fast receiver), so the proxy sees\n"
"              WRITE_SIZE messages.\n"
"  -H          read one line (up to \\n), print it on stdout and exit 0.\n"
"  -q          print nothing on success.\n"
"  On success prints one line (mbps = 10^6 bit/s):\n"
"    ok bytes_up=N bytes_down=N secs=F mbps_up=F mbps_down=F\n"
"\n"
"multi: COUNT flows against an echo (or banner with -e) server, CONCURRENCY at\n"
"a time (one thread each).  Per flow, derived deterministically from -s SEED\n"
"and the flow index: size in [0, MAXBYTES] (default 4M; the first flows are\n"
"0, 1, 7, 8, 9, MAXBYTES bytes, then a mix of 0, tiny, log-uniform and\n"
"uniform sizes), write size in [1, 65536] (1/8 of flows tiny writes; a flow\n"
"does at most 16384 writes, so size <= 16384 * write size), its own\n"
"pattern seed (so cross-flow mix-ups are caught), and a direction pattern:\n"
"  both        send while reading the echo, half-close after sending all.\n"
"  late        send while reading, wait until all is echoed, then half-close.\n"
"Every flow must get its bytes back intact followed by EOF.  Each failure is\n"
"printed as 'multi: FAIL flow=I size=N ws=W mode=M kind=K: detail'; the last\n"
"line is 'multi: flows=N ok=N failed=N bytes=N' (bytes = payload bytes that\n"
"were echoed and verified).  -q: print nothing on success.\n"
"\n"
"exit codes (client, multi = code of the first failed flow):\n"
"  0 ok   1 usage/local error   2 mismatch, extra bytes or wrong banner\n"
"  3 stall   4 early EOF   5 connect failure   6 reset/socket error\n"
"On a mismatch the first bad offset, expected/got bytes and a shift hint are\n"
"printed, e.g. 'looks like 16384 bytes lost' or 'looks like 4096 bytes\n"
"duplicated' (the received bytes are searched in the pattern within +-256 KiB\n"
"of the offset, in 1-byte steps).\n";

static void usage(void)
{
	fputs(usage_text, stderr);
	exit(EXIT_USAGE);
}

static void die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("echo_check: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(EXIT_USAGE);
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ------------------------------------------------------------------------
 * Pattern
 * ---------------------------------------------------------------------- */

static inline uint64_t splitmix64(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ULL;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

/* The seed is hashed first so that nearby seeds (1, 2, 3...) give unrelated
 * streams (with plain seed ^ w, seeds S and S^1 would be word-swapped). */
static inline uint64_t pat_key(uint64_t seed)
{
	return splitmix64(seed);
}

/* Word number w of the stream, in memory (little-endian) byte order. */
static inline uint64_t pat_word(uint64_t key, uint64_t w)
{
	return htole64(splitmix64(key ^ w));
}

/* Reference (slow) definition, used by the self-test. */
static inline uint8_t pat_byte(uint64_t seed, uint64_t off)
{
	return (uint8_t)(splitmix64(pat_key(seed) ^ (off >> 3)) >> ((off & 7) * 8));
}

/* Fill buf with stream bytes [off, off+len). */
static void pat_fill(uint64_t seed, uint64_t off, uint8_t *buf, size_t len)
{
	seed = pat_key(seed);
	uint64_t w = off >> 3;
	unsigned r = (unsigned)(off & 7);
	uint64_t v;

	if (r && len) {
		size_t k = 8 - r;
		if (k > len)
			k = len;
		v = pat_word(seed, w++);
		memcpy(buf, (uint8_t *)&v + r, k);
		buf += k;
		len -= k;
	}
	while (len >= 32) {
		uint64_t a = pat_word(seed, w), b = pat_word(seed, w + 1);
		uint64_t c = pat_word(seed, w + 2), d = pat_word(seed, w + 3);
		memcpy(buf, &a, 8);
		memcpy(buf + 8, &b, 8);
		memcpy(buf + 16, &c, 8);
		memcpy(buf + 24, &d, 8);
		w += 4;
		buf += 32;
		len -= 32;
	}
	while (len >= 8) {
		v = pat_word(seed, w++);
		memcpy(buf, &v, 8);
		buf += 8;
		len -= 8;
	}
	if (len) {
		v = pat_word(seed, w);
		memcpy(buf, &v, len);
	}
}

/* Check buf against stream bytes [off, off+len).  Returns len if all bytes
 * match, otherwise the index of the first mismatching byte. */
static size_t pat_check(uint64_t seed, uint64_t off, const uint8_t *buf, size_t len)
{
	seed = pat_key(seed);
	uint64_t w = off >> 3, v, x;
	unsigned r = (unsigned)(off & 7);
	size_t i = 0, j;

	if (r && len) {
		size_t k = 8 - r;
		if (k > len)
			k = len;
		v = pat_word(seed, w++);
		for (j = 0; j < k; j++)
			if (buf[j] != ((const uint8_t *)&v)[r + j])
				return j;
		i = k;
	}
	while (len - i >= 64) {
		uint64_t acc = 0;
		for (j = 0; j < 8; j++) {
			memcpy(&x, buf + i + 8 * j, 8);
			acc |= x ^ pat_word(seed, w + j);
		}
		if (acc)
			break; /* located by the word loop below */
		i += 64;
		w += 8;
	}
	while (len - i >= 8) {
		memcpy(&x, buf + i, 8);
		v = pat_word(seed, w);
		if (x != v) {
			for (j = 0; j < 8; j++)
				if (buf[i + j] != ((const uint8_t *)&v)[j])
					return i + j;
		}
		i += 8;
		w++;
	}
	if (i < len) {
		v = pat_word(seed, w);
		for (j = 0; i + j < len; j++)
			if (buf[i + j] != ((const uint8_t *)&v)[j])
				return i + j;
	}
	return len;
}

#define SHIFT_RANGE (256 * 1024)

/* Explain a mismatch at stream offset off, given the bytes received from
 * off onwards: search them in the expected stream within +-SHIFT_RANGE. */
static void shift_hint(uint64_t seed, uint64_t off, const uint8_t *got, size_t glen,
		       char *out, size_t outsz)
{
	size_t nl = glen < 32 ? glen : 32, i;
	int zeros = 1;

	for (i = 0; i < glen; i++)
		if (got[i]) {
			zeros = 0;
			break;
		}
	if (nl < 8) {
		snprintf(out, outsz, "only %zu byte(s) available after the mismatch, too few "
			 "for shift analysis%s", glen, zeros && glen ? " (they are zero)" : "");
		return;
	}
	uint64_t lo = off > SHIFT_RANGE ? off - SHIFT_RANGE : 0;
	uint64_t hi = off + SHIFT_RANGE + nl;
	size_t wl = (size_t)(hi - lo);
	uint8_t *win = malloc(wl);
	if (!win) {
		snprintf(out, outsz, "out of memory for shift analysis");
		return;
	}
	pat_fill(seed, lo, win, wl);
	int found = 0;
	int64_t best = 0;
	const uint8_t *p = win, *q;
	size_t rem = wl;
	while (rem >= nl && (q = memmem(p, rem, got, nl)) != NULL) {
		int64_t k = (int64_t)(lo + (uint64_t)(q - win)) - (int64_t)off;
		if (!found || llabs(k) < llabs(best)) {
			best = k;
			found = 1;
		}
		rem -= (size_t)(q + 1 - p);
		p = q + 1;
	}
	free(win);
	if (!found)
		snprintf(out, outsz, "the received bytes match no shift of the stream within "
			 "+-%d KiB: corrupted or foreign data%s", SHIFT_RANGE / 1024,
			 zeros ? " (received bytes are all zero)" : "");
	else if (best > 0)
		snprintf(out, outsz, "received bytes match the stream at offset+%" PRId64
			 ": looks like %" PRId64 " bytes lost (skipped or reordered) at offset %"
			 PRIu64, best, best, off);
	else
		snprintf(out, outsz, "received bytes match the stream at offset-%" PRId64
			 ": looks like %" PRId64 " bytes duplicated (replayed) at offset %" PRIu64,
			 -best, -best, off);
}

/* ------------------------------------------------------------------------
 * Small helpers
 * ---------------------------------------------------------------------- */

static uint64_t parse_size(const char *s, const char *what)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 0);
	if (errno || end == s || *s == '-')
		die("bad %s: '%s'", what, s);
	unsigned sh = 0;
	switch (*end) {
	case 'k': case 'K': sh = 10; end++; break;
	case 'm': case 'M': sh = 20; end++; break;
	case 'g': case 'G': sh = 30; end++; break;
	case 't': case 'T': sh = 40; end++; break;
	default: break;
	}
	if (sh && *end == 'i')
		end++;
	if (*end == 'B' || *end == 'b')
		end++;
	if (*end)
		die("bad %s: '%s'", what, s);
	if (sh && v > (UINT64_MAX >> sh))
		die("%s too large: '%s'", what, s);
	return (uint64_t)v << sh;
}

static double parse_secs(const char *s)
{
	char *end;
	double d = strtod(s, &end);
	if (end == s || *end || !(d > 0) || d > 1e6)
		die("bad seconds value: '%s'", s);
	return d;
}

/* Interpret \r \n \t \0 \\ \xHH.  Returns malloc'd buffer, length in *len. */
static char *unescape(const char *s, size_t *len)
{
	size_t n = strlen(s), o = 0;
	char *out = malloc(n + 1);
	if (!out)
		die("out of memory");
	for (size_t i = 0; i < n; i++) {
		if (s[i] != '\\' || i + 1 == n) {
			out[o++] = s[i];
			continue;
		}
		char c = s[++i];
		switch (c) {
		case 'r': out[o++] = '\r'; break;
		case 'n': out[o++] = '\n'; break;
		case 't': out[o++] = '\t'; break;
		case '0': out[o++] = '\0'; break;
		case '\\': out[o++] = '\\'; break;
		case 'x': {
			unsigned v = 0, k = 0;
			while (k < 2 && i + 1 < n && strchr("0123456789abcdefABCDEF", s[i + 1]) && s[i + 1]) {
				char h = s[++i];
				v = v * 16 + (unsigned)(h <= '9' ? h - '0' : (h | 0x20) - 'a' + 10);
				k++;
			}
			if (!k)
				die("bad \\x escape in '%s'", s);
			out[o++] = (char)v;
			break;
		}
		default:
			out[o++] = '\\';
			out[o++] = c;
			break;
		}
	}
	out[o] = 0;
	*len = o;
	return out;
}

/* Printable rendering of up to max bytes of b (for messages). */
static void render(const uint8_t *b, size_t n, char *out, size_t outsz)
{
	size_t o = 0;
	for (size_t i = 0; i < n && o + 5 < outsz; i++) {
		uint8_t c = b[i];
		if (c == '\r') { out[o++] = '\\'; out[o++] = 'r'; }
		else if (c == '\n') { out[o++] = '\\'; out[o++] = 'n'; }
		else if (c == '\\') { out[o++] = '\\'; out[o++] = '\\'; }
		else if (c >= 0x20 && c < 0x7f) out[o++] = (char)c;
		else o += (size_t)snprintf(out + o, outsz - o, "\\x%02x", c);
	}
	out[o] = 0;
}

static void hexdump(const uint8_t *b, size_t n, char *out, size_t outsz)
{
	size_t o = 0;
	out[0] = 0;
	for (size_t i = 0; i < n && o + 3 < outsz; i++)
		o += (size_t)snprintf(out + o, outsz - o, "%02x", b[i]);
}

/* Split HOST:PORT / [V6]:PORT and resolve. */
static struct addrinfo *resolve(const char *spec, int passive)
{
	char host[256];
	const char *port;
	if (spec[0] == '[') {
		const char *rb = strchr(spec, ']');
		if (!rb || rb[1] != ':' || (size_t)(rb - spec - 1) >= sizeof(host))
			die("bad address '%s' (want [IPv6]:PORT)", spec);
		memcpy(host, spec + 1, (size_t)(rb - spec - 1));
		host[rb - spec - 1] = 0;
		port = rb + 2;
	} else {
		const char *c = strrchr(spec, ':');
		if (!c || (size_t)(c - spec) >= sizeof(host))
			die("bad address '%s' (want HOST:PORT)", spec);
		memcpy(host, spec, (size_t)(c - spec));
		host[c - spec] = 0;
		port = c + 1;
	}
	if (!*port)
		die("bad address '%s': no port", spec);
	struct addrinfo hints = {0}, *res = NULL;
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0);
	const char *h = host;
	if (!*host || !strcmp(host, "*")) {
		if (!passive)
			die("bad address '%s': no host", spec);
		h = NULL;
		hints.ai_family = AF_INET;
	}
	int e = getaddrinfo(h, port, &hints, &res);
	if (e)
		die("cannot resolve '%s': %s", spec, gai_strerror(e));
	return res;
}

/* "ip:port" / "[ip]:port"; v4-mapped IPv6 is printed as IPv4. */
static void fmt_sa(const struct sockaddr *sa, char *out, size_t outsz)
{
	char ip[INET6_ADDRSTRLEN];
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
		inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof(ip));
		snprintf(out, outsz, "%s:%u", ip, ntohs(s4->sin_port));
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
		if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
			inet_ntop(AF_INET, &s6->sin6_addr.s6_addr[12], ip, sizeof(ip));
			snprintf(out, outsz, "%s:%u", ip, ntohs(s6->sin6_port));
		} else {
			inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof(ip));
			snprintf(out, outsz, "[%s]:%u", ip, ntohs(s6->sin6_port));
		}
	} else {
		snprintf(out, outsz, "-");
	}
}

static int is_again(int e)
{
	return e == EAGAIN || e == EWOULDBLOCK || e == EINTR;
}

/* ------------------------------------------------------------------------
 * PROXY protocol parsing
 * ---------------------------------------------------------------------- */

struct ppinfo {
	int ver; /* 0 none, 1, 2 */
	char src[64], dst[64], authority[260];
};

static const uint8_t pp2_sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
				    0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
#define PP_HDR_MAX (16 + 65535)
#define PP1_MAX 107

static int parse_port(const char *s, unsigned *port)
{
	size_t n = strlen(s);
	if (n < 1 || n > 5)
		return -1;
	unsigned v = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (unsigned)(s[i] - '0');
	}
	if (v > 65535)
		return -1;
	*port = v;
	return 0;
}

static void fmt_ip_port(int fam, const void *addr, unsigned port, char *out, size_t outsz)
{
	char ip[INET6_ADDRSTRLEN];
	inet_ntop(fam, addr, ip, sizeof(ip));
	if (fam == AF_INET6)
		snprintf(out, outsz, "[%s]:%u", ip, port);
	else
		snprintf(out, outsz, "%s:%u", ip, port);
}

/* line: header without CRLF. */
static int pp1_parse(const uint8_t *line, size_t len, struct ppinfo *pi)
{
	char tmp[PP1_MAX + 1], *tok[5];
	int fam, nt = 0;
	if (len < 6 || len > PP1_MAX - 2)
		return -1;
	memcpy(tmp, line, len);
	tmp[len] = 0;
	if (strlen(tmp) != len)
		return -1; /* embedded NUL */
	char *p = tmp + 6;
	pi->ver = 1;
	if (!strncmp(p, "UNKNOWN", 7) && (p[7] == 0 || p[7] == ' ')) {
		strcpy(pi->src, "-");
		strcpy(pi->dst, "-");
		return 0;
	}
	if (!strncmp(p, "TCP4 ", 5))
		fam = AF_INET;
	else if (!strncmp(p, "TCP6 ", 5))
		fam = AF_INET6;
	else
		return -1;
	p += 5;
	for (;;) {
		if (nt == 4)
			return -1;
		tok[nt++] = p;
		char *sp = strchr(p, ' ');
		if (!sp)
			break;
		*sp = 0;
		p = sp + 1;
	}
	if (nt != 4)
		return -1;
	unsigned char a[16], b[16];
	unsigned sp_, dp_;
	if (inet_pton(fam, tok[0], a) != 1 || inet_pton(fam, tok[1], b) != 1 ||
	    parse_port(tok[2], &sp_) || parse_port(tok[3], &dp_))
		return -1;
	fmt_ip_port(fam, a, sp_, pi->src, sizeof(pi->src));
	fmt_ip_port(fam, b, dp_, pi->dst, sizeof(pi->dst));
	return 0;
}

/* Try to parse a PROXY header from the n bytes at b.
 * Returns header length (>0) when complete, 0 if more bytes are needed,
 * -1 if invalid. */
static int pp_try(const uint8_t *b, size_t n, struct ppinfo *pi)
{
	if (n == 0)
		return 0;
	if (!memcmp(b, pp2_sig, n < 12 ? n : 12)) {
		if (n < 16)
			return 0;
		unsigned vc = b[12], fam = b[13];
		size_t hl = ((size_t)b[14] << 8) | b[15], alen;
		if ((vc >> 4) != 2 || (vc & 0xf) > 1)
			return -1;
		if (n < 16 + hl)
			return 0;
		switch (fam >> 4) {
		case 0: alen = 0; break;
		case 1: alen = 12; break;
		case 2: alen = 36; break;
		case 3: alen = 216; break;
		default: return -1;
		}
		if ((fam & 0xf) > 2 || hl < alen)
			return -1;
		const uint8_t *a = b + 16;
		pi->ver = 2;
		strcpy(pi->src, "-");
		strcpy(pi->dst, "-");
		if ((vc & 0xf) == 1 && (fam >> 4) == 1) {
			fmt_ip_port(AF_INET, a, (unsigned)(a[8] << 8 | a[9]), pi->src, sizeof(pi->src));
			fmt_ip_port(AF_INET, a + 4, (unsigned)(a[10] << 8 | a[11]), pi->dst, sizeof(pi->dst));
		} else if ((vc & 0xf) == 1 && (fam >> 4) == 2) {
			fmt_ip_port(AF_INET6, a, (unsigned)(a[32] << 8 | a[33]), pi->src, sizeof(pi->src));
			fmt_ip_port(AF_INET6, a + 16, (unsigned)(a[34] << 8 | a[35]), pi->dst, sizeof(pi->dst));
		}
		const uint8_t *t = a + alen;
		size_t rem = hl - alen;
		while (rem) {
			if (rem < 3)
				return -1;
			size_t l = ((size_t)t[1] << 8) | t[2];
			if (l > rem - 3)
				return -1;
			if (t[0] == 0x02) {
				size_t k = l < sizeof(pi->authority) - 1 ? l : sizeof(pi->authority) - 1;
				for (size_t i = 0; i < k; i++) {
					uint8_t c = t[3 + i];
					pi->authority[i] = (c > 0x20 && c < 0x7f) ? (char)c : '?';
				}
				pi->authority[k] = 0;
				if (!k)
					strcpy(pi->authority, "-");
			}
			t += 3 + l;
			rem -= 3 + l;
		}
		return (int)(16 + hl);
	}
	if (!memcmp(b, "PROXY ", n < 6 ? n : 6)) {
		if (n < 6)
			return 0;
		size_t lim = n < PP1_MAX ? n : PP1_MAX;
		for (size_t i = 0; i + 1 < lim; i++) {
			if (b[i] == '\r' && b[i + 1] == '\n')
				return pp1_parse(b, i, pi) ? -1 : (int)(i + 2);
			if (b[i] == '\r' || b[i] == '\n')
				return -1;
		}
		return n >= PP1_MAX ? -1 : 0;
	}
	return -1;
}

/* ------------------------------------------------------------------------
 * Server
 * ---------------------------------------------------------------------- */

enum { M_ECHO, M_SINK, M_SOURCE, M_BANNER };

static struct {
	int mode, proxy, verbose, logfd;
	uint64_t nbytes, seed;
	char *banner;
	size_t banner_len;
} srv = {.logfd = -1, .seed = 1};

struct conn {
	int fd;
	uint64_t id;
	struct sockaddr_storage peer, local;
};

#define ECHO_BUF (256 * 1024)

static void srv_log(const char *fmt, ...)
{
	if (!srv.verbose)
		return;
	char buf[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	fprintf(stderr, "echo_check server: %s\n", buf);
}

static void conn_line(const struct conn *c, const char *proxy, const struct ppinfo *pi)
{
	char line[512];
	int n = snprintf(line, sizeof(line), "conn=%" PRIu64 " proxy=%s src=%s dst=%s authority=%s\n",
			 c->id, proxy, pi->src, pi->dst, pi->authority);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(line))
		n = sizeof(line) - 1;
	if (srv.logfd >= 0 && write(srv.logfd, line, (size_t)n) != n)
		srv_log("conn=%" PRIu64 ": write to log file failed: %s", c->id, strerror(errno));
	if (srv.verbose)
		fprintf(stderr, "echo_check server: %s", line);
}

/* Wait for fd readiness (blocks forever). Returns revents or -1. */
static int wait_fd(int fd, short ev)
{
	struct pollfd p = {.fd = fd, .events = ev};
	for (;;) {
		int r = poll(&p, 1, -1);
		if (r > 0)
			return p.revents;
		if (r < 0 && errno != EINTR)
			return -1;
	}
}

static int send_all(int fd, const void *b, size_t n)
{
	const uint8_t *p = b;
	while (n) {
		ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
		if (k > 0) {
			p += k;
			n -= (size_t)k;
		} else if (k < 0 && is_again(errno)) {
			if (wait_fd(fd, POLLOUT) < 0)
				return -1;
		} else {
			return -1;
		}
	}
	return 0;
}

struct ring {
	uint8_t *b;
	size_t cap, head, used;
};

static ssize_t ring_read(int fd, struct ring *r)
{
	size_t tail = (r->head + r->used) % r->cap, fr = r->cap - r->used;
	size_t l1 = r->cap - tail;
	struct iovec iov[2];
	int n = 1;
	if (l1 > fr)
		l1 = fr;
	iov[0].iov_base = r->b + tail;
	iov[0].iov_len = l1;
	if (fr > l1) {
		iov[1].iov_base = r->b;
		iov[1].iov_len = fr - l1;
		n = 2;
	}
	ssize_t k = readv(fd, iov, n);
	if (k > 0)
		r->used += (size_t)k;
	return k;
}

static ssize_t ring_write(int fd, struct ring *r)
{
	size_t l1 = r->cap - r->head;
	struct iovec iov[2];
	struct msghdr mh = {0};
	if (l1 > r->used)
		l1 = r->used;
	iov[0].iov_base = r->b + r->head;
	iov[0].iov_len = l1;
	mh.msg_iov = iov;
	mh.msg_iovlen = 1;
	if (r->used > l1) {
		iov[1].iov_base = r->b;
		iov[1].iov_len = r->used - l1;
		mh.msg_iovlen = 2;
	}
	ssize_t k = sendmsg(fd, &mh, MSG_NOSIGNAL);
	if (k > 0) {
		r->head = (r->head + (size_t)k) % r->cap;
		r->used -= (size_t)k;
		if (!r->used)
			r->head = 0;
	}
	return k;
}

static void serve_echo(const struct conn *c, struct ring *r)
{
	int fd = c->fd, rd_eof = 0, can_r = 1, can_w = 1;
	uint64_t total = 0;
	for (;;) {
		if (rd_eof && !r->used) {
			shutdown(fd, SHUT_WR);
			srv_log("conn=%" PRIu64 ": echoed %" PRIu64 " bytes, half-closed", c->id, total);
			return;
		}
		int progress = 0;
		if (!rd_eof && can_r && r->used < r->cap) {
			ssize_t k = ring_read(fd, r);
			if (k > 0)
				progress = 1;
			else if (k == 0)
				rd_eof = progress = 1;
			else if (errno == EAGAIN || errno == EWOULDBLOCK)
				can_r = 0;
			else if (errno != EINTR)
				goto err;
		}
		if (can_w && r->used) {
			ssize_t k = ring_write(fd, r);
			if (k > 0) {
				progress = 1;
				total += (uint64_t)k;
			} else if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
				can_w = 0;
			} else if (k < 0 && errno != EINTR) {
				goto err;
			}
		}
		if (progress)
			continue;
		short ev = 0;
		if (!rd_eof && r->used < r->cap)
			ev |= POLLIN;
		if (r->used)
			ev |= POLLOUT;
		int re = wait_fd(fd, ev);
		if (re < 0)
			goto err;
		if (re & (POLLIN | POLLHUP | POLLERR))
			can_r = 1;
		if (re & (POLLOUT | POLLHUP | POLLERR))
			can_w = 1;
	}
err:
	srv_log("conn=%" PRIu64 ": %s after echoing %" PRIu64 " bytes, closing", c->id,
		strerror(errno), total);
}

static void serve_sink(const struct conn *c)
{
	uint8_t buf[65536];
	uint64_t total = 0;
	for (;;) {
		ssize_t k = recv(c->fd, buf, sizeof(buf), 0);
		if (k > 0) {
			total += (uint64_t)k;
		} else if (k == 0) {
			srv_log("conn=%" PRIu64 ": sank %" PRIu64 " bytes, EOF", c->id, total);
			return;
		} else if (is_again(errno)) {
			if (wait_fd(c->fd, POLLIN) < 0)
				return;
		} else {
			srv_log("conn=%" PRIu64 ": %s after %" PRIu64 " bytes", c->id, strerror(errno), total);
			return;
		}
	}
}

static void serve_source(const struct conn *c)
{
	int fd = c->fd, shut = 0, can_r = 1, can_w = 1, rd_eof = 0;
	uint64_t gen = 0, sent = 0;
	size_t wl = 0, wo = 0;
	uint8_t *wb = malloc(ECHO_BUF), rb[16384];
	if (!wb)
		return;
	for (;;) {
		if (!shut && wo == wl && gen == srv.nbytes) {
			shutdown(fd, SHUT_WR);
			shut = 1;
			srv_log("conn=%" PRIu64 ": sourced %" PRIu64 " bytes, half-closed", c->id, sent);
		}
		if (shut && rd_eof)
			break;
		int progress = 0;
		if (can_r && !rd_eof) {
			ssize_t k = recv(fd, rb, sizeof(rb), 0);
			if (k > 0)
				progress = 1;
			else if (k == 0)
				rd_eof = progress = 1; /* keep sending after a client half-close */
			else if (errno == EAGAIN || errno == EWOULDBLOCK)
				can_r = 0;
			else if (errno != EINTR)
				goto err;
		}
		if (!shut && can_w) {
			if (wo == wl) {
				uint64_t left = srv.nbytes - gen;
				wl = left < ECHO_BUF ? (size_t)left : ECHO_BUF;
				pat_fill(srv.seed, gen, wb, wl);
				gen += wl;
				wo = 0;
			}
			ssize_t k = send(fd, wb + wo, wl - wo, MSG_NOSIGNAL);
			if (k > 0) {
				wo += (size_t)k;
				sent += (uint64_t)k;
				progress = 1;
			} else if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
				can_w = 0;
			} else if (k < 0 && errno != EINTR) {
				goto err;
			}
		}
		if (progress)
			continue;
		int re = wait_fd(fd, (short)((rd_eof ? 0 : POLLIN) | (shut ? 0 : POLLOUT)));
		if (re < 0)
			goto err;
		if (re & (POLLIN | POLLHUP | POLLERR))
			can_r = 1;
		if (re & (POLLOUT | POLLHUP | POLLERR))
			can_w = 1;
	}
	srv_log("conn=%" PRIu64 ": EOF from client, closing", c->id);
	free(wb);
	return;
err:
	srv_log("conn=%" PRIu64 ": %s after sourcing %" PRIu64 " bytes", c->id, strerror(errno), sent);
	free(wb);
}

static void *conn_main(void *arg)
{
	struct conn *c = arg;
	struct ppinfo pi = {0};
	uint8_t *hdr = NULL;
	size_t hn = 0, hl = 0;
	struct ring r = {0};

	fmt_sa((struct sockaddr *)&c->peer, pi.src, sizeof(pi.src));
	fmt_sa((struct sockaddr *)&c->local, pi.dst, sizeof(pi.dst));
	strcpy(pi.authority, "-");
	if (srv.proxy) {
		hdr = malloc(PP_HDR_MAX);
		if (!hdr)
			goto out;
		for (;;) {
			int k = pp_try(hdr, hn, &pi);
			if (k > 0) {
				hl = (size_t)k;
				break;
			}
			if (k < 0 || hn == PP_HDR_MAX) {
				fmt_sa((struct sockaddr *)&c->peer, pi.src, sizeof(pi.src));
				fmt_sa((struct sockaddr *)&c->local, pi.dst, sizeof(pi.dst));
				strcpy(pi.authority, "-");
				conn_line(c, "invalid", &pi);
				srv_log("conn=%" PRIu64 ": invalid PROXY header (%zu bytes received)", c->id, hn);
				goto out;
			}
			ssize_t n = recv(c->fd, hdr + hn, PP_HDR_MAX - hn, 0);
			if (n > 0) {
				hn += (size_t)n;
			} else if (n < 0 && is_again(errno)) {
				if (wait_fd(c->fd, POLLIN) < 0)
					goto out;
			} else {
				conn_line(c, hn ? "invalid" : "none", &pi);
				srv_log("conn=%" PRIu64 ": %s before a complete PROXY header (%zu bytes)",
					c->id, n ? strerror(errno) : "EOF", hn);
				goto out;
			}
		}
		conn_line(c, pi.ver == 1 ? "v1" : "v2", &pi);
	} else {
		conn_line(c, "none", &pi);
	}

	if (srv.mode == M_BANNER && send_all(c->fd, srv.banner, srv.banner_len)) {
		srv_log("conn=%" PRIu64 ": sending banner failed: %s", c->id, strerror(errno));
		goto out;
	}
	switch (srv.mode) {
	case M_ECHO:
	case M_BANNER:
		r.cap = ECHO_BUF;
		r.b = malloc(r.cap);
		if (!r.b)
			goto out;
		if (hn > hl) {
			memcpy(r.b, hdr + hl, hn - hl);
			r.used = hn - hl;
		}
		free(hdr);
		hdr = NULL;
		serve_echo(c, &r);
		break;
	case M_SINK:
		free(hdr);
		hdr = NULL;
		serve_sink(c);
		break;
	case M_SOURCE:
		free(hdr);
		hdr = NULL;
		serve_source(c);
		break;
	}
out:
	free(hdr);
	free(r.b);
	close(c->fd);
	free(c);
	return NULL;
}

static void *sig_main(void *arg)
{
	sigset_t *set = arg;
	int sig = 0;
	sigwait(set, &sig);
	if (srv.verbose)
		fprintf(stderr, "echo_check server: signal %d, exiting\n", sig);
	fflush(stdout);
	_exit(0);
	return NULL;
}

static int cmd_server(int argc, char **argv)
{
	const char *listen_spec = NULL, *logfile = NULL, *mode = "echo", *banner = NULL;
	int o;
	while ((o = getopt(argc, argv, "l:pm:n:s:b:o:vh")) != -1) {
		switch (o) {
		case 'l': listen_spec = optarg; break;
		case 'p': srv.proxy = 1; break;
		case 'm': mode = optarg; break;
		case 'n': srv.nbytes = parse_size(optarg, "-n BYTES"); break;
		case 's': srv.seed = parse_size(optarg, "-s SEED"); break;
		case 'b': banner = optarg; break;
		case 'o': logfile = optarg; break;
		case 'v': srv.verbose = 1; break;
		default: usage();
		}
	}
	if (optind != argc || !listen_spec)
		usage();
	if (!strcmp(mode, "echo"))
		srv.mode = M_ECHO;
	else if (!strcmp(mode, "sink"))
		srv.mode = M_SINK;
	else if (!strcmp(mode, "source"))
		srv.mode = M_SOURCE;
	else if (!strcmp(mode, "banner"))
		srv.mode = M_BANNER;
	else
		die("unknown server mode '%s'", mode);
	if (srv.mode == M_BANNER) {
		if (!banner)
			die("-m banner needs -b BANNER");
		srv.banner = unescape(banner, &srv.banner_len);
	}
	if (logfile) {
		srv.logfd = open(logfile, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
		if (srv.logfd < 0)
			die("cannot open %s: %s", logfile, strerror(errno));
	}

	struct addrinfo *ai = resolve(listen_spec, 1);
	int lfd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
	if (lfd < 0)
		die("socket: %s", strerror(errno));
	int one = 1;
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(lfd, ai->ai_addr, ai->ai_addrlen))
		die("bind %s: %s", listen_spec, strerror(errno));
	if (listen(lfd, 4096))
		die("listen: %s", strerror(errno));
	freeaddrinfo(ai);

	struct sockaddr_storage la;
	socklen_t ll = sizeof(la);
	char lbuf[80];
	getsockname(lfd, (struct sockaddr *)&la, &ll);
	fmt_sa((struct sockaddr *)&la, lbuf, sizeof(lbuf));

	static sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);

	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&attr, 256 * 1024);
	pthread_t st;
	if (pthread_create(&st, &attr, sig_main, &set))
		die("pthread_create failed");

	printf("listening %s\n", lbuf);
	fflush(stdout);
	srv_log("listening on %s mode=%s%s", lbuf, mode, srv.proxy ? " proxy-protocol" : "");

	uint64_t id = 0;
	for (;;) {
		struct conn *c = calloc(1, sizeof(*c));
		if (!c)
			die("out of memory");
		socklen_t pl = sizeof(c->peer);
		c->fd = accept4(lfd, (struct sockaddr *)&c->peer, &pl, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (c->fd < 0) {
			int e = errno;
			free(c);
			if (e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM) {
				srv_log("accept: %s", strerror(e));
				usleep(10000);
			}
			continue;
		}
		socklen_t sl = sizeof(c->local);
		getsockname(c->fd, (struct sockaddr *)&c->local, &sl);
		c->id = ++id;
		pthread_t t;
		int e = pthread_create(&t, &attr, conn_main, c);
		if (e) {
			srv_log("pthread_create: %s, dropping conn=%" PRIu64, strerror(e), c->id);
			close(c->fd);
			free(c);
		}
	}
	return 0;
}

/* ------------------------------------------------------------------------
 * Client flow
 * ---------------------------------------------------------------------- */

enum { D_BOTH, D_UP, D_DOWN };

struct flow_cfg {
	const struct addrinfo *ai;
	uint64_t n, seed;
	size_t ws;
	double stall;
	const char *banner;
	size_t banner_len;
	int dir, late, rst, nodelay;
	uint8_t *rbuf, *wbuf; /* RBUF_SIZE and ws bytes */
};

struct flow_res {
	int code;
	uint64_t up, down;
	double secs;
	char msg[1024];
};

#define RBUF_SIZE (256 * 1024)

static int flow_fail(struct flow_res *r, int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(r->msg, sizeof(r->msg), fmt, ap);
	va_end(ap);
	r->code = code;
	return code;
}

/* Non-blocking connect to the first address that works, within timeout. */
static int flow_connect(const struct flow_cfg *c, struct flow_res *r)
{
	char err[256] = "no address";
	for (const struct addrinfo *a = c->ai; a; a = a->ai_next) {
		int fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
				a->ai_protocol);
		if (fd < 0) {
			snprintf(err, sizeof(err), "socket: %s", strerror(errno));
			continue;
		}
		if (c->nodelay) {
			int one = 1;
			setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		}
		if (connect(fd, a->ai_addr, a->ai_addrlen) == 0)
			return fd;
		if (errno != EINPROGRESS) {
			snprintf(err, sizeof(err), "%s", strerror(errno));
			close(fd);
			continue;
		}
		struct pollfd p = {.fd = fd, .events = POLLOUT};
		double deadline = now_s() + c->stall;
		int pr;
		for (;;) {
			double left = deadline - now_s();
			pr = poll(&p, 1, left > 0 ? (int)(left * 1000) + 1 : 0);
			if (pr >= 0 || errno != EINTR)
				break;
		}
		if (pr == 0) {
			snprintf(err, sizeof(err), "timed out after %.1f s", c->stall);
			close(fd);
			continue;
		}
		int soerr = 0;
		socklen_t sl = sizeof(soerr);
		getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
		if (soerr == 0)
			return fd;
		snprintf(err, sizeof(err), "%s", strerror(soerr));
		close(fd);
	}
	flow_fail(r, EXIT_CONNECT, "connect failed: %s", err);
	return -1;
}

static void do_rst(int fd)
{
	struct linger lg = {.l_onoff = 1, .l_linger = 0};
	setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(fd);
}

/* Build the mismatch report; got[0..glen) are the bytes received at off. */
static int report_mismatch(const struct flow_cfg *c, struct flow_res *r, int fd,
			   uint64_t off, const uint8_t *got, size_t glen)
{
	uint8_t more[64], exp[16];
	size_t m = glen < sizeof(more) ? glen : sizeof(more);
	memcpy(more, got, m);
	/* Try to collect a few more bytes for the shift analysis. */
	double deadline = now_s() + 0.5;
	while (m < sizeof(more)) {
		double left = deadline - now_s();
		if (left <= 0)
			break;
		struct pollfd p = {.fd = fd, .events = POLLIN};
		if (poll(&p, 1, (int)(left * 1000) + 1) <= 0)
			break;
		ssize_t k = recv(fd, more + m, sizeof(more) - m, 0);
		if (k <= 0)
			break;
		m += (size_t)k;
	}
	pat_fill(c->seed, off, exp, sizeof(exp));
	char hint[400], eh[40], gh[40];
	shift_hint(c->seed, off, more, m, hint, sizeof(hint));
	/* corrupted in place: the following bytes match at the same offset */
	if (m >= 16 && strstr(hint, "match no shift")) {
		uint8_t e2[64];
		size_t diff = 0;
		pat_fill(c->seed, off, e2, m);
		for (size_t i = 0; i < m; i++)
			diff += e2[i] != more[i];
		if (diff * 4 <= m)
			snprintf(hint, sizeof(hint), "no shift: %zu of the %zu bytes from the offset "
				 "differ, the rest match in place: looks like corrupted byte(s) at "
				 "offset %" PRIu64, diff, m, off);
	}
	/* foreign bytes inserted in front of the expected data? */
	const uint8_t *ins = m > 8 ? memmem(more + 1, m - 1, exp, 8) : NULL;
	if (ins && strstr(hint, "match no shift")) {
		char t[120];
		render(more, (size_t)(ins - more), t, sizeof(t));
		snprintf(hint, sizeof(hint), "the expected data follows %zu unexpected byte(s) "
			 "\"%s\": looks like %zu foreign bytes inserted at offset %" PRIu64,
			 (size_t)(ins - more), t, (size_t)(ins - more), off);
	}
	hexdump(exp, sizeof(exp), eh, sizeof(eh));
	hexdump(more, m < 16 ? m : 16, gh, sizeof(gh));
	size_t printable = 0;
	for (size_t i = 0; i < m; i++)
		printable += (more[i] >= 0x20 && more[i] < 0x7f) || more[i] == '\r' || more[i] == '\n';
	char txt[200] = "";
	if (printable * 4 >= m * 3) { /* mostly text: show it, e.g. a stray banner */
		char t[180];
		render(more, m, t, sizeof(t));
		snprintf(txt, sizeof(txt), " (as text: \"%s\")", t);
	}
	return flow_fail(r, EXIT_MISMATCH,
			 "mismatch at offset %" PRIu64 " (of %" PRIu64 "): expected 0x%02x got 0x%02x"
			 " (expected %s..., got %s...%s); hint: %s",
			 off, c->n, exp[0], more[0], eh, gh, txt, hint);
}

static int run_flow(const struct flow_cfg *c, struct flow_res *r)
{
	memset(r, 0, sizeof(*r));
	int fd = flow_connect(c, r);
	if (fd < 0)
		return r->code;

	double t0 = now_s(), last = t0;
	uint64_t sent = 0, gen = 0, recvd = 0, extra = 0;
	uint64_t expect = c->dir == D_UP ? 0 : c->n;
	size_t wl = 0, wo = 0, bgot = 0;
	int eof = 0, shut = 0, can_r = 1, can_w = 1, code = 0;
	uint8_t bbuf[512];
	uint8_t *banner_buf = c->banner_len <= sizeof(bbuf) ? bbuf : malloc(c->banner_len);

	if (!banner_buf) {
		code = flow_fail(r, EXIT_USAGE, "out of memory");
		goto out;
	}
	for (;;) {
		int bdone = bgot == c->banner_len;
		if (bdone && c->dir != D_DOWN && sent == c->n && !shut) {
			if (c->rst ? recvd >= expect : (!c->late || recvd >= expect)) {
				if (c->rst) {
					do_rst(fd);
					fd = -1;
					goto done;
				}
				shutdown(fd, SHUT_WR);
				shut = 1;
			}
		}
		if (bdone && c->dir == D_DOWN && c->rst && recvd >= expect) {
			do_rst(fd);
			fd = -1;
			goto done;
		}
		if (eof) {
			if (!bdone) {
				code = flow_fail(r, EXIT_EOF, "EOF while waiting for the banner: got %zu of "
						 "%zu bytes", bgot, c->banner_len);
				goto out;
			}
			if (recvd < expect) {
				code = flow_fail(r, EXIT_EOF, "early EOF: received %" PRIu64 " of %" PRIu64
						 " bytes (sent %" PRIu64 " of %" PRIu64 ", %s)", recvd,
						 expect, sent, c->dir == D_DOWN ? 0 : c->n,
						 c->dir == D_DOWN ? "nothing to send" :
						 sent == c->n ? "all sent" : "NOT all sent");
				goto out;
			}
			if (extra) {
				code = flow_fail(r, EXIT_MISMATCH, "got %" PRIu64 " extra bytes after the %"
						 PRIu64 " expected", extra, expect);
				goto out;
			}
			if (c->dir != D_DOWN && sent < c->n) {
				code = flow_fail(r, EXIT_EOF, "early EOF: server closed after we sent %"
						 PRIu64 " of %" PRIu64 " bytes", sent, c->n);
				goto out;
			}
			goto done;
		}

		int progress = 0;
		/* read */
		for (int it = 0; can_r && it < 8; it++) {
			ssize_t k;
			if (!bdone) {
				k = recv(fd, banner_buf + bgot, c->banner_len - bgot, 0);
				if (k > 0) {
					bgot += (size_t)k;
					last = now_s();
					progress = 1;
					if (bgot == c->banner_len) {
						if (memcmp(banner_buf, c->banner, c->banner_len)) {
							char e[200], g[200];
							render((const uint8_t *)c->banner, c->banner_len, e, sizeof(e));
							render(banner_buf, bgot, g, sizeof(g));
							code = flow_fail(r, EXIT_MISMATCH, "banner mismatch: "
									 "expected \"%s\" got \"%s\"", e, g);
							goto out;
						}
						break; /* re-evaluate state: start sending */
					}
					continue;
				}
			} else {
				k = recv(fd, c->rbuf, RBUF_SIZE, 0);
				if (k > 0) {
					size_t n = (size_t)k, chk = 0;
					last = now_s();
					progress = 1;
					if (recvd < expect) {
						uint64_t want = expect - recvd;
						chk = n < want ? n : (size_t)want;
						size_t bad = pat_check(c->seed, recvd, c->rbuf, chk);
						if (bad != chk) {
							code = report_mismatch(c, r, fd, recvd + bad,
									       c->rbuf + bad, n - bad);
							goto out;
						}
						recvd += chk;
					}
					extra += n - chk;
					continue;
				}
			}
			if (k == 0) {
				eof = 1;
				progress = 1;
				break;
			}
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				can_r = 0;
			} else if (errno != EINTR) {
				code = flow_fail(r, EXIT_RESET, "recv: %s after receiving %" PRIu64 " of %"
						 PRIu64 " bytes (sent %" PRIu64 ")", strerror(errno),
						 recvd, expect, sent);
				goto out;
			}
		}
		if (eof)
			continue;
		/* write */
		if (bgot == c->banner_len && c->dir != D_DOWN) {
			for (int it = 0; can_w && it < 16 && sent < c->n; it++) {
				if (wo == wl) {
					uint64_t left = c->n - gen;
					wl = left < c->ws ? (size_t)left : c->ws;
					pat_fill(c->seed, gen, c->wbuf, wl);
					gen += wl;
					wo = 0;
				}
				ssize_t k = send(fd, c->wbuf + wo, wl - wo, MSG_NOSIGNAL);
				if (k > 0) {
					wo += (size_t)k;
					sent += (uint64_t)k;
					last = now_s();
					progress = 1;
				} else if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
					can_w = 0;
				} else if (k < 0 && errno != EINTR) {
					code = flow_fail(r, EXIT_RESET, "send: %s after sending %" PRIu64 " of %"
							 PRIu64 " bytes (received %" PRIu64 ")",
							 strerror(errno), sent, c->n, recvd);
					goto out;
				}
			}
		}
		if (progress)
			continue;

		/* nothing possible right now: wait */
		struct pollfd p = {.fd = fd, .events = POLLIN};
		if (bgot == c->banner_len && c->dir != D_DOWN && sent < c->n)
			p.events |= POLLOUT;
		double idle = now_s() - last;
		if (idle >= c->stall) {
			if (!bdone)
				code = flow_fail(r, EXIT_STALL, "stall: nothing moved for %.1f s while "
						 "waiting for the banner (got %zu of %zu bytes)",
						 idle, bgot, c->banner_len);
			else
				code = flow_fail(r, EXIT_STALL, "stall: nothing moved for %.1f s: sent %"
						 PRIu64 " of %" PRIu64 " bytes (%s%s), received %" PRIu64
						 " of %" PRIu64 " bytes%s%s", idle, sent,
						 c->dir == D_DOWN ? 0 : c->n,
						 c->dir == D_DOWN ? "nothing to send" :
						 sent == c->n ? "all sent" : "NOT all sent",
						 shut ? ", half-closed" : "", recvd, expect,
						 recvd == expect && (c->dir == D_DOWN || sent == c->n) ?
						 ", waiting for EOF" : "",
						 extra ? ", plus extra bytes" : "");
			if (extra && bdone)
				code = flow_fail(r, EXIT_MISMATCH, "got at least %" PRIu64 " extra bytes "
						 "after the %" PRIu64 " expected (then stalled %.1f s)",
						 extra, expect, idle);
			goto out;
		}
		int pr = poll(&p, 1, (int)((c->stall - idle) * 1000) + 1);
		if (pr < 0 && errno != EINTR) {
			code = flow_fail(r, EXIT_USAGE, "poll: %s", strerror(errno));
			goto out;
		}
		if (pr > 0) {
			if (p.revents & (POLLIN | POLLHUP | POLLERR))
				can_r = 1;
			if (p.revents & (POLLOUT | POLLHUP | POLLERR))
				can_w = 1;
		}
	}
done:
	code = 0;
out:
	r->up = sent;
	r->down = recvd;
	r->secs = now_s() - t0;
	r->code = code;
	if (fd >= 0)
		close(fd);
	if (banner_buf && banner_buf != bbuf)
		free(banner_buf);
	return code;
}

/* -H: print the first line the server sends. */
static int run_headline(const struct flow_cfg *c)
{
	struct flow_res r;
	memset(&r, 0, sizeof(r));
	int fd = flow_connect(c, &r);
	if (fd < 0) {
		fprintf(stderr, "echo_check client: FAIL (exit %d): %s\n", r.code, r.msg);
		return r.code;
	}
	char line[4097];
	size_t n = 0;
	double last = now_s();
	while (n < sizeof(line) - 1) {
		ssize_t k = recv(fd, line + n, 1, 0);
		if (k == 1) {
			last = now_s();
			if (line[n++] == '\n')
				break;
			continue;
		}
		if (k == 0)
			break;
		if (!is_again(errno)) {
			fprintf(stderr, "echo_check client: FAIL (exit %d): recv: %s\n", EXIT_RESET,
				strerror(errno));
			close(fd);
			return EXIT_RESET;
		}
		double idle = now_s() - last;
		if (idle >= c->stall) {
			fprintf(stderr, "echo_check client: FAIL (exit %d): stall: no banner line after "
				"%.1f s (%zu bytes)\n", EXIT_STALL, idle, n);
			close(fd);
			return EXIT_STALL;
		}
		struct pollfd p = {.fd = fd, .events = POLLIN};
		poll(&p, 1, (int)((c->stall - idle) * 1000) + 1);
	}
	close(fd);
	if (!n) {
		fprintf(stderr, "echo_check client: FAIL (exit %d): EOF before any banner byte\n",
			EXIT_EOF);
		return EXIT_EOF;
	}
	while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
		n--;
	line[n] = 0;
	printf("%s\n", line);
	return 0;
}

static int cmd_client(int argc, char **argv)
{
	const char *target = NULL, *dir = "both", *banner = NULL;
	struct flow_cfg c = {.n = 1 << 20, .seed = 1, .ws = 16384, .stall = 10};
	int o, quiet = 0, headline = 0;
	while ((o = getopt(argc, argv, "c:n:w:s:t:e:d:HNRqh")) != -1) {
		switch (o) {
		case 'c': target = optarg; break;
		case 'n': c.n = parse_size(optarg, "-n BYTES"); break;
		case 'w': {
			uint64_t w = parse_size(optarg, "-w WRITE_SIZE");
			if (w < 1 || w > (1u << 30))
				die("-w WRITE_SIZE must be in [1, 1G]");
			c.ws = (size_t)w;
			break;
		}
		case 's': c.seed = parse_size(optarg, "-s SEED"); break;
		case 't': c.stall = parse_secs(optarg); break;
		case 'e': banner = optarg; break;
		case 'd': dir = optarg; break;
		case 'H': headline = 1; break;
		case 'R': c.rst = 1; break;
		case 'N': c.nodelay = 1; break;
		case 'q': quiet = 1; break;
		default: usage();
		}
	}
	if (optind != argc || !target)
		usage();
	if (!strcmp(dir, "both"))
		c.dir = D_BOTH;
	else if (!strcmp(dir, "up"))
		c.dir = D_UP;
	else if (!strcmp(dir, "down"))
		c.dir = D_DOWN;
	else
		die("bad -d '%s' (want both, up or down)", dir);
	if (banner)
		c.banner = unescape(banner, &c.banner_len);
	signal(SIGPIPE, SIG_IGN);
	struct addrinfo *ai = resolve(target, 0);
	c.ai = ai;
	if (headline) {
		int hc = run_headline(&c);
		free((char *)c.banner);
		freeaddrinfo(ai);
		return hc;
	}
	c.rbuf = malloc(RBUF_SIZE);
	c.wbuf = malloc(c.ws);
	if (!c.rbuf || !c.wbuf)
		die("out of memory");
	struct flow_res r;
	int code = run_flow(&c, &r);
	free(c.rbuf);
	free(c.wbuf);
	free((char *)c.banner);
	freeaddrinfo(ai);
	if (code) {
		fprintf(stderr, "echo_check client: FAIL (exit %d): %s\n", code, r.msg);
		return code;
	}
	if (!quiet) {
		double s = r.secs > 1e-9 ? r.secs : 1e-9;
		printf("ok bytes_up=%" PRIu64 " bytes_down=%" PRIu64 " secs=%.3f mbps_up=%.1f "
		       "mbps_down=%.1f\n", r.up, r.down, r.secs, (double)r.up * 8 / s / 1e6,
		       (double)r.down * 8 / s / 1e6);
	}
	return 0;
}

/* ------------------------------------------------------------------------
 * multi
 * ---------------------------------------------------------------------- */

static struct {
	struct flow_cfg base;
	uint64_t seed, maxb;
	int count, quiet;
	atomic_int next, ok, failed, first_code;
	atomic_uint_fast64_t bytes;
	pthread_mutex_t out_mu;
} mul = {.out_mu = PTHREAD_MUTEX_INITIALIZER};

static const char *kind_name(int code)
{
	switch (code) {
	case EXIT_MISMATCH: return "mismatch";
	case EXIT_STALL: return "stall";
	case EXIT_EOF: return "early-eof";
	case EXIT_CONNECT: return "connect";
	case EXIT_RESET: return "reset";
	default: return "error";
	}
}

static inline uint64_t rng_next(uint64_t *s)
{
	*s += 0x9e3779b97f4a7c15ULL;
	return splitmix64(*s);
}

static uint64_t log_uniform(uint64_t *st, uint64_t max)
{
	if (!max)
		return 0;
	int bits = 64 - __builtin_clzll(max);
	uint64_t lim = (uint64_t)1 << (rng_next(st) % (uint64_t)(bits + 1));
	uint64_t v = rng_next(st) % lim;
	return v > max ? max : v;
}

static void multi_params(int idx, uint64_t *size, size_t *ws, int *late, uint64_t *fseed)
{
	uint64_t st = splitmix64(mul.seed * 0x2545f4914f6cdd1dULL + (uint64_t)idx);
	uint64_t max = mul.maxb;
	static const uint64_t fixed[] = {0, 1, 7, 8, 9};
	if ((size_t)idx < sizeof(fixed) / sizeof(fixed[0]))
		*size = fixed[idx] < max ? fixed[idx] : max;
	else if (idx == 5)
		*size = max;
	else {
		unsigned u = (unsigned)(rng_next(&st) % 100);
		if (u < 8)
			*size = 0;
		else if (u < 20)
			*size = 1 + rng_next(&st) % 64;
		else if (u < 45)
			*size = log_uniform(&st, max);
		else
			*size = rng_next(&st) % (max + 1);
		if (*size > max)
			*size = max;
	}
	if (rng_next(&st) % 8 == 0)
		*ws = 1 + (size_t)log_uniform(&st, 511);
	else
		*ws = 1 + (size_t)(rng_next(&st) % 65536);
	/* at most 16384 writes per flow: tiny write sizes go with smaller flows */
	if (*size > (uint64_t)*ws * 16384)
		*size = (uint64_t)*ws * 16384;
	*late = (int)(rng_next(&st) & 1);
	*fseed = rng_next(&st);
}

static void *multi_worker(void *arg)
{
	(void)arg;
	struct flow_cfg c = mul.base;
	c.rbuf = malloc(RBUF_SIZE);
	c.wbuf = malloc(65536);
	if (!c.rbuf || !c.wbuf)
		die("out of memory");
	for (;;) {
		int idx = atomic_fetch_add(&mul.next, 1);
		if (idx >= mul.count)
			break;
		multi_params(idx, &c.n, &c.ws, &c.late, &c.seed);
		struct flow_res r;
		int code = run_flow(&c, &r);
		if (!code) {
			atomic_fetch_add(&mul.ok, 1);
			atomic_fetch_add(&mul.bytes, r.down);
		} else {
			atomic_fetch_add(&mul.failed, 1);
			int zero = 0;
			atomic_compare_exchange_strong(&mul.first_code, &zero, code);
			pthread_mutex_lock(&mul.out_mu);
			printf("multi: FAIL flow=%d size=%" PRIu64 " ws=%zu mode=%s kind=%s: %s\n", idx,
			       c.n, c.ws, c.late ? "late" : "both", kind_name(code), r.msg);
			fflush(stdout);
			pthread_mutex_unlock(&mul.out_mu);
		}
	}
	free(c.rbuf);
	free(c.wbuf);
	return NULL;
}

static int cmd_multi(int argc, char **argv)
{
	const char *target = NULL, *banner = NULL;
	int o, conc = 0;
	mul.count = -1;
	mul.seed = 1;
	mul.maxb = 4 << 20;
	mul.base.stall = 10;
	while ((o = getopt(argc, argv, "c:j:k:s:M:t:e:qh")) != -1) {
		switch (o) {
		case 'c': target = optarg; break;
		case 'j': conc = atoi(optarg); break;
		case 'k': mul.count = atoi(optarg); break;
		case 's': mul.seed = parse_size(optarg, "-s SEED"); break;
		case 'M': mul.maxb = parse_size(optarg, "-M MAXBYTES"); break;
		case 't': mul.base.stall = parse_secs(optarg); break;
		case 'e': banner = optarg; break;
		case 'q': mul.quiet = 1; break;
		default: usage();
		}
	}
	if (optind != argc || !target || conc < 1 || mul.count < 0)
		usage();
	if (mul.maxb >= (uint64_t)1 << 62)
		die("-M too large");
	if (conc > mul.count)
		conc = mul.count ? mul.count : 1;
	if (banner)
		mul.base.banner = unescape(banner, &mul.base.banner_len);
	signal(SIGPIPE, SIG_IGN);
	struct addrinfo *ai = resolve(target, 0);
	mul.base.ai = ai;
	mul.base.dir = D_BOTH;

	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 256 * 1024);
	pthread_t *th = calloc((size_t)conc, sizeof(*th));
	if (!th)
		die("out of memory");
	int started = 0;
	for (int i = 0; i < conc; i++) {
		if (pthread_create(&th[i], &attr, multi_worker, NULL)) {
			if (!started)
				die("pthread_create failed");
			break;
		}
		started++;
	}
	for (int i = 0; i < started; i++)
		pthread_join(th[i], NULL);
	int ok = atomic_load(&mul.ok), failed = atomic_load(&mul.failed);
	if (failed || !mul.quiet)
		printf("multi: flows=%d ok=%d failed=%d bytes=%" PRIu64 "\n", ok + failed, ok, failed,
		       (uint64_t)atomic_load(&mul.bytes));
	freeaddrinfo(ai);
	free(th);
	free((char *)mul.base.banner);
	return failed ? atomic_load(&mul.first_code) : 0;
}

/* ------------------------------------------------------------------------
 * selftest
 * ---------------------------------------------------------------------- */

static int cmd_selftest(void)
{
	int fails = 0;
	uint64_t st = 12345;
	uint8_t buf[4096], ref[4096];
	/* fill/check agree with the per-byte definition at odd offsets/lengths */
	for (int it = 0; it < 20000; it++) {
		uint64_t seed = rng_next(&st) % 4, off = rng_next(&st) % 100000;
		size_t len = (size_t)(rng_next(&st) % sizeof(buf));
		pat_fill(seed, off, buf, len);
		for (size_t i = 0; i < len; i++)
			ref[i] = pat_byte(seed, off + i);
		if (memcmp(buf, ref, len)) {
			fprintf(stderr, "selftest: pat_fill differs seed=%" PRIu64 " off=%" PRIu64 "\n",
				seed, off);
			fails++;
			break;
		}
		if (pat_check(seed, off, buf, len) != len) {
			fprintf(stderr, "selftest: pat_check false alarm\n");
			fails++;
			break;
		}
		if (len) {
			size_t pos = (size_t)(rng_next(&st) % len);
			buf[pos] ^= (uint8_t)(1 + rng_next(&st) % 255);
			if (pat_check(seed, off, buf, len) != pos) {
				fprintf(stderr, "selftest: pat_check missed byte %zu of %zu\n", pos, len);
				fails++;
				break;
			}
		}
	}
	/* shift hints */
	char hint[400];
	pat_fill(1, 100000 + 777, buf, 64); /* received at 100000: 777 bytes lost */
	shift_hint(1, 100000, buf, 64, hint, sizeof(hint));
	printf("selftest hint (777 lost): %s\n", hint);
	if (!strstr(hint, "777 bytes lost"))
		fails++;
	pat_fill(1, 100000 - 4096, buf, 64); /* 4096 duplicated */
	shift_hint(1, 100000, buf, 64, hint, sizeof(hint));
	printf("selftest hint (4096 dup): %s\n", hint);
	if (!strstr(hint, "4096 bytes duplicated"))
		fails++;
	pat_fill(1, 3, buf, 64); /* near the start: 99997 dup */
	shift_hint(1, 100000, buf, 64, hint, sizeof(hint));
	if (!strstr(hint, "99997 bytes duplicated"))
		fails++;
	memset(buf, 0, 64);
	shift_hint(1, 100000, buf, 64, hint, sizeof(hint));
	printf("selftest hint (zeros): %s\n", hint);
	if (!strstr(hint, "all zero"))
		fails++;
	pat_fill(2, 100000, buf, 64); /* other seed */
	shift_hint(1, 100000, buf, 64, hint, sizeof(hint));
	if (!strstr(hint, "match no shift"))
		fails++;
	/* PROXY parser */
	struct ppinfo pi;
	const char *v1 = "PROXY TCP6 2001:db8::1 ::1 4000 443\r\nxyz";
	memset(&pi, 0, sizeof(pi));
	int k = pp_try((const uint8_t *)v1, strlen(v1), &pi);
	if (k != (int)strlen(v1) - 3 || strcmp(pi.src, "[2001:db8::1]:4000") || strcmp(pi.dst, "[::1]:443"))
		fails++, fprintf(stderr, "selftest: v1 parse failed (%d %s %s)\n", k, pi.src, pi.dst);
	static const char *bad1 = "PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n";
	static const char *bad2 = "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n";
	static const char *part = "PROXY TCP4 1.2.3";
	static const char *http = "GET / HTTP/1.0\r\n";
	if (pp_try((const uint8_t *)bad1, strlen(bad1), &pi) != -1 ||
	    pp_try((const uint8_t *)bad2, strlen(bad2), &pi) != -1 ||
	    pp_try((const uint8_t *)part, strlen(part), &pi) != 0 ||
	    pp_try((const uint8_t *)http, strlen(http), &pi) != -1)
		fails++, fprintf(stderr, "selftest: v1 negative cases failed\n");
	uint8_t v2[64];
	memcpy(v2, pp2_sig, 12);
	v2[12] = 0x21;
	v2[13] = 0x11;
	v2[14] = 0;
	v2[15] = 12 + 3 + 11;
	uint8_t a4[12] = {10, 0, 0, 1, 10, 0, 0, 2, 0x30, 0x39, 0x01, 0xbb};
	memcpy(v2 + 16, a4, 12);
	v2[28] = 0x02;
	v2[29] = 0;
	v2[30] = 11;
	memcpy(v2 + 31, "example.com", 11);
	memset(&pi, 0, sizeof(pi));
	k = pp_try(v2, 42, &pi);
	if (k != 42 || strcmp(pi.src, "10.0.0.1:12345") || strcmp(pi.dst, "10.0.0.2:443") ||
	    strcmp(pi.authority, "example.com") || pp_try(v2, 41, &pi) != 0)
		fails++, fprintf(stderr, "selftest: v2 parse failed (%d %s %s %s)\n", k, pi.src, pi.dst,
				 pi.authority);
	/* speed */
	size_t blen = 1 << 20;
	uint8_t *big = malloc(blen);
	if (!big)
		die("out of memory");
	int reps = 1024;
	double t = now_s();
	for (int i = 0; i < reps; i++)
		pat_fill(7, (uint64_t)i * blen + 3, big, blen);
	double tf = now_s() - t;
	pat_fill(7, 3, big, blen);
	t = now_s();
	size_t acc = 0;
	volatile uint64_t vseed = 7; /* keep the compiler from hoisting the check */
	for (int i = 0; i < reps; i++)
		acc += pat_check(vseed, 3, big, blen);
	double tc = now_s() - t;
	if (acc != (size_t)reps * blen)
		fails++;
	printf("selftest speed: generate %.2f GB/s, check %.2f GB/s (1 core)\n",
	       (double)reps * (double)blen / tf / 1e9, (double)reps * (double)blen / tc / 1e9);
	free(big);
	printf("selftest: %s\n", fails ? "FAILED" : "ok");
	return fails ? EXIT_MISMATCH : 0;
}

int main(int argc, char **argv)
{
	if (argc < 2)
		usage();
	const char *m = argv[1];
	if (!strcmp(m, "server"))
		return cmd_server(argc - 1, argv + 1);
	if (!strcmp(m, "client"))
		return cmd_client(argc - 1, argv + 1);
	if (!strcmp(m, "multi"))
		return cmd_multi(argc - 1, argv + 1);
	if (!strcmp(m, "selftest"))
		return cmd_selftest();
	if (!strcmp(m, "help") || !strcmp(m, "-h") || !strcmp(m, "--help")) {
		fputs(usage_text, stdout);
		return 0;
	}
	usage();
	return EXIT_USAGE;
}
