/* SPDX-License-Identifier: MIT */
/*
 * config.h - the route file: loading (libcyaml), ${VAR} expansion,
 * validation with FILE:LINE:COL messages, and upstream resolution.
 */
#ifndef EDGE_CONFIG_H
#define EDGE_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "util.h"

#define NAME_MAX_LEN 64
#define ROUTE_ADDRS_MAX 32
#define ROUTE_UPSTREAMS_MAX 8
#define LISTENER_BINDS_MAX 16
#define DEFAULT_CONTROL_SOCKET "/run/edge/ctl.sock"

enum datapath {
	DP_AUTO = 0, /* sockmap, falling back to splice per flow */
	DP_SOCKMAP,
	DP_SPLICE,
	DP_COPY,
};

const char *datapath_str(int dp);

struct upstream_cfg {
	char text[300]; /* as written, after ${VAR} expansion */
	char host[256];
	uint16_t port;
};

/* Per-address health, written by the health checker (health.c). */
struct addr_health {
	int down; /* marked down by health checks */
	int streak; /* consecutive results of the current kind */
	int last_ok; /* result of the last check */
};

struct route {
	char name[NAME_MAX_LEN]; /* the configured name, or its index */
	int named;
	char **sni; /* lower-cased patterns without trailing dot */
	size_t nsni;
	char upstream[300]; /* display: the upstreams, comma-separated */
	char host[256]; /* the first upstream's host and port */
	uint16_t port;
	struct upstream_cfg ups[ROUTE_UPSTREAMS_MAX]; /* tried in order */
	int nups;
	/* every address of every upstream, in failover order */
	struct sockaddr_storage addrs[ROUTE_ADDRS_MAX];
	int addr_up[ROUTE_ADDRS_MAX]; /* index in ups[] */
	int naddrs;
	struct addr_health health[ROUTE_ADDRS_MAX];
	int proxy; /* enum proxy_version */
	int health_check; /* active TCP checks configured */
	uint64_t hc_interval_ms, hc_timeout_ms;
	int hc_rise, hc_fall;
};

struct listener_cfg {
	char name[NAME_MAX_LEN];
	struct sockaddr_storage binds[LISTENER_BINDS_MAX];
	int nbinds;
	int datapath; /* the listener's, or the top-level one */
	struct route *routes;
	int nroutes;
	int sni_routing; /* some route has sni: read the ClientHello */
	int default_route; /* index of the first route without sni, or -1 */
	uint64_t max_flows; /* 0: no per-listener limit */
};

struct edge_config {
	int refs; /* flows accepted under it, +1 while current */
	uint64_t generation; /* unique per load */
	uint64_t resolve_interval_ms; /* re-resolve host names; 0: never */
	char path[1024];
	char control_socket[108];
	long control_gid; /* control_socket_group, or -1 */
	int metrics; /* metrics: serve Prometheus text at metrics_addr */
	struct sockaddr_storage metrics_addr;
	int datapath;
	uint64_t connect_ms;
	uint64_t client_hello_ms;
	uint64_t idle_ms; /* 0: none */
	uint64_t half_closed_ms; /* 0: none */
	uint64_t kernel_backlog; /* bytes queued in the kernel per direction */
	uint64_t kernel_sndbuf; /* kernel-path send buffer; 0: autotune */
	uint64_t max_flows; /* global limit on live flows */
	uint64_t
		per_source; /* live flows per client address (v6: /64); 0 off */
	uint64_t drain_timeout_ms;
	char user[64]; /* drop to this user after start-up, or "" */
	struct listener_cfg *listeners;
	int nlisteners;
};

/*
 * config_load - read, expand, validate and resolve the route file @path.
 * On success returns 0 and *out (free with config_free()). On error returns
 * -EINVAL (or -ENOMEM) and appends one "FILE:LINE:COL: message\n" line per
 * problem to @errs.
 */
int config_load(const char *path, struct edge_config **out,
		struct strbuf *errs);
void config_free(struct edge_config *cfg);
/* config_unref - drop a reference; frees the configuration at zero. */
void config_unref(struct edge_config *cfg);

/*
 * route_select - the route a connection to @l takes for @sni (NULL: no
 * SNI or not TLS). Returns the route index or -1 (no match, no default).
 */
int route_select(const struct listener_cfg *l, const char *sni);

/*
 * upstream_resolve - resolve @u (blocking getaddrinfo) into @out (at most
 * @max). Returns the number of addresses, or -ENOENT with *why set.
 */
int upstream_resolve(const struct upstream_cfg *u, struct sockaddr_storage *out,
		     int max, const char **why);

/* For the fuzzer: resolve IP literals only (no DNS, no /etc/hosts). */
extern int config_literal_only;

#endif
