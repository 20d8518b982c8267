/* SPDX-License-Identifier: MIT */
/*
 * edged.h - the daemon's objects: event handlers, listeners, flows, and
 * the process-wide state. One concern per file:
 *   loop.c      epoll, timer tick, signals
 *   listener.c  bound sockets, accept
 *   flow.c      a flow's life: ClientHello, connect, PROXY header,
 *               hand-off, end of stream, close log line
 *   relay.c     the userspace data paths (splice(2) and read/write)
 *   sockmap.c   the kernel data path (BPF skeleton, maps, backpressure)
 *   ctl.c       the control socket (edgectl)
 *   main.c      options, start-up, shutdown
 */
#ifndef EDGE_EDGED_H
#define EDGE_EDGED_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "config.h"
#include "proxy.h"
#include "tls.h"

#define container_of(ptr, type, member) \
	((type *)((char *)(ptr)-offsetof(type, member)))

struct handler {
	void (*fn)(struct handler *h, uint32_t events);
};

struct list {
	struct list *next, *prev;
};

static inline void list_init(struct list *l)
{
	l->next = l->prev = l;
}

static inline int list_empty(const struct list *l)
{
	return l->next == l;
}

static inline void list_add_tail(struct list *l, struct list *n)
{
	n->prev = l->prev;
	n->next = l;
	l->prev->next = n;
	l->prev = n;
}

static inline void list_del(struct list *n)
{
	if (!n->next)
		return;
	n->prev->next = n->next;
	n->next->prev = n->prev;
	n->next = n->prev = NULL;
}

/* How a flow ended (the close log line's end=, edgectl stats). */
enum end_cause {
	END_NONE = 0,
	END_CLIENT_CLOSED,
	END_UPSTREAM_CLOSED,
	END_CLIENT_RESET,
	END_UPSTREAM_RESET,
	END_CONNECT_FAILED,
	END_CONNECT_TIMEOUT,
	END_HELLO_TIMEOUT,
	END_HELLO_ERROR,
	END_NO_ROUTE,
	END_IDLE_TIMEOUT,
	END_HALF_CLOSED_TIMEOUT,
	END_KILLED,
	END_SHUTDOWN,
	END_ERROR,
	END_LIMIT_FLOWS, /* limits.max_flows */
	END_LIMIT_LISTENER, /* the listener's max_flows */
	END_LIMIT_SOURCE, /* limits.per_source */
	END__COUNT
};
const char *end_cause_str(int cause);

enum path_kind { PATH_SOCKMAP = 0, PATH_SPLICE, PATH_COPY, PATH__COUNT };

/* Why a flow, or one direction of it, is not in the kernel. */
enum fallback_reason {
	FB_KERNEL_UNAVAILABLE, /* BPF not loaded */
	FB_CLIENT_HALF_CLOSED, /* client FIN before the hand-off */
	FB_UPSTREAM_HALF_CLOSED,
	FB_REFUSED, /* other sockmap errors, no free slot */
	FB_KERNEL_BACKLOG, /* left the kernel: queue over its bound */
	FB_AUTO_SMALL, /* left the kernel: auto, small messages */
	FB__COUNT
};
const char *fallback_str(int reason);
const char *path_str(int path);

struct listener_stats {
	uint64_t accepted;
	uint64_t active;
	uint64_t closed[END__COUNT];
	uint64_t bytes_up, bytes_down;
	uint64_t connect_failures;
	uint64_t hello_failures;
	uint64_t hello_timeouts;
	uint64_t paths[PATH__COUNT];
	uint64_t fallbacks; /* flows not spliced at the hand-off */
	uint64_t fallback_reasons[FB__COUNT]; /* and directions that left */
};

struct listener_sock {
	struct handler h;
	struct listener *l;
	int fd;
	struct sockaddr_storage addr;
};

struct listener {
	struct listener_cfg *cfg; /* in the current configuration */
	int retired; /* removed by a reload, kept for its flows */
	struct listener_sock socks[LISTENER_BINDS_MAX];
	int nsocks;
	struct listener_stats st;
	struct listener_stats *route_st; /* per route (accepted = routed) */
};

