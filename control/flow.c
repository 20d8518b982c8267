// SPDX-License-Identifier: MIT
/*
 * flow.c - the life of one flow:
 *
 *   accept --(listener routes by SNI)--> HELLO --> CONNECTING --> SENDING
 *          --(pass-through: at once)-------------^                   |
 *                                                                    v
 *        close log line <-- both directions done <-- RUNNING (kernel or
 *                                                     userspace path)
 *
 * Pass-through listeners connect upstream the moment the client is
 * accepted and never wait for client bytes: SMTP, IMAP and ManageSieve
 * servers speak first. Client bytes that arrive meanwhile stay in the
 * client socket's receive queue and are moved after the hand-off.
 *
 * End of stream, per direction src -> dst: src's FIN is passed on
 * (shutdown(dst, SHUT_WR)) only after every byte before it has entered
 * dst's send queue; the other direction keeps flowing. An error or RST
 * on one socket resets the other.
 */
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/ioctl.h>
#include <linux/sockios.h>
#include <unistd.h>
#include <linux/tcp.h>

#include "edged.h"
#include "log.h"

#define NOT_REGISTERED ((uint32_t)-1)
#define HELLO_BUF_MAX (TLS_HELLO_MAX * 2)

static const char *const end_names[END__COUNT] = {
	[END_NONE] = "none",
	[END_CLIENT_CLOSED] = "client_closed",
	[END_UPSTREAM_CLOSED] = "upstream_closed",
	[END_CLIENT_RESET] = "client_reset",
	[END_UPSTREAM_RESET] = "upstream_reset",
	[END_CONNECT_FAILED] = "connect_failed",
	[END_CONNECT_TIMEOUT] = "connect_timeout",
	[END_HELLO_TIMEOUT] = "client_hello_timeout",
	[END_HELLO_ERROR] = "client_hello_error",
	[END_NO_ROUTE] = "no_route",
	[END_IDLE_TIMEOUT] = "idle_timeout",
	[END_HALF_CLOSED_TIMEOUT] = "half_closed_timeout",
	[END_KILLED] = "killed",
	[END_SHUTDOWN] = "shutdown",
	[END_ERROR] = "error",
	[END_LIMIT_FLOWS] = "limit_max_flows",
	[END_LIMIT_LISTENER] = "limit_listener",
	[END_LIMIT_SOURCE] = "limit_per_source",
};

const char *end_cause_str(int cause)
{
	if (cause < 0 || cause >= END__COUNT)
		return "error";
	return end_names[cause];
}

const char *fallback_str(int reason)
{
	static const char *const names[FB__COUNT] = {
		[FB_KERNEL_UNAVAILABLE] = "kernel_path_unavailable",
		[FB_CLIENT_HALF_CLOSED] = "client_half_closed",
		[FB_UPSTREAM_HALF_CLOSED] = "upstream_half_closed",
		[FB_REFUSED] = "refused",
		[FB_KERNEL_BACKLOG] = "kernel_backlog",
		[FB_AUTO_SMALL] = "auto_small_messages",
	};

	return reason >= 0 && reason < FB__COUNT ? names[reason] : "refused";
}

static int fallback_of(const char *why)
{
	if (strstr(why, "not ESTABLISHED"))
		return strstr(why, "client") ? FB_CLIENT_HALF_CLOSED
					     : FB_UPSTREAM_HALF_CLOSED;
	return FB_REFUSED;
}

const char *path_str(int path)
{
	switch (path) {
	case PATH_SOCKMAP:
		return "sockmap";
	case PATH_SPLICE:
		return "splice";
	default:
		return "copy";
	}
}

/* Count on the listener and, once routed, on the route. */
#define FLOW_STAT(f, field, op)                                \
	do {                                                   \
		(f)->l->st.field op;                           \
		if ((f)->route >= 0)                           \
			(f)->l->route_st[(f)->route].field op; \
	} while (0)

/* ---- live flows per client address (limits.per_source) ---- */

#define SOURCE_BUCKETS 4096

struct source_count {
	struct source_count *next;
	uint8_t key[17]; /* family byte + IPv4 address or IPv6 /64 */
	uint64_t n;
};

static struct source_count *source_table[SOURCE_BUCKETS];

static void source_key(const struct sockaddr_storage *ss, uint8_t key[17])
{
	memset(key, 0, 17);
	key[0] = (uint8_t)ss->ss_family;
	if (ss->ss_family == AF_INET)
		memcpy(key + 1, &((const struct sockaddr_in *)ss)->sin_addr, 4);
	else if (ss->ss_family == AF_INET6) /* one /64 is one source */
		memcpy(key + 1, &((const struct sockaddr_in6 *)ss)->sin6_addr,
		       8);
}

static unsigned source_hash(const uint8_t key[17])
{
	uint32_t h = 2166136261u;
	int i;

	for (i = 0; i < 17; i++)
		h = (h ^ key[i]) * 16777619u;
	return h % SOURCE_BUCKETS;
}

/* source_get - the entry for @ss, created with n = 0 if absent. */
static struct source_count *source_get(const struct sockaddr_storage *ss)
{
	struct source_count *sc;
	uint8_t key[17];
	unsigned h;

	source_key(ss, key);
	h = source_hash(key);
	for (sc = source_table[h]; sc; sc = sc->next)
		if (!memcmp(sc->key, key, sizeof(key)))
			return sc;
	sc = calloc(1, sizeof(*sc));
	if (!sc)
		return NULL;
	memcpy(sc->key, key, sizeof(key));
	sc->next = source_table[h];
	source_table[h] = sc;
	return sc;
}

static void source_put(struct source_count *sc)
{
	struct source_count **pp;

	if (!sc || --sc->n)
		return;
	for (pp = &source_table[source_hash(sc->key)]; *pp; pp = &(*pp)->next) {
		if (*pp == sc) {
			*pp = sc->next;
			free(sc);
			return;
		}
	}
}

static void side_event(struct handler *h, uint32_t events);
static void flow_progress(struct flow *f);
static void flow_free(struct flow *f);

