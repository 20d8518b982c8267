// SPDX-License-Identifier: MIT
/*
 * config.c - the route file.
 *
 * Three passes over the file:
 *  1. libyaml events: syntax errors, unknown and duplicate keys, and an
 *     index "path -> line:column" of every key and value (libcyaml reports
 *     positions only for its own type errors);
 *  2. libcyaml loads the document into raw structs of strings;
 *  3. every string has ${VAR} / ${VAR:-default} expanded, then is checked
 *     and converted; problems are reported at the position from pass 1.
 */
#include <ctype.h>
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cyaml/cyaml.h>
#include <yaml.h>

#include "config.h"
#include "proxy.h"
#include "tls.h"

/* ---- raw schema (everything a string, converted in pass 3) ---- */

struct raw_timeouts {
	char *connect;
	char *client_hello;
	char *idle;
	char *half_closed;
};

struct raw_limits {
	char *kernel_backlog;
	char *kernel_sndbuf;
	char *max_flows;
	char *per_source;
};

struct raw_health {
	char *interval;
	char *timeout;
	char *rise;
	char *fall;
};

struct raw_route {
	char *name;
	char **sni;
	unsigned sni_count;
	char **upstream; /* a single string is loaded as a list of one */
	unsigned upstream_count;
	char *proxy_protocol;
	struct raw_health *health_check;
};

struct raw_listener {
	char *name;
	char **bind;
	unsigned bind_count;
	char *datapath;
	char *max_flows;
	struct raw_route *routes;
	unsigned routes_count;
};

struct raw_config {
	char *control_socket;
	char *control_socket_group;
	char *metrics;
	char *user;
	char *drain_timeout;
	char *resolve_interval;
	char *datapath;
	struct raw_timeouts *timeouts;
	struct raw_limits *limits;
	struct raw_listener *listeners;
	unsigned listeners_count;
};

#define CONFIG_FILE_MAX (1024 * 1024)

#define STR_FIELD(key, st, member)                                            \
	CYAML_FIELD_STRING_PTR(key, CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL, \
			       st, member, 0, CYAML_UNLIMITED)

static const cyaml_schema_value_t str_entry = {
	CYAML_VALUE_STRING(CYAML_FLAG_POINTER, char, 0, CYAML_UNLIMITED),
};

static const cyaml_schema_field_t timeouts_fields[] = {
	STR_FIELD("connect", struct raw_timeouts, connect),
	STR_FIELD("client_hello", struct raw_timeouts, client_hello),
	STR_FIELD("idle", struct raw_timeouts, idle),
	STR_FIELD("half_closed", struct raw_timeouts, half_closed),
	CYAML_FIELD_END,
};

static const cyaml_schema_field_t limits_fields[] = {
	STR_FIELD("kernel_backlog", struct raw_limits, kernel_backlog),
	STR_FIELD("kernel_sndbuf", struct raw_limits, kernel_sndbuf),
	STR_FIELD("max_flows", struct raw_limits, max_flows),
	STR_FIELD("per_source", struct raw_limits, per_source),
	CYAML_FIELD_END,
};

static const cyaml_schema_field_t health_fields[] = {
	STR_FIELD("interval", struct raw_health, interval),
	STR_FIELD("timeout", struct raw_health, timeout),
	STR_FIELD("rise", struct raw_health, rise),
	STR_FIELD("fall", struct raw_health, fall),
	CYAML_FIELD_END,
};

static const cyaml_schema_field_t route_fields[] = {
	STR_FIELD("name", struct raw_route, name),
	CYAML_FIELD_SEQUENCE("sni", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL,
			     struct raw_route, sni, &str_entry, 0,
			     CYAML_UNLIMITED),
	CYAML_FIELD_SEQUENCE(
		"upstream", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL,
		struct raw_route, upstream, &str_entry, 0, CYAML_UNLIMITED),
	STR_FIELD("proxy_protocol", struct raw_route, proxy_protocol),
	CYAML_FIELD_MAPPING_PTR("health_check",
				CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL,
				struct raw_route, health_check, health_fields),
	CYAML_FIELD_END,
};

static const cyaml_schema_value_t route_entry = {
	CYAML_VALUE_MAPPING(CYAML_FLAG_DEFAULT, struct raw_route, route_fields),
};

static const cyaml_schema_field_t listener_fields[] = {
	STR_FIELD("name", struct raw_listener, name),
	CYAML_FIELD_SEQUENCE("bind", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL,
			     struct raw_listener, bind, &str_entry, 0,
			     CYAML_UNLIMITED),
	STR_FIELD("datapath", struct raw_listener, datapath),
	STR_FIELD("max_flows", struct raw_listener, max_flows),
	CYAML_FIELD_SEQUENCE("routes", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL,
			     struct raw_listener, routes, &route_entry, 0,
			     CYAML_UNLIMITED),
	CYAML_FIELD_END,
};

static const cyaml_schema_value_t listener_entry = {
	CYAML_VALUE_MAPPING(CYAML_FLAG_DEFAULT, struct raw_listener,
			    listener_fields),
};

static const cyaml_schema_field_t top_fields[] = {
	STR_FIELD("control_socket", struct raw_config, control_socket),
	STR_FIELD("control_socket_group", struct raw_config,
		  control_socket_group),
	STR_FIELD("metrics", struct raw_config, metrics),
	STR_FIELD("user", struct raw_config, user),
	STR_FIELD("drain_timeout", struct raw_config, drain_timeout),
	STR_FIELD("resolve_interval", struct raw_config, resolve_interval),
	STR_FIELD("datapath", struct raw_config, datapath),
	CYAML_FIELD_MAPPING_PTR("timeouts",
				CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL,
				struct raw_config, timeouts, timeouts_fields),
	CYAML_FIELD_MAPPING_PTR("limits",
				CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL,
				struct raw_config, limits, limits_fields),
	CYAML_FIELD_SEQUENCE("listeners",
			     CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL,
			     struct raw_config, listeners, &listener_entry, 0,
			     CYAML_UNLIMITED),
	CYAML_FIELD_END,
};

