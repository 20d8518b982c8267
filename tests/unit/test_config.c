// SPDX-License-Identifier: MIT
/*
 * test_config.c - unit tests for control/config.c (the route file).
 *
 * Usage: test_config [DATADIR]   (DATADIR is accepted for symmetry with the
 * other unit tests and not used: every case is written by this program into
 * a fresh mkdtemp() directory under /tmp, which is removed at the end; set
 * EDGE_TEST_KEEP=1 to keep it for a look). Run from the repository root: it
 * also loads config/edge.yaml.
 *
 * Invalid cases assert the exact "FILE:LINE:COL: " prefix and a key part of
 * the message of every expected error, and the exact number of error lines.
 * The line numbers are written in a comment at the end of each YAML line.
 *
 * Prints "FAIL name: detail" per failed check, then
 * "test_config: N passed, N failed"; exits 1 if any check failed.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include "config.h"
#include "proxy.h"

#include "check.h"

/* ---- temporary files ---- */

static char tmpdir[64];
static char *files[256];
static int nfiles;

/* write_case - tmpdir/NAME.yaml with @text; returns its path (static). */
static const char *write_case(const char *name, const char *text)
{
	static char path[256];
	FILE *fp;

	snprintf(path, sizeof(path), "%s/%s.yaml", tmpdir, name);
	fp = fopen(path, "w");
	if (!fp || fputs(text, fp) < 0 || fclose(fp)) {
		fprintf(stderr, "test_config: cannot write %s\n", path);
		exit(2);
	}
	if (nfiles < (int)(sizeof(files) / sizeof(files[0])))
		files[nfiles++] = strdup(path);
	return path;
}

static void cleanup(void)
{
	int keep = getenv("EDGE_TEST_KEEP") != NULL;

	for (int i = 0; i < nfiles; i++) {
		if (!keep)
			unlink(files[i]);
		free(files[i]);
	}
	if (keep)
		printf("test_config: cases kept in %s\n", tmpdir);
	else
		rmdir(tmpdir);
}

/* ---- loading ---- */

/* load_ok - load a valid case; NULL (and a FAIL) if it did not load. */
static struct edge_config *load_ok(const char *name, const char *text)
{
	struct edge_config *cfg = NULL;
	struct strbuf errs;
	const char *path = write_case(name, text);
	int rc;

	sb_init(&errs);
	rc = config_load(path, &cfg, &errs);
	check(rc == 0 && cfg, name, "valid file rejected (rc %d):\n%s", rc,
	      errs.data ? errs.data : "(no message)");
	check(errs.len == 0, name, "errors on success: %s",
	      errs.data ? errs.data : "");
	sb_free(&errs);
	if (rc) {
		config_free(cfg);
		return NULL;
	}
	return cfg;
}

struct experr {
	int line, col;
	const char *msg; /* a substring of the message */
};

static int count_lines(const char *s)
{
	int n = 0;

	for (; s && *s; s++)
		if (*s == '\n')
			n++;
	return n;
}

/* has_error - some line of @errs is "PATH:LINE:COL: ...MSG...". */
static int has_error(const char *errs, const char *path, const struct experr *e)
{
	char prefix[400];
	size_t plen;
	const char *p = errs;

	plen = (size_t)snprintf(prefix, sizeof(prefix), "%s:%d:%d: ", path,
				e->line, e->col);
	while (p && *p) {
		const char *nl = strchr(p, '\n');
		size_t len = nl ? (size_t)(nl - p) : strlen(p);

		if (len >= plen && !strncmp(p, prefix, plen)) {
			const char *m = strstr(p + plen, e->msg);

			if (m && m + strlen(e->msg) <= p + len)
				return 1;
		}
		p = nl ? nl + 1 : NULL;
	}
	return 0;
}

/* all_lines_prefixed - every line of @errs starts with "PATH:N:N: ". */
static int all_lines_prefixed(const char *errs, const char *path)
{
	size_t plen = strlen(path);
	const char *p = errs;

	while (p && *p) {
		int line, col, n = 0;

		if (strncmp(p, path, plen) ||
		    sscanf(p + plen, ":%d:%d: %n", &line, &col, &n) != 2 || !n ||
		    line < 1 || col < 1)
			return 0;
		p = strchr(p, '\n');
		if (!p)
			return 0; /* every line ends with a newline */
		p++;
	}
	return 1;
}

/*
 * load_bad - load @text as @name and expect failure with exactly @nlines
 * error lines (-1: don't count), among them each of @exp.
 */
static void load_bad(const char *name, const char *text, int nlines,
		     const struct experr *exp, size_t nexp)
{
	struct edge_config *cfg = NULL;
	struct strbuf errs;
	const char *path = write_case(name, text);
	char pathcopy[256];
	const char *e;
	int rc;

	snprintf(pathcopy, sizeof(pathcopy), "%s", path);
	sb_init(&errs);
	rc = config_load(pathcopy, &cfg, &errs);
	e = errs.data ? errs.data : "";
	check(rc == -EINVAL, name, "config_load returned %d, want -EINVAL", rc);
	check(cfg == NULL, name, "*out not NULL on error");
	if (nlines >= 0)
		check(count_lines(e) == nlines, name,
		      "%d error lines, want %d:\n%s", count_lines(e), nlines, e);
	check(all_lines_prefixed(e, pathcopy), name,
	      "an error line without the FILE:LINE:COL: prefix:\n%s", e);
	for (size_t i = 0; i < nexp; i++)
		check(has_error(e, pathcopy, &exp[i]), name,
		      "no \"FILE:%d:%d: ...%s...\" in:\n%s", exp[i].line,
		      exp[i].col, exp[i].msg, e);
	config_free(cfg);
	sb_free(&errs);
}

#define E(...) ((const struct experr[]){ __VA_ARGS__ })
#define NE(...) (sizeof(E(__VA_ARGS__)) / sizeof(struct experr))
/* BAD(name, yaml, number of error lines, {line, col, "msg"}...) */
#define BAD(name, yaml, n, ...) load_bad(name, yaml, n, E(__VA_ARGS__), NE(__VA_ARGS__))

/* ---- address helpers ---- */

static int is_v4(const struct sockaddr_storage *ss, const char *ip,
		 unsigned port)
{
	const struct sockaddr_in *s4 = (const struct sockaddr_in *)ss;
	struct in_addr a;

	if (ss->ss_family != AF_INET || inet_pton(AF_INET, ip, &a) != 1)
		return 0;
	return s4->sin_addr.s_addr == a.s_addr && ntohs(s4->sin_port) == port;
}

static int is_v6(const struct sockaddr_storage *ss, const char *ip,
		 unsigned port)
{
	const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;
	struct in6_addr a;

	if (ss->ss_family != AF_INET6 || inet_pton(AF_INET6, ip, &a) != 1)
		return 0;
	return !memcmp(&s6->sin6_addr, &a, sizeof(a)) &&
	       ntohs(s6->sin6_port) == port;
}

static unsigned ss_port(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)ss)->sin_port);
	if (ss->ss_family == AF_INET6)
		return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
	return 0;
}