static void side_set_events(struct side *s, uint32_t want, int registered)
{
	if (s->fd < 0)
		return;
	if (!registered) {
		if (s->events != NOT_REGISTERED) {
			loop_del(s->fd);
			s->events = NOT_REGISTERED;
		}
		return;
	}
	if (s->events == NOT_REGISTERED) {
		if (!loop_add(s->fd, want, &s->h))
			s->events = want;
	} else if (s->events != want) {
		if (!loop_mod(s->fd, want, &s->h))
			s->events = want;
	}
}

static struct dir *dir_from(struct flow *f, struct side *s)
{
	return s == &f->c ? &f->up : &f->down;
}

static struct dir *dir_to(struct flow *f, struct side *s)
{
	return s == &f->c ? &f->down : &f->up;
}

/* Recompute what each socket of a running flow must be watched for. */
static void flow_update_events(struct flow *f)
{
	struct side *sides[2] = {&f->c, &f->u};
	int i;

	for (i = 0; i < 2; i++) {
		struct side *s = sides[i];
		struct dir *out = dir_from(f, s), *in = dir_to(f, s);
		uint32_t want = 0;

		if (s->fin && in->done) {
			/* Nothing more to learn from this socket. */
			side_set_events(s, 0, 0);
			continue;
		}
		if (!s->fin && !out->done) {
			if (out->mode == PATH_SOCKMAP)
				want |= EPOLLRDHUP;
			else if (!relay_has_pending(out) && !f->killing)
				want |= EPOLLIN | EPOLLRDHUP;
		}
		if (in->mode != PATH_SOCKMAP && relay_has_pending(in))
			want |= EPOLLOUT;
		side_set_events(s, want, 1);
	}
}

static void watch(struct flow *f)
{
	if (f->watched)
		return;
	list_add_tail(&edge.watch, &f->watch);
	f->watched = 1;
	loop_want_fast_tick();
}

static void unwatch(struct flow *f)
{
	if (!f->watched)
		return;
	list_del(&f->watch);
	f->watched = 0;
}

/* Bytes moved in the kernel (0 if never spliced) plus in userspace. */
uint64_t flow_bytes_up(struct flow *f)
{
	return kpath_dir_bytes(f->c.slot) + f->up.user_bytes;
}

uint64_t flow_bytes_down(struct flow *f)
{
	return kpath_dir_bytes(f->u.slot) + f->down.user_bytes;
}

/* flow_last_ms - when a byte last moved, in now_ms() time. */
uint64_t flow_last_ms(struct flow *f)
{
	uint64_t last = f->last_ms;
	int slots[2] = {f->c.slot, f->u.slot}, i;

	for (i = 0; i < 2; i++) {
		uint64_t ns = slots[i] >= 0 ? kpath_dir_last_ns(slots[i]) : 0;

		if (ns && ns / 1000000ULL > last)
			last = ns / 1000000ULL;
	}
	/* May be a hair ahead of a now_ms() taken before: use ms_since(). */
	return last;
}

static void side_close(struct side *s, int reset)
{
	if (s->fd < 0)
		return;
	if (reset) {
		struct linger lg = {.l_onoff = 1, .l_linger = 0};

		setsockopt(s->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	}
	side_set_events(s, 0, 0);
	close(s->fd);
	s->fd = -1;
}

static void flow_log(struct flow *f)
{
	char client[ADDR_STR_MAX], local[ADDR_STR_MAX], up[ADDR_STR_MAX];
	const char *route = "-";

	addr_str((struct sockaddr *)&f->c.peer, client, sizeof(client));
	addr_str((struct sockaddr *)&f->c.local, local, sizeof(local));
	if (f->upstream_addr_set)
		addr_str((struct sockaddr *)&f->u.peer, up, sizeof(up));
	else
		snprintf(up, sizeof(up), "-");
	if (f->rt)
		route = f->rt->name;
	log_info("flow id=%llu listener=%s client=%s local=%s route=%s "
		 "sni=%s upstream=%s path=%s path_up=%s path_down=%s "
		 "duration_ms=%llu bytes_up=%llu bytes_down=%llu end=%s%s%s",
		 (unsigned long long)f->id, f->lc->name, client, local, route,
		 f->has_sni ? f->sni : "-", up,
		 f->state == FS_RUNNING ? path_str(f->path) : "none",
		 f->state == FS_RUNNING ? path_str(f->up.mode) : "none",
		 f->state == FS_RUNNING ? path_str(f->down.mode) : "none",
		 (unsigned long long)(now_ms() - f->start_ms),
		 (unsigned long long)flow_bytes_up(f),
		 (unsigned long long)flow_bytes_down(f), end_cause_str(f->end),
		 f->reason ? " reason=" : "", f->reason ? f->reason : "");
}

static void flow_end(struct flow *f, int cause, int reset)
{
	if (f->state == FS_CLOSED)
		return;
	f->end = cause;
	FLOW_STAT(f, bytes_up, += flow_bytes_up(f));
	FLOW_STAT(f, bytes_down, += flow_bytes_down(f));
	flow_log(f);
	f->state = FS_CLOSED;
	FLOW_STAT(f, closed[cause], ++);
	FLOW_STAT(f, active, --);
	/* Delete the plain HASH entries while the cookies are valid. */
	kpath_unsplice(f, 1);
	side_close(&f->c, reset);
	side_close(&f->u, reset);
	flow_free(f);
}

/*
 * flow_free - release a closed flow. The memory itself is freed by
 * flow_reap() after the current batch of epoll events: the batch may still
 * hold an event for the flow's other socket.
 */
static void flow_free(struct flow *f)
{
	unwatch(f);
	list_del(&f->all);
	relay_free(&f->up);
	relay_free(&f->down);
	free(f->pre);
	f->pre = NULL;
	source_put(f->src);
	f->src = NULL;
	edge.nflows--;
	config_unref(f->cfg);
	f->cfg = NULL;
	listener_unref(f->l);
	list_add_tail(&edge.dead, &f->all);
}

void flow_reap(void)
{
	while (!list_empty(&edge.dead)) {
		struct flow *f = container_of(edge.dead.next, struct flow, all);

		list_del(&f->all);
		free(f->reason_buf);
		free(f);
	}
}

static int sock_error(int fd)
{
	int err = 0;
	socklen_t len = sizeof(err);

	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == -1)
		return errno;
	return err;
}