static const cyaml_schema_value_t top_schema = {
	CYAML_VALUE_MAPPING(CYAML_FLAG_POINTER, struct raw_config, top_fields),
};

/* ---- pass 1: positions, unknown and duplicate keys ---- */

/* Keys allowed in each kind of mapping (must match the schema above). */
static const char *const keys_top[] = {"control_socket",
				       "control_socket_group",
				       "metrics",
				       "user",
				       "drain_timeout",
				       "resolve_interval",
				       "datapath",
				       "timeouts",
				       "limits",
				       "listeners",
				       NULL};
static const char *const keys_timeouts[] = {"connect", "client_hello", "idle",
					    "half_closed", NULL};
static const char *const keys_limits[] = {"kernel_backlog", "kernel_sndbuf",
					  "max_flows", "per_source", NULL};
static const char *const keys_listener[] = {"name",	 "bind",   "datapath",
					    "max_flows", "routes", NULL};
static const char *const keys_route[] = {
	"name", "sni", "upstream", "proxy_protocol", "health_check", NULL};
static const char *const keys_health[] = {"interval", "timeout", "rise", "fall",
					  NULL};

struct pos {
	char *path; /* "listeners[0].routes[1].upstream" */
	int line, col; /* 1-based */
};

/* A scalar `upstream: x` is wrapped as `[x]` before libcyaml sees it. */
struct wrap_edit {
	size_t start, end; /* byte offsets of the scalar in the file */
};

struct loader {
	const char *file;
	struct strbuf *errs;
	int nerr;
	struct pos *pos;
	size_t npos, cappos;
	struct wrap_edit *wraps;
	size_t nwraps;
};

