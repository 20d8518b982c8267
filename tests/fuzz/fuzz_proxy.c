// SPDX-License-Identifier: MIT
/*
 * fuzz_proxy.c - libFuzzer harness for proxy_parse() and, through a round
 * trip, proxy_build().
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Icontrol \
 *	tests/fuzz/fuzz_proxy.c control/proxy.c -o /tmp/fuzz_proxy
 *   /tmp/fuzz_proxy -max_total_time=60 <copy of tests/fuzz/corpus/proxy>
 *
 * For every input: the result is -EINVAL, 0 or a length within the input.
 * When it parses: the header's proper prefixes ask for more, the bytes after
 * it do not matter, and building a header from what was parsed and parsing
 * that again gives the same addresses (after the IPv4-mapped normalisation
 * proxy_build does; v1 with mixed families and anything not IP become
 * UNKNOWN / LOCAL) and, for v2, the same authority.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <netinet/in.h>

#include "proxy.h"

#define FUZZ_ASSERT(c)                                                   \
	do {                                                             \
		if (!(c)) {                                              \
			fprintf(stderr, "fuzz_proxy: %s:%d: %s\n",       \
				__FILE__, __LINE__, #c);                 \
			abort();                                         \
		}                                                        \
	} while (0)

static struct sockaddr_storage unmap(const struct sockaddr_storage *in)
{
	struct sockaddr_storage ss = *in;
	const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)in;

	if (in->ss_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
		struct sockaddr_in s4;

		memset(&s4, 0, sizeof(s4));
		s4.sin_family = AF_INET;
		s4.sin_port = s6->sin6_port;
		memcpy(&s4.sin_addr, &s6->sin6_addr.s6_addr[12], 4);
		memset(&ss, 0, sizeof(ss));
		memcpy(&ss, &s4, sizeof(s4));
	}
	return ss;
}

static int is_ip(int family)
{
	return family == AF_INET || family == AF_INET6;
}

static int same_ip(const struct sockaddr_storage *a,
		   const struct sockaddr_storage *b)
{
	if (a->ss_family != b->ss_family)
		return 0;
	if (a->ss_family == AF_INET) {
		const struct sockaddr_in *x = (const void *)a;
		const struct sockaddr_in *y = (const void *)b;

		return x->sin_port == y->sin_port &&
		       x->sin_addr.s_addr == y->sin_addr.s_addr;
	}
	if (a->ss_family == AF_INET6) {
		const struct sockaddr_in6 *x = (const void *)a;
		const struct sockaddr_in6 *y = (const void *)b;

		return x->sin6_port == y->sin6_port &&
		       !memcmp(&x->sin6_addr, &y->sin6_addr, 16);
	}
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct proxy_info a, b, c;
	struct sockaddr_storage as, ad, bs, bd;
	uint8_t out[PROXY_HDR_MAX];
	const char *auth;
	int r, n, ip;

	r = proxy_parse(data, size, &a);
	FUZZ_ASSERT(r == -EINVAL || r >= 0);
	if (r <= 0) {
		FUZZ_ASSERT(a.hdr_len == 0 && a.version == 0);
		return 0;
	}
	FUZZ_ASSERT((size_t)r <= size && a.hdr_len == (size_t)r);
	FUZZ_ASSERT(a.version == PROXY_V1 || a.version == PROXY_V2);
	FUZZ_ASSERT(memchr(a.authority, 0, sizeof(a.authority)));
	FUZZ_ASSERT(a.version == PROXY_V2 || !a.authority[0]);
	FUZZ_ASSERT(a.family == AF_INET || a.family == AF_INET6 ||
		    a.family == AF_UNIX || a.family == AF_UNSPEC);
	FUZZ_ASSERT(a.family == a.src.ss_family &&
		    a.family == a.dst.ss_family);

	/* the header alone parses the same; its prefixes need more */
	FUZZ_ASSERT(proxy_parse(data, (size_t)r, &c) == r);
	FUZZ_ASSERT(c.version == a.version && c.family == a.family &&
		    c.hdr_len == a.hdr_len &&
		    !memcmp(&c.src, &a.src, sizeof(a.src)) &&
		    !memcmp(&c.dst, &a.dst, sizeof(a.dst)) &&
		    !strcmp(c.authority, a.authority));
	FUZZ_ASSERT(proxy_parse(data, (size_t)r - 1, &c) == 0);
	FUZZ_ASSERT(proxy_parse(data, (size_t)r / 2, &c) == 0);

	/* round trip */
	auth = a.version == PROXY_V2 && a.authority[0] ? a.authority : NULL;
	n = proxy_build(a.version, (const struct sockaddr *)&a.src,
			(const struct sockaddr *)&a.dst, auth, out, sizeof(out));
	FUZZ_ASSERT(n > 0 && n <= PROXY_HDR_MAX);
	FUZZ_ASSERT(proxy_build(a.version, (const struct sockaddr *)&a.src,
				(const struct sockaddr *)&a.dst, auth, out,
				(size_t)n - 1) == -ENOSPC);
	FUZZ_ASSERT(proxy_parse(out, (size_t)n, &b) == n);
	FUZZ_ASSERT(b.version == a.version);
	FUZZ_ASSERT(!strcmp(b.authority, a.version == PROXY_V2 ?
						 a.authority : ""));

	as = unmap(&a.src);
	ad = unmap(&a.dst);
	ip = is_ip(as.ss_family) && is_ip(ad.ss_family);
	if (a.version == PROXY_V1 && as.ss_family != ad.ss_family)
		ip = 0;
	if (ip) {
		bs = unmap(&b.src);
		bd = unmap(&b.dst);
		FUZZ_ASSERT(same_ip(&as, &bs) && same_ip(&ad, &bd));
		FUZZ_ASSERT(is_ip(b.family));
	} else {
		FUZZ_ASSERT(b.family == AF_UNSPEC);
	}
	return 0;
}