static void sock_tune(int fd)
{
	int one = 1;

	/* Relay latency matters more than segment count. */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
}

static void flow_set_reason(struct flow *f, const char *why)
{
	free(f->reason_buf);
	f->reason_buf = strdup(why);
	f->reason = f->reason_buf;
}

/* ---- hand-off ---- */

static void flow_handoff(struct flow *f)
{
	struct listener_cfg *lc = f->lc;
	int dp = lc->datapath, user_mode = PATH_SPLICE, rc;
	char why[256];

	f->up.injected = f->hdr_len;
	f->up.user_bytes = f->pre_len;
	free(f->pre);
	f->pre = NULL;
	f->pre_cap = 0;
	f->state = FS_RUNNING;
	f->last_ms = now_ms();
	f->running_ns = now_ns();

	if (dp == DP_COPY)
		user_mode = PATH_COPY;
	if ((dp == DP_AUTO || dp == DP_SOCKMAP) && edge.kp) {
		if (f->kspliced) {
			rc = kpath_splice_client(f, why, sizeof(why)) ? 1 : 0;
		} else {
			rc = -1;
			snprintf(why, sizeof(why), "%s", f->kwhy);
		}
		if (rc == 0) {
			f->up.mode = f->down.mode = PATH_SOCKMAP;
			f->path = PATH_SOCKMAP;
		} else if (rc == 1) {
			/*
			 * The client sent FIN between the two insertions:
			 * upstream -> client runs in the kernel, the rest
			 * of client -> upstream is relayed here.
			 */
			f->down.mode = PATH_SOCKMAP;
			f->path = PATH_SPLICE;
			flow_set_reason(f, why);
			FLOW_STAT(f, fallbacks, ++);
			FLOW_STAT(f, fallback_reasons[fallback_of(why)], ++);
			if (relay_init(&f->up, PATH_SPLICE)) {
				flow_end(f, END_ERROR, 1);
				return;
			}
		} else {
			f->path = PATH_SPLICE;
			flow_set_reason(f, why);
			FLOW_STAT(f, fallbacks, ++);
			FLOW_STAT(f, fallback_reasons[fallback_of(why)], ++);
		}
	} else if (dp == DP_AUTO || dp == DP_SOCKMAP) {
		f->path = PATH_SPLICE;
		flow_set_reason(f, edge.kp_why);
		FLOW_STAT(f, fallbacks, ++);
		FLOW_STAT(f, fallback_reasons[FB_KERNEL_UNAVAILABLE], ++);
	} else {
		f->path = user_mode;
		flow_set_reason(f, dp == DP_COPY
					   ? "datapath: copy configured"
					   : "datapath: splice configured");
	}
	if (f->path != PATH_SOCKMAP && f->up.mode != PATH_SOCKMAP &&
	    f->down.mode != PATH_SOCKMAP) {
		if (relay_init(&f->up, f->path) ||
		    relay_init(&f->down, f->path)) {
			log_warn("flow %llu: cannot set up the relay",
				 (unsigned long long)f->id);
			flow_end(f, END_ERROR, 1);
			return;
		}
	}
	if (f->reason && (dp == DP_AUTO || dp == DP_SOCKMAP))
		log_info("flow id=%llu path=%s reason=%s",
			 (unsigned long long)f->id, path_str(f->path),
			 f->reason);
	FLOW_STAT(f, paths[f->path], ++);
	flow_progress(f);
}

/* Write the PROXY header and the bytes read while routing upstream. */
static void flow_send_prefix(struct flow *f)
{
	size_t total = f->hdr_len + f->pre_len;

	while (f->pre_sent < total) {
		struct iovec iov[2];
		int n = 0;
		ssize_t w;

		if (f->pre_sent < f->hdr_len) {
			iov[n].iov_base = f->hdr + f->pre_sent;
			iov[n].iov_len = f->hdr_len - f->pre_sent;
			n++;
			if (f->pre_len) {
				iov[n].iov_base = f->pre;
				iov[n].iov_len = f->pre_len;
				n++;
			}
		} else {
			iov[n].iov_base = f->pre + (f->pre_sent - f->hdr_len);
			iov[n].iov_len = total - f->pre_sent;
			n++;
		}
		struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)n};
		w = sendmsg(f->u.fd, &mh, MSG_NOSIGNAL);
		if (w == -1) {
			if (errno == EAGAIN || errno == EINTR) {
				side_set_events(&f->u, EPOLLOUT, 1);
				return;
			}
			log_warn("flow %llu: writing to upstream",
				 (unsigned long long)f->id);
			flow_end(f, END_UPSTREAM_RESET, 1);
			return;
		}
		f->pre_sent += (size_t)w;
	}
	flow_handoff(f);
}

/* ---- connect ---- */

static void flow_connect_next(struct flow *f);

static void flow_connected(struct flow *f)
{
	struct route *r = f->rt;
	socklen_t len = sizeof(f->u.local);
	int err;

	getsockname(f->u.fd, (struct sockaddr *)&f->u.local, &len);
	addr_unmap(&f->u.local);
	/* Before anything is written: the SYN counts in bytes_acked. */
	err = sock_sent_total(f->u.fd, &f->u.base_sent);
	if (err) {
		flow_end(f, END_ERROR, 1);
		return;
	}
	if (r->proxy != PROXY_NONE) {
		int n = proxy_build(r->proxy, (struct sockaddr *)&f->c.peer,
				    (struct sockaddr *)&f->c.local,
				    f->has_sni ? f->sni : NULL, f->hdr,
				    sizeof(f->hdr));
		if (n < 0) {
			log_warnx("flow %llu: cannot build the PROXY header",
				  (unsigned long long)f->id);
			flow_end(f, END_ERROR, 1);
			return;
		}
		f->hdr_len = (size_t)n;
	}
	f->state = FS_SENDING;
	side_set_events(&f->u, 0, 1);
	if ((f->lc->datapath == DP_AUTO || f->lc->datapath == DP_SOCKMAP) &&
	    edge.kp)
		f->kspliced =
			!kpath_splice_upstream(f, f->kwhy, sizeof(f->kwhy));
	flow_send_prefix(f);
}

