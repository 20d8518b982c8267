// SPDX-License-Identifier: MIT
/* util.c - see util.h. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util.h"

static int port_parse(const char *s, uint16_t *port)
{
	unsigned long v;
	char *end;

	if (!*s || *s == '-' || *s == '+' || *s == ' ')
		return -EINVAL;
	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || *end || v == 0 || v > 65535)
		return -EINVAL;
	*port = (uint16_t)v;
	return 0;
}

int hostport_split(const char *s, char *host, size_t hostlen, uint16_t *port,
		   const char **why)
{
	const char *colon, *hs, *he;
	size_t n;

	*why = "expected host:port";
	if (!s || !*s)
		return -EINVAL;
	if (s[0] == '[') {
		he = strchr(s, ']');
		if (!he || he[1] != ':') {
			*why = "expected [IPv6]:port";
			return -EINVAL;
		}
		hs = s + 1;
		colon = he + 1;
	} else {
		colon = strrchr(s, ':');
		if (!colon)
			return -EINVAL;
		if (memchr(s, ':', colon - s)) {
			*why = "IPv6 addresses must be in brackets: "
			       "[addr]:port";
			return -EINVAL;
		}
		hs = s;
		he = colon;
	}
	n = he - hs;
	if (n == 0) {
		*why = "empty host";
		return -EINVAL;
	}
	if (n >= hostlen) {
		*why = "host name too long";
		return -EINVAL;
	}
	memcpy(host, hs, n);
	host[n] = '\0';
	if (port_parse(colon + 1, port)) {
		*why = "bad port (1-65535)";
		return -EINVAL;
	}
	return 0;
}

int addr_parse(const char *s, struct sockaddr_storage *out, socklen_t *len)
{
	char host[256];
	const char *why;
	uint16_t port;

	if (hostport_split(s, host, sizeof(host), &port, &why))
		return -EINVAL;
	memset(out, 0, sizeof(*out));
	if (s[0] == '[') {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)out;

		if (inet_pton(AF_INET6, host, &s6->sin6_addr) != 1)
			return -EINVAL;
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons(port);
		*len = sizeof(*s6);
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)out;

		if (inet_pton(AF_INET, host, &s4->sin_addr) != 1)
			return -EINVAL;
		s4->sin_family = AF_INET;
		s4->sin_port = htons(port);
		*len = sizeof(*s4);
	}
	return 0;
}

void addr_unmap(struct sockaddr_storage *ss)
{
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
	struct sockaddr_in s4;

	if (ss->ss_family != AF_INET6 || !IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr))
		return;
	memset(&s4, 0, sizeof(s4));
	s4.sin_family = AF_INET;
	s4.sin_port = s6->sin6_port;
	memcpy(&s4.sin_addr, &s6->sin6_addr.s6_addr[12], 4);
	memset(ss, 0, sizeof(*ss));
	memcpy(ss, &s4, sizeof(s4));
}

socklen_t addr_len(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET)
		return sizeof(struct sockaddr_in);
	if (sa->sa_family == AF_INET6)
		return sizeof(struct sockaddr_in6);
	return 0;
}

const char *addr_str(const struct sockaddr *sa, char *buf, size_t len)
{
	struct sockaddr_storage ss;
	char ip[INET6_ADDRSTRLEN];

	memset(&ss, 0, sizeof(ss));
	if (sa->sa_family == AF_INET6)
		memcpy(&ss, sa, sizeof(struct sockaddr_in6));
	else if (sa->sa_family == AF_INET)
		memcpy(&ss, sa, sizeof(struct sockaddr_in));
	else {
		snprintf(buf, len, "-");
		return buf;
	}
	addr_unmap(&ss);
	if (ss.ss_family == AF_INET) {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;

		inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof(ip));
		snprintf(buf, len, "%s:%u", ip, ntohs(s4->sin_port));
	} else {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;

		inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof(ip));
		snprintf(buf, len, "[%s]:%u", ip, ntohs(s6->sin6_port));
	}
	return buf;
}

static int number_with_unit(const char *s, uint64_t *val, const char **unit)
{
	uint64_t v = 0;
	const char *p = s;

	if (!*p || *p < '0' || *p > '9')
		return -EINVAL;
	for (; *p >= '0' && *p <= '9'; p++) {
		if (v > (UINT64_MAX - 9) / 10)
			return -EINVAL;
		v = v * 10 + (uint64_t)(*p - '0');
	}
	*val = v;
	*unit = p;
	return 0;
}

int duration_parse(const char *s, uint64_t *ms)
{
	const char *unit;
	uint64_t v, mul;

	if (number_with_unit(s, &v, &unit))
		return -EINVAL;
	if (!strcmp(unit, "ms"))
		mul = 1;
	else if (!strcmp(unit, "s") || !*unit)
		mul = 1000;
	else if (!strcmp(unit, "m"))
		mul = 60 * 1000;
	else if (!strcmp(unit, "h"))
		mul = 3600 * 1000;
	else
		return -EINVAL;
	if (v > UINT64_MAX / mul)
		return -EINVAL;
	*ms = v * mul;
	return 0;
}

int size_parse(const char *s, uint64_t *bytes)
{
	const char *unit;
	uint64_t v, mul;

	if (number_with_unit(s, &v, &unit))
		return -EINVAL;
	if (!*unit || !strcmp(unit, "B"))
		mul = 1;
	else if (!strcmp(unit, "KiB") || !strcmp(unit, "K"))
		mul = 1ULL << 10;
	else if (!strcmp(unit, "MiB") || !strcmp(unit, "M"))
		mul = 1ULL << 20;
	else if (!strcmp(unit, "GiB") || !strcmp(unit, "G"))
		mul = 1ULL << 30;
	else
		return -EINVAL;
	if (v > UINT64_MAX / mul)
		return -EINVAL;
	*bytes = v * mul;
	return 0;
}

uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

uint64_t now_ms(void)
{
	return now_ns() / 1000000ULL;
}

void sb_init(struct strbuf *sb)
{
	memset(sb, 0, sizeof(*sb));
}

void sb_free(struct strbuf *sb)
{
	free(sb->data);
	sb_init(sb);
}

static int sb_reserve(struct strbuf *sb, size_t extra)
{
	size_t want = sb->len + extra + 1;
	char *p;

	if (sb->oom)
		return -ENOMEM;
	if (want <= sb->cap)
		return 0;
	if (want < sb->cap * 2)
		want = sb->cap * 2;
	if (want < 256)
		want = 256;
	p = realloc(sb->data, want);
	if (!p) {
		sb->oom = 1;
		return -ENOMEM;
	}
	sb->data = p;
	sb->cap = want;
	return 0;
}

void sb_printf(struct strbuf *sb, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0 || sb_reserve(sb, (size_t)n))
		return;
	va_start(ap, fmt);
	vsnprintf(sb->data + sb->len, sb->cap - sb->len, fmt, ap);
	va_end(ap);
	sb->len += (size_t)n;
}

void sb_json_str(struct strbuf *sb, const char *s)
{
	const unsigned char *p;

	if (!s) {
		sb_printf(sb, "null");
		return;
	}
	sb_printf(sb, "\"");
	for (p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\')
			sb_printf(sb, "\\%c", *p);
		else if (*p < 0x20)
			sb_printf(sb, "\\u%04x", *p);
		else
			sb_printf(sb, "%c", *p);
	}
	sb_printf(sb, "\"");
}
