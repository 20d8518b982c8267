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
#define ROUTE_ADDRS_MAX 16
#define LISTENER_BINDS_MAX 16
#define DEFAULT_CONTROL_SOCKET "/run/edge/ctl.sock"

enum datapath {
	DP_INHERIT = -1, /* listener: use the top-level setting */
	DP_AUTO = 0,     /* sockmap, falling back to splice per flow */
	DP_SOCKMAP,
	DP_SPLICE,
	DP_COPY,
};

const char *datapath_str(int dp);

struct route {
	char name[NAME_MAX_LEN]; /* the configured name, or its index */
	int named;
	char **sni; /* lower-cased patterns without trailing dot */
	size_t nsni;
	char upstream[300]; /* as written, after ${VAR} expansion */
	char host[256];
	uint16_t port;
	struct sockaddr_storage addrs[ROUTE_ADDRS_MAX];
	int naddrs;
	int proxy; /* enum proxy_version */
};

struct listener_cfg {
	char name[NAME_MAX_LEN];
	struct sockaddr_storage binds[LISTENER_BINDS_MAX];
	int nbinds;
	int datapath; /* resolved: never DP_INHERIT after loading */
	struct route *routes;
	int nroutes;
	int sni_routing;   /* some route has sni: read the ClientHello */
	int default_route; /* index of the first route without sni, or -1 */
};

struct edge_config {
	char path[1024];
	char control_socket[108];
	long control_gid; /* control_socket_group, or -1 */
	int metrics;      /* metrics: serve Prometheus text at metrics_addr */
	struct sockaddr_storage metrics_addr;
	int datapath;
	uint64_t connect_ms;
	uint64_t client_hello_ms;
	uint64_t idle_ms;        /* 0: none */
	uint64_t half_closed_ms; /* 0: none */
	uint64_t kernel_backlog; /* bytes queued in the kernel per direction */
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

/*
 * route_select - the route a connection to @l takes for @sni (NULL: no
 * SNI or not TLS). Returns the route index or -1 (no match, no default).
 */
int route_select(const struct listener_cfg *l, const char *sni);

#endif