/* Addresses not marked down by health checks, or all if none is up. */
static int addr_usable(const struct route *r, int i)
{
	int k;

	if (!r->health_check || !r->health[i].down)
		return 1;
	for (k = 0; k < r->naddrs; k++)
		if (!r->health[k].down)
			return 0;
	return 1;
}

static void flow_connect_next(struct flow *f)
{
	struct route *r = f->rt;

	while (f->addr_idx < r->naddrs) {
		struct sockaddr_storage *a = &r->addrs[f->addr_idx];
		uint64_t now = now_ms(), left;
		int k, rest = 0;

		if (!addr_usable(r, f->addr_idx)) {
			f->addr_idx++;
			continue;
		}
		/*
		 * Each remaining address gets an equal share of what is
		 * left of the connect budget, so a black-holed first
		 * address cannot use it all.
		 */
		for (k = f->addr_idx; k < r->naddrs; k++)
			rest += addr_usable(r, k);
		left = f->deadline_ms > now ? f->deadline_ms - now : 0;
		f->attempt_deadline_ms =
			now + left / (uint64_t)(rest ? rest : 1);
		int fd = socket(a->ss_family,
				SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		char as[ADDR_STR_MAX];

		if (fd == -1) {
			log_warn("flow %llu: socket",
				 (unsigned long long)f->id);
			if (errno == EMFILE || errno == ENFILE)
				break;
			f->addr_idx++;
			continue;
		}
		sock_tune(fd);
		if (connect(fd, (struct sockaddr *)a,
			    addr_len((struct sockaddr *)a)) == 0 ||
		    errno == EINPROGRESS) {
			f->u.fd = fd;
			f->u.peer = *a;
			f->upstream_addr_set = 1;
			f->state = FS_CONNECTING;
			side_set_events(&f->u, EPOLLOUT, 1);
			return;
		}
		log_warn("flow %llu: connect to %s", (unsigned long long)f->id,
			 addr_str((struct sockaddr *)a, as, sizeof(as)));
		close(fd);
		f->addr_idx++;
	}
	FLOW_STAT(f, connect_failures, ++);
	flow_end(f, END_CONNECT_FAILED, 0);
}

static void flow_start_connect(struct flow *f)
{
	f->deadline_ms = now_ms() + edge.cfg->connect_ms;
	f->addr_idx = 0;
	/* Client bytes wait in the kernel; watch only for errors. */
	side_set_events(&f->c, 0, 1);
	flow_connect_next(f);
}

static void flow_connect_event(struct flow *f, uint32_t events)
{
	char as[ADDR_STR_MAX];
	int err;

	if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
		return;
	err = sock_error(f->u.fd);
	if (!err && (events & (EPOLLERR | EPOLLHUP)))
		err = ECONNREFUSED;
	if (!err) {
		flow_connected(f);
		return;
	}
	log_warnx("flow %llu: connect to %s: %s", (unsigned long long)f->id,
		  addr_str((struct sockaddr *)&f->u.peer, as, sizeof(as)),
		  strerror(err));
	side_close(&f->u, 0);
	f->upstream_addr_set = 0;
	f->addr_idx++;
	flow_connect_next(f);
}

/* ---- ClientHello ---- */

static void flow_route(struct flow *f, int res)
{
	int ri;

	ri = route_select(f->lc, res == TLS_FOUND_SNI ? f->sni : NULL);
	if (ri < 0) {
		flow_set_reason(
			f, res == TLS_NOT_TLS  ? "not TLS, and no default route"
			   : res == TLS_NO_SNI ? "no SNI, and no default route"
					       : "no route matches the SNI");
		flow_end(f, END_NO_ROUTE, 0);
		return;
	}
	f->route = ri;
	f->rt = &f->lc->routes[ri];
	f->l->route_st[ri].accepted++;
	f->l->route_st[ri].active++;
	flow_start_connect(f);
}

static void flow_hello_event(struct flow *f, uint32_t events)
{
	size_t hello_end;
	int res;

	for (;;) {
		if (f->pre_len == f->pre_cap) {
			size_t ncap = f->pre_cap ? f->pre_cap * 2 : 4096;
			uint8_t *p;

			if (ncap > HELLO_BUF_MAX)
				break;
			p = realloc(f->pre, ncap);
			if (!p) {
				flow_end(f, END_ERROR, 1);
				return;
			}
			f->pre = p;
			f->pre_cap = ncap;
		}
		ssize_t n = recv(f->c.fd, f->pre + f->pre_len,
				 f->pre_cap - f->pre_len, 0);
		if (n == 0) {
			f->c.fin = 1;
			break;
		}
		if (n == -1) {
			if (errno == EAGAIN || errno == EINTR)
				break;
			flow_end(f, END_CLIENT_RESET, 1);
			return;
		}
		f->pre_len += (size_t)n;
	}
	res = tls_sni_parse(f->pre, f->pre_len, f->sni, &hello_end);
	switch (res) {
	case TLS_FOUND_SNI:
		f->has_sni = 1;
		/* fall through */
	case TLS_NO_SNI:
	case TLS_NOT_TLS:
		flow_route(f, res);
		return;
	case TLS_NEED_MORE:
		if (f->pre_len < HELLO_BUF_MAX && !f->c.fin)
			return;
		res = f->c.fin ? TLS_MALFORMED : TLS_TOO_LARGE;
		/* fall through */
	default:
		if (f->c.fin && f->pre_len == 0) {
			/* Connect and close (a port scan, a TCP check). */
			flow_end(f, END_CLIENT_CLOSED, 0);
			return;
		}
		{
			char why[96];

			snprintf(why, sizeof(why),
				 "ClientHello %s after %zu bytes%s",
				 f->c.fin ? "incomplete" : tls_result_str(res),
				 f->pre_len, f->c.fin ? ", client closed" : "");
			flow_set_reason(f, why);
		}
		f->l->st.hello_failures++;
		flow_end(f, f->c.fin ? END_CLIENT_CLOSED : END_HELLO_ERROR, 0);
		return;
	}
}

/* ---- running ---- */

/*
 * dir_drained - has every byte src received entered dst's send queue?
 * Returns 1, 0, or -errno.
 */
static int dir_drained(struct dir *d)
{
	uint64_t sent, recvd;
	int err;

	err = sock_sent_total(d->dst->fd, &sent);
	if (!err)
		err = sock_recv_total(d->src->fd, &recvd);
	if (err)
		return err;
	sent -= d->dst->base_sent;
	recvd -= 1; /* the FIN takes one sequence number */
	return sent >= recvd + d->injected;
}

static void dir_finish(struct flow *f, struct dir *d)
{
	if (shutdown(d->dst->fd, SHUT_WR) == -1 && errno != ENOTCONN)
		log_warn("flow %llu: shutdown", (unsigned long long)f->id);
	d->dst->shut = 1;
	d->done = 1;
	if (!f->half_closed_since)
		f->half_closed_since = now_ms();
}

static void flow_progress(struct flow *f)
{
	struct dir *dirs[2] = {&f->up, &f->down};
	int i, need_watch = 0;

	if (f->resetting) { /* the watch tick decides when to close */
		flow_update_events(f);
		return;
	}
	for (i = 0; i < 2; i++) {
		struct dir *d = dirs[i];

		if (d->done)
			continue;
		if (d->mode == PATH_SOCKMAP) {
			if (d->paused)
				need_watch = 1;
			if (!d->src->fin)
				continue;
			int r = dir_drained(d);
			if (r < 0) {
				flow_end(f,
					 d->dst == &f->u ? END_UPSTREAM_RESET
							 : END_CLIENT_RESET,
					 1);
				return;
			}
			if (r)
				dir_finish(f, d);
			else
				need_watch = 1;
		} else if (d->src->fin && !relay_has_pending(d)) {
			dir_finish(f, d);
		}
	}
	if (f->up.done && f->down.done) {
		flow_end(f, f->end ? f->end : END_CLIENT_CLOSED, 0);
		return;
	}
	if (need_watch || f->killing)
		watch(f);
	else
		unwatch(f);
	flow_update_events(f);
}

/*
 * A side was reset (or failed). What it sent before the RST may still be
 * on its way to the other side, in the kernel's queue for the peer or in
 * a relay buffer: a direct client would get those bytes, then the RST (a
 * mail server's "421" before it resets, for one). So: stop the direction
 * toward the dead socket, let the other drain into the peer's send queue
 * and be acknowledged (at most RESET_LINGER_MS), then reset the peer.
 */
#define RESET_LINGER_MS 1000

static void flow_reset_from(struct flow *f, struct side *s)
{
	struct dir *out = dir_from(f, s), *in = dir_to(f, s);

	if (f->resetting)
		return;
	f->resetting = 1;
	f->reset_cause = s == &f->c ? END_CLIENT_RESET : END_UPSTREAM_RESET;
	f->reset_dir = out;
	f->reset_deadline_ms = now_ms() + RESET_LINGER_MS;
	s->fin = 1;
	side_set_events(s, 0, 0);
	if (in->mode == PATH_SOCKMAP && !in->paused && !in->done)
		kpath_pause(in);
	in->done = 1; /* nothing more goes to the dead socket */
	watch(f);
	flow_update_events(f);
}

/* Returns 1 once the reset flow may be closed. */
static int flow_reset_drained(struct flow *f)
{
	struct dir *d = f->reset_dir;
	int64_t backlog = 0;
	int outq = 0;

	if (now_ms() >= f->reset_deadline_ms || d->done)
		return 1;
	if (d->mode == PATH_SOCKMAP) {
		if (kpath_backlog(d, &backlog))
			return 1; /* the peer is gone too */
		if (backlog > 0)
			return 0;
	} else if (relay_has_pending(d)) {
		return 0;
	}
	if (ioctl(d->dst->fd, SIOCOUTQ, &outq) == -1)
		return 1;
	return outq == 0;
}

static void flow_running_event(struct flow *f, struct side *s, uint32_t events)
{
	struct dir *out = dir_from(f, s), *in = dir_to(f, s);
	struct side *failed = NULL;
	int err;

	if (events & EPOLLERR || ((events & EPOLLHUP) && sock_error(s->fd))) {
		flow_reset_from(f, s);
		return;
	}
	if (out->mode != PATH_SOCKMAP &&
	    (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP))) {
		int had_fin = s->fin;

		err = relay_pump(out, &failed);
		if (err)
			goto fail;
		if (!had_fin && s->fin && !f->end)
			f->end = s == &f->c ? END_CLIENT_CLOSED
					    : END_UPSTREAM_CLOSED;
		f->last_ms = now_ms();
	}
	if (in->mode != PATH_SOCKMAP && (events & EPOLLOUT)) {
		err = relay_pump(in, &failed);
		if (err)
			goto fail;
		f->last_ms = now_ms();
	}
	if (out->mode == PATH_SOCKMAP && !s->fin &&
	    (events & (EPOLLRDHUP | EPOLLHUP))) {
		s->fin = 1;
		if (!f->end)
			f->end = s == &f->c ? END_CLIENT_CLOSED
					    : END_UPSTREAM_CLOSED;
	}
	flow_progress(f);
	return;
fail:
	if (failed == s && out->mode != PATH_SOCKMAP) {
		/* Reading the reset side failed: deliver what we hold. */
		flow_reset_from(f, s);
		return;
	}
	flow_end(f, failed == &f->c ? END_CLIENT_RESET : END_UPSTREAM_RESET, 1);
}