static const char *addr(const struct sockaddr_storage *ss)
{
	static char buf[ADDR_STR_MAX];

	return addr_str((const struct sockaddr *)ss, buf, sizeof(buf));
}

/* ---- valid files ---- */

static void test_full(void)
{
	static const char yaml[] =
		"control_socket: /tmp/edge-test.sock\n"     /* 1 */
		"datapath: copy\n"                          /* 2 */
		"timeouts:\n"                               /* 3 */
		"  connect: 250ms\n"                        /* 4 */
		"  client_hello: 7\n"                       /* 5 */
		"  idle: 2m\n"                              /* 6 */
		"  half_closed: 0\n"                        /* 7 */
		"limits:\n"                                 /* 8 */
		"  kernel_backlog: 512KiB\n"                /* 9 */
		"listeners:\n"                              /* 10 */
		"  - name: smtp\n"                          /* 11 */
		"    bind: [\"0.0.0.0:25\", \"[::]:25\"]\n" /* 12 */
		"    datapath: splice\n"                    /* 13 */
		"    routes:\n"                             /* 14 */
		"      - name: r1\n"                        /* 15 */
		"        sni: [\"MTA-STS.Example.COM.\", \"*.example.org\"]\n"
		"        upstream: \"127.0.0.1:25\"\n"      /* 17 */
		"        proxy_protocol: v2\n"              /* 18 */
		"      - sni: [\"v6.example.net\", \"a.example.com\"]\n"
		"        upstream: \"[::1]:25\"\n"          /* 20 */
		"        proxy_protocol: v1\n"              /* 21 */
		"      - upstream: \"localhost:25\"\n"      /* 22 */
		"        proxy_protocol: none\n"            /* 23 */
		"  - name: plain_2\n"                       /* 24 */
		"    bind:\n"                               /* 25 */
		"      - 127.0.0.1:65535\n"                 /* 26 */
		"    routes:\n"                             /* 27 */
		"      - upstream: 127.0.0.1:10025\n"       /* 28 */
		"  - name: sni-only\n"                      /* 29 */
		"    bind: [\"127.0.0.1:4443\"]\n"          /* 30 */
		"    routes:\n"                             /* 31 */
		"      - sni: [\"a.example.com\"]\n"        /* 32: ok, other listener */
		"        upstream: \"127.0.0.1:443\"\n";    /* 33 */
	struct edge_config *c = load_ok("full", yaml);
	const char *n = "full";

	if (!c)
		return;
	check(!strcmp(c->control_socket, "/tmp/edge-test.sock"), n,
	      "control_socket '%s'", c->control_socket);
	check(c->datapath == DP_COPY, n, "top datapath %d", c->datapath);
	check(c->connect_ms == 250, n, "connect 250ms -> %llu",
	      (unsigned long long)c->connect_ms);
	check(c->client_hello_ms == 7000, n, "client_hello 7 (bare) -> %llu",
	      (unsigned long long)c->client_hello_ms);
	check(c->idle_ms == 120000, n, "idle 2m -> %llu",
	      (unsigned long long)c->idle_ms);
	check(c->half_closed_ms == 0, n, "half_closed 0 -> %llu",
	      (unsigned long long)c->half_closed_ms);
	check(c->kernel_backlog == 512 * 1024, n, "kernel_backlog 512KiB -> %llu",
	      (unsigned long long)c->kernel_backlog);
	check(c->nlisteners == 3, n, "nlisteners %d", c->nlisteners);
	if (c->nlisteners != 3)
		goto out;

	struct listener_cfg *l = &c->listeners[0];

	check(!strcmp(l->name, "smtp"), n, "listener 0 name '%s'", l->name);
	check(l->nbinds == 2, n, "smtp nbinds %d", l->nbinds);
	check(is_v4(&l->binds[0], "0.0.0.0", 25), n, "smtp bind[0] %s",
	      addr(&l->binds[0]));
	check(is_v6(&l->binds[1], "::", 25), n, "smtp bind[1] %s",
	      addr(&l->binds[1]));
	check(l->datapath == DP_SPLICE, n, "smtp datapath %s",
	      datapath_str(l->datapath));
	check(l->nroutes == 3, n, "smtp nroutes %d", l->nroutes);
	check(l->sni_routing == 1, n, "smtp sni_routing %d", l->sni_routing);
	check(l->default_route == 2, n, "smtp default_route %d",
	      l->default_route);
	if (l->nroutes == 3) {
		struct route *r = l->routes;

		check(!strcmp(r[0].name, "r1") && r[0].named, n,
		      "route 0 name '%s' named %d", r[0].name, r[0].named);
		check(!strcmp(r[1].name, "1") && !r[1].named, n,
		      "route 1 name '%s' named %d", r[1].name, r[1].named);
		check(!strcmp(r[2].name, "2") && !r[2].named, n,
		      "route 2 name '%s' named %d", r[2].name, r[2].named);
		check(r[0].nsni == 2 && !strcmp(r[0].sni[0], "mta-sts.example.com"),
		      n, "sni lower-cased, trailing dot removed: '%s'",
		      r[0].nsni ? r[0].sni[0] : "-");
		check(r[0].nsni == 2 && !strcmp(r[0].sni[1], "*.example.org"), n,
		      "wildcard sni '%s'", r[0].nsni > 1 ? r[0].sni[1] : "-");
		check(r[2].nsni == 0 && r[2].sni == NULL, n,
		      "default route has sni");
		check(r[0].proxy == PROXY_V2 && r[1].proxy == PROXY_V1 &&
			      r[2].proxy == PROXY_NONE,
		      n, "proxy versions %d %d %d", r[0].proxy, r[1].proxy,
		      r[2].proxy);
		check(!strcmp(r[0].upstream, "127.0.0.1:25") &&
			      !strcmp(r[0].host, "127.0.0.1") && r[0].port == 25,
		      n, "route 0 upstream '%s' host '%s' port %u",
		      r[0].upstream, r[0].host, r[0].port);
		check(r[0].naddrs == 1 && is_v4(&r[0].addrs[0], "127.0.0.1", 25),
		      n, "127.0.0.1:25 -> %d addrs, first %s", r[0].naddrs,
		      addr(&r[0].addrs[0]));
		check(!strcmp(r[1].host, "::1") && r[1].port == 25, n,
		      "[::1]:25 host '%s' port %u", r[1].host, r[1].port);
		check(r[1].naddrs == 1 && is_v6(&r[1].addrs[0], "::1", 25), n,
		      "[::1]:25 -> %d addrs, first %s", r[1].naddrs,
		      addr(&r[1].addrs[0]));
		check(r[2].naddrs >= 1 && !strcmp(r[2].host, "localhost"), n,
		      "localhost:25 -> %d addrs", r[2].naddrs);
		int allport = 1;

		for (int i = 0; i < r[2].naddrs; i++)
			if (ss_port(&r[2].addrs[i]) != 25 ||
			    (r[2].addrs[i].ss_family != AF_INET &&
			     r[2].addrs[i].ss_family != AF_INET6))
				allport = 0;
		check(allport, n, "localhost addrs not all INET/INET6 port 25");

		/* route_select */
		static const struct {
			const char *sni;
			int want;
		} sel[] = {
			{ "mta-sts.example.com", 0 },  /* exact */
			{ "MTA-STS.EXAMPLE.COM", 0 },  /* case */
			{ "mta-sts.example.com.", 0 }, /* trailing dot */
			{ "x.example.org", 0 },        /* wildcard */
			{ "a.b.example.org", 0 },      /* wildcard, deeper */
			{ "X.Example.ORG", 0 },        /* wildcard, case */
			{ "example.org", 2 },          /* apex: not the wildcard */
			{ "xexample.org", 2 },
			{ "v6.example.net", 1 },
			{ "a.example.com", 1 },
			{ "sts.example.com", 2 },      /* no match -> default */
			{ "", 2 },                     /* empty -> default */
			{ NULL, 2 },                   /* no SNI -> default */
		};
		for (size_t i = 0; i < sizeof(sel) / sizeof(sel[0]); i++) {
			int got = route_select(l, sel[i].sni);

			check(got == sel[i].want, "full route_select",
			      "'%s' -> %d, want %d",
			      sel[i].sni ? sel[i].sni : "(null)", got,
			      sel[i].want);
		}
	}

	l = &c->listeners[1];
	check(!strcmp(l->name, "plain_2"), n, "listener 1 name '%s'", l->name);
	check(l->nbinds == 1 && is_v4(&l->binds[0], "127.0.0.1", 65535), n,
	      "plain_2 bind %s (block sequence, plain scalar, port 65535)",
	      addr(&l->binds[0]));
	check(l->datapath == DP_COPY, n, "plain_2 inherits datapath: %s",
	      datapath_str(l->datapath));
	check(l->nroutes == 1 && l->default_route == 0 && !l->sni_routing, n,
	      "plain_2 nroutes %d default %d sni_routing %d", l->nroutes,
	      l->default_route, l->sni_routing);
	if (l->nroutes == 1) {
		check(!strcmp(l->routes[0].name, "0"), n,
		      "unnamed route 0 name '%s'", l->routes[0].name);
		check(l->routes[0].proxy == PROXY_NONE, n,
		      "proxy_protocol default %d", l->routes[0].proxy);
		check(l->routes[0].naddrs == 1 &&
			      is_v4(&l->routes[0].addrs[0], "127.0.0.1", 10025),
		      n, "plain upstream -> %s", addr(&l->routes[0].addrs[0]));
		check(route_select(l, NULL) == 0 &&
			      route_select(l, "whatever.example") == 0,
		      n, "only a default route: every SNI goes there");
	}

	l = &c->listeners[2];
	check(l->default_route == -1 && l->sni_routing == 1, n,
	      "sni-only default %d sni_routing %d", l->default_route,
	      l->sni_routing);
	check(route_select(l, "a.example.com") == 0, n,
	      "sni-only exact -> %d", route_select(l, "a.example.com"));
	check(route_select(l, "b.example.com") == -1, n,
	      "no match, no default -> %d", route_select(l, "b.example.com"));
	check(route_select(l, NULL) == -1, n, "no SNI, no default -> %d",
	      route_select(l, NULL));
out:
	config_free(c);
}

