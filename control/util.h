/* SPDX-License-Identifier: MIT */
/* util.h - small pure helpers: addresses, durations, time. */
#ifndef EDGE_UTIL_H
#define EDGE_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define ADDR_STR_MAX 64 /* "[ffff:...:ffff]:65535" with room to spare */

/*
 * addr_parse - parse "host:port" where host is an IPv4 literal or an IPv6
 * literal in brackets ("[::1]:25"). Returns 0 or -EINVAL.
 */
int addr_parse(const char *s, struct sockaddr_storage *out, socklen_t *len);

/*
 * hostport_split - split "host:port" (host may be "[v6]" or a DNS name)
 * into host (without brackets) and port. Returns 0, or -EINVAL with *why.
 */
int hostport_split(const char *s, char *host, size_t hostlen, uint16_t *port,
		   const char **why);

/* addr_str - "ip:port" or "[ip]:port"; IPv4-mapped shown as IPv4. */
const char *addr_str(const struct sockaddr *sa, char *buf, size_t len);

/* addr_unmap - turn ::ffff:a.b.c.d into AF_INET in place. */
void addr_unmap(struct sockaddr_storage *ss);

/* addr_len - sizeof the sockaddr for its family (0 if unknown). */
socklen_t addr_len(const struct sockaddr *sa);

/*
 * duration_parse - "250ms", "5s", "2m", "1h" (a bare number means seconds)
 * into milliseconds. Returns 0 or -EINVAL.
 */
int duration_parse(const char *s, uint64_t *ms);

/* size_parse - "16MiB", "512KiB", "1GiB", "4096" into bytes. */
int size_parse(const char *s, uint64_t *bytes);

/*
 * ms_since - milliseconds from @then to @now, 0 if @then is later. Times
 * taken at different moments (the kernel's last_ns, a fresh now_ms()
 * inside a pass that started earlier) must never wrap to 2^64.
 */
static inline uint64_t ms_since(uint64_t now, uint64_t then)
{
	return then < now ? now - then : 0;
}

/* now_ms - CLOCK_MONOTONIC in milliseconds. */
uint64_t now_ms(void);
/* now_ns - CLOCK_MONOTONIC in nanoseconds (same clock as bpf_ktime_get_ns). */
uint64_t now_ns(void);

/* json_str - append s as a JSON string (with quotes) to buf; see strbuf. */
struct strbuf {
	char *data;
	size_t len;
	size_t cap;
	int oom;
};
void sb_init(struct strbuf *sb);
void sb_free(struct strbuf *sb);
void sb_printf(struct strbuf *sb, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void sb_json_str(struct strbuf *sb, const char *s);

#endif
