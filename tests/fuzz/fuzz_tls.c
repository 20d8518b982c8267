// SPDX-License-Identifier: MIT
/*
 * fuzz_tls.c - libFuzzer harness for control/tls.c.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Icontrol \
 *       tests/fuzz/fuzz_tls.c control/tls.c -o /tmp/fuzz_tls
 *   mkdir -p /tmp/corpus && cp tests/fuzz/corpus/tls/NAME /tmp/corpus/
 *   /tmp/fuzz_tls -max_total_time=120 /tmp/corpus tests/fuzz/corpus/tls
 *
 * Besides memory safety (every parse gets an exact-size heap copy, so ASan
 * sees any read past the end) it checks that parsing is a pure function of
 * the prefix: for a successful parse every shorter prefix is NEED_MORE and
 * every prefix from hello_end on gives the same result; a failure, once
 * reported, stays. It also checks sni_pattern_valid()/sni_match() agree.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tls.h"

#define ASSERT(c)							\
	do {								\
		if (!(c)) {						\
			fprintf(stderr, "%s:%d: assertion %s failed\n",	\
				__FILE__, __LINE__, #c);		\
			abort();					\
		}							\
	} while (0)

static int parse_copy(const uint8_t *data, size_t len, char *sni, size_t *end)
{
	uint8_t *copy = malloc(len ? len : 1);
	size_t i, n;
	int res;

	ASSERT(copy);
	if (len)
		memcpy(copy, data, len);
	memset(sni, 0x5a, TLS_SNI_MAX);
	*end = (size_t)-1;
	res = tls_sni_parse(copy, len, sni, end);
	free(copy);

	ASSERT(res >= TLS_NEED_MORE && res <= TLS_MALFORMED);
	ASSERT(strcmp(tls_result_str(res), "unknown"));
	if (res == TLS_FOUND_SNI) {
		n = strnlen(sni, TLS_SNI_MAX);
		ASSERT(n >= 1 && n <= 253);
		for (i = 0; i < n; i++)
			ASSERT((sni[i] >= 'a' && sni[i] <= 'z') ||
			       (sni[i] >= '0' && sni[i] <= '9') ||
			       sni[i] == '.' || sni[i] == '-' || sni[i] == '_');
		ASSERT(sni[0] != '.' && sni[n - 1] != '.');
		ASSERT(sni_match(sni, sni));
	} else {
		ASSERT(sni[0] == '\0');
	}
	if (res == TLS_FOUND_SNI || res == TLS_NO_SNI)
		ASSERT(*end >= 9 && *end <= len);
	return res;
}

static void check_tls(const uint8_t *data, size_t size)
{
	char sni[TLS_SNI_MAX], psni[TLS_SNI_MAX];
	size_t end, pend, k, i, steps;
	int res, pres, ok;

	res = parse_copy(data, size, sni, &end);
	ok = res == TLS_FOUND_SNI || res == TLS_NO_SNI;

	steps = size < 64 ? size : 64;
	for (i = 0; i < steps; i++) {
		k = size < 64 ? i : i * size / 64 + (size_t)data[i] % 8;
		if (k >= size)
			continue;
		pres = parse_copy(data, k, psni, &pend);
		if (ok && k < end) {
			ASSERT(pres == TLS_NEED_MORE);
		} else if (ok) {
			ASSERT(pres == res && pend == end);
			ASSERT(!strcmp(psni, sni));
		} else {
			ASSERT(pres == TLS_NEED_MORE || pres == res);
		}
	}
	if (ok && end < size) {
		/* exactly the hello, then the hello minus one byte */
		ASSERT(parse_copy(data, end, psni, &pend) == res &&
		       pend == end);
		ASSERT(parse_copy(data, end - 1, psni, &pend) == TLS_NEED_MORE);
	}
}

static void check_names(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 3), *p, *n, *sep, *alt;
	const char *why;
	size_t len, i;
	int valid;

	ASSERT(s);
	memcpy(s, data, size);
	s[size] = '\0';
	len = strlen(s);
	p = s;
	sep = strchr(s, ' ');
	n = sep ? sep + 1 : s;
	if (sep)
		*sep = '\0';

	why = NULL;
	valid = sni_pattern_valid(p, &why) == 0;
	ASSERT(valid || (why && *why));
	(void)sni_match(p, n);
	(void)sni_match(n, p);

	if (!valid || !*p)
		goto out;
	if (p[0] != '*') {
		ASSERT(sni_match(p, p));
		/* case does not matter */
		alt = strdup(p);
		ASSERT(alt);
		for (i = 0; alt[i]; i++)
			if (alt[i] >= 'a' && alt[i] <= 'z')
				alt[i] = (char)(alt[i] - 'a' + 'A');
		ASSERT(sni_match(p, alt) && sni_match(alt, p));
		free(alt);
	} else {
		/* "*.x": matches "a.x", not "x" */
		len = strlen(p);
		alt = malloc(len + 2);
		ASSERT(alt);
		memcpy(alt, p, len + 1);
		alt[0] = 'a';
		ASSERT(sni_match(p, alt));
		ASSERT(!sni_match(p, p + 2));
		free(alt);
	}
out:
	free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	check_tls(data, size);
	if (size < 4096)
		check_names(data, size);
	return 0;
}