static void side_event(struct handler *h, uint32_t events)
{
	struct side *s = container_of(h, struct side, h);
	struct flow *f = s->f;

	switch (f->state) {
	case FS_HELLO:
		if (events & EPOLLERR) {
			flow_end(f, END_CLIENT_RESET, 1);
			return;
		}
		flow_hello_event(f, events);
		return;
	case FS_CONNECTING:
	case FS_SENDING:
		if (s == &f->c) {
			if (events & (EPOLLERR | EPOLLHUP))
				flow_end(f, END_CLIENT_RESET, 1);
			return;
		}
		if (f->state == FS_CONNECTING)
			flow_connect_event(f, events);
		else if (events & (EPOLLERR | EPOLLHUP))
			flow_end(f, END_UPSTREAM_RESET, 1);
		else
			flow_send_prefix(f);
		return;
	case FS_RUNNING:
		flow_running_event(f, s, events);
		return;
	default:
		return;
	}
}

/*
 * A connection over a limit is accepted and closed at once: never queued
 * without bound. One log line per second at most says how many.
 */
static int flow_over_limit(struct listener *l, int fd,
			   const struct sockaddr_storage *peer,
			   struct source_count **srcp)
{
	struct edge_config *cfg = edge.cfg;
	struct source_count *sc = NULL;
	int cause = 0;