static void cfg_err(struct loader *ld, int line, int col, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static void cfg_err(struct loader *ld, int line, int col, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	sb_printf(ld->errs, "%s:%d:%d: %s\n", ld->file, line, col, msg);
	ld->nerr++;
}

/*
 * pos_add - remember where @path is. A key is recorded first, then its
 * value overwrites it: errors about a value point at the value.
 */
static void pos_add(struct loader *ld, const char *path, yaml_mark_t m)
{
	struct pos *p;
	size_t i;

	for (i = 0; i < ld->npos; i++) {
		if (!strcmp(ld->pos[i].path, path)) {
			ld->pos[i].line = (int)m.line + 1;
			ld->pos[i].col = (int)m.column + 1;
			return;
		}
	}

	if (ld->npos == ld->cappos) {
		size_t n = ld->cappos ? ld->cappos * 2 : 64;

		p = realloc(ld->pos, n * sizeof(*p));
		if (!p)
			return;
		ld->pos = p;
		ld->cappos = n;
	}
	p = &ld->pos[ld->npos];
	p->path = strdup(path);
	if (!p->path)
		return;
	p->line = (int)m.line + 1;
	p->col = (int)m.column + 1;
	ld->npos++;
}

/* pos_find - position recorded for @path, else its closest parent's. */
static void pos_find(struct loader *ld, const char *path, int *line, int *col)
{
	char buf[512];
	size_t i;

	snprintf(buf, sizeof(buf), "%s", path);
	for (;;) {
		for (i = 0; i < ld->npos; i++) {
			if (!strcmp(ld->pos[i].path, buf)) {
				*line = ld->pos[i].line;
				*col = ld->pos[i].col;
				return;
			}
		}
		char *dot = strrchr(buf, '.');
		char *br = strrchr(buf, '[');
		char *cut = dot > br ? dot : br;

		if (!cut) {
			*line = 1;
			*col = 1;
			return;
		}
		*cut = '\0';
	}
}

/* pos_has - was @path itself seen in the file (not only a parent)? */
static int pos_has(struct loader *ld, const char *path)
{
	size_t i;

	for (i = 0; i < ld->npos; i++)
		if (!strcmp(ld->pos[i].path, path))
			return 1;
	return 0;
}

/* path_shape - @path with every "[N]" turned into "[]". */
static void path_shape(const char *path, char *shape, size_t len)
{
	size_t j = 0;
	const char *p;

	for (p = path; *p && j + 1 < len; p++) {
		if (*p == '[') {
			shape[j++] = '[';
			while (*p && *p != ']')
				p++;
			if (j + 1 < len)
				shape[j++] = ']';
			if (!*p)
				break;
			continue;
		}
		shape[j++] = *p;
	}
	shape[j] = '\0';
}

/* Which key set applies to the mapping at @path ("[N]" indices ignored). */
static const char *const *keys_for(const char *path)
{
	char shape[512];

	path_shape(path, shape, sizeof(shape));
	if (!strcmp(shape, ""))
		return keys_top;
	if (!strcmp(shape, "timeouts"))
		return keys_timeouts;
	if (!strcmp(shape, "limits"))
		return keys_limits;
	if (!strcmp(shape, "listeners[]"))
		return keys_listener;
	if (!strcmp(shape, "listeners[].routes[]"))
		return keys_route;
	if (!strcmp(shape, "listeners[].routes[].health_check"))
		return keys_health;
	return NULL;
}

struct frame {
	int is_map;
	char path[512];
	int index; /* sequences: next entry index */
	int want_key; /* mappings: next scalar is a key */
	char key[128]; /* mappings: current key */
	char **seen; /* mappings: keys seen (duplicate check) */
	size_t nseen;
};

static void frame_child_path(struct frame *f, char *out, size_t len)
{
	if (f->is_map)
		snprintf(out, len, "%s%s%s", f->path, f->path[0] ? "." : "",
			 f->key);
	else
		snprintf(out, len, "%s[%d]", f->path, f->index);
}

/*
 * A list key given one string (a route's `upstream` or `sni`, a listener's
 * `bind`): remember to wrap it, as users write `bind: 127.0.0.1:25`.
 */
static void maybe_wrap(struct loader *ld, struct frame *top, yaml_event_t *ev)
{
	static const struct {
		const char *shape, *key, *what;
	} lists[] = {
		{"listeners[].routes[]", "upstream", "\"host:port\""},
		{"listeners[].routes[]", "sni", "a server name"},
		{"listeners[]", "bind", "\"host:port\""},
	};
	struct wrap_edit *w;
	char shape[512];
	size_t i;

	if (!top->is_map)
		return;
	path_shape(top->path, shape, sizeof(shape));
	for (i = 0; i < sizeof(lists) / sizeof(lists[0]); i++)
		if (!strcmp(top->key, lists[i].key) &&
		    !strcmp(shape, lists[i].shape))
			break;
	if (i == sizeof(lists) / sizeof(lists[0]))
		return;
	if (ev->data.scalar.style == YAML_LITERAL_SCALAR_STYLE ||
	    ev->data.scalar.style == YAML_FOLDED_SCALAR_STYLE) {
		cfg_err(ld, (int)ev->start_mark.line + 1,
			(int)ev->start_mark.column + 1,
			"%s must be %s or a list of them", lists[i].key,
			lists[i].what);
		return;
	}
	w = realloc(ld->wraps, (ld->nwraps + 1) * sizeof(*w));
	if (!w)
		return;
	ld->wraps = w;
	ld->wraps[ld->nwraps].start = ev->start_mark.index;
	ld->wraps[ld->nwraps].end = ev->end_mark.index;
	ld->nwraps++;
}

static int pass_positions(struct loader *ld, const char *text, size_t len)
{
	struct frame stack[16];
	int depth = 0, done = 0, rc = 0;
	yaml_parser_t parser;
	yaml_event_t ev;
	char child[512];

	if (!yaml_parser_initialize(&parser))
		return -ENOMEM;
	yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
	while (!done) {
		if (!yaml_parser_parse(&parser, &ev)) {
			cfg_err(ld, (int)parser.problem_mark.line + 1,
				(int)parser.problem_mark.column + 1,
				"YAML syntax error: %s%s%s",
				parser.problem ? parser.problem : "?",
				parser.context ? " " : "",
				parser.context ? parser.context : "");
			rc = -EINVAL;
			break;
		}
		struct frame *top = depth ? &stack[depth - 1] : NULL;
		int is_key = top && top->is_map && top->want_key;

		switch (ev.type) {
		case YAML_SCALAR_EVENT:
			if (is_key) {
				const char *k =
					(const char *)ev.data.scalar.value;
				const char *const *allowed =
					keys_for(top->path);
				size_t i;
				int ok = 0;

				snprintf(top->key, sizeof(top->key), "%s", k);
				top->want_key = 0;
				for (i = 0; allowed && allowed[i]; i++)
					if (!strcmp(allowed[i], k))
						ok = 1;
				if (allowed && !ok)
					cfg_err(ld, (int)ev.start_mark.line + 1,
						(int)ev.start_mark.column + 1,
						"unknown key '%s'%s%s", k,
						top->path[0] ? " in " : "",
						top->path);
				for (i = 0; i < top->nseen; i++)
					if (!strcmp(top->seen[i], k))
						cfg_err(ld,
							(int)ev.start_mark
									.line +
								1,
							(int)ev.start_mark
									.column +
								1,
							"duplicate key '%s'",
							k);
				char **ns = realloc(top->seen,
						    (top->nseen + 1) *
							    sizeof(char *));
				if (ns) {
					top->seen = ns;
					top->seen[top->nseen++] = strdup(k);
				}
				frame_child_path(top, child, sizeof(child));
				pos_add(ld, child, ev.start_mark);
				break;
			}
			if (top) {
				frame_child_path(top, child, sizeof(child));
				pos_add(ld, child, ev.start_mark);
				maybe_wrap(ld, top, &ev);
				if (top->is_map)
					top->want_key = 1;
				else
					top->index++;
			}
			break;
		case YAML_SEQUENCE_START_EVENT:
		case YAML_MAPPING_START_EVENT:
			if (depth == (int)(sizeof(stack) / sizeof(stack[0]))) {
				cfg_err(ld, (int)ev.start_mark.line + 1,
					(int)ev.start_mark.column + 1,
					"nested too deeply");
				rc = -EINVAL;
				done = 1;
				break;
			}
			if (top)
				frame_child_path(top, child, sizeof(child));
			else
				child[0] = '\0';
			if (top && !(top->is_map && top->want_key))
				pos_add(ld, child, ev.start_mark);
			memset(&stack[depth], 0, sizeof(stack[depth]));
			stack[depth].is_map =
				ev.type == YAML_MAPPING_START_EVENT;
			stack[depth].want_key = 1;
			snprintf(stack[depth].path, sizeof(stack[depth].path),
				 "%s", child);
			depth++;
			break;
		case YAML_SEQUENCE_END_EVENT:
		case YAML_MAPPING_END_EVENT:
			if (depth) {
				struct frame *f = &stack[--depth];
				size_t i;

				for (i = 0; i < f->nseen; i++)
					free(f->seen[i]);
				free(f->seen);
				if (depth) {
					top = &stack[depth - 1];
					if (top->is_map)
						top->want_key = 1;
					else
						top->index++;
				}
			}
			break;
		case YAML_ALIAS_EVENT:
			cfg_err(ld, (int)ev.start_mark.line + 1,
				(int)ev.start_mark.column + 1,
				"YAML aliases are not supported");
			if (top) {
				if (top->is_map)
					top->want_key = !top->want_key;
				else
					top->index++;
			}
			break;
		case YAML_STREAM_END_EVENT:
			done = 1;
			break;
		default:
			break;
		}
		yaml_event_delete(&ev);
	}
	while (depth) {
		struct frame *f = &stack[--depth];
		size_t i;

		for (i = 0; i < f->nseen; i++)
			free(f->seen[i]);
		free(f->seen);
	}
	yaml_parser_delete(&parser);
	return rc;
}

/* ---- pass 2: libcyaml, with its error position captured ---- */

struct cy_capture {
	char msg[512];
	int line, col;
};

static void cy_log(cyaml_log_t level, void *ctx, const char *fmt, va_list ap)
{
	struct cy_capture *cap = ctx;
	char buf[512];
	const char *p;
	size_t n;

	if (level < CYAML_LOG_ERROR)
		return;
	vsnprintf(buf, sizeof(buf), fmt, ap);
	n = strlen(buf);
	while (n && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
		buf[--n] = '\0';
	p = strstr(buf, "(line: ");
	if (p && !cap->line) {
		sscanf(p, "(line: %d, column: %d)", &cap->line, &cap->col);
		return;
	}
	if (!strncmp(buf, "Load: ", 6))
		memmove(buf, buf + 6, strlen(buf + 6) + 1);
	if (!cap->msg[0] && strcmp(buf, "Backtrace:"))
		snprintf(cap->msg, sizeof(cap->msg), "%s", buf);
}

/* ---- pass 3: expansion and checks ---- */

/*
 * expand - replace ${VAR} and ${VAR:-default} in *s (in place, realloc).
 * Returns 0, or -EINVAL after reporting the problem at @path.
 */
static int expand(struct loader *ld, char **s, const char *path)
{
	struct strbuf out;
	const char *p;
	int line, col;

	if (!*s || !strchr(*s, '$'))
		return 0;
	sb_init(&out);
	for (p = *s; *p;) {
		if (p[0] != '$' || p[1] != '{') {
			sb_printf(&out, "%c", *p++);
			continue;
		}
		const char *end = strchr(p + 2, '}');
		const char *sep, *dflt = NULL;
		char name[128];
		size_t n, dlen = 0;

		if (!end) {
			pos_find(ld, path, &line, &col);
			cfg_err(ld, line, col, "unterminated ${ in '%s'", *s);
			sb_free(&out);
			return -EINVAL;
		}
		/* The default is taken from the string itself: it may be
		 * longer than name[]. */
		sep = memmem(p + 2, (size_t)(end - (p + 2)), ":-", 2);
		n = (size_t)((sep ? sep : end) - (p + 2));
		if (sep) {
			dflt = sep + 2;
			dlen = (size_t)(end - dflt);
		}
		int valid = n > 0 && n < sizeof(name);
		if (n >= sizeof(name))
			n = sizeof(name) - 1;
		memcpy(name, p + 2, n);
		name[n] = '\0';
		for (char *c = name; *c; c++)
			if (!isalnum((unsigned char)*c) && *c != '_')
				valid = 0;
		if (!valid) {
			pos_find(ld, path, &line, &col);
			cfg_err(ld, line, col,
				"bad variable name '${%s}' (use [A-Za-z0-9_])",
				name);
			sb_free(&out);
			return -EINVAL;
		}
		const char *val = getenv(name);
		if ((!val || !*val) && dflt) {
			sb_printf(&out, "%.*s", (int)dlen, dflt);
			p = end + 1;
			continue;
		}
		if (!val) {
			pos_find(ld, path, &line, &col);
			cfg_err(ld, line, col,
				"environment variable %s is not set (and no "
				"default: use ${%s:-value})",
				name, name);
			sb_free(&out);
			return -EINVAL;
		}
		sb_printf(&out, "%s", val);
		p = end + 1;
	}
	if (out.oom) {
		sb_free(&out);
		return -ENOMEM;
	}
	free(*s);
	*s = out.data ? out.data : strdup("");
	return 0;
}

const char *datapath_str(int dp)
{
	switch (dp) {
	case DP_AUTO:
		return "auto";
	case DP_SOCKMAP:
		return "sockmap";
	case DP_SPLICE:
		return "splice";
	case DP_COPY:
		return "copy";
	default:
		return "unknown";
	}
}

static int parse_datapath(const char *s, int *dp)
{
	static const char *const names[] = {"auto", "sockmap", "splice",
					    "copy"};
	int i;

	for (i = 0; i < 4; i++) {
		if (!strcmp(s, names[i])) {
			*dp = i;
			return 0;
		}
	}
	return -EINVAL;
}

static int valid_name(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n >= NAME_MAX_LEN)
		return 0;
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && *s != '_' && *s != '-')
			return 0;
	return 1;
}