/* One socket of a flow. */
struct side {
	struct handler h;
	struct flow *f;
	int fd;
	int slot; /* kernel path slot, -1 if none */
	uint64_t cookie; /* SO_COOKIE, once in sock_slot (0: not) */
	uint32_t events; /* epoll mask registered, or (uint32_t)-1 if not */
	int fin; /* the peer sent FIN (we read EOF) */
	int shut; /* we sent FIN (shutdown SHUT_WR) */
	uint64_t base_sent; /* tcpi_bytes_acked + outq before we wrote */
	struct sockaddr_storage peer; /* remote address */
	struct sockaddr_storage local; /* our address */
};

/*
 * One direction of a flow: bytes read from src are written to dst.
 * In the kernel (sockmap) or in userspace (splice or copy).
 */
struct dir {
	struct side *src, *dst;
	int mode; /* enum path_kind */
	int paused; /* kernel: src deleted from sock_splice */
	int to_user; /* paused: continue in userspace once drained */
	int done; /* FIN propagated (dst shut) */
	uint64_t injected; /* bytes userspace wrote to dst not from src */
	uint64_t user_bytes; /* src bytes userspace moved (prefix, relay) */
	uint64_t seen_msgs, seen_bytes; /* kernel counters at the last check */
	uint64_t seen_ms; /* time of the last check (datapath auto) */
	int user_mode; /* relay to continue with after to_user (0: splice) */
	int probed; /* auto: the first AUTO_PROBE_BYTES were judged */
	/* userspace relay */
	char *buf;
	size_t buf_off, buf_len;
	int pipe[2];
	size_t pipe_len;
};

enum flow_state {
	FS_HELLO, /* reading the ClientHello */
	FS_CONNECTING, /* connecting upstream */
	FS_SENDING, /* writing PROXY header + prefix upstream */
	FS_RUNNING, /* both directions moving */
	FS_CLOSED,
};

struct flow {
	uint64_t id;
	struct listener *l; /* runtime listener (stats, may be retired) */
	struct edge_config *cfg; /* the configuration it was accepted under */
	struct listener_cfg *lc; /* its listener in that configuration */
	struct route *rt; /* its route there, NULL before routing */
	int route; /* index in l->route_st (current config), -1 if none */
	struct side c, u;
	struct dir up, down; /* up: client -> upstream */
	int state;
	int path; /* enum path_kind chosen at hand-off */
	const char *reason; /* why not sockmap, or NULL */
	char *reason_buf;
	char sni[TLS_SNI_MAX];
	int has_sni;
	/* ClientHello bytes read, then PROXY header + those bytes to send */
	uint8_t *pre;
	size_t pre_len, pre_cap, pre_sent;
	uint8_t hdr[PROXY_HDR_MAX];
	size_t hdr_len;
	int addr_idx; /* upstream address being tried */
	int kspliced; /* kpath_splice_upstream() done */
	char kwhy[200]; /* why the kernel path was refused, if it was */
	int upstream_addr_set;
	uint64_t start_ms, deadline_ms, end_ms, last_ms;
	uint64_t running_ns; /* hand-off done (now_ns()) */
	uint64_t half_closed_since;
	uint64_t attempt_deadline_ms; /* this upstream address's share */
	struct source_count *src; /* per_source accounting, or NULL */
	int end;
	struct list all; /* edge.flows */
	struct list watch; /* edge.watch: draining or paused */
	int watched;
	int killing; /* edgectl kill: finish what is queued, then FIN */
	int resetting; /* a side was reset: deliver its last bytes, then RST */
	int reset_cause;
	struct dir *reset_dir; /* the direction out of the reset side */
	uint64_t reset_deadline_ms;
};

struct kpath; /* sockmap.c */

/* datapath auto: the kernel reports a direction's first this many bytes */
#define AUTO_PROBE_BYTES (256u << 10)