static void test_defaults(void)
{
	static const char yaml[] = "listeners:\n"
				   "  - name: a\n"
				   "    bind: [\"127.0.0.1:2525\"]\n"
				   "    routes:\n"
				   "      - upstream: \"127.0.0.1:25\"\n";
	struct edge_config *c = load_ok("defaults", yaml);
	const char *n = "defaults";

	if (!c)
		return;
	check(!strcmp(c->control_socket, DEFAULT_CONTROL_SOCKET), n,
	      "control_socket '%s'", c->control_socket);
	check(c->datapath == DP_AUTO && c->nlisteners == 1 &&
		      c->listeners[0].datapath == DP_AUTO,
	      n, "datapath default auto (top %d)", c->datapath);
	check(c->connect_ms == 5000 && c->client_hello_ms == 10000 &&
		      c->idle_ms == 3600000 && c->half_closed_ms == 60000,
	      n, "timeouts %llu %llu %llu %llu",
	      (unsigned long long)c->connect_ms,
	      (unsigned long long)c->client_hello_ms,
	      (unsigned long long)c->idle_ms,
	      (unsigned long long)c->half_closed_ms);
	check(c->kernel_backlog == 16ULL << 20, n, "kernel_backlog %llu",
	      (unsigned long long)c->kernel_backlog);
	check(c->kernel_sndbuf == 16ULL << 20, n, "kernel_sndbuf %llu",
	      (unsigned long long)c->kernel_sndbuf);
	check(!strcmp(c->path, write_case("defaults", yaml)), n, "path '%s'",
	      c->path);
	config_free(c);
}

static void test_units(void)
{
	char name63[64], sock107[108], yaml[1024];

	memset(name63, 'n', 63);
	name63[63] = '\0';
	memset(sock107, 's', 107);
	sock107[0] = '/';
	sock107[107] = '\0';
	snprintf(yaml, sizeof(yaml),
		 "control_socket: %s\n"
		 "datapath: sockmap\n"
		 "timeouts:\n"
		 "  connect: 1h\n"
		 "  client_hello: 1m\n"
		 "  idle: 30s\n"
		 "  half_closed: 5ms\n"
		 "limits:\n"
		 "  kernel_backlog: 256KiB\n"
		 "  kernel_sndbuf: 0\n"
		 "listeners:\n"
		 "  - name: %s\n"
		 "    bind: [\"[::1]:2525\"]\n"
		 "    datapath: auto\n"
		 "    routes:\n"
		 "      - name: %s\n"
		 "        upstream: \"127.0.0.1:25\"\n",
		 sock107, name63, name63);

	struct edge_config *c = load_ok("units", yaml);
	const char *n = "units";

	if (!c)
		return;
	check(c->connect_ms == 3600000, n, "1h -> %llu",
	      (unsigned long long)c->connect_ms);
	check(c->client_hello_ms == 60000, n, "1m -> %llu",
	      (unsigned long long)c->client_hello_ms);
	check(c->idle_ms == 30000, n, "30s -> %llu",
	      (unsigned long long)c->idle_ms);
	check(c->half_closed_ms == 5, n, "5ms -> %llu",
	      (unsigned long long)c->half_closed_ms);
	check(c->kernel_backlog == 256 * 1024, n, "256KiB (the minimum) -> %llu",
	      (unsigned long long)c->kernel_backlog);
	check(c->kernel_sndbuf == 0, n, "kernel_sndbuf 0 (autotuning) -> %llu",
	      (unsigned long long)c->kernel_sndbuf);
	check(!strcmp(c->control_socket, sock107), n,
	      "control_socket of 107 bytes");
	check(c->datapath == DP_SOCKMAP && c->listeners[0].datapath == DP_AUTO,
	      n, "top sockmap, listener auto overrides: %d %d", c->datapath,
	      c->listeners[0].datapath);
	check(!strcmp(c->listeners[0].name, name63) &&
		      !strcmp(c->listeners[0].routes[0].name, name63),
	      n, "63-character names");
	check(is_v6(&c->listeners[0].binds[0], "::1", 2525), n, "bind %s",
	      addr(&c->listeners[0].binds[0]));
	config_free(c);

	/* 16 bind addresses is the maximum; GiB */
	char big[2048];
	int off = snprintf(big, sizeof(big),
			   "limits:\n  kernel_backlog: 1GiB\n"
			   "listeners:\n  - name: a\n    bind:\n");
	for (int i = 0; i < LISTENER_BINDS_MAX; i++)
		off += snprintf(big + off, sizeof(big) - off,
				"      - 127.0.0.1:%d\n", 3000 + i);
	snprintf(big + off, sizeof(big) - off,
		 "    routes:\n      - upstream: 127.0.0.1:25\n");
	c = load_ok("binds16", big);
	if (c) {
		check(c->kernel_backlog == 1ULL << 30, "binds16", "1GiB -> %llu",
		      (unsigned long long)c->kernel_backlog);
		check(c->listeners[0].nbinds == 16 &&
			      is_v4(&c->listeners[0].binds[15], "127.0.0.1", 3015),
		      "binds16", "nbinds %d", c->listeners[0].nbinds);
		config_free(c);
	}
}