static void check_duration(struct loader *ld, char **s, const char *path,
			   uint64_t *ms, int allow_zero)
{
	int line, col;

	if (!*s || expand(ld, s, path))
		return;
	if (duration_parse(*s, ms) || (!allow_zero && *ms == 0)) {
		pos_find(ld, path, &line, &col);
		cfg_err(ld, line, col,
			"bad duration '%s' (a number with ms, s, m or h%s)", *s,
			allow_zero ? "; 0 turns it off" : ", above 0");
	}
}

int config_literal_only;

int upstream_resolve(const struct upstream_cfg *u, struct sockaddr_storage *out,
		     int max, const char **why)
{
	struct addrinfo hints, *res, *ai;
	char port[8];
	int err, n = 0;

	memset(&hints, 0, sizeof(hints));
	if (config_literal_only)
		hints.ai_flags = AI_NUMERICHOST;
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_protocol = IPPROTO_TCP;
	snprintf(port, sizeof(port), "%u", u->port);
	err = getaddrinfo(u->host, port, &hints, &res);
	if (err) {
		*why = gai_strerror(err);
		return -ENOENT;
	}
	for (ai = res; ai && n < max; ai = ai->ai_next) {
		int i, dup = 0;

		if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6)
			continue;
		for (i = 0; i < n; i++)
			if (!memcmp(&out[i], ai->ai_addr, ai->ai_addrlen))
				dup = 1;
		if (dup)
			continue;
		memset(&out[n], 0, sizeof(out[0]));
		memcpy(&out[n], ai->ai_addr, ai->ai_addrlen);
		n++;
	}
	freeaddrinfo(res);
	if (!n) {
		*why = "no IPv4 or IPv6 address";
		return -ENOENT;
	}
	return n;
}