	*srcp = NULL;
	if (edge.nflows >= cfg->max_flows)
		cause = END_LIMIT_FLOWS;
	else if (l->cfg->max_flows && l->st.active >= l->cfg->max_flows)
		cause = END_LIMIT_LISTENER;
	else if (cfg->per_source) {
		struct sockaddr_storage p = *peer;

		addr_unmap(&p);
		sc = source_get(&p);
		if (sc && sc->n >= cfg->per_source) {
			cause = END_LIMIT_SOURCE;
			sc = NULL;
		}
	}
	if (!cause) {
		if (sc)
			sc->n++;
		*srcp = sc;
		return 0;
	}
	l->st.accepted++;
	l->st.closed[cause]++;
	close(fd);
	if (now_ms() - edge.limit_log_ms >= 1000) {
		char a[ADDR_STR_MAX];

		log_warnx("listener %s: %s reached, closing %s (%llu more "
			  "closed in the last second)",
			  l->cfg->name, end_cause_str(cause),
			  addr_str((const struct sockaddr *)peer, a, sizeof(a)),
			  (unsigned long long)edge.limit_log_suppressed);
		edge.limit_log_ms = now_ms();
		edge.limit_log_suppressed = 0;
	} else {
		edge.limit_log_suppressed++;
	}
	return 1;
}

void flow_accept(struct listener *l, int fd,
		 const struct sockaddr_storage *peer)
{
	struct source_count *src;
	struct flow *f;
	socklen_t len;

	if (flow_over_limit(l, fd, peer, &src))
		return;
	f = calloc(1, sizeof(*f));
	if (!f) {
		source_put(src);
		close(fd);
		return;
	}
	f->src = src;
	f->id = ++edge.next_id;
	f->l = l;
	f->cfg = edge.cfg;
	f->lc = l->cfg;
	edge.cfg->refs++;
	f->route = -1;
	f->c.fd = fd;
	f->u.fd = -1;
	f->c.slot = f->u.slot = -1;
	f->c.events = f->u.events = NOT_REGISTERED;
	f->c.h.fn = side_event;
	f->u.h.fn = side_event;
	f->c.f = f->u.f = f;
	f->up.src = &f->c;
	f->up.dst = &f->u;
	f->down.src = &f->u;
	f->down.dst = &f->c;
	f->up.pipe[0] = f->up.pipe[1] = -1;
	f->down.pipe[0] = f->down.pipe[1] = -1;
	f->up.mode = f->down.mode = PATH_COPY;
	f->start_ms = f->last_ms = now_ms();
	f->c.peer = *peer;
	addr_unmap(&f->c.peer);
	len = sizeof(f->c.local);
	getsockname(fd, (struct sockaddr *)&f->c.local, &len);
	addr_unmap(&f->c.local);
	sock_tune(fd);
	sock_sent_total(fd, &f->c.base_sent);
	list_add_tail(&edge.flows, &f->all);
	edge.nflows++;
	l->st.accepted++;
	l->st.active++;

	if (l->cfg->sni_routing) {
		f->state = FS_HELLO;
		f->deadline_ms = f->start_ms + edge.cfg->client_hello_ms;
		side_set_events(&f->c, EPOLLIN | EPOLLRDHUP, 1);
		return;
	}
	f->route = l->cfg->default_route;
	f->rt = &f->lc->routes[f->route];
	l->route_st[f->route].accepted++;
	l->route_st[f->route].active++;
	flow_start_connect(f);
}

/*
 * datapath auto: a busy direction whose messages are not large leaves the
 * kernel. Each redirected skb is sent on its own by a kernel worker, so
 * per-message costs decide (tests/bench/README.md, Findings): 1 KiB
 * writes ran at 0.34 Gbit/s in the kernel against 1.8-2.0 in the
 * userspace relays, 16 KiB writes at 4.6-5.0 against 8.9-11.7 for splice;
 * 128 KiB writes reach the verdict as ~64 KiB skbs and keep up in the
 * kernel. Small messages go to the copy relay (one read and one write
 * beat two splices there), medium ones to splice. A direction is
 * measured over windows of at least AUTO_WINDOW_MS; it counts as busy
 * from AUTO_MIN_RATE messages a second (an interactive flow never is).
 */
#define AUTO_WINDOW_MS 20
#define AUTO_MIN_RATE 20000 /* messages per second */
#define AUTO_KERNEL_MSG 32768 /* average message size that stays */
#define AUTO_COPY_MSG 8192 /* below: copy relay; else splice */

