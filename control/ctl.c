// SPDX-License-Identifier: MIT
/*
 * ctl.c - the control socket that edgectl talks to.
 *
 * Protocol: the client sends one request line (see ctl_handle());
 * edged answers "ok\n" followed by the body, or "error MESSAGE\n", and
 * closes. The socket is created under umask 0117
 * (mode 0660). A malformed or oversized request gets an error line and a
 * close; it can never take the daemon down.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <netinet/in.h>
#include <linux/tcp.h>

#include "edged.h"
#include "log.h"

#define CTL_REQ_MAX 1024
#define CTL_CLIENTS_MAX 64

struct ctl_client {
	struct handler h;
	int fd;
	char req[CTL_REQ_MAX];
	size_t req_len;
	struct strbuf out;
	size_t out_off;
	int replying;
};

static struct handler ctl_h;
static int ctl_fd = -1, ctl_nclients, ctl_made_dir;
static char ctl_path[108];

const char *flow_state_str(struct flow *f)
{
	switch (f->state) {
	case FS_HELLO:
		return "client_hello";
	case FS_CONNECTING:
		return "connecting";
	case FS_SENDING:
		return "sending_header";
	case FS_RUNNING:
		if (f->c.fin && f->u.fin)
			return "closing";
		if (f->c.fin)
			return "half_closed_client";
		if (f->u.fin)
			return "half_closed_upstream";
		return "established";
	default:
		return "closed";
	}
}

static void json_tcp(struct strbuf *sb, const char *key, int fd)
{
	static const char *const states[] = {
		"unknown",    "established", "syn_sent",  "syn_recv",
		"fin_wait1",  "fin_wait2",   "time_wait", "close",
		"close_wait", "last_ack",    "listen",	  "closing",
	};
	struct tcp_info ti;
	socklen_t len = sizeof(ti);

	sb_printf(sb, ",\"%s\":", key);
	memset(&ti, 0, sizeof(ti));
	if (fd < 0 || getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) == -1) {
		sb_printf(sb, "null");
		return;
	}
	sb_printf(
		sb,
		"{\"state\":\"%s\",\"rtt_us\":%u,\"retrans\":%u,"
		"\"unacked\":%u,\"bytes_acked\":%llu,\"bytes_received\":%llu}",
		ti.tcpi_state < 12 ? states[ti.tcpi_state] : "unknown",
		ti.tcpi_rtt, ti.tcpi_total_retrans, ti.tcpi_unacked,
		(unsigned long long)ti.tcpi_bytes_acked,
		(unsigned long long)ti.tcpi_bytes_received);
}

struct flow_query {
	int json;
	int sort; /* 0 age (oldest first), 1 bytes (most first), 2 idle */
	const char *listener;
	const char *client;
};

static uint64_t flow_idle(struct flow *f, uint64_t now)
{
	return ms_since(now, flow_last_ms(f));
}

static int flow_matches(struct flow *f, const struct flow_query *q)
{
	char a[ADDR_STR_MAX];
	size_t n;

	if (q->listener && strcmp(q->listener, f->lc->name))
		return 0;
	if (!q->client)
		return 1;
	addr_str((struct sockaddr *)&f->c.peer, a, sizeof(a));
	if (!strcmp(a, q->client))
		return 1;
	/* An address without port: "192.0.2.1", "::1" or "[::1]". */
	n = strlen(q->client);
	if (a[0] == '[')
		return (!strncmp(a + 1, q->client, n) && a[1 + n] == ']') ||
		       (!strncmp(a, q->client, n) && q->client[n - 1] == ']' &&
			a[n] == ':');
	return !strncmp(a, q->client, n) && a[n] == ':';
}

static uint64_t sort_now;
static int sort_kind;

static int flow_cmp(const void *pa, const void *pb)
{
	struct flow *a = *(struct flow *const *)pa,
		    *b = *(struct flow *const *)pb;
	uint64_t ka, kb;

	switch (sort_kind) {
	case 1:
		ka = flow_bytes_up(a) + flow_bytes_down(a);
		kb = flow_bytes_up(b) + flow_bytes_down(b);
		return ka < kb ? 1 : ka > kb ? -1 : 0;
	case 2:
		ka = flow_idle(a, sort_now);
		kb = flow_idle(b, sort_now);
		return ka < kb ? 1 : ka > kb ? -1 : 0;
	default:
		return a->start_ms < b->start_ms ? -1
						 : a->start_ms > b->start_ms;
	}
}