static int parse_count(const char *s, uint64_t *v)
{
	char *end;

	if (!*s || *s == '-' || *s == '+')
		return -EINVAL;
	errno = 0;
	*v = strtoull(s, &end, 10);
	return errno || *end ? -EINVAL : 0;
}

static void check_health(struct loader *ld, struct route *r,
			 struct raw_health *h, const char *path)
{
	char sub[700];
	uint64_t v;
	int line, col;

	r->health_check = 1;
	r->hc_interval_ms = 5000;
	r->hc_timeout_ms = 2000;
	r->hc_rise = 2;
	r->hc_fall = 3;
	snprintf(sub, sizeof(sub), "%s.interval", path);
	check_duration(ld, &h->interval, sub, &r->hc_interval_ms, 0);
	snprintf(sub, sizeof(sub), "%s.timeout", path);
	check_duration(ld, &h->timeout, sub, &r->hc_timeout_ms, 0);
	char **nums[2] = {&h->rise, &h->fall};
	int *dst[2] = {&r->hc_rise, &r->hc_fall};
	const char *names[2] = {"rise", "fall"};
	for (int i = 0; i < 2; i++) {
		if (!*nums[i])
			continue;
		snprintf(sub, sizeof(sub), "%s.%s", path, names[i]);
		if (expand(ld, nums[i], sub))
			continue;
		if (parse_count(*nums[i], &v) || v < 1 || v > 100) {
			pos_find(ld, sub, &line, &col);
			cfg_err(ld, line, col, "bad %s '%s' (a count, 1-100)",
				names[i], *nums[i]);
			continue;
		}
		*dst[i] = (int)v;
	}
}

static void check_route(struct loader *ld, struct listener_cfg *l,
			struct raw_route *rr, int ri, const char *lpath)
{
	struct route *r = &l->routes[ri];
	char path[512], sub[600];
	const char *why;
	int line, col;
	unsigned i;

	snprintf(path, sizeof(path), "%s.routes[%d]", lpath, ri);
	snprintf(r->name, sizeof(r->name), "%d", ri);
	if (rr->name) {
		snprintf(sub, sizeof(sub), "%s.name", path);
		if (!expand(ld, &rr->name, sub)) {
			if (!valid_name(rr->name)) {
				pos_find(ld, sub, &line, &col);
				cfg_err(ld, line, col,
					"bad route name '%s' (use "
					"[A-Za-z0-9_-], at most %d "
					"characters)",
					rr->name, NAME_MAX_LEN - 1);
			} else {
				snprintf(r->name, sizeof(r->name), "%s",
					 rr->name);
				r->named = 1;
			}
		}
		for (int j = 0; j < ri; j++) {
			if (l->routes[j].named &&
			    !strcmp(l->routes[j].name, r->name)) {
				pos_find(ld, sub, &line, &col);
				cfg_err(ld, line, col,
					"duplicate route name '%s' in listener "
					"'%s'",
					r->name, l->name);
			}
		}
	}

	r->proxy = PROXY_NONE;
	if (rr->proxy_protocol) {
		snprintf(sub, sizeof(sub), "%s.proxy_protocol", path);
		if (!expand(ld, &rr->proxy_protocol, sub)) {
			if (!strcmp(rr->proxy_protocol, "none"))
				r->proxy = PROXY_NONE;
			else if (!strcmp(rr->proxy_protocol, "v1"))
				r->proxy = PROXY_V1;
			else if (!strcmp(rr->proxy_protocol, "v2"))
				r->proxy = PROXY_V2;
			else {
				pos_find(ld, sub, &line, &col);
				cfg_err(ld, line, col,
					"bad proxy_protocol '%s' (none, v1 or "
					"v2)",
					rr->proxy_protocol);
			}
		}
	}

	snprintf(sub, sizeof(sub), "%s.upstream", path);
	if (!rr->upstream || rr->upstream_count == 0) {
		pos_find(ld, rr->upstream || pos_has(ld, sub) ? sub : path,
			 &line, &col);
		cfg_err(ld, line, col, "route has no 'upstream'");
	} else if (rr->upstream_count > ROUTE_UPSTREAMS_MAX) {
		pos_find(ld, sub, &line, &col);
		cfg_err(ld, line, col, "too many upstreams (at most %d)",
			ROUTE_UPSTREAMS_MAX);
	}
	for (i = 0;
	     rr->upstream && i < rr->upstream_count && i < ROUTE_UPSTREAMS_MAX;
	     i++) {
		struct upstream_cfg *u = &r->ups[r->nups];
		char ipath[640];
		int n;

		snprintf(ipath, sizeof(ipath), "%s[%u]", sub, i);
		if (expand(ld, &rr->upstream[i], ipath))
			continue;
		snprintf(u->text, sizeof(u->text), "%s", rr->upstream[i]);
		if (hostport_split(rr->upstream[i], u->host, sizeof(u->host),
				   &u->port, &why)) {
			pos_find(ld, ipath, &line, &col);
			cfg_err(ld, line, col, "bad upstream '%s': %s",
				rr->upstream[i], why);
			continue;
		}
		n = upstream_resolve(u, &r->addrs[r->naddrs],
				     ROUTE_ADDRS_MAX - r->naddrs, &why);
		if (n < 0) {
			pos_find(ld, ipath, &line, &col);
			cfg_err(ld, line, col,
				"cannot resolve upstream '%s': %s",
				rr->upstream[i], why);
			continue;
		}
		for (int k = 0; k < n; k++)
			r->addr_up[r->naddrs + k] = r->nups;
		r->naddrs += n;
		if (r->nups == 0) {
			snprintf(r->host, sizeof(r->host), "%s", u->host);
			r->port = u->port;
		}
		size_t ul = strlen(r->upstream);
		snprintf(r->upstream + ul, sizeof(r->upstream) - ul, "%s%s",
			 r->nups ? "," : "", u->text);
		r->nups++;
	}
	if (rr->health_check) {
		snprintf(sub, sizeof(sub), "%s.health_check", path);
		check_health(ld, r, rr->health_check, sub);
	}