#define LABEL60 "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define LONG_SNI LABEL60 "." LABEL60 "." LABEL60 ".example.com"

static void test_env(void)
{
	static const char yaml[] =
		"control_socket: \"/tmp/a$b-${EDGE_T_EMPTY}.sock\"\n"
		"datapath: ${EDGE_T_UNSET:-copy}\n"
		"timeouts:\n"
		"  connect: ${EDGE_T_MS}ms\n"
		"limits:\n"
		"  kernel_backlog: ${EDGE_T_UNSET:-1MiB}\n"
		"listeners:\n"
		"  - name: \"env${EDGE_T_EMPTY}\"\n"
		"    bind: [\"${EDGE_T_HOST}:${EDGE_T_PORT}\"]\n"
		"    datapath: \"${EDGE_T_DP}\"\n"
		"    routes:\n"
		"      - name: \"${EDGE_T_UNSET:-fallback}\"\n"
		"        sni: [\"${EDGE_T_EMPTY:-Dflt.Example.com}\", "
		"\"${EDGE_T_UNSET:-" LONG_SNI "}\"]\n"
		"        upstream: \"${EDGE_T_HOST:-10.9.9.9}:${EDGE_T_UNSET:-25}\"\n"
		"        proxy_protocol: \"${EDGE_T_PP:-v2}\"\n"
		"      - name: \"x${EDGE_T_UNSET:-}y\"\n"
		"        upstream: \"127.0.0.1:2${EDGE_T_EMPTY}5\"\n";
	const char *n = "env";

	setenv("EDGE_T_EMPTY", "", 1);
	setenv("EDGE_T_HOST", "127.0.0.1", 1);
	setenv("EDGE_T_PORT", "2526", 1);
	setenv("EDGE_T_DP", "splice", 1);
	setenv("EDGE_T_PP", "v1", 1);
	setenv("EDGE_T_MS", "1500", 1);
	unsetenv("EDGE_T_UNSET");

	struct edge_config *c = load_ok("env", yaml);

	if (!c)
		return;
	check(!strcmp(c->control_socket, "/tmp/a$b-.sock"), n,
	      "set-but-empty ${VAR} -> '', lone '$' kept: '%s'",
	      c->control_socket);
	check(c->datapath == DP_COPY, n, "unset with default -> copy: %d",
	      c->datapath);
	check(c->connect_ms == 1500, n, "${EDGE_T_MS}ms -> %llu",
	      (unsigned long long)c->connect_ms);
	check(c->kernel_backlog == 1ULL << 20, n, "kernel_backlog default 1MiB");
	struct listener_cfg *l = &c->listeners[0];

	check(!strcmp(l->name, "env"), n, "listener name '%s'", l->name);
	check(l->nbinds == 1 && is_v4(&l->binds[0], "127.0.0.1", 2526), n,
	      "two variables in one bind -> %s", addr(&l->binds[0]));
	check(l->datapath == DP_SPLICE, n, "listener datapath from env %d",
	      l->datapath);
	if (l->nroutes == 2) {
		struct route *r = l->routes;

		check(!strcmp(r[0].name, "fallback") && r[0].named, n,
		      "route name from default '%s'", r[0].name);
		check(r[0].nsni == 2 && !strcmp(r[0].sni[0], "dflt.example.com"),
		      n, "empty variable with default -> default, lower-cased: '%s'",
		      r[0].nsni ? r[0].sni[0] : "-");
		check(r[0].nsni == 2 && !strcmp(r[0].sni[1], LONG_SNI), n,
		      "default of %zu characters kept whole: '%s'",
		      strlen(LONG_SNI), r[0].nsni > 1 ? r[0].sni[1] : "-");
		check(!strcmp(r[0].upstream, "127.0.0.1:25") &&
			      r[0].naddrs == 1 &&
			      is_v4(&r[0].addrs[0], "127.0.0.1", 25),
		      n, "set variable beats its default: upstream '%s'",
		      r[0].upstream);
		check(r[0].proxy == PROXY_V1, n, "proxy_protocol from env %d",
		      r[0].proxy);
		check(!strcmp(r[1].name, "xy"), n, "empty default ${V:-} -> '%s'",
		      r[1].name);
		check(!strcmp(r[1].upstream, "127.0.0.1:25") && r[1].port == 25,
		      n, "variable inside a port: '%s'", r[1].upstream);
	} else {
		check(0, n, "nroutes %d", l->nroutes);
	}
	config_free(c);
}

static void test_example(void)
{
	struct edge_config *c = NULL;
	struct strbuf errs;
	const char *n = "config/edge.yaml";
	int rc;

	unsetenv("EDGE_DEMO_MAIL");
	sb_init(&errs);
	rc = config_load("config/edge.yaml", &c, &errs);
	check(rc == 0 && c, n, "rejected (rc %d; run from the repo root):\n%s",
	      rc, errs.data ? errs.data : "");
	sb_free(&errs);
	if (!c)
		return;
	check(c->nlisteners == 2, n, "nlisteners %d", c->nlisteners);
	if (c->nlisteners == 2) {
		struct listener_cfg *a = &c->listeners[0], *b = &c->listeners[1];

		check(!strcmp(a->name, "smtp-demo") && a->nbinds == 2 &&
			      is_v4(&a->binds[0], "127.0.0.1", 2525) &&
			      is_v6(&a->binds[1], "::1", 2525),
		      n, "smtp-demo binds");
		check(a->nroutes == 1 && a->routes[0].proxy == PROXY_V2 &&
			      !strcmp(a->routes[0].upstream, "127.0.0.1:10025"),
		      n, "smtp-demo route: ${EDGE_DEMO_MAIL:-...} default");
		check(!strcmp(b->name, "https-demo") && b->nroutes == 2 &&
			      b->default_route == 1 && b->sni_routing &&
			      b->routes[0].nsni == 3,
		      n, "https-demo routes");
		check(route_select(b, "autoconfig.example.com") == 0 &&
			      route_select(b, "www.example.com") == 1 &&
			      route_select(b, NULL) == 1,
		      n, "https-demo route_select");
	}
	config_free(c);
}

