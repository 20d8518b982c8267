// SPDX-License-Identifier: MIT
/* log.c - see log.h. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

static const char *log_prog = "edged";
static int log_level = LOG_LVL_INFO;

void log_init(const char *prog, int level)
{
	log_prog = prog;
	log_level = level;
}

void log_set_level(int level)
{
	log_level = level;
}

int log_get_level(void)
{
	return log_level;
}

static void log_emit(int level, const char *tag, int err, const char *fmt,
		     va_list ap)
{
	char msg[2048];

	if (level > log_level)
		return;
	vsnprintf(msg, sizeof(msg), fmt, ap);
	if (err)
		fprintf(stderr, "%s: %s: %s: %s\n", log_prog, tag, msg,
			strerror(err));
	else
		fprintf(stderr, "%s: %s: %s\n", log_prog, tag, msg);
}

#define LOG_FN(name, level, tag, with_errno)                           \
	void name(const char *fmt, ...)                                \
	{                                                              \
		int saved = errno;                                     \
		va_list ap;                                            \
		va_start(ap, fmt);                                     \
		log_emit(level, tag, with_errno ? saved : 0, fmt, ap); \
		va_end(ap);                                            \
		errno = saved;                                         \
	}

LOG_FN(log_warn, LOG_LVL_WARN, "warning", 1)
LOG_FN(log_warnx, LOG_LVL_WARN, "warning", 0)
LOG_FN(log_info, LOG_LVL_INFO, "info", 0)
LOG_FN(log_debug, LOG_LVL_DEBUG, "debug", 0)

void fatal(const char *fmt, ...)
{
	int saved = errno;
	va_list ap;

	va_start(ap, fmt);
	log_emit(LOG_LVL_ERR, "fatal", saved, fmt, ap);
	va_end(ap);
	exit(1);
}

void fatalx(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_emit(LOG_LVL_ERR, "fatal", 0, fmt, ap);
	va_end(ap);
	exit(1);
}

int log_libbpf(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	char msg[2048];
	size_t n;

	/* libbpf's debug output is very chatty; keep warnings. */
	if (level == LIBBPF_DEBUG && log_level < LOG_LVL_DEBUG)
		return 0;
	vsnprintf(msg, sizeof(msg), fmt, ap);
	n = strlen(msg);
	while (n && msg[n - 1] == '\n')
		msg[--n] = '\0';
	fprintf(stderr, "%s: libbpf: %s\n", log_prog, msg);
	return 0;
}
