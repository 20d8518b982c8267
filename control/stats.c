// SPDX-License-Identifier: MIT
/*
 * stats.c - counters per listener and per route, rendered as JSON
 * (edgectl stats) and as Prometheus text (/metrics). Both come from one
 * snapshot, so they always agree. Bytes include live flows (read from the
 * kernel's per-direction counters), not only closed ones.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edged.h"

struct snapshot {
	struct listener_stats *l; /* per listener */
	struct listener_stats **r; /* per listener, per route */
};

static void snapshot_free(struct snapshot *sn);
static int snapshot_fill(struct snapshot *sn);

/* snapshot_take - 0, or -1 with @sb marked out of memory. */
static int snapshot_take(struct snapshot *sn, struct strbuf *sb)
{
	if (snapshot_fill(sn)) {
		snapshot_free(sn);
		sb->oom = 1;
		return -1;
	}
	return 0;
}

static int snapshot_fill(struct snapshot *sn)
{
	struct list *it;
	int i;

	sn->l = calloc((size_t)edge.nlisteners + 1, sizeof(*sn->l));
	sn->r = calloc((size_t)edge.nlisteners + 1, sizeof(*sn->r));
	if (!sn->l || !sn->r)
		return -1;
	for (i = 0; i < edge.nlisteners; i++) {
		struct listener *l = edge.listeners[i];

		sn->l[i] = l->st;
		sn->r[i] = calloc((size_t)l->cfg->nroutes + 1, sizeof(**sn->r));
		if (!sn->r[i])
			return -1;
		memcpy(sn->r[i], l->route_st,
		       sizeof(**sn->r) * (size_t)l->cfg->nroutes);
	}
	for (it = edge.flows.next; it != &edge.flows; it = it->next) {
		struct flow *f = container_of(it, struct flow, all);
		uint64_t up = flow_bytes_up(f), down = flow_bytes_down(f);
		int li;

		for (li = 0; li < edge.nlisteners; li++)
			if (edge.listeners[li] == f->l)
				break;
		if (li == edge.nlisteners)
			continue; /* a listener removed by a reload */

		sn->l[li].bytes_up += up;
		sn->l[li].bytes_down += down;
		if (f->route >= 0) {
			sn->r[li][f->route].bytes_up += up;
			sn->r[li][f->route].bytes_down += down;
		}
	}
	return 0;
}

static void snapshot_free(struct snapshot *sn)
{
	int i;

	for (i = 0; sn->r && i < edge.nlisteners; i++)
		free(sn->r[i]);
	free(sn->r);
	free(sn->l);
}

static void json_counters(struct strbuf *sb, const struct listener_stats *st,
			  int listener_level)
{
	int k;

	sb_printf(sb,
		  "\"accepted\":%llu,\"active\":%llu,\"bytes_up\":%llu,"
		  "\"bytes_down\":%llu,\"connect_failures\":%llu,",
		  (unsigned long long)st->accepted,
		  (unsigned long long)st->active,
		  (unsigned long long)st->bytes_up,
		  (unsigned long long)st->bytes_down,
		  (unsigned long long)st->connect_failures);
	if (listener_level)
		sb_printf(sb,
			  "\"client_hello_failures\":%llu,"
			  "\"client_hello_timeouts\":%llu,",
			  (unsigned long long)st->hello_failures,
			  (unsigned long long)st->hello_timeouts);
	sb_printf(sb,
		  "\"fallbacks\":%llu,\"paths\":{\"sockmap\":%llu,"
		  "\"splice\":%llu,\"copy\":%llu},",
		  (unsigned long long)st->fallbacks,
		  (unsigned long long)st->paths[PATH_SOCKMAP],
		  (unsigned long long)st->paths[PATH_SPLICE],
		  (unsigned long long)st->paths[PATH_COPY]);
	sb_printf(sb, "\"fallback_reasons\":{");
	for (k = 0; k < FB__COUNT; k++)
		sb_printf(sb, "%s\"%s\":%llu", k ? "," : "", fallback_str(k),
			  (unsigned long long)st->fallback_reasons[k]);
	sb_printf(sb, "},\"closed\":{");
	for (k = 1; k < END__COUNT; k++)
		sb_printf(sb, "%s\"%s\":%llu", k > 1 ? "," : "",
			  end_cause_str(k), (unsigned long long)st->closed[k]);
	sb_printf(sb, "}");
}

void stats_json(struct strbuf *sb)
{
	struct snapshot sn = {0};
	int i, j;

	if (snapshot_take(&sn, sb))
		return;
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
		struct listener_cfg *lc = edge.listeners[i]->cfg;

		sb_printf(sb, "%s\n{\"name\":", i ? "," : "");
		sb_json_str(sb, lc->name);
		sb_printf(sb, ",");
		json_counters(sb, &sn.l[i], 1);
		sb_printf(sb, ",\"routes\":[");
		for (j = 0; j < lc->nroutes; j++) {
			sb_printf(sb, "%s{\"route\":", j ? "," : "");
			sb_json_str(sb, lc->routes[j].name);
			sb_printf(sb, ",\"upstream\":");
			sb_json_str(sb, lc->routes[j].upstream);
			sb_printf(sb, ",");
			json_counters(sb, &sn.r[i][j], 0);
			sb_printf(sb, "}");
		}
		sb_printf(sb, "]}");
	}
	sb_printf(sb, "\n]}\n");
	snapshot_free(&sn);
}