/* flows_select - the flows matching @q, sorted; NULL when there are none. */
static struct flow **flows_select(const struct flow_query *q, size_t *n)
{
	struct flow **v = NULL;
	struct list *it;
	size_t cap = 0;

	*n = 0;
	for (it = edge.flows.next; it != &edge.flows; it = it->next) {
		struct flow *f = container_of(it, struct flow, all);

		if (!flow_matches(f, q))
			continue;
		if (*n == cap) {
			struct flow **nv;

			cap = cap ? cap * 2 : 64;
			nv = realloc(v, cap * sizeof(*v));
			if (!nv)
				break;
			v = nv;
		}
		v[(*n)++] = f;
	}
	sort_now = now_ms();
	sort_kind = q->sort;
	if (*n > 1)
		qsort(v, *n, sizeof(*v), flow_cmp);
	return v;
}

static void flows_json(struct strbuf *sb, const struct flow_query *q)
{
	uint64_t now = now_ms();
	struct flow **v;
	size_t i, n;
	int first = 1;

	v = flows_select(q, &n);
	sb_printf(sb, "[");
	for (i = 0; i < n; i++) {
		struct flow *f = v[i];
		char a[ADDR_STR_MAX];
		struct route *r = f->rt;

		sb_printf(sb,
			  "%s\n{\"id\":%llu,\"listener\":", first ? "" : ",",
			  (unsigned long long)f->id);
		first = 0;
		sb_json_str(sb, f->lc->name);
		sb_printf(
			sb, ",\"client\":\"%s\"",
			addr_str((struct sockaddr *)&f->c.peer, a, sizeof(a)));
		sb_printf(
			sb, ",\"local\":\"%s\"",
			addr_str((struct sockaddr *)&f->c.local, a, sizeof(a)));
		if (f->upstream_addr_set)
			sb_printf(sb, ",\"upstream\":\"%s\"",
				  addr_str((struct sockaddr *)&f->u.peer, a,
					   sizeof(a)));
		else
			sb_printf(sb, ",\"upstream\":null");
		if (f->state >= FS_SENDING)
			sb_printf(sb, ",\"upstream_local\":\"%s\"",
				  addr_str((struct sockaddr *)&f->u.local, a,
					   sizeof(a)));
		else
			sb_printf(sb, ",\"upstream_local\":null");
		sb_printf(sb, ",\"proxy_protocol\":\"%s\"",
			  proxy_version_str(r ? r->proxy : PROXY_NONE));
		sb_printf(sb, ",\"path\":\"%s\"",
			  f->state == FS_RUNNING ? path_str(f->path) : "none");
		sb_printf(sb, ",\"state\":\"%s\"", flow_state_str(f));
		sb_printf(sb, ",\"sni\":");
		sb_json_str(sb, f->has_sni ? f->sni : NULL);
		sb_printf(sb, ",\"route\":");
		sb_json_str(sb, r ? r->name : NULL);
		sb_printf(sb, ",\"age_ms\":%llu,\"idle_ms\":%llu",
			  (unsigned long long)(now - f->start_ms),
			  (unsigned long long)flow_idle(f, now));
		sb_printf(sb, ",\"bytes_up\":%llu,\"bytes_down\":%llu",
			  (unsigned long long)flow_bytes_up(f),
			  (unsigned long long)flow_bytes_down(f));
		if (f->state == FS_RUNNING) {
			int64_t q_up = 0, q_down = 0;

			if (f->up.mode == PATH_SOCKMAP)
				kpath_backlog(&f->up, &q_up);
			if (f->down.mode == PATH_SOCKMAP)
				kpath_backlog(&f->down, &q_down);
			sb_printf(
				sb,
				",\"path_up\":\"%s\",\"path_down\":\"%s\","
				"\"kernel_queued_up\":%lld,"
				"\"kernel_queued_down\":%lld,"
				"\"kernel_messages_up\":%llu,"
				"\"kernel_messages_down\":%llu",
				path_str(f->up.mode), path_str(f->down.mode),
				(long long)(q_up > 0 ? q_up : 0),
				(long long)(q_down > 0 ? q_down : 0),
				(unsigned long long)kpath_dir_skbs(f->c.slot),
				(unsigned long long)kpath_dir_skbs(f->u.slot));
		}
		if (f->reason) {
			sb_printf(sb, ",\"reason\":");
			sb_json_str(sb, f->reason);
		}
		json_tcp(sb, "client_tcp", f->c.fd);
		json_tcp(sb, "upstream_tcp", f->u.fd);
		sb_printf(sb, "}");
	}
	sb_printf(sb, "%s]\n", first ? "" : "\n");
	free(v);
}

