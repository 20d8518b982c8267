// SPDX-License-Identifier: MIT
/*
 * edgectl - talk to edged over its control socket.
 *   edgectl [-s SOCKET] [-j] flows|stats|ping
 * Errors: one line on stderr (with -j: {"error": "..."} on stdout) and a
 * non-zero exit.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define DEFAULT_SOCKET "/run/edge/ctl.sock"

static int json_mode;

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void fail(const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (json_mode) {
		printf("{\"error\": \"");
		for (const char *p = msg; *p; p++) {
			if (*p == '"' || *p == '\\')
				putchar('\\');
			if ((unsigned char)*p >= 0x20)
				putchar(*p);
		}
		printf("\"}\n");
	} else {
		fprintf(stderr, "edgectl: %s\n", msg);
	}
	exit(1);
}

static void usage(FILE *out)
{
	fprintf(out, "usage: edgectl [-s SOCKET] [-j] COMMAND\n"
		     "commands:\n"
		     "  flows    live flows (table; -j: JSON array)\n"
		     "  stats    counters per listener (JSON)\n"
		     "  ping     check that edged answers\n"
		     "options:\n"
		     "  -s PATH  control socket (default " DEFAULT_SOCKET ")\n"
		     "  -j       JSON output\n");
}

int main(int argc, char **argv)
{
	const char *path = DEFAULT_SOCKET, *cmd = NULL;
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	char req[256], buf[65536];
	size_t len = 0, cap = 0;
	char *resp = NULL;
	int i, fd;
	ssize_t n;

	for (i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "-s") && i + 1 < argc)
			path = argv[++i];
		else if (!strcmp(argv[i], "-j") || !strcmp(argv[i], "--json"))
			json_mode = 1;
		else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
			usage(stdout);
			return 0;
		} else if (argv[i][0] == '-') {
			usage(stderr);
			return 2;
		} else if (!cmd)
			cmd = argv[i];
		else {
			usage(stderr);
			return 2;
		}
	}
	if (!cmd) {
		usage(stderr);
		return 2;
	}
	if (!strcmp(cmd, "flows"))
		snprintf(req, sizeof(req), "flows%s\n", json_mode ? " json" : "");
	else if (!strcmp(cmd, "stats"))
		snprintf(req, sizeof(req), "stats json\n");
	else if (!strcmp(cmd, "ping"))
		snprintf(req, sizeof(req), "ping\n");
	else
		fail("unknown command '%s' (try edgectl -h)", cmd);

	if (strlen(path) >= sizeof(sun.sun_path))
		fail("socket path too long: %s", path);
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd == -1)
		fail("socket: %s", strerror(errno));
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == -1) {
		int err = errno;

		if (err == ENOENT || err == ECONNREFUSED)
			fail("edged is not running (no control socket at %s)",
			     path);
		fail("cannot reach edged at %s: %s", path, strerror(err));
	}
	if (write(fd, req, strlen(req)) != (ssize_t)strlen(req))
		fail("cannot send the request: %s", strerror(errno));
	while ((n = read(fd, buf, sizeof(buf))) > 0) {
		if (len + (size_t)n + 1 > cap) {
			cap = (len + (size_t)n + 1) * 2;
			resp = realloc(resp, cap);
			if (!resp)
				fail("out of memory");
		}
		memcpy(resp + len, buf, (size_t)n);
		len += (size_t)n;
	}
	close(fd);
	if (!resp)
		fail("edged closed the connection without an answer");
	resp[len] = '\0';
	if (!strncmp(resp, "ok\n", 3)) {
		fputs(resp + 3, stdout);
		free(resp);
		return 0;
	}
	if (!strncmp(resp, "error ", 6)) {
		char *nl = strchr(resp, '\n');

		if (nl)
			*nl = '\0';
		fail("%s", resp + 6);
	}
	fail("unexpected answer from edged");
}