/* ---- Prometheus text format ---- */

static void prom_head(struct strbuf *sb, const char *name, const char *type,
		      const char *help)
{
	sb_printf(sb, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void prom_labels(struct strbuf *sb, const char *listener,
			const char *route)
{
	/* Names are [A-Za-z0-9_-]: nothing to escape. */
	sb_printf(sb, "{listener=\"%s\"", listener);
	if (route)
		sb_printf(sb, ",route=\"%s\"", route);
}

enum prom_field {
	PF_ACCEPTED,
	PF_ACTIVE,
	PF_CONNECT_FAILURES,
	PF_FALLBACKS,
	PF_HELLO_FAILURES,
	PF_HELLO_TIMEOUTS,
};

static uint64_t prom_value(const struct listener_stats *st, int f)
{
	switch (f) {
	case PF_ACCEPTED:
		return st->accepted;
	case PF_ACTIVE:
		return st->active;
	case PF_CONNECT_FAILURES:
		return st->connect_failures;
	case PF_FALLBACKS:
		return st->fallbacks;
	case PF_HELLO_FAILURES:
		return st->hello_failures;
	default:
		return st->hello_timeouts;
	}
}

static const struct {
	const char *name, *type, *help;
	int field;
	int listener_only;
} prom_simple[] = {
	{"edge_connections_total", "counter",
	 "Connections accepted (per route: routed to it).", PF_ACCEPTED, 0},
	{"edge_connections_active", "gauge", "Live flows.", PF_ACTIVE, 0},
	{"edge_upstream_connect_failures_total", "counter",
	 "Upstream connects that failed or timed out.", PF_CONNECT_FAILURES, 0},
	{"edge_fallbacks_total", "counter",
	 "Flows relayed in userspace because the kernel path refused them.",
	 PF_FALLBACKS, 0},
	{"edge_client_hello_failures_total", "counter",
	 "Malformed, oversized or unfinished ClientHellos.", PF_HELLO_FAILURES,
	 1},
	{"edge_client_hello_timeouts_total", "counter",
	 "Clients that did not send a ClientHello in time.", PF_HELLO_TIMEOUTS,
	 1},
};

static void prom_each(struct strbuf *sb, struct snapshot *sn, int field,
		      int listener_only, const char *metric)
{
	int i, j;

	for (i = 0; i < edge.nlisteners; i++) {
		struct listener_cfg *lc = edge.listeners[i]->cfg;

		if (listener_only) {
			sb_printf(sb, "%s", metric);
			prom_labels(sb, lc->name, NULL);
			sb_printf(sb, "} %llu\n",
				  (unsigned long long)prom_value(&sn->l[i],
								 field));
			continue;
		}
		for (j = 0; j < lc->nroutes; j++) {
			sb_printf(sb, "%s", metric);
			prom_labels(sb, lc->name, lc->routes[j].name);
			sb_printf(sb, "} %llu\n",
				  (unsigned long long)prom_value(&sn->r[i][j],
								 field));
		}
	}
}

/*
 * prom_route_series - one sample per listener, route and array element:
 * METRIC{listener,route,LABEL="name(k)"} for k in [from, n), the values
 * read from the uint64_t array at @off in each route's counters.
 */
static void prom_route_series(struct strbuf *sb, struct snapshot *sn,
			      const char *metric, const char *label, int from,
			      int n, const char *(*name)(int), size_t off)
{
	int i, j, k;

	for (i = 0; i < edge.nlisteners; i++) {
		struct listener_cfg *lc = edge.listeners[i]->cfg;

		for (j = 0; j < lc->nroutes; j++) {
			const uint64_t *v =
				(const uint64_t *)((const char *)&sn->r[i][j] +
						   off);

			for (k = from; k < n; k++) {
				sb_printf(sb, "%s", metric);
				prom_labels(sb, lc->name, lc->routes[j].name);
				sb_printf(sb, ",%s=\"%s\"} %llu\n", label,
					  name(k), (unsigned long long)v[k]);
			}
		}
	}
}

void stats_prometheus(struct strbuf *sb)
{
	struct snapshot sn = {0};
	size_t m;
	int i, j, k;

	if (snapshot_take(&sn, sb))
		return;
	prom_head(sb, "edge_uptime_seconds", "gauge",
		  "Seconds since edged started.");
	sb_printf(sb, "edge_uptime_seconds %.3f\n",
		  (double)(now_ms() - edge.start_ms) / 1000.0);
	prom_head(sb, "edge_kernel_path_loaded", "gauge",
		  "1 if the sockmap data path is loaded.");
	sb_printf(sb, "edge_kernel_path_loaded %d\n", edge.kp ? 1 : 0);
	prom_head(sb, "edge_flows", "gauge", "Live flows in all listeners.");
	sb_printf(sb, "edge_flows %llu\n", (unsigned long long)edge.nflows);

	for (m = 0; m < sizeof(prom_simple) / sizeof(prom_simple[0]); m++) {
		prom_head(sb, prom_simple[m].name, prom_simple[m].type,
			  prom_simple[m].help);
		prom_each(sb, &sn, prom_simple[m].field,
			  prom_simple[m].listener_only, prom_simple[m].name);
	}

	prom_head(sb, "edge_bytes_total", "counter",
		  "Payload bytes forwarded (up: client to upstream).");
	for (i = 0; i < edge.nlisteners; i++) {
		struct listener_cfg *lc = edge.listeners[i]->cfg;

		for (j = 0; j < lc->nroutes; j++) {
			const char *dirs[2] = {"up", "down"};
			uint64_t v[2] = {sn.r[i][j].bytes_up,
					 sn.r[i][j].bytes_down};

			for (k = 0; k < 2; k++) {
				sb_printf(sb, "edge_bytes_total");
				prom_labels(sb, lc->name, lc->routes[j].name);
				sb_printf(sb, ",direction=\"%s\"} %llu\n",
					  dirs[k], (unsigned long long)v[k]);
			}
		}
	}
	prom_head(sb, "edge_connections_closed_total", "counter",
		  "Flows ended, by cause.");
	for (i = 0; i < edge.nlisteners; i++) {
		struct listener_cfg *lc = edge.listeners[i]->cfg;

		/* Before routing (timeouts, bad ClientHellos, no route). */
		for (k = 1; k < END__COUNT; k++) {
			uint64_t routed = 0;

			for (j = 0; j < lc->nroutes; j++)
				routed += sn.r[i][j].closed[k];
			sb_printf(sb, "edge_connections_closed_total");
			prom_labels(sb, lc->name, "-");
			sb_printf(sb, ",cause=\"%s\"} %llu\n", end_cause_str(k),
				  (unsigned long long)(sn.l[i].closed[k] -
						       routed));
		}
	}
	prom_route_series(sb, &sn, "edge_connections_closed_total", "cause", 1,
			  END__COUNT, end_cause_str,
			  offsetof(struct listener_stats, closed));
	prom_head(sb, "edge_kernel_path_exits_total", "counter",
		  "Flows not spliced at the hand-off, and directions that left "
		  "the kernel, by reason.");
	prom_route_series(sb, &sn, "edge_kernel_path_exits_total", "reason", 0,
			  FB__COUNT, fallback_str,
			  offsetof(struct listener_stats, fallback_reasons));
	prom_head(sb, "edge_flows_by_path_total", "counter",
		  "Flows by the data path chosen at the hand-off.");
	prom_route_series(sb, &sn, "edge_flows_by_path_total", "path", 0,
			  PATH__COUNT, path_str,
			  offsetof(struct listener_stats, paths));
	snapshot_free(&sn);
}

/* stats_text - the same snapshot as a table for people. */
void stats_text(struct strbuf *sb)
{
	struct snapshot sn = {0};
	int i, j;

	if (snapshot_take(&sn, sb))
		return;
	sb_printf(sb, "uptime %llus, %llu live flows, kernel path: %s\n\n",
		  (unsigned long long)((now_ms() - edge.start_ms) / 1000),
		  (unsigned long long)edge.nflows,
		  edge.kp ? "loaded" : edge.kp_why);
	sb_printf(sb, "%-16s %-12s %9s %7s %9s %9s %8s %8s\n", "LISTENER",
		  "ROUTE", "ACCEPTED", "ACTIVE", "UP", "DOWN", "CONNFAIL",
		  "FALLBACK");
	for (i = 0; i < edge.nlisteners; i++) {
		struct listener_cfg *lc = edge.listeners[i]->cfg;
		struct listener_stats *l = &sn.l[i];

		sb_printf(
			sb,
			"%-16.16s %-12s %9llu %7llu %9llu %9llu %8llu %8llu\n",
			lc->name, "*", (unsigned long long)l->accepted,
			(unsigned long long)l->active,
			(unsigned long long)l->bytes_up,
			(unsigned long long)l->bytes_down,
			(unsigned long long)l->connect_failures,
			(unsigned long long)l->fallbacks);
		for (j = 0; j < lc->nroutes; j++) {
			struct listener_stats *r = &sn.r[i][j];

			sb_printf(sb,
				  "%-16s %-12.12s %9llu %7llu %9llu %9llu "
				  "%8llu %8llu\n",
				  "", lc->routes[j].name,
				  (unsigned long long)r->accepted,
				  (unsigned long long)r->active,
				  (unsigned long long)r->bytes_up,
				  (unsigned long long)r->bytes_down,
				  (unsigned long long)r->connect_failures,
				  (unsigned long long)r->fallbacks);
		}
		if (l->hello_failures || l->hello_timeouts)
			sb_printf(sb,
				  "%-16s ClientHello failures %llu, timeouts "
				  "%llu\n",
				  "", (unsigned long long)l->hello_failures,
				  (unsigned long long)l->hello_timeouts);
	}
	snapshot_free(&sn);
}