	snprintf(sub, sizeof(sub), "%s.sni", path);
	/* libcyaml leaves rr->sni NULL for "sni: []" */
	if (!rr->sni && !pos_has(ld, sub))
		return;
	if (!rr->sni || rr->sni_count == 0) {
		pos_find(ld, sub, &line, &col);
		cfg_err(ld, line, col,
			"empty sni list (leave 'sni' out for the default "
			"route)");
		return;
	}
	r->sni = calloc(rr->sni_count, sizeof(char *));
	if (!r->sni)
		return;
	for (i = 0; i < rr->sni_count; i++) {
		char ipath[640];

		snprintf(ipath, sizeof(ipath), "%s[%u]", sub, i);
		if (expand(ld, &rr->sni[i], ipath))
			continue;
		if (sni_pattern_valid(rr->sni[i], &why)) {
			pos_find(ld, ipath, &line, &col);
			cfg_err(ld, line, col, "bad sni pattern '%s': %s",
				rr->sni[i], why);
			continue;
		}
		char *norm = strdup(rr->sni[i]);
		if (!norm)
			continue;
		for (char *c = norm; *c; c++)
			*c = (char)tolower((unsigned char)*c);
		size_t n = strlen(norm);
		if (n && norm[n - 1] == '.')
			norm[n - 1] = '\0';
		/* The same name twice in one listener is a mistake. */
		for (int j = 0; j <= ri; j++) {
			struct route *o = &l->routes[j];

			for (size_t k = 0; k < o->nsni; k++) {
				if (!strcmp(o->sni[k], norm)) {
					pos_find(ld, ipath, &line, &col);
					cfg_err(ld, line, col,
						"duplicate sni '%s' in "
						"listener '%s'",
						norm, l->name);
				}
			}
		}
		r->sni[r->nsni++] = norm;
	}
}

static void check_listener(struct loader *ld, struct edge_config *cfg,
			   struct raw_listener *rl, int li)
{
	struct listener_cfg *l = &cfg->listeners[li];
	char path[128], sub[256];
	int line, col;
	unsigned i;

	snprintf(path, sizeof(path), "listeners[%d]", li);
	l->default_route = -1;
	l->datapath = cfg->datapath;
	snprintf(sub, sizeof(sub), "%s.name", path);
	if (!rl->name) {
		pos_find(ld, path, &line, &col);
		cfg_err(ld, line, col, "listener has no 'name'");
	} else if (!expand(ld, &rl->name, sub)) {
		if (!valid_name(rl->name)) {
			pos_find(ld, sub, &line, &col);
			cfg_err(ld, line, col,
				"bad listener name '%s' (use [A-Za-z0-9_-], "
				"at most %d characters)",
				rl->name, NAME_MAX_LEN - 1);
		}
		snprintf(l->name, sizeof(l->name), "%s", rl->name);
		for (int j = 0; j < li; j++) {
			if (!strcmp(cfg->listeners[j].name, l->name)) {
				pos_find(ld, sub, &line, &col);
				cfg_err(ld, line, col,
					"duplicate listener name '%s'",
					l->name);
			}
		}
	}

	snprintf(sub, sizeof(sub), "%s.bind", path);
	if (!rl->bind || rl->bind_count == 0) {
		pos_find(ld, sub, &line, &col); /* "bind: []" is NULL too */
		cfg_err(ld, line, col,
			"listener needs 'bind': one or more host:port");
	}
	for (i = 0; rl->bind && i < rl->bind_count; i++) {
		char ipath[300];
		socklen_t len;

		snprintf(ipath, sizeof(ipath), "%s[%u]", sub, i);
		if (expand(ld, &rl->bind[i], ipath))
			continue;
		if (i >= LISTENER_BINDS_MAX) {
			pos_find(ld, ipath, &line, &col);
			cfg_err(ld, line, col, "too many bind addresses (%d)",
				LISTENER_BINDS_MAX);
			break;
		}
		if (addr_parse(rl->bind[i], &l->binds[l->nbinds], &len)) {
			pos_find(ld, ipath, &line, &col);
			cfg_err(ld, line, col,
				"bad bind address '%s' (IPv4:port or "
				"[IPv6]:port)",
				rl->bind[i]);
			continue;
		}
		int dup = 0;

		for (int j = 0; j <= li && !dup; j++) {
			struct listener_cfg *o = &cfg->listeners[j];

			for (int k = 0; k < o->nbinds && !dup; k++) {
				if (!memcmp(&o->binds[k], &l->binds[l->nbinds],
					    sizeof(o->binds[k]))) {
					dup = 1;
					pos_find(ld, ipath, &line, &col);
					cfg_err(ld, line, col,
						"address '%s' is already bound "
						"by listener '%s'",
						rl->bind[i], o->name);
				}
			}
		}
		if (!dup)
			l->nbinds++;
	}

	if (rl->datapath) {
		snprintf(sub, sizeof(sub), "%s.datapath", path);
		if (!expand(ld, &rl->datapath, sub) &&
		    parse_datapath(rl->datapath, &l->datapath)) {
			pos_find(ld, sub, &line, &col);
			cfg_err(ld, line, col,
				"bad datapath '%s' (auto, sockmap, splice or "
				"copy)",
				rl->datapath);
		}
	}

	if (rl->max_flows) {
		snprintf(sub, sizeof(sub), "%s.max_flows", path);
		if (!expand(ld, &rl->max_flows, sub) &&
		    (parse_count(rl->max_flows, &l->max_flows) ||
		     l->max_flows == 0)) {
			pos_find(ld, sub, &line, &col);
			cfg_err(ld, line, col,
				"bad max_flows '%s' (a count above 0)",
				rl->max_flows);
		}
	}