static void human_bytes(char *buf, size_t len, uint64_t v)
{
	if (v < 10000)
		snprintf(buf, len, "%llu", (unsigned long long)v);
	else if (v < 10000ULL << 10)
		snprintf(buf, len, "%lluK", (unsigned long long)(v >> 10));
	else if (v < 10000ULL << 20)
		snprintf(buf, len, "%lluM", (unsigned long long)(v >> 20));
	else
		snprintf(buf, len, "%lluG", (unsigned long long)(v >> 30));
}

/* One line per flow, 79 columns; addresses are cut to fit. */
static void flows_table(struct strbuf *sb, const struct flow_query *q)
{
	uint64_t now = now_ms();
	struct flow **v;
	size_t i, n;

	v = flows_select(q, &n);
	sb_printf(sb, "%-5s %-8s %-21s %-17s %-7s %5s %5s %5s\n", "ID",
		  "LISTENER", "CLIENT", "UPSTREAM", "PATH", "AGE", "UP",
		  "DOWN");
	for (i = 0; i < n; i++) {
		struct flow *f = v[i];
		char c[ADDR_STR_MAX], u[ADDR_STR_MAX], up[16], down[16];
		char age[16];
		uint64_t a = (now - f->start_ms) / 1000;

		addr_str((struct sockaddr *)&f->c.peer, c, sizeof(c));
		if (f->upstream_addr_set)
			addr_str((struct sockaddr *)&f->u.peer, u, sizeof(u));
		else
			snprintf(u, sizeof(u), "-");
		human_bytes(up, sizeof(up), flow_bytes_up(f));
		human_bytes(down, sizeof(down), flow_bytes_down(f));
		if (a < 100)
			snprintf(age, sizeof(age), "%llus",
				 (unsigned long long)a);
		else if (a < 6000)
			snprintf(age, sizeof(age), "%llum",
				 (unsigned long long)(a / 60));
		else if (a < 360000)
			snprintf(age, sizeof(age), "%lluh",
				 (unsigned long long)(a / 3600));
		else
			snprintf(age, sizeof(age), "%llud",
				 (unsigned long long)(a / 86400));
		sb_printf(
			sb,
			"%-5llu %-8.8s %-21.21s %-17.17s %-7.7s %5s %5s %5s\n",
			(unsigned long long)f->id, f->lc->name, c, u,
			f->state == FS_RUNNING ? path_str(f->path)
					       : flow_state_str(f),
			age, up, down);
	}
	free(v);
}

static void ctl_client_free(struct ctl_client *cc)
{
	loop_del(cc->fd);
	close(cc->fd);
	sb_free(&cc->out);
	free(cc);
	ctl_nclients--;
}

