/* SPDX-License-Identifier: MIT */
/*
 * check.h - the unit tests' one assertion: count a passed check, or print
 * "FAIL NAME: message" and count a failure. Each test_*.c includes it
 * once and ends with its "N passed, N failed" line from these counters.
 */
#ifndef EDGE_TEST_CHECK_H
#define EDGE_TEST_CHECK_H

#include <stdarg.h>
#include <stdio.h>

static int passed, failed;

static void check(int ok, const char *name, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void check(int ok, const char *name, const char *fmt, ...)
{
	va_list ap;

	if (ok) {
		passed++;
		return;
	}
	failed++;
	printf("FAIL %s: ", name);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
}

#endif
