/* SPDX-License-Identifier: MIT */
/*
 * log.h - the daemon's tiny log API (after OpenBSD relayd).
 *   log_warn()  appends ": strerror(errno)", log_warnx() does not;
 *   fatal()/fatalx() log and exit(1): only for start-up.
 * Lines go to stderr as "edged: LEVEL: message".
 */
#ifndef EDGE_LOG_H
#define EDGE_LOG_H

#include <stdarg.h>
#include <bpf/libbpf.h>

enum log_level { LOG_LVL_ERR, LOG_LVL_WARN, LOG_LVL_INFO, LOG_LVL_DEBUG };

void log_init(const char *prog, int level);
void log_set_level(int level);
int log_get_level(void);
void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warnx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void fatal(const char *fmt, ...)
	__attribute__((format(printf, 1, 2), noreturn));
void fatalx(const char *fmt, ...)
	__attribute__((format(printf, 1, 2), noreturn));
/* libbpf's messages, routed through the same sink (libbpf_set_print). */
int log_libbpf(enum libbpf_print_level level, const char *fmt, va_list ap);

#endif