/* ---- invalid files ---- */

#define HEAD                                                                   \
	"listeners:\n"                     /* 1 */                             \
	"  - name: a\n"                    /* 2 */                             \
	"    bind: [\"127.0.0.1:2525\"]\n" /* 3 */                             \
	"    routes:\n"                    /* 4 */

#define DEFAULT_ROUTE "      - upstream: \"127.0.0.1:25\"\n"

static void test_syntax(void)
{
	BAD("syntax_flow",
	    "listeners:\n"                   /* 1 */
	    "  - name: a\n"                  /* 2 */
	    "    bind: [\"127.0.0.1:2525\"\n" /* 3 */
	    "    routes:\n"                  /* 4: where libyaml notices */
	    DEFAULT_ROUTE,
	    1, { 4, 5, "YAML syntax error: did not find expected ',' or ']'" });
	BAD("syntax_tab",
	    "listeners:\n"      /* 1 */
	    "\t- name: a\n",    /* 2 */
	    1, { 2, 1, "YAML syntax error: found character that cannot start any token" });
	BAD("syntax_indent",
	    "listeners:\n"                   /* 1 */
	    "  - name: a\n"                  /* 2 */
	    "   bind: [\"127.0.0.1:2525\"]\n", /* 3 */
	    1, { 3, 4, "YAML syntax error: did not find expected '-' indicator" });
	BAD("syntax_quote",
	    "control_socket: \"/run/x.sock\n" /* 1 */
	    "listeners:\n"                   /* 2 */
	    "  - name: a\n",                 /* 3; end of stream at 4:1 */
	    1, { 4, 1, "YAML syntax error: found unexpected end of stream" });
	BAD("syntax_mapping_value",
	    HEAD
	    "      - upstream: 127.0.0.1:25: x\n", /* 5 */
	    1, { 5, 31, "mapping values are not allowed" });
	/* the top mapping and 15 sequences fit in the 16-deep stack */
	BAD("nested_too_deeply",
	    "listeners: [[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]\n", /* 1: 16th '[' */
	    1, { 1, 27, "nested too deeply" });
	BAD("alias",
	    "listeners:\n"                       /* 1 */
	    "  - name: &n a\n"                   /* 2 */
	    "    bind: [\"127.0.0.1:2525\"]\n"   /* 3 */
	    "    routes:\n"                      /* 4 */
	    "      - name: *n\n"                 /* 5 */
	    "        upstream: \"127.0.0.1:25\"\n",
	    1, { 5, 15, "YAML aliases are not supported" });
}

static void test_keys(void)
{
	BAD("unknown_keys",
	    "control_sockt: /run/x.sock\n"            /* 1 */
	    "timeouts:\n"                             /* 2 */
	    "  conect: 5s\n"                          /* 3 */
	    "limits:\n"                               /* 4 */
	    "  backlog: 16MiB\n"                      /* 5 */
	    "listeners:\n"                            /* 6 */
	    "  - name: a\n"                           /* 7 */
	    "    binds: [\"127.0.0.1:2525\"]\n"       /* 8 */
	    "    routes:\n"                           /* 9 */
	    "      - upstream: \"127.0.0.1:25\"\n"    /* 10 */
	    "        proxy: v2\n"                     /* 11 */
	    "        upstream: \"127.0.0.1:26\"\n",   /* 12 */
	    6, { 1, 1, "unknown key 'control_sockt'" },
	    { 3, 3, "unknown key 'conect' in timeouts" },
	    { 5, 3, "unknown key 'backlog' in limits" },
	    { 8, 5, "unknown key 'binds' in listeners[0]" },
	    { 11, 9, "unknown key 'proxy' in listeners[0].routes[0]" },
	    { 12, 9, "duplicate key 'upstream'" });
	BAD("duplicate_key_listener",
	    "listeners:\n"                   /* 1 */
	    "  - name: a\n"                  /* 2 */
	    "    bind: [\"127.0.0.1:2525\"]\n" /* 3 */
	    "    name: b\n"                  /* 4 */
	    "    routes:\n" DEFAULT_ROUTE,
	    1, { 4, 5, "duplicate key 'name'" });
	BAD("type_bind_scalar_literal",
	    "listeners:\n"                /* 1 */
	    "  - name: a\n"               /* 2 */
	    "    bind: |\n"               /* 3 */
	    "      127.0.0.1:2525\n"      /* 4 */
	    "    routes:\n" DEFAULT_ROUTE,
	    1, { 3, 11, "bind must be \"host:port\" or a list of them" });
	BAD("type_timeouts_scalar",
	    "timeouts: 5s\n" HEAD DEFAULT_ROUTE,
	    1, { 1, 11, "Expecting MAPPING" });
	BAD("type_top_sequence", "- a\n", 1, { 1, 1, "Expecting MAPPING" });
	BAD("empty_file", "", 1, { 1, 1, "empty route file" });
	BAD("comment_only", "# nothing here\n", 1, { 1, 1, "empty route file" });
	BAD("no_listeners_key", "datapath: auto\n", 1, { 1, 1, "no listeners" });
	BAD("listeners_empty",
	    "datapath: auto\n" /* 1 */
	    "listeners: []\n", /* 2 */
	    1, { 2, 12, "no listeners" });

	/* a file that cannot be opened */
	struct edge_config *c = NULL;
	struct strbuf errs;
	char path[128];
	struct experr e = { 1, 1, "cannot open: No such file or directory" };

	snprintf(path, sizeof(path), "%s/does-not-exist.yaml", tmpdir);
	sb_init(&errs);
	check(config_load(path, &c, &errs) != 0 && !c, "missing_file",
	      "loaded a missing file");
	check(has_error(errs.data, path, &e) && count_lines(errs.data) == 1,
	      "missing_file", "errors: %s", errs.data ? errs.data : "");
	sb_free(&errs);
}

