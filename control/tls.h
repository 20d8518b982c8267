/* SPDX-License-Identifier: MIT */
/*
 * tls.h - incremental TLS ClientHello reader (SNI extraction), pure code.
 *
 * No syscalls, no allocation: the caller owns the buffer of bytes received so
 * far from the client and calls tls_sni_parse() again each time more arrive.
 */
#ifndef EDGE_TLS_H
#define EDGE_TLS_H

#include <stddef.h>
#include <stdint.h>

/* Largest ClientHello handshake message we accept (body + 4-byte header). */
#define TLS_HELLO_MAX (16 * 1024)
/* Largest DNS name we return (RFC 1035: 253 characters plus NUL). */
#define TLS_SNI_MAX 256

enum tls_parse_result {
	TLS_NEED_MORE = 0, /* a ClientHello so far; feed more bytes */
	TLS_FOUND_SNI, /* complete ClientHello with a host_name SNI */
	TLS_NO_SNI, /* complete ClientHello without (usable) SNI */
	TLS_NOT_TLS, /* first bytes are not a TLS handshake record */
	TLS_TOO_LARGE, /* handshake message larger than TLS_HELLO_MAX */
	TLS_MALFORMED, /* a TLS handshake, but inconsistent lengths etc. */
};

/*
 * tls_sni_parse - look for a complete ClientHello at the start of buf.
 * @buf, @len: every byte the client has sent so far (TLS records, possibly
 *             several, possibly ending mid-record).
 * @sni: out, TLS_SNI_MAX bytes; on TLS_FOUND_SNI holds the host name,
 *       lower-cased, without a trailing dot, NUL-terminated.
 * @hello_end: out (may be NULL); on FOUND/NO_SNI, the offset in buf just
 *             past the record holding the last ClientHello byte.
 * Returns an enum tls_parse_result. Never reads beyond buf[len - 1].
 */
int tls_sni_parse(const uint8_t *buf, size_t len, char *sni, size_t *hello_end);

/* tls_result_str - short stable name of a result ("need_more", ...). */
const char *tls_result_str(int res);

/*
 * sni_pattern_valid - check a route pattern: a DNS name ("mail.example.com")
 * or a wildcard "*.example.com" ('*' only as the whole first label).
 * Labels 1..63 of [A-Za-z0-9-] (and '_'), not starting/ending with '-',
 * total <= 253, optional trailing dot. Returns 0, or -EINVAL with *why set to
 * a static message.
 */
int sni_pattern_valid(const char *pattern, const char **why);

/*
 * sni_match - does @name (as returned by tls_sni_parse) match @pattern?
 * Case-insensitive, trailing dots ignored on both; "*.example.org" matches
 * any name ending in ".example.org" with at least one more label before it
 * ("a.example.org", "a.b.example.org"), not "example.org". Returns 1 or 0.
 */
int sni_match(const char *pattern, const char *name);

#endif
