// SPDX-License-Identifier: MIT
/*
 * ctl.c - the control socket that edgectl talks to.
 *
 * Protocol: the client sends one request line ("flows", "flows json",
 * "stats json", "ping"); edged answers "ok\n" followed by the body, or
 * "error MESSAGE\n", and closes. The socket is created under umask 0117
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
static int ctl_fd = -1, ctl_nclients;
static char ctl_path[108];

static const char *flow_state_str(struct flow *f)
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
		"close_wait", "last_ack",    "listen",    "closing",
	};
	struct tcp_info ti;
	socklen_t len = sizeof(ti);

	sb_printf(sb, ",\"%s\":", key);
	memset(&ti, 0, sizeof(ti));
	if (fd < 0 || getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) == -1) {
		sb_printf(sb, "null");
		return;
	}
	sb_printf(sb,
		  "{\"state\":\"%s\",\"rtt_us\":%u,\"retrans\":%u,"
		  "\"unacked\":%u,\"bytes_acked\":%llu,\"bytes_received\":%llu}",
		  ti.tcpi_state < 12 ? states[ti.tcpi_state] : "unknown",
		  ti.tcpi_rtt, ti.tcpi_total_retrans, ti.tcpi_unacked,
		  (unsigned long long)ti.tcpi_bytes_acked,
		  (unsigned long long)ti.tcpi_bytes_received);
}

static void flows_json(struct strbuf *sb)
{
	uint64_t now = now_ms();
	struct list *it;
	int first = 1;

	sb_printf(sb, "[");
	for (it = edge.flows.next; it != &edge.flows; it = it->next) {
		struct flow *f = container_of(it, struct flow, all);
		char a[ADDR_STR_MAX];
		struct route *r = f->route >= 0 ? &f->l->cfg->routes[f->route] :
						  NULL;

		sb_printf(sb, "%s\n{\"id\":%llu,\"listener\":", first ? "" : ",",
			  (unsigned long long)f->id);
		first = 0;
		sb_json_str(sb, f->l->cfg->name);
		sb_printf(sb, ",\"client\":\"%s\"",
			  addr_str((struct sockaddr *)&f->c.peer, a, sizeof(a)));
		sb_printf(sb, ",\"local\":\"%s\"",
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
			  (unsigned long long)(now - (flow_last_ms(f) < now ?
							    flow_last_ms(f) : now)));
		sb_printf(sb, ",\"bytes_up\":%llu,\"bytes_down\":%llu",
			  (unsigned long long)flow_bytes_up(f),
			  (unsigned long long)flow_bytes_down(f));
		if (f->state == FS_RUNNING) {
			int64_t q_up = 0, q_down = 0;

			if (f->up.mode == PATH_SOCKMAP)
				kpath_backlog(&f->up, &q_up);
			if (f->down.mode == PATH_SOCKMAP)
				kpath_backlog(&f->down, &q_down);
			sb_printf(sb,
				  ",\"path_up\":\"%s\",\"path_down\":\"%s\","
				  "\"kernel_queued_up\":%lld,"
				  "\"kernel_queued_down\":%lld",
				  path_str(f->up.mode), path_str(f->down.mode),
				  (long long)(q_up > 0 ? q_up : 0),
				  (long long)(q_down > 0 ? q_down : 0));
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

static void flows_table(struct strbuf *sb)
{
	uint64_t now = now_ms();
	struct list *it;

	sb_printf(sb, "%-6s %-8s %-21s %-21s %-7s %6s %5s %5s\n", "ID",
		  "LISTENER", "CLIENT", "UPSTREAM", "PATH", "AGE", "UP",
		  "DOWN");
	for (it = edge.flows.next; it != &edge.flows; it = it->next) {
		struct flow *f = container_of(it, struct flow, all);
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
		if (a < 3600)
			snprintf(age, sizeof(age), "%llum%02llus",
				 (unsigned long long)(a / 60),
				 (unsigned long long)(a % 60));
		else
			snprintf(age, sizeof(age), "%lluh%02llum",
				 (unsigned long long)(a / 3600),
				 (unsigned long long)(a / 60 % 60));
		sb_printf(sb, "%-6llu %-8.8s %-21.21s %-21.21s %-7s %6s %5s %5s\n",
			  (unsigned long long)f->id, f->l->cfg->name, c, u,
			  f->state == FS_RUNNING ? path_str(f->path) :
						   flow_state_str(f),
			  age, up, down);
	}
}

static void stats_json(struct strbuf *sb)
{
	int i, k;

	sb_printf(sb, "{\"uptime_ms\":%llu,\"flows\":%llu,\"kernel_path\":",
		  (unsigned long long)(now_ms() - edge.start_ms),
		  (unsigned long long)edge.nflows);
	if (edge.kp)
		sb_printf(sb, "{\"loaded\":true}");
	else {
		sb_printf(sb, "{\"loaded\":false,\"reason\":");
		sb_json_str(sb, edge.kp_why);
		sb_printf(sb, "}");
	}
	sb_printf(sb, ",\"listeners\":[");
	for (i = 0; i < edge.nlisteners; i++) {
		struct listener *l = &edge.listeners[i];
		struct listener_stats *st = &l->st;

		sb_printf(sb, "%s{\"name\":", i ? "," : "");
		sb_json_str(sb, l->cfg->name);
		sb_printf(sb,
			  ",\"accepted\":%llu,\"active\":%llu,"
			  "\"bytes_up\":%llu,\"bytes_down\":%llu,"
			  "\"connect_failures\":%llu,\"hello_failures\":%llu,"
			  "\"hello_timeouts\":%llu,\"fallbacks\":%llu,"
			  "\"paths\":{\"sockmap\":%llu,\"splice\":%llu,"
			  "\"copy\":%llu},\"closed\":{",
			  (unsigned long long)st->accepted,
			  (unsigned long long)st->active,
			  (unsigned long long)st->bytes_up,
			  (unsigned long long)st->bytes_down,
			  (unsigned long long)st->connect_failures,
			  (unsigned long long)st->hello_failures,
			  (unsigned long long)st->hello_timeouts,
			  (unsigned long long)st->fallbacks,
			  (unsigned long long)st->paths[PATH_SOCKMAP],
			  (unsigned long long)st->paths[PATH_SPLICE],
			  (unsigned long long)st->paths[PATH_COPY]);
		for (k = 1; k < END__COUNT; k++)
			sb_printf(sb, "%s\"%s\":%llu", k > 1 ? "," : "",
				  end_cause_str(k),
				  (unsigned long long)st->closed[k]);
		sb_printf(sb, "}}");
	}
	sb_printf(sb, "]}\n");
}

static void ctl_client_free(struct ctl_client *cc)
{
	loop_del(cc->fd);
	close(cc->fd);
	sb_free(&cc->out);
	free(cc);
	ctl_nclients--;
}

static void ctl_handle(struct ctl_client *cc)
{
	char *req = cc->req, *nl = memchr(req, '\n', cc->req_len);

	if (nl)
		*nl = '\0';
	if (!strcmp(req, "flows")) {
		sb_printf(&cc->out, "ok\n");
		flows_table(&cc->out);
	} else if (!strcmp(req, "flows json")) {
		sb_printf(&cc->out, "ok\n");
		flows_json(&cc->out);
	} else if (!strcmp(req, "stats json") || !strcmp(req, "stats")) {
		sb_printf(&cc->out, "ok\n");
		stats_json(&cc->out);
	} else if (!strcmp(req, "ping")) {
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
	mkdir(dir, 0755);
}

int ctl_open(const char *path)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
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