static void test_top_values(void)
{
	char sock108[109], yaml[512];

	BAD("durations",
	    "timeouts:\n"            /* 1 */
	    "  connect: 5x\n"        /* 2 */
	    "  client_hello: 0\n"    /* 3 */
	    "  idle: 1.5h\n"         /* 4 */
	    "  half_closed: -1s\n"   /* 5 */
	    HEAD DEFAULT_ROUTE,
	    4, { 2, 12, "bad duration '5x'" },
	    { 3, 17, "bad duration '0'" },
	    { 4, 9, "bad duration '1.5h'" },
	    { 5, 16, "bad duration '-1s'" });
	BAD("duration_space",
	    "timeouts:\n"            /* 1 */
	    "  idle: 5 s\n"          /* 2 */
	    HEAD DEFAULT_ROUTE,
	    1, { 2, 9, "bad duration '5 s'" });
	BAD("backlog_small",
	    "limits:\n"                  /* 1 */
	    "  kernel_backlog: 255KiB\n" /* 2 */
	    HEAD DEFAULT_ROUTE,
	    1, { 2, 19, "bad kernel_backlog '255KiB'" });
	BAD("sndbuf_small",
	    "limits:\n"                /* 1 */
	    "  kernel_sndbuf: 63KiB\n" /* 2 */
	    HEAD DEFAULT_ROUTE,
	    1, { 2, 18, "bad kernel_sndbuf '63KiB'" });
	BAD("sndbuf_big",
	    "limits:\n"               /* 1 */
	    "  kernel_sndbuf: 2GiB\n" /* 2 */
	    HEAD DEFAULT_ROUTE,
	    1, { 2, 18, "bad kernel_sndbuf '2GiB'" });
	BAD("backlog_unit",
	    "limits:\n"                 /* 1 */
	    "  kernel_backlog: 16MB\n"  /* 2 */
	    HEAD DEFAULT_ROUTE,
	    1, { 2, 19, "bad kernel_backlog '16MB'" });
	BAD("datapath_top", "datapath: fast\n" HEAD DEFAULT_ROUTE, 1,
	    { 1, 11, "bad datapath 'fast'" });
	BAD("control_socket_relative", "control_socket: run/ctl.sock\n" HEAD
	    DEFAULT_ROUTE, 1, { 1, 17, "control_socket must be an absolute path" });
	memset(sock108, 's', 108);
	sock108[0] = '/';
	sock108[108] = '\0';
	snprintf(yaml, sizeof(yaml), "control_socket: %s\n" HEAD DEFAULT_ROUTE,
		 sock108);
	BAD("control_socket_long", yaml, 1,
	    { 1, 17, "control_socket must be an absolute path shorter than 108" });
}

static void test_listeners(void)
{
	char yaml[2048];
	char name64[65];

	BAD("bind_bad",
	    "listeners:\n"                                   /* 1 */
	    "  - name: a\n"                                  /* 2 */
	    "    bind:\n"                                    /* 3 */
	    "      - \"::1:25\"\n"                           /* 4 */
	    "      - \"127.0.0.1:0\"\n"                      /* 5 */
	    "      - \"127.0.0.1:65536\"\n"                  /* 6 */
	    "      - \"127.0.0.1:x\"\n"                      /* 7 */
	    "      - \"localhost:25\"\n"                     /* 8 */
	    "      - \"127.0.0.1\"\n"                        /* 9 */
	    "      - \"[::1]\"\n"                            /* 10 */
	    "      - \"[127.0.0.1]:25\"\n"                   /* 11 */
	    "      - \"1.2.3:25\"\n"                         /* 12 */
	    "      - \"127.0.0.1:2525\"\n"                   /* 13: ok */
	    "    routes:\n" DEFAULT_ROUTE,
	    9, { 4, 9, "bad bind address '::1:25'" },
	    { 5, 9, "bad bind address '127.0.0.1:0'" },
	    { 6, 9, "bad bind address '127.0.0.1:65536'" },
	    { 7, 9, "bad bind address '127.0.0.1:x'" },
	    { 8, 9, "bad bind address 'localhost:25'" },
	    { 9, 9, "bad bind address '127.0.0.1'" },
	    { 10, 9, "bad bind address '[::1]'" },
	    { 11, 9, "bad bind address '[127.0.0.1]:25'" },
	    { 12, 9, "bad bind address '1.2.3:25'" });
	/* each address in a flow sequence is reported at its own column */
	BAD("bind_flow",
	    "listeners:\n"                                      /* 1 */
	    "  - name: a\n"                                     /* 2 */
	    "    bind: [\"127.0.0.1:2525\", \"[::1]:x\"]\n"     /* 3 */
	    "    routes:\n" DEFAULT_ROUTE,
	    1, { 3, 30, "bad bind address '[::1]:x'" });
	BAD("bind_duplicate",
	    "listeners:\n"                                       /* 1 */
	    "  - name: a\n"                                      /* 2 */
	    "    bind: [\"127.0.0.1:2525\", \"127.0.0.1:2525\"]\n" /* 3 */
	    "    routes:\n" DEFAULT_ROUTE                         /* 4, 5 */
	    "  - name: b\n"                                      /* 6 */
	    "    bind: [\"[::1]:2525\", \"127.0.0.1:2525\"]\n"   /* 7 */
	    "    routes:\n" DEFAULT_ROUTE,
	    2, { 3, 30, "address '127.0.0.1:2525' is already bound by listener 'a'" },
	    { 7, 26, "address '127.0.0.1:2525' is already bound by listener 'a'" });
	BAD("bind_missing",
	    "listeners:\n"    /* 1 */
	    "  - name: a\n"   /* 2 */
	    "    routes:\n" DEFAULT_ROUTE,
	    1, { 2, 5, "listener needs 'bind'" });
	BAD("bind_empty",
	    "listeners:\n"    /* 1 */
	    "  - name: a\n"   /* 2 */
	    "    bind: []\n"  /* 3 */
	    "    routes:\n" DEFAULT_ROUTE,
	    1, { 3, 11, "listener needs 'bind'" });
	int off = snprintf(yaml, sizeof(yaml),
			   "listeners:\n  - name: a\n    bind:\n"); /* 1-3 */
	for (int i = 0; i <= LISTENER_BINDS_MAX; i++) /* lines 4..20 */
		off += snprintf(yaml + off, sizeof(yaml) - off,
				"      - 127.0.0.1:%d\n", 3000 + i);
	snprintf(yaml + off, sizeof(yaml) - off, "    routes:\n" DEFAULT_ROUTE);
	BAD("bind_too_many", yaml, 1, { 20, 9, "too many bind addresses (16)" });

	BAD("routes_missing",
	    "listeners:\n"                  /* 1 */
	    "  - name: a\n"                 /* 2 */
	    "    bind: [\"127.0.0.1:2525\"]\n",
	    1, { 2, 5, "listener needs at least one route" });
	BAD("routes_empty",
	    "listeners:\n"                  /* 1 */
	    "  - name: a\n"                 /* 2 */
	    "    bind: [\"127.0.0.1:2525\"]\n" /* 3 */
	    "    routes: []\n",             /* 4 */
	    1, { 4, 13, "listener needs at least one route" });
	BAD("listener_no_name",
	    "listeners:\n"                    /* 1 */
	    "  - bind: [\"127.0.0.1:2525\"]\n" /* 2 */
	    "    routes:\n" DEFAULT_ROUTE,
	    1, { 2, 5, "listener has no 'name'" });
	BAD("listener_bad_name",
	    "listeners:\n"         /* 1 */
	    "  - name: \"a b\"\n"  /* 2 */
	    "    bind: [\"127.0.0.1:2525\"]\n"
	    "    routes:\n" DEFAULT_ROUTE,
	    1, { 2, 11, "bad listener name 'a b'" });
	memset(name64, 'n', 64);
	name64[64] = '\0';
	snprintf(yaml, sizeof(yaml),
		 "listeners:\n"
		 "  - name: %s\n" /* 2 */
		 "    bind: [\"127.0.0.1:2525\"]\n"
		 "    routes:\n"
		 "      - name: %s\n" /* 5 */
		 "        upstream: \"127.0.0.1:25\"\n",
		 name64, name64);
	BAD("names_64", yaml, 2, { 2, 11, "bad listener name" },
	    { 5, 15, "bad route name" });
	BAD("listener_duplicate",
	    HEAD DEFAULT_ROUTE                /* 1-5 */
	    "  - name: a\n"                   /* 6 */
	    "    bind: [\"127.0.0.1:2526\"]\n" /* 7 */
	    "    routes:\n" DEFAULT_ROUTE,
	    1, { 6, 11, "duplicate listener name 'a'" });
	BAD("listener_datapath",
	    "listeners:\n"                   /* 1 */
	    "  - name: a\n"                  /* 2 */
	    "    bind: [\"127.0.0.1:2525\"]\n" /* 3 */
	    "    datapath: Splice\n"         /* 4 */
	    "    routes:\n" DEFAULT_ROUTE,
	    1, { 4, 15, "bad datapath 'Splice'" });
}

