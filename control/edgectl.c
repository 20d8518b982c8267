// SPDX-License-Identifier: MIT
/*
 * edgectl - talk to edged over its control socket.
 *
 *   edgectl [-s SOCKET] [-j] flows [--sort age|bytes|idle] [--listener NAME]
 *                                  [--client ADDR]
 *   edgectl [-s SOCKET] [-j] stats
 *   edgectl [-s SOCKET] kill ID [--reset]
 *   edgectl [-s SOCKET] [-j] route LISTENER [SNI]
 *   edgectl [-s SOCKET] ping
 *
 * Errors: one line on stderr (with -j: {"error": "..."} on stdout) and exit
 * status 1; usage errors exit 2.
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

static void fail(const char *fmt, ...)
	__attribute__((format(printf, 1, 2), noreturn));

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
	fprintf(out, "usage: edgectl [-s SOCKET] [-j] COMMAND [ARGS]\n"
		     "commands:\n"
		     "  flows [--sort age|bytes|idle] [--listener NAME] "
		     "[--client ADDR]\n"
		     "                      live flows (table sorted by age; "
		     "-j: JSON array)\n"
		     "  stats               counters per listener and route, "
		     "kernel path status\n"
		     "  kill ID [--reset]   close a flow: FIN both ways once "
		     "queued bytes are\n"
		     "                      delivered; --reset: abort both "
		     "sides with RST\n"
		     "  route LISTENER [SNI]\n"
		     "                      which route, upstream addresses "
		     "and PROXY setting a\n"
		     "                      new connection would get (connects "
		     "nowhere)\n"
		     "  reload              re-read the route file (as "
		     "SIGHUP); on error\n"
		     "                      nothing changes and the first "
		     "problem is shown\n"
		     "  ping                check that edged answers\n"
		     "options:\n"
		     "  -s PATH  control socket (default " DEFAULT_SOCKET ")\n"
		     "  -j       JSON output\n");
}

static int valid_word(const char *s)
{
	if (!*s)
		return 0;
	for (; *s; s++)
		if (*s == ' ' || *s == '\n' || *s == '\r')
			return 0;
	return 1;
}

int main(int argc, char **argv)
{
	const char *path = DEFAULT_SOCKET;
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	char req[1024], buf[65536];
	const char *words[8];
	size_t len = 0, cap = 0, rl;
	int nwords = 0, reset = 0, i, fd;
	const char *sort = NULL, *lname = NULL, *client = NULL;
	char *resp = NULL;
	ssize_t n;

	for (i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (!strcmp(a, "-s") && i + 1 < argc)
			path = argv[++i];
		else if (!strcmp(a, "-j") || !strcmp(a, "--json"))
			json_mode = 1;
		else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			usage(stdout);
			return 0;
		} else if (!strcmp(a, "--reset"))
			reset = 1;
		else if (!strcmp(a, "--sort") && i + 1 < argc)
			sort = argv[++i];
		else if (!strcmp(a, "--listener") && i + 1 < argc)
			lname = argv[++i];
		else if (!strcmp(a, "--client") && i + 1 < argc)
			client = argv[++i];
		else if (a[0] == '-') {
			usage(stderr);
			return 2;
		} else if (nwords < 8)
			words[nwords++] = a;
		else {
			usage(stderr);
			return 2;
		}
	}
	if (!nwords) {
		usage(stderr);
		return 2;
	}
	for (i = 0; i < nwords; i++)
		if (!valid_word(words[i]))
			fail("bad argument '%s'", words[i]);
	for (const char *o[] = {sort, lname, client}, **p = o; p < o + 3; p++)
		if (*p && !valid_word(*p))
			fail("bad option value '%s'", *p);

	const char *cmd = words[0];
	if (!strcmp(cmd, "flows") && nwords == 1) {
		if (sort && strcmp(sort, "age") && strcmp(sort, "bytes") &&
		    strcmp(sort, "idle"))
			fail("--sort takes age, bytes or idle");
		snprintf(req, sizeof(req), "flows%s%s%s%s%s%s%s\n",
			 json_mode ? " json" : "", sort ? " sort=" : "",
			 sort ? sort : "", lname ? " listener=" : "",
			 lname ? lname : "", client ? " client=" : "",
			 client ? client : "");
	} else if (!strcmp(cmd, "stats") && nwords == 1) {
		snprintf(req, sizeof(req), "stats%s\n",
			 json_mode ? " json" : "");
	} else if (!strcmp(cmd, "kill") && nwords == 2) {
		snprintf(req, sizeof(req), "kill %s%s\n", words[1],
			 reset ? " reset" : "");
	} else if (!strcmp(cmd, "route") && (nwords == 2 || nwords == 3)) {
		snprintf(req, sizeof(req), "route %s%s%s%s\n", words[1],
			 nwords == 3 ? " " : "", nwords == 3 ? words[2] : "",
			 json_mode ? " json" : "");
	} else if (!strcmp(cmd, "ping") && nwords == 1) {
		snprintf(req, sizeof(req), "ping\n");
	} else if (!strcmp(cmd, "reload") && nwords == 1) {
		snprintf(req, sizeof(req), "reload\n");
	} else if (!strcmp(cmd, "flows") || !strcmp(cmd, "stats") ||
		   !strcmp(cmd, "kill") || !strcmp(cmd, "route") ||
		   !strcmp(cmd, "ping") || !strcmp(cmd, "reload")) {
		usage(stderr);
		return 2;
	} else {
		fail("unknown command '%s' (try edgectl -h)", cmd);
	}

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
		if (err == EACCES || err == EPERM)
			fail("permission denied on %s (needs the control "
			     "socket's group, see control_socket_group)",
			     path);
		fail("cannot reach edged at %s: %s", path, strerror(err));
	}
	rl = strlen(req);
	if (write(fd, req, rl) != (ssize_t)rl)
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