struct edge {
	struct edge_config *cfg;
	int epfd;
	struct listener **listeners; /* current, in configuration order */
	int nlisteners;
	struct list flows;
	struct list watch;
	struct list dead; /* closed flows, freed after the event batch */
	uint64_t nflows;
	uint64_t next_id;
	uint64_t start_ms;
	struct kpath *kp; /* NULL: kernel path unavailable */
	char kp_why[256]; /* why not */
	int stopping; /* leave the loop */
	int draining; /* SIGTERM: no new flows, wait for live ones */
	uint64_t drain_deadline_ms;
	uint64_t watchdog_usec;
	uint64_t watchdog_last_ms;
	uint64_t limit_log_ms; /* rate limit for "limit reached" lines */
	uint64_t limit_log_suppressed;
	uint64_t accept_resume_ms;
	struct flow **slot_flow; /* slot -> flow */
	int reload_pending; /* SIGHUP or edgectl reload, after the batch */
	struct ctl_client *reload_client; /* waiting for the answer */
	int nslots;
};

extern struct edge edge;

/* loop.c */
int loop_add(int fd, uint32_t events, struct handler *h);
int loop_mod(int fd, uint32_t events, struct handler *h);
void loop_del(int fd);
int loop_run(void);
void loop_want_fast_tick(void);

/* listener.c */
int listeners_open(void);
void listeners_close(void);
void listeners_pause(int pause);
void listeners_free(void);
void listener_unref(struct listener *l);
struct strbuf;
int listeners_reload(struct edge_config *ncfg, struct strbuf *err);

/* main.c */
int edge_reload(struct strbuf *err);

/* flow.c */
void flow_accept(struct listener *l, int fd,
		 const struct sockaddr_storage *peer);
void flow_tick(uint64_t now);
void flow_reap(void);
void flow_close_all(int cause);
void flow_kernel_event(int slot);
struct flow *flow_find(uint64_t id);
uint64_t flow_bytes_up(struct flow *f);
uint64_t flow_bytes_down(struct flow *f);
uint64_t flow_last_ms(struct flow *f);
int flow_kill(struct flow *f, int reset);
const char *flow_state_str(struct flow *f);

/* relay.c: move what is readable/writable; returns -errno on a socket error
 * (the side that failed in *failed), 0 otherwise. */
int relay_init(struct dir *d, int mode);
int relay_pump(struct dir *d, struct side **failed);
void relay_free(struct dir *d);
int relay_has_pending(const struct dir *d);

/* sockmap.c */
int kpath_open(int slots, char *why, size_t whylen);
void kpath_close(void);
int kpath_splice_upstream(struct flow *f, char *why, size_t whylen);
int kpath_splice_client(struct flow *f, char *why, size_t whylen);
void kpath_unsplice(struct flow *f, int closing);
uint64_t kpath_dir_bytes(int slot);
uint64_t kpath_dir_last_ns(int slot);
uint64_t kpath_dir_skbs(int slot);
int kpath_backlog(struct dir *d, int64_t *backlog);
int kpath_pause(struct dir *d);
void kpath_set_limit(struct dir *d, uint64_t limit);
uint64_t kpath_high(void);
void kpath_set_bound(uint64_t bytes);
int kpath_ring_fd(void);
void kpath_ring_consume(void);
int sock_sent_total(int fd, uint64_t *sent);
int sock_recv_total(int fd, uint64_t *recvd);
int kpath_kick(int fd);

/* sys.c */
void sd_notify_msg(const char *msg);
uint64_t sd_watchdog_usec(void);
int drop_privileges(const char *user);

/* resolve.c */
void resolve_tick(uint64_t now);
void resolve_stop(void);

/* health.c */
void health_start(struct edge_config *cfg);
void health_stop(void);
void health_tick(uint64_t now);

/* ctl.c */
int ctl_open(const char *path, long gid);
void ctl_reload_done(struct ctl_client *cc, int rc, const char *err);
int ctl_chown(uid_t uid, gid_t gid);
void ctl_close(void);

/* stats.c */
void stats_json(struct strbuf *sb);
void stats_prometheus(struct strbuf *sb);
void stats_text(struct strbuf *sb);

/* metrics.c */
int metrics_open(const struct sockaddr_storage *addr);
void metrics_close(void);

#endif