static const char *dir_name(struct flow *f, struct dir *d)
{
	return d == &f->up ? "client->upstream" : "upstream->client";
}

/*
 * dir_leave_kernel - pause d; once its kernel queue has drained it
 * continues in the relay that suits messages of @avg bytes (0: unknown):
 * copy below AUTO_COPY_MSG, else splice. Counted under fallback @fb; the
 * caller gives the reason. Returns 0, or -1 if the pause failed.
 */
static int dir_leave_kernel(struct flow *f, struct dir *d, uint64_t avg, int fb)
{
	if (kpath_pause(d))
		return -1;
	d->to_user = 1;
	d->user_mode = avg && avg < AUTO_COPY_MSG ? PATH_COPY : PATH_SPLICE;
	FLOW_STAT(f, fallback_reasons[fb], ++);
	watch(f);
	return 0;
}

/*
 * auto_judge - one window of a kernel direction: @dm messages, @db bytes
 * in @dt_us microseconds. A busy direction of messages under
 * AUTO_KERNEL_MSG leaves the kernel. Returns 1 if it did.
 */
static int auto_judge(struct flow *f, struct dir *d, uint64_t dm, uint64_t db,
		      uint64_t dt_us)
{
	char why[160];

	if (!dt_us)
		dt_us = 1;
	if (!dm || dm * 1000000 < AUTO_MIN_RATE * dt_us ||
	    db / dm >= AUTO_KERNEL_MSG)
		return 0;
	if (dir_leave_kernel(f, d, db / dm, FB_AUTO_SMALL))
		return 0;
	snprintf(why, sizeof(why),
		 "auto: %s moves small messages (%llu B average, %llu/s): "
		 "relayed with %s",
		 dir_name(f, d), (unsigned long long)(db / dm),
		 (unsigned long long)(dm * 1000000 / dt_us),
		 path_str(d->user_mode));
	flow_set_reason(f, why);
	log_info("flow id=%llu %s", (unsigned long long)f->id, why);
	return 1;
}

/*
 * A direction's redirected bytes passed its limit: measure what the kernel
 * holds for it. Above the high mark (half of limits.kernel_backlog)
 * the direction leaves the kernel: its socket is taken out of sock_splice
 * (TCP flow control then throttles the sender) and, once the queue has
 * drained into the peer, the rest is relayed in userspace, where the
 * socket buffers bound the memory.
 */
void flow_kernel_event(int slot)
{
	struct flow *f;
	struct dir *d;
	int64_t backlog;

	if (slot < 0 || slot >= edge.nslots || !(f = edge.slot_flow[slot]))
		return;
	d = slot == f->c.slot ? &f->up : &f->down;
	if (d->mode != PATH_SOCKMAP || d->paused || d->done)
		return;
	/*
	 * datapath auto: the first AUTO_PROBE_BYTES are the first window. A
	 * 1 KiB writer passes it within a few ms, long before the 20 ms check,
	 * and the less is queued when it leaves, the sooner the kernel (slow
	 * at small messages) has drained it: 20 ms of 1 KiB writes queued ~4
	 * MB, ~90 ms of draining at 0.36 Gbit/s.
	 */
	if (!d->probed && f->state == FS_RUNNING &&
	    f->lc->datapath == DP_AUTO && !f->killing) {
		d->probed = 1;
		uint64_t last = kpath_dir_last_ns(slot);

		/* The window ends at its last message (same clock). */
		if (auto_judge(
			    f, d, kpath_dir_skbs(slot), kpath_dir_bytes(slot),
			    last > f->running_ns ? (last - f->running_ns) / 1000
						 : 1))
			return;
	}
	if (kpath_backlog(d, &backlog))
		return;
	if (backlog > (int64_t)kpath_high()) {
		uint64_t msgs = kpath_dir_skbs(slot);
		char why[160];

		if (dir_leave_kernel(f, d,
				     msgs ? kpath_dir_bytes(slot) / msgs : 0,
				     FB_KERNEL_BACKLOG))
			return;
		snprintf(why, sizeof(why),
			 "%s: kernel queue passed %lld bytes (the receiver is "
			 "slower): relayed with %s",
			 dir_name(f, d), (long long)backlog,
			 path_str(d->user_mode));
		flow_set_reason(f, why);
		log_debug("flow %llu: %s", (unsigned long long)f->id, why);
		return;
	}
	kpath_set_limit(d, kpath_dir_bytes(slot) +
				   (kpath_high() -
				    (uint64_t)(backlog > 0 ? backlog : 0)));
}

/*
 * dir_to_user - move a paused kernel direction to the userspace relay.
 * Only once the kernel queue is empty: bytes relayed here would otherwise
 * overtake bytes still waiting in the peer's psock queue.
 */
static int dir_to_user(struct flow *f, struct dir *d)
{
	int err = relay_init(d, d->user_mode ? d->user_mode : PATH_SPLICE);

	if (err)
		return err;
	d->paused = 0;
	d->to_user = 0;
	/* In the kernel path fin meant "FIN seen"; the relay must read it. */
	d->src->fin = 0;
	log_debug("flow %llu: %s continues in userspace",
		  (unsigned long long)f->id, d == &f->up ? "up" : "down");
	return 0;
}

/*
 * Read and drop what a killed flow's socket still holds, so that close()
 * sends FIN rather than RST (unread data makes the kernel reset).
 */
static void side_discard(struct side *s)
{
	char buf[16384];
	int i;

	for (i = 0; i < 256; i++)
		if (recv(s->fd, buf, sizeof(buf), MSG_DONTWAIT) <= 0)
			break;
}

/* A killed flow: once nothing is queued either way, FIN both peers. */
static void flow_kill_tick(struct flow *f)
{
	struct dir *dirs[2] = {&f->up, &f->down};
	int i;

	for (i = 0; i < 2; i++) {
		struct dir *d = dirs[i];
		int64_t backlog = 0;

		if (d->done)
			continue;
		if (d->mode == PATH_SOCKMAP) {
			if (kpath_backlog(d, &backlog) == 0 && backlog > 0)
				return;
		} else if (relay_has_pending(d)) {
			return;
		}
	}
	for (i = 0; i < 2; i++)
		if (!dirs[i]->done)
			dir_finish(f, dirs[i]);
	side_discard(&f->c);
	side_discard(&f->u);
	flow_end(f, END_KILLED, 0);
}