/* route LISTENER [SNI]: what a new connection would get, no connect. */
static void route_explain(struct strbuf *sb, const char *name, const char *sni,
			  int json)
{
	struct listener_cfg *lc = NULL;
	char norm[TLS_SNI_MAX];
	struct route *r;
	int i, ri;

	for (i = 0; i < edge.nlisteners; i++)
		if (!strcmp(edge.listeners[i]->cfg->name, name))
			lc = edge.listeners[i]->cfg;
	if (!lc) {
		sb_printf(sb, "error no listener named '%s'\n", name);
		return;
	}
	if (sni) {
		size_t n;

		snprintf(norm, sizeof(norm), "%s", sni);
		for (char *c = norm; *c; c++)
			if (*c >= 'A' && *c <= 'Z')
				*c = (char)(*c - 'A' + 'a');
		n = strlen(norm);
		if (n && norm[n - 1] == '.')
			norm[n - 1] = '\0';
		sni = norm;
	}
	ri = lc->sni_routing ? route_select(lc, sni) : lc->default_route;
	sb_printf(sb, "ok\n");
	if (ri < 0) {
		if (json) {
			sb_printf(sb, "{\"listener\":");
			sb_json_str(sb, lc->name);
			sb_printf(sb, ",\"sni\":");
			sb_json_str(sb, sni);
			sb_printf(sb,
				  ",\"route\":null,\"action\":\"close\"}\n");
		} else {
			sb_printf(sb,
				  "listener %s, sni %s: no route matches and "
				  "there is no default: the connection is "
				  "closed\n",
				  lc->name, sni ? sni : "(none)");
		}
		return;
	}
	r = &lc->routes[ri];
	if (json) {
		sb_printf(sb, "{\"listener\":");
		sb_json_str(sb, lc->name);
		sb_printf(sb, ",\"sni\":");
		sb_json_str(sb, sni);
		sb_printf(sb, ",\"reads_client_hello\":%s,\"route\":",
			  lc->sni_routing ? "true" : "false");
		sb_json_str(sb, r->name);
		sb_printf(sb, ",\"default\":%s,\"upstream\":",
			  ri == lc->default_route ? "true" : "false");
		sb_json_str(sb, r->upstream);
		sb_printf(sb, ",\"addresses\":[");
		for (i = 0; i < r->naddrs; i++) {
			char a[ADDR_STR_MAX];

			sb_printf(sb, "%s\"%s\"", i ? "," : "",
				  addr_str((struct sockaddr *)&r->addrs[i], a,
					   sizeof(a)));
		}
		sb_printf(sb,
			  "],\"proxy_protocol\":\"%s\",\"authority_tlv\":%s,"
			  "\"datapath\":\"%s\"}\n",
			  proxy_version_str(r->proxy),
			  r->proxy == PROXY_V2 && sni ? "true" : "false",
			  datapath_str(lc->datapath));
		return;
	}
	sb_printf(sb, "listener:       %s (%s)\n", lc->name,
		  lc->sni_routing ? "routes by SNI"
				  : "pass-through, connects at accept");
	sb_printf(sb, "sni:            %s\n", sni ? sni : "(none)");
	sb_printf(sb, "route:          %s%s\n", r->name,
		  ri == lc->default_route ? " (default)" : "");
	sb_printf(sb, "upstream:       %s\n", r->upstream);
	for (i = 0; i < r->naddrs; i++) {
		char a[ADDR_STR_MAX];

		sb_printf(sb, "  address %d:    %s\n", i + 1,
			  addr_str((struct sockaddr *)&r->addrs[i], a,
				   sizeof(a)));
	}
	sb_printf(sb, "proxy_protocol: %s%s\n", proxy_version_str(r->proxy),
		  r->proxy == PROXY_V2 && sni ? " (with AUTHORITY TLV = sni)"
					      : "");
	sb_printf(sb, "datapath:       %s\n", datapath_str(lc->datapath));
}

static void kill_flow(struct strbuf *sb, const char *id_s, int reset)
{
	char *end;
	unsigned long long id;
	struct flow *f;

	errno = 0;
	id = strtoull(id_s, &end, 10);
	if (errno || *end || !*id_s) {
		sb_printf(sb, "error bad flow id '%s'\n", id_s);
		return;
	}
	f = flow_find(id);
	if (!f) {
		sb_printf(sb, "error no flow with id %llu\n", id);
		return;
	}
	flow_kill(f, reset);
	sb_printf(sb, "ok\nflow %llu %s\n", id, reset ? "reset" : "closing");
}

/*
 * Requests: one line of space-separated words.
 *   flows [json] [sort=age|bytes|idle] [listener=NAME] [client=ADDR]
 *   stats | kill ID [reset] | route LISTENER [SNI] [json] | ping
 */