	snprintf(sub, sizeof(sub), "%s.routes", path);
	if (!rl->routes || rl->routes_count == 0) {
		pos_find(ld, sub, &line, &col);
		cfg_err(ld, line, col, "listener needs at least one route");
		return;
	}
	l->routes = calloc(rl->routes_count, sizeof(*l->routes));
	if (!l->routes)
		return;
	l->nroutes = (int)rl->routes_count;
	for (i = 0; i < rl->routes_count; i++) {
		char spath[300];

		check_route(ld, l, &rl->routes[i], (int)i, path);
		snprintf(spath, sizeof(spath), "%s.routes[%u].sni", path, i);
		if (rl->routes[i].sni || pos_has(ld, spath))
			l->sni_routing = 1;
		else if (l->default_route < 0)
			l->default_route = (int)i;
	}
	if (l->default_route >= 0 && l->default_route != l->nroutes - 1) {
		char rpath[300];

		snprintf(rpath, sizeof(rpath), "%s.routes[%d]", path,
			 l->default_route);
		pos_find(ld, rpath, &line, &col);
		cfg_err(ld, line, col,
			"the default route (no 'sni') must be the last route "
			"of listener '%s': routes after it could never match",
			l->name);
	}
}

void config_free(struct edge_config *cfg)
{
	int i, j;

	if (!cfg)
		return;
	for (i = 0; i < cfg->nlisteners; i++) {
		struct listener_cfg *l = &cfg->listeners[i];

		for (j = 0; j < l->nroutes; j++) {
			for (size_t k = 0; k < l->routes[j].nsni; k++)
				free(l->routes[j].sni[k]);
			free(l->routes[j].sni);
		}
		free(l->routes);
	}
	free(cfg->listeners);
	free(cfg);
}

void config_unref(struct edge_config *cfg)
{
	if (cfg && --cfg->refs <= 0)
		config_free(cfg);
}