/*
 * flow_kill - edgectl kill. With @reset, abort both sides with RST now.
 * Otherwise stop taking new bytes, let what is queued reach each peer,
 * then FIN both ways and close. Returns 0.
 */
int flow_kill(struct flow *f, int reset)
{
	struct dir *dirs[2] = {&f->up, &f->down};
	int i;

	if (reset || f->state != FS_RUNNING) {
		flow_end(f, END_KILLED, reset);
		return 0;
	}
	f->killing = 1;
	for (i = 0; i < 2; i++)
		if (dirs[i]->mode == PATH_SOCKMAP && !dirs[i]->paused &&
		    !dirs[i]->done)
			kpath_pause(dirs[i]);
	watch(f);
	flow_update_events(f);
	return 0;
}

static void flow_watch_tick(struct flow *f)
{
	struct dir *dirs[2] = {&f->up, &f->down};
	int i;

	if (f->killing) {
		flow_kill_tick(f);
		return;
	}
	if (f->resetting) {
		if (flow_reset_drained(f))
			flow_end(f, f->reset_cause, 1);
		return;
	}
	for (i = 0; i < 2; i++) {
		struct dir *d = dirs[i];
		int64_t backlog;

		if (!d->to_user || kpath_backlog(d, &backlog) || backlog > 0)
			continue;
		if (dir_to_user(f, d)) {
			flow_end(f, END_ERROR, 1);
			return;
		}
	}
	flow_progress(f);
}

static void flow_auto_check(struct flow *f, uint64_t now)
{
	struct dir *dirs[2] = {&f->up, &f->down};
	int i;

	if (f->lc->datapath != DP_AUTO || f->killing)
		return;
	for (i = 0; i < 2; i++) {
		struct dir *d = dirs[i];
		uint64_t msgs, bytes, dm, db, dt;

		if (d->mode != PATH_SOCKMAP || d->paused || d->done)
			continue;
		if (!d->seen_ms) {
			d->seen_ms = now;
			continue;
		}
		dt = ms_since(now, d->seen_ms);
		if (dt < AUTO_WINDOW_MS)
			continue;
		msgs = kpath_dir_skbs(d->src->slot);
		bytes = kpath_dir_bytes(d->src->slot);
		dm = msgs - d->seen_msgs;
		db = bytes - d->seen_bytes;
		d->seen_msgs = msgs;
		d->seen_bytes = bytes;
		d->seen_ms = now;
		auto_judge(f, d, dm, db, dt * 1000);
	}
}

void flow_tick(uint64_t now)
{
	static uint64_t last_slow, last_auto;
	struct list *it, *next;

	for (it = edge.watch.next; it != &edge.watch; it = next) {
		next = it->next;
		flow_watch_tick(container_of(it, struct flow, watch));
	}
	if (now - last_auto >= AUTO_WINDOW_MS) {
		last_auto = now;
		for (it = edge.flows.next; it != &edge.flows; it = it->next) {
			struct flow *f = container_of(it, struct flow, all);

			if (f->state == FS_RUNNING)
				flow_auto_check(f, now);
		}
	}
	if (now - last_slow < 100)
		return;
	last_slow = now;
	for (it = edge.flows.next; it != &edge.flows; it = next) {
		struct flow *f = container_of(it, struct flow, all);
		uint64_t last;

		next = it->next;
		switch (f->state) {
		case FS_HELLO:
			if (now >= f->deadline_ms) {
				f->l->st.hello_timeouts++;
				flow_end(f, END_HELLO_TIMEOUT, 0);
			}
			break;
		case FS_CONNECTING:
			if (now < f->deadline_ms &&
			    now >= f->attempt_deadline_ms &&
			    f->addr_idx + 1 < f->rt->naddrs) {
				char as[ADDR_STR_MAX];

				log_warnx(
					"flow %llu: connect to %s: timed out, "
					"trying the next address",
					(unsigned long long)f->id,
					addr_str((struct sockaddr *)&f->u.peer,
						 as, sizeof(as)));
				side_close(&f->u, 0);
				f->upstream_addr_set = 0;
				f->addr_idx++;
				flow_connect_next(f);
				break;
			}
			/* fall through */
		case FS_SENDING:
			if (now >= f->deadline_ms) {
				FLOW_STAT(f, connect_failures, ++);
				flow_end(f, END_CONNECT_TIMEOUT, 0);
			}
			break;
		case FS_RUNNING:
			last = flow_last_ms(f);
			if (edge.cfg->idle_ms &&
			    ms_since(now, last) >= edge.cfg->idle_ms) {
				flow_end(f, END_IDLE_TIMEOUT, 0);
				break;
			}
			if (edge.cfg->half_closed_ms &&
			    (f->c.fin || f->u.fin)) {
				uint64_t since = f->half_closed_since;

				if (!since) /* a FIN seen, not yet passed on */
					since = f->half_closed_since = now;
				if (last > since)
					since = last;
				/* The watch pass may have set it later. */
				if (ms_since(now, since) >=
				    edge.cfg->half_closed_ms)
					flow_end(f, END_HALF_CLOSED_TIMEOUT, 1);
			}
			break;
		default:
			break;
		}
	}
}

void flow_close_all(int cause)
{
	while (!list_empty(&edge.flows)) {
		struct flow *f =
			container_of(edge.flows.next, struct flow, all);

		flow_end(f, cause, 0);
	}
}

struct flow *flow_find(uint64_t id)
{
	struct list *it;

	for (it = edge.flows.next; it != &edge.flows; it = it->next) {
		struct flow *f = container_of(it, struct flow, all);

		if (f->id == id)
			return f;
	}
	return NULL;
}