static void ctl_handle(struct ctl_client *cc)
{
	char *req = cc->req, *nl = memchr(req, '\n', cc->req_len), *save;
	char *argv[8];
	int argc = 0, json = 0, i;

	if (nl)
		*nl = '\0';
	for (char *t = strtok_r(req, " ", &save); t && argc < 8;
	     t = strtok_r(NULL, " ", &save)) {
		if (!strcmp(t, "json"))
			json = 1;
		else
			argv[argc++] = t;
	}
	if (argc == 0) {
		sb_printf(&cc->out, "error empty request\n");
	} else if (!strcmp(argv[0], "flows")) {
		struct flow_query q = {.json = json};
		int bad = 0;

		for (i = 1; i < argc; i++) {
			if (!strncmp(argv[i], "sort=", 5)) {
				const char *k = argv[i] + 5;

				if (!strcmp(k, "age"))
					q.sort = 0;
				else if (!strcmp(k, "bytes"))
					q.sort = 1;
				else if (!strcmp(k, "idle"))
					q.sort = 2;
				else
					bad = 1;
			} else if (!strncmp(argv[i], "listener=", 9)) {
				q.listener = argv[i] + 9;
			} else if (!strncmp(argv[i], "client=", 7)) {
				q.client = argv[i] + 7;
			} else {
				bad = 1;
			}
		}
		if (bad) {
			sb_printf(
				&cc->out,
				"error bad flows option (sort=age|bytes|idle, "
				"listener=NAME, client=ADDR)\n");
		} else {
			sb_printf(&cc->out, "ok\n");
			if (json)
				flows_json(&cc->out, &q);
			else
				flows_table(&cc->out, &q);
		}
	} else if (!strcmp(argv[0], "stats") && argc == 1) {
		sb_printf(&cc->out, "ok\n");
		if (json)
			stats_json(&cc->out);
		else
			stats_text(&cc->out);
	} else if (!strcmp(argv[0], "kill") && (argc == 2 || argc == 3)) {
		if (argc == 3 && strcmp(argv[2], "reset"))
			sb_printf(&cc->out, "error usage: kill ID [reset]\n");
		else
			kill_flow(&cc->out, argv[1], argc == 3);
	} else if (!strcmp(argv[0], "route") && (argc == 2 || argc == 3)) {
		route_explain(&cc->out, argv[1], argc == 3 ? argv[2] : NULL,
			      json);
	} else if (!strcmp(argv[0], "reload") && argc == 1) {
		if (edge.reload_pending || edge.draining) {
			sb_printf(&cc->out, "error %s\n",
				  edge.draining
					  ? "edged is stopping"
					  : "a reload is already pending");
		} else {
			/* Answered by ctl_reload_done() after this batch. */
			edge.reload_pending = 1;
			edge.reload_client = cc;
			return;
		}
	} else if (!strcmp(argv[0], "ping") && argc == 1) {
		sb_printf(&cc->out, "ok\npong\n");
	} else {
		sb_printf(&cc->out, "error unknown request\n");
	}
	if (cc->out.oom) {
		sb_free(&cc->out);
		sb_printf(&cc->out, "error out of memory\n");
	}
	cc->replying = 1;
	loop_mod(cc->fd, EPOLLOUT, &cc->h);
}

static void ctl_client_event(struct handler *h, uint32_t events)
{
	struct ctl_client *cc = container_of(h, struct ctl_client, h);
	ssize_t n;

	if (!cc->replying) {
		n = recv(cc->fd, cc->req + cc->req_len,
			 sizeof(cc->req) - 1 - cc->req_len, 0);
		if (n <= 0) {
			if (n == -1 && errno == EAGAIN)
				return;
			ctl_client_free(cc);
			return;
		}
		cc->req_len += (size_t)n;
		cc->req[cc->req_len] = '\0';
		if (memchr(cc->req, '\n', cc->req_len))
			ctl_handle(cc);
		else if (cc->req_len >= sizeof(cc->req) - 1) {
			sb_printf(&cc->out, "error request too long\n");
			cc->replying = 1;
			loop_mod(cc->fd, EPOLLOUT, &cc->h);
		}
		return;
	}
	while (cc->out_off < cc->out.len) {
		n = send(cc->fd, cc->out.data + cc->out_off,
			 cc->out.len - cc->out_off, MSG_NOSIGNAL);
		if (n == -1) {
			if (errno == EAGAIN)
				return;
			break;
		}
		cc->out_off += (size_t)n;
	}
	ctl_client_free(cc);
}