static void test_routes(void)
{
	BAD("proxy_protocol",
	    HEAD
	    "      - upstream: \"127.0.0.1:25\"\n" /* 5 */
	    "        proxy_protocol: v3\n",        /* 6 */
	    1, { 6, 25, "bad proxy_protocol 'v3' (none, v1 or v2)" });
	BAD("upstream_missing",
	    HEAD
	    "      - name: r\n"           /* 5 */
	    "        proxy_protocol: v2\n",
	    1, { 5, 9, "route has no 'upstream'" });
	BAD("upstream_unresolvable",
	    HEAD
	    "      - upstream: \"mail.example.invalid:25\"\n", /* 5 */
	    1, { 5, 19, "cannot resolve upstream 'mail.example.invalid:25'" });
	BAD("upstream_bad",
	    HEAD
	    "      - sni: [\"a.example.com\"]\n"  /* 5 */
	    "        upstream: \"127.0.0.1\"\n"   /* 6 */
	    "      - sni: [\"b.example.com\"]\n"  /* 7 */
	    "        upstream: \"127.0.0.1:0\"\n" /* 8 */
	    "      - sni: [\"c.example.com\"]\n"  /* 9 */
	    "        upstream: \"::1:25\"\n"      /* 10 */
	    "      - sni: [\"d.example.com\"]\n"  /* 11 */
	    "        upstream: \"[::1]25\"\n"     /* 12 */
	    "      - sni: [\"e.example.com\"]\n"  /* 13 */
	    "        upstream: \":25\"\n"         /* 14 */
	    "      - sni: [\"f.example.com\"]\n"  /* 15 */
	    "        upstream: \"127.0.0.1:25x\"\n" /* 16 */
	    DEFAULT_ROUTE,                        /* 17 */
	    6, { 6, 19, "bad upstream '127.0.0.1': expected host:port" },
	    { 8, 19, "bad upstream '127.0.0.1:0': bad port" },
	    { 10, 19, "bad upstream '::1:25': IPv6 addresses must be in brackets" },
	    { 12, 19, "bad upstream '[::1]25': expected [IPv6]:port" },
	    { 14, 19, "bad upstream ':25': empty host" },
	    { 16, 19, "bad upstream '127.0.0.1:25x': bad port" });
	BAD("route_name_duplicate",
	    HEAD
	    "      - name: r\n"                    /* 5 */
	    "        sni: [\"a.example.com\"]\n"   /* 6 */
	    "        upstream: \"127.0.0.1:25\"\n" /* 7 */
	    "      - name: r\n"                    /* 8 */
	    "        upstream: \"127.0.0.1:25\"\n",
	    1, { 8, 15, "duplicate route name 'r' in listener 'a'" });
	BAD("route_bad_name",
	    HEAD
	    "      - name: \"r.1\"\n" /* 5 */
	    "        upstream: \"127.0.0.1:25\"\n",
	    1, { 5, 15, "bad route name 'r.1'" });
	BAD("default_not_last",
	    HEAD
	    "      - upstream: \"127.0.0.1:25\"\n" /* 5: the default route */
	    "      - sni: [\"a.example.com\"]\n"   /* 6 */
	    "        upstream: \"127.0.0.1:25\"\n",
	    1, { 5, 9, "the default route (no 'sni') must be the last route of listener 'a'" });
	BAD("two_defaults",
	    HEAD
	    "      - name: first\n"                /* 5 */
	    "        upstream: \"127.0.0.1:25\"\n" /* 6 */
	    "      - upstream: \"127.0.0.1:26\"\n",/* 7 */
	    1, { 5, 9, "must be the last route" });
	BAD("sni_bad",
	    HEAD
	    "      - upstream: \"127.0.0.1:25\"\n"   /* 5 */
	    "        sni:\n"                         /* 6 */
	    "          - \"a..example.com\"\n"       /* 7 */
	    "          - \"*x.example.com\"\n"       /* 8 */
	    "          - \"x.*.example.com\"\n"      /* 9 */
	    "          - \"a_b!.example.com\"\n"     /* 10 */
	    "          - \"*\"\n"                    /* 11 */
	    "          - \"-a.example.com\"\n"       /* 12 */
	    "          - \"a-.example.com\"\n"       /* 13 */
	    "          - \"" LABEL60 "bcde.example.com\"\n" /* 14: 64 */
	    "          - \"\"\n"                     /* 15 */
	    "          - \".example.com\"\n"         /* 16 */
	    "          - \"ok.example.com.\"\n"      /* 17: valid */
	    DEFAULT_ROUTE,                           /* 18 */
	    10, { 7, 13, "bad sni pattern 'a..example.com': empty label" },
	    { 8, 13, "bad sni pattern '*x.example.com': '*' must be the whole first label" },
	    { 9, 13, "bad sni pattern 'x.*.example.com': '*' allowed only as the whole first label" },
	    { 10, 13, "bad sni pattern 'a_b!.example.com': character not in" },
	    { 11, 13, "bad sni pattern '*': '*' needs a suffix" },
	    { 12, 13, "bad sni pattern '-a.example.com': label starts with '-'" },
	    { 13, 13, "bad sni pattern 'a-.example.com': label ends with '-'" },
	    { 14, 13, "label longer than 63 characters" },
	    { 15, 13, "bad sni pattern '': empty pattern" },
	    { 16, 13, "bad sni pattern '.example.com': empty label" });
	BAD("sni_duplicate",
	    HEAD
	    "      - sni: [\"Mail.Example.com\", \"*.example.org\"]\n"     /* 5 */
	    "        upstream: \"127.0.0.1:25\"\n"                         /* 6 */
	    "      - sni: [\"other.example.com\", \"mail.example.com.\"]\n"/* 7 */
	    "        upstream: \"127.0.0.1:25\"\n"                         /* 8 */
	    "      - sni: [\"x.example.com\", \"*.EXAMPLE.org\", \"X.Example.COM\"]\n" /* 9 */
	    "        upstream: \"127.0.0.1:25\"\n"                         /* 10 */
	    "  - name: b\n"                                                /* 11 */
	    "    bind: [\"127.0.0.1:2526\"]\n"                             /* 12 */
	    "    routes:\n"                                                /* 13 */
	    "      - sni: [\"mail.example.com\"]\n" /* 14: other listener, ok */
	    "        upstream: \"127.0.0.1:25\"\n",
	    3, { 7, 36, "duplicate sni 'mail.example.com' in listener 'a'" },
	    { 9, 32, "duplicate sni '*.example.org' in listener 'a'" },
	    { 9, 49, "duplicate sni 'x.example.com' in listener 'a'" }); /* same route */
	/* not a default route: no "default route must be last" error */
	BAD("sni_empty_list",
	    HEAD
	    "      - sni: []\n"                    /* 5 */
	    "        upstream: \"127.0.0.1:25\"\n" /* 6 */
	    DEFAULT_ROUTE,                         /* 7 */
	    1, { 5, 14, "empty sni list" });
	BAD("sni_mapping",
	    HEAD
	    "      - sni: {a: b}\n" /* 5 */
	    "        upstream: \"127.0.0.1:25\"\n",
	    1, { 5, 14, "Expecting SEQUENCE" });
}