int config_load(const char *path, struct edge_config **out, struct strbuf *errs)
{
	struct loader ld = {.file = path, .errs = errs};
	struct cy_capture cap = {0};
	cyaml_config_t cy = {
		.log_fn = cy_log,
		.log_ctx = &cap,
		.mem_fn = cyaml_mem,
		.log_level = CYAML_LOG_ERROR,
		.flags = CYAML_CFG_NO_ALIAS,
	};
	struct raw_config *raw = NULL;
	struct edge_config *cfg = NULL;
	cyaml_err_t cerr;
	char *text = NULL;
	size_t tlen;
	unsigned i;
	FILE *fp;
	int rc;

	*out = NULL;
	fp = fopen(path, "r");
	if (!fp) {
		sb_printf(errs, "%s:1:1: cannot open: %s\n", path,
			  strerror(errno));
		return -EINVAL;
	}
	text = malloc(CONFIG_FILE_MAX + 1);
	tlen = text ? fread(text, 1, CONFIG_FILE_MAX + 1, fp) : 0;
	fclose(fp);
	if (!text)
		return -ENOMEM;
	if (tlen > CONFIG_FILE_MAX) {
		cfg_err(&ld, 1, 1, "route file larger than %d bytes",
			CONFIG_FILE_MAX);
		goto fail;
	}
	rc = pass_positions(&ld, text, tlen);
	if (rc || ld.nerr)
		goto fail;
	/* Wrap single-string upstreams, last first so offsets stay valid. */
	for (size_t k = ld.nwraps; k-- > 0;) {
		struct wrap_edit *w = &ld.wraps[k];
		char *nt = malloc(tlen + 3);

		if (!nt || w->end > tlen || w->start > w->end) {
			free(nt);
			goto fail;
		}
		memcpy(nt, text, w->start);
		nt[w->start] = '[';
		memcpy(nt + w->start + 1, text + w->start, w->end - w->start);
		nt[w->end + 1] = ']';
		memcpy(nt + w->end + 2, text + w->end, tlen - w->end);
		free(text);
		text = nt;
		tlen += 2;
	}

	cerr = cyaml_load_data((const uint8_t *)text, tlen, &cy, &top_schema,
			       (cyaml_data_t **)&raw, NULL);
	if (cerr != CYAML_OK) {
		cfg_err(&ld, cap.line ? cap.line : 1, cap.col ? cap.col : 1,
			"%s", cap.msg[0] ? cap.msg : cyaml_strerror(cerr));
		raw = NULL;
		goto fail;
	}
	if (!raw) {
		cfg_err(&ld, 1, 1, "empty route file: it needs 'listeners'");
		goto fail;
	}

	cfg = calloc(1, sizeof(*cfg));
	if (!cfg)
		goto fail;
	static uint64_t generations;

	cfg->refs = 1;
	cfg->generation = ++generations;
	cfg->resolve_interval_ms = 30000;
	snprintf(cfg->path, sizeof(cfg->path), "%s", path);
	snprintf(cfg->control_socket, sizeof(cfg->control_socket), "%s",
		 DEFAULT_CONTROL_SOCKET);
	cfg->datapath = DP_AUTO;
	cfg->control_gid = -1;
	cfg->connect_ms = 5000;
	cfg->client_hello_ms = 10000;
	cfg->idle_ms = 3600 * 1000;
	cfg->half_closed_ms = 60 * 1000;
	cfg->kernel_backlog = 16ULL << 20;
	cfg->kernel_sndbuf = 16ULL << 20;
	cfg->max_flows = 20000;
	cfg->per_source = 0;
	cfg->drain_timeout_ms = 30000;

	if (raw->user && !expand(&ld, &raw->user, "user")) {
		int line, col;

		if (!getpwnam(raw->user) ||
		    strlen(raw->user) >= sizeof(cfg->user)) {
			pos_find(&ld, "user", &line, &col);
			cfg_err(&ld, line, col, "no such user '%s'", raw->user);
		} else {
			snprintf(cfg->user, sizeof(cfg->user), "%s", raw->user);
		}
	}
	check_duration(&ld, &raw->drain_timeout, "drain_timeout",
		       &cfg->drain_timeout_ms, 1);
	check_duration(&ld, &raw->resolve_interval, "resolve_interval",
		       &cfg->resolve_interval_ms, 1);

	if (raw->control_socket &&
	    !expand(&ld, &raw->control_socket, "control_socket")) {
		int line, col;

		if (raw->control_socket[0] != '/' ||
		    strlen(raw->control_socket) >=
			    sizeof(cfg->control_socket)) {
			pos_find(&ld, "control_socket", &line, &col);
			cfg_err(&ld, line, col,
				"control_socket must be an absolute path "
				"shorter than %zu bytes",
				sizeof(cfg->control_socket));
		} else {
			snprintf(cfg->control_socket,
				 sizeof(cfg->control_socket), "%s",
				 raw->control_socket);
		}
	}
	if (raw->control_socket_group &&
	    !expand(&ld, &raw->control_socket_group, "control_socket_group")) {
		struct group *gr = getgrnam(raw->control_socket_group);
		int line, col;

		if (!gr) {
			pos_find(&ld, "control_socket_group", &line, &col);
			cfg_err(&ld, line, col, "no such group '%s'",
				raw->control_socket_group);
		} else {
			cfg->control_gid = (long)gr->gr_gid;
		}
	}
	if (raw->metrics && !expand(&ld, &raw->metrics, "metrics")) {
		socklen_t len;
		int line, col;

		if (addr_parse(raw->metrics, &cfg->metrics_addr, &len)) {
			pos_find(&ld, "metrics", &line, &col);
			cfg_err(&ld, line, col,
				"bad metrics address '%s' (IPv4:port or "
				"[IPv6]:port)",
				raw->metrics);
		} else {
			cfg->metrics = 1;
		}
	}
	if (raw->datapath && !expand(&ld, &raw->datapath, "datapath") &&
	    parse_datapath(raw->datapath, &cfg->datapath)) {
		int line, col;

		pos_find(&ld, "datapath", &line, &col);
		cfg_err(&ld, line, col,
			"bad datapath '%s' (auto, sockmap, splice or copy)",
			raw->datapath);
	}
	if (raw->timeouts) {
		check_duration(&ld, &raw->timeouts->connect, "timeouts.connect",
			       &cfg->connect_ms, 0);
		check_duration(&ld, &raw->timeouts->client_hello,
			       "timeouts.client_hello", &cfg->client_hello_ms,
			       0);
		check_duration(&ld, &raw->timeouts->idle, "timeouts.idle",
			       &cfg->idle_ms, 1);
		check_duration(&ld, &raw->timeouts->half_closed,
			       "timeouts.half_closed", &cfg->half_closed_ms, 1);
	}
	if (raw->limits) {
		char **v[2] = {&raw->limits->max_flows,
			       &raw->limits->per_source};
		uint64_t *d[2] = {&cfg->max_flows, &cfg->per_source};
		const char *k[2] = {"limits.max_flows", "limits.per_source"};

		for (int j = 0; j < 2; j++) {
			int line, col;

			if (!*v[j] || expand(&ld, v[j], k[j]))
				continue;
			if (parse_count(*v[j], d[j]) ||
			    (j == 0 && *d[j] == 0)) {
				pos_find(&ld, k[j], &line, &col);
				cfg_err(&ld, line, col,
					"bad %s '%s' (a count%s)", k[j] + 7,
					*v[j],
					j == 0 ? " above 0"
					       : "; 0 turns it off");
			}
		}
	}
	if (raw->limits && raw->limits->kernel_backlog &&
	    !expand(&ld, &raw->limits->kernel_backlog,
		    "limits.kernel_backlog")) {
		int line, col;

		if (size_parse(raw->limits->kernel_backlog,
			       &cfg->kernel_backlog) ||
		    cfg->kernel_backlog < (256u << 10)) {
			pos_find(&ld, "limits.kernel_backlog", &line, &col);
			cfg_err(&ld, line, col,
				"bad kernel_backlog '%s' (a size such as "
				"16MiB, at least 256KiB)",
				raw->limits->kernel_backlog);
		}
	}
	if (raw->limits && raw->limits->kernel_sndbuf &&
	    !expand(&ld, &raw->limits->kernel_sndbuf, "limits.kernel_sndbuf")) {
		int line, col;

		if (size_parse(raw->limits->kernel_sndbuf,
			       &cfg->kernel_sndbuf) ||
		    cfg->kernel_sndbuf > (1ULL << 30) ||
		    (cfg->kernel_sndbuf && cfg->kernel_sndbuf < (64u << 10))) {
			pos_find(&ld, "limits.kernel_sndbuf", &line, &col);
			cfg_err(&ld, line, col,
				"bad kernel_sndbuf '%s' (a size from 64KiB "
				"to 1GiB, or 0 to leave the kernel's "
				"autotuning)",
				raw->limits->kernel_sndbuf);
		}
	}
	if (!raw->listeners || raw->listeners_count == 0) {
		int line, col;

		pos_find(&ld, "listeners", &line, &col);
		cfg_err(&ld, line, col, "no listeners");
		goto fail;
	}
	cfg->listeners = calloc(raw->listeners_count, sizeof(*cfg->listeners));
	if (!cfg->listeners)
		goto fail;
	cfg->nlisteners = (int)raw->listeners_count;
	for (i = 0; i < raw->listeners_count; i++)
		check_listener(&ld, cfg, &raw->listeners[i], (int)i);
	if (ld.nerr)
		goto fail;

	cyaml_free(&cy, &top_schema, raw, 0);
	for (size_t k = 0; k < ld.npos; k++)
		free(ld.pos[k].path);
	free(ld.pos);
	free(ld.wraps);
	free(text);
	*out = cfg;
	return 0;
fail:
	if (raw)
		cyaml_free(&cy, &top_schema, raw, 0);
	for (size_t k = 0; k < ld.npos; k++)
		free(ld.pos[k].path);
	free(ld.pos);
	free(ld.wraps);
	free(text);
	config_free(cfg);
	return -EINVAL;
}

int route_select(const struct listener_cfg *l, const char *sni)
{
	int i;

	if (sni && *sni) {
		for (i = 0; i < l->nroutes; i++)
			for (size_t k = 0; k < l->routes[i].nsni; k++)
				if (sni_match(l->routes[i].sni[k], sni))
					return i;
	}
	return l->default_route;
}