static void ctl_accept(struct handler *h, uint32_t events)
{
	for (;;) {
		int fd = accept4(ctl_fd, NULL, NULL,
				 SOCK_NONBLOCK | SOCK_CLOEXEC);
		struct ctl_client *cc;

		if (fd == -1)
			return;
		if (ctl_nclients >= CTL_CLIENTS_MAX ||
		    !(cc = calloc(1, sizeof(*cc)))) {
			close(fd);
			continue;
		}
		cc->fd = fd;
		cc->h.fn = ctl_client_event;
		sb_init(&cc->out);
		ctl_nclients++;
		if (loop_add(fd, EPOLLIN, &cc->h)) {
			close(fd);
			free(cc);
			ctl_nclients--;
		}
	}
}

static void mkdir_parent(const char *path)
{
	char dir[108], *slash;

	snprintf(dir, sizeof(dir), "%s", path);
	slash = strrchr(dir, '/');
	if (!slash || slash == dir)
		return;
	*slash = '\0';
	if (mkdir(dir, 0755) == 0)
		ctl_made_dir = 1;
}

/*
 * ctl_chown - before dropping privileges: the socket's owner, and the
 * directory edged created for it, so that edged can remove the socket at
 * exit. Returns 0 or -errno.
 */
int ctl_chown(uid_t uid, gid_t gid)
{
	char dir[108], *slash;

	if (chown(ctl_path, uid, gid) == -1) {
		log_warn("chown %s", ctl_path);
		return -errno;
	}
	snprintf(dir, sizeof(dir), "%s", ctl_path);
	slash = strrchr(dir, '/');
	if (ctl_made_dir && slash && slash != dir) {
		*slash = '\0';
		if (chown(dir, uid, gid) == -1)
			log_warn("chown %s", dir);
	}
	return 0;
}

/* ctl_reload_done - answer the edgectl reload that asked for it. */
void ctl_reload_done(struct ctl_client *cc, int rc, const char *err)
{
	if (rc) {
		/* One line: the first problem, and how many there were. */
		const char *nl = strchr(err, '\n');
		int n = 0;

		for (const char *p = err; *p; p++)
			n += *p == '\n';
		sb_printf(&cc->out,
			  "error reload refused, nothing changed: %.*s%s\n",
			  nl ? (int)(nl - err) : (int)strlen(err), err,
			  n > 1 ? " (and more: see the log)" : "");
	} else {
		sb_printf(&cc->out, "ok\nreloaded\n");
	}
	cc->replying = 1;
	loop_mod(cc->fd, EPOLLOUT, &cc->h);
}

int ctl_open(const char *path, long gid)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	mode_t old;
	int fd, err;

	snprintf(ctl_path, sizeof(ctl_path), "%s", path);
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
	mkdir_parent(path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1)
		return -errno;
	/* A stale socket from a crashed run: remove it only if dead. */
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == 0) {
		close(fd);
		log_warnx("control socket %s is in use: is edged running?",
			  path);
		return -EADDRINUSE;
	}
	unlink(path);
	old = umask(0117);
	err = bind(fd, (struct sockaddr *)&sun, sizeof(sun));
	umask(old);
	if (err == -1 || listen(fd, 64) == -1) {
		err = -errno;
		log_warn("control socket %s", path);
		close(fd);
		return err;
	}
	if (gid >= 0 && chown(path, (uid_t)-1, (gid_t)gid) == -1)
		log_warn("control socket %s: chown to group %ld", path, gid);
	chmod(path, 0660);
	ctl_fd = fd;
	ctl_h.fn = ctl_accept;
	return loop_add(fd, EPOLLIN, &ctl_h);
}

void ctl_close(void)
{
	if (ctl_fd < 0)
		return;
	loop_del(ctl_fd);
	close(ctl_fd);
	unlink(ctl_path);
	ctl_fd = -1;
}