/* One string where a list is expected: bind, sni, upstream. */
static void test_scalar_lists(void)
{
	static const char yaml[] =
		"listeners:\n"
		"  - name: a\n"
		"    bind: 127.0.0.1:2525\n"
		"    routes:\n"
		"      - sni: a.example.com\n"
		"        upstream: 127.0.0.1:25\n"
		"      - upstream: \"127.0.0.1:26\"\n";
	struct edge_config *c = load_ok("scalar_lists", yaml);
	const char *n = "scalar_lists";

	if (!c)
		return;
	check(c->listeners[0].nbinds == 1, n, "one bind: %d",
	      c->listeners[0].nbinds);
	check(c->listeners[0].nroutes == 2 &&
		      c->listeners[0].routes[0].nsni == 1 &&
		      !strcmp(c->listeners[0].routes[0].sni[0], "a.example.com"),
	      n, "one sni");
	check(c->listeners[0].routes[0].naddrs == 1 &&
		      c->listeners[0].routes[1].naddrs == 1,
	      n, "one upstream address each");
	config_free(c);
}

static void test_env_errors(void)
{
	unsetenv("EDGE_T_UNSET");
	unsetenv("EDGE_T_UNSET2");
	BAD("env_unset",
	    "listeners:\n"                                   /* 1 */
	    "  - name: a\n"                                  /* 2 */
	    "    bind: [\"127.0.0.1:${EDGE_T_UNSET2}\"]\n"   /* 3 */
	    "    routes:\n"                                  /* 4 */
	    "      - upstream: \"${EDGE_T_UNSET}:25\"\n",    /* 5 */
	    2, { 3, 12, "environment variable EDGE_T_UNSET2 is not set" },
	    { 5, 19, "environment variable EDGE_T_UNSET is not set" });
	BAD("env_bad_name",
	    HEAD
	    "      - upstream: \"${EDGE-T}:25\"\n", /* 5 */
	    1, { 5, 19, "bad variable name '${EDGE-T}'" });
	BAD("env_empty_name",
	    "timeouts:\n"           /* 1 */
	    "  connect: ${}\n"      /* 2 */
	    HEAD DEFAULT_ROUTE,
	    1, { 2, 12, "bad variable name '${}'" });
	BAD("env_unterminated",
	    HEAD
	    "      - upstream: \"${EDGE_T_HOST:25\"\n", /* 5 */
	    1, { 5, 19, "unterminated ${" });
	char yaml[512], longname[131];

	memset(longname, 'A', 130);
	longname[130] = '\0';
	snprintf(yaml, sizeof(yaml),
		 HEAD "      - upstream: \"${%s}:25\"\n", longname); /* 5 */
	BAD("env_long_name", yaml, 1, { 5, 19, "bad variable name" });
	/* the expanded value is checked like a literal one */
	setenv("EDGE_T_PP", "v9", 1);
	BAD("env_value_checked",
	    HEAD
	    "      - upstream: \"127.0.0.1:25\"\n"   /* 5 */
	    "        proxy_protocol: ${EDGE_T_PP}\n", /* 6 */
	    1, { 6, 25, "bad proxy_protocol 'v9'" });
}

static void test_many_errors(void)
{
	/* three independent semantic errors: all three are reported */
	BAD("three_errors",
	    "timeouts:\n"                                    /* 1 */
	    "  idle: 10 minutes\n"                           /* 2 */
	    "listeners:\n"                                   /* 3 */
	    "  - name: a\n"                                  /* 4 */
	    "    bind: [\"127.0.0.1:2525\", \"127.0.0.1\"]\n" /* 5 */
	    "    routes:\n"                                  /* 6 */
	    "      - upstream: \"127.0.0.1:25\"\n"           /* 7 */
	    "        proxy_protocol: v3\n",                  /* 8 */
	    3, { 2, 9, "bad duration '10 minutes'" },
	    { 5, 30, "bad bind address '127.0.0.1'" },
	    { 8, 25, "bad proxy_protocol 'v3'" });
	/* checking goes on across listeners and routes */
	BAD("many_errors",
	    "control_socket: relative.sock\n"         /* 1 */
	    "datapath: fast\n"                        /* 2 */
	    "limits:\n"                               /* 3 */
	    "  kernel_backlog: 16MB\n"                /* 4 */
	    "listeners:\n"                            /* 5 */
	    "  - name: \"bad name\"\n"                /* 6 */
	    "    bind: [\"127.0.0.1:2525\"]\n"        /* 7 */
	    "    datapath: zoom\n"                    /* 8 */
	    "    routes:\n"                           /* 9 */
	    "      - upstream: \"nope.invalid:25\"\n" /* 10 */
	    "  - name: b\n"                           /* 11 */
	    "    bind: [\"127.0.0.1:2525\"]\n"        /* 12 */
	    "    routes:\n"                           /* 13 */
	    "      - name: x\n"                       /* 14 */
	    "        sni: [\"a.example.com\"]\n"      /* 15 */
	    "        upstream: \"127.0.0.1:25\"\n"    /* 16 */
	    "      - name: x\n"                       /* 17 */
	    "        upstream: \"127.0.0.1:25\"\n"    /* 18 */
	    "      - proxy_protocol: v2\n",           /* 19 */
	    10, { 1, 17, "control_socket must be an absolute path" },
	    { 2, 11, "bad datapath 'fast'" },
	    { 4, 19, "bad kernel_backlog '16MB'" },
	    { 6, 11, "bad listener name 'bad name'" },
	    { 8, 15, "bad datapath 'zoom'" },
	    { 10, 19, "cannot resolve upstream 'nope.invalid:25'" },
	    { 12, 12, "address '127.0.0.1:2525' is already bound by listener 'bad name'" },
	    { 17, 15, "duplicate route name 'x' in listener 'b'" },
	    { 17, 9, "the default route (no 'sni') must be the last route of listener 'b'" },
	    { 19, 9, "route has no 'upstream'" });
}

int main(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_config.XXXXXX");
	if (!mkdtemp(tmpdir)) {
		perror("test_config: mkdtemp");
		return 2;
	}
	test_full();
	test_defaults();
	test_units();
	test_env();
	test_example();
	test_syntax();
	test_keys();
	test_top_values();
	test_listeners();
	test_routes();
	test_scalar_lists();
	test_env_errors();
	test_many_errors();
	cleanup();
	printf("test_config: %d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
