// SPDX-License-Identifier: MIT
/*
 * health.c - active TCP health checks of upstream addresses.
 *
 * For every route with `health_check`, each address is probed every
 * `interval` with a non-blocking connect that must succeed within
 * `timeout`. `fall` consecutive failures mark it down, `rise` consecutive
 * successes mark it up again; transitions are logged. New connections skip
 * addresses that are down while another address of the route is up
 * (flow.c). Probes belong to one configuration generation: a reload stops
 * them and starts the new ones.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "edged.h"
#include "log.h"

struct probe {
	struct handler h;
	struct route *r;
	int idx;
	int fd;
	uint64_t next_ms; /* when to start the next probe */
	uint64_t deadline_ms; /* while a probe runs */
};

static struct probe *probes;
static int nprobes;

static void probe_result(struct probe *p, int ok, const char *why)
{
	struct route *r = p->r;
	struct addr_health *h = &r->health[p->idx];
	char a[ADDR_STR_MAX];

	if (p->fd >= 0) {
		loop_del(p->fd);
		close(p->fd);
		p->fd = -1;
	}
	p->next_ms = now_ms() + r->hc_interval_ms;
	if (ok != h->last_ok)
		h->streak = 0;
	h->last_ok = ok;
	h->streak++;
	addr_str((struct sockaddr *)&r->addrs[p->idx], a, sizeof(a));
	if (!h->down && !ok && h->streak >= r->hc_fall) {
		h->down = 1;
		log_warnx("health: route %s upstream %s is DOWN (%s; %d failed "
			  "checks)",
			  r->name, a, why, h->streak);
	} else if (h->down && ok && h->streak >= r->hc_rise) {
		h->down = 0;
		log_info("health: route %s upstream %s is UP (%d good checks)",
			 r->name, a, h->streak);
	}
}

static void probe_event(struct handler *hd, uint32_t events)
{
	struct probe *p = container_of(hd, struct probe, h);
	int err = 0;
	socklen_t len = sizeof(err);

	if (getsockopt(p->fd, SOL_SOCKET, SO_ERROR, &err, &len) == -1)
		err = errno;
	if (!err && (events & (EPOLLERR | EPOLLHUP)))
		err = ECONNREFUSED;
	probe_result(p, !err, err ? strerror(err) : "ok");
}

static void probe_start(struct probe *p, uint64_t now)
{
	struct sockaddr_storage *a = &p->r->addrs[p->idx];
	int fd = socket(a->ss_family,
			SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd == -1) {
		p->next_ms = now + p->r->hc_interval_ms;
		return;
	}
	if (connect(fd, (struct sockaddr *)a, addr_len((struct sockaddr *)a)) ==
		    -1 &&
	    errno != EINPROGRESS) {
		int err = errno;

		close(fd);
		probe_result(p, 0, strerror(err));
		return;
	}
	p->fd = fd;
	p->deadline_ms = now + p->r->hc_timeout_ms;
	if (loop_add(fd, EPOLLOUT, &p->h)) {
		close(fd);
		p->fd = -1;
		p->next_ms = now + p->r->hc_interval_ms;
	}
}

void health_start(struct edge_config *cfg)
{
	int i, j, k, n = 0;

	health_stop();
	for (i = 0; i < cfg->nlisteners; i++)
		for (j = 0; j < cfg->listeners[i].nroutes; j++)
			if (cfg->listeners[i].routes[j].health_check)
				n += cfg->listeners[i].routes[j].naddrs;
	if (!n)
		return;
	probes = calloc((size_t)n, sizeof(*probes));
	if (!probes)
		return;
	for (i = 0; i < cfg->nlisteners; i++) {
		for (j = 0; j < cfg->listeners[i].nroutes; j++) {
			struct route *r = &cfg->listeners[i].routes[j];

			if (!r->health_check)
				continue;
			for (k = 0; k < r->naddrs; k++) {
				struct probe *p = &probes[nprobes++];

				p->h.fn = probe_event;
				p->r = r;
				p->idx = k;
				p->fd = -1;
				p->next_ms = 0; /* at once */
				r->health[k].last_ok = 1;
			}
		}
	}
	log_info("health: checking %d upstream address(es)", nprobes);
}

void health_stop(void)
{
	int i;

	for (i = 0; i < nprobes; i++) {
		if (probes[i].fd >= 0) {
			loop_del(probes[i].fd);
			close(probes[i].fd);
		}
	}
	free(probes);
	probes = NULL;
	nprobes = 0;
}

void health_tick(uint64_t now)
{
	int i;

	for (i = 0; i < nprobes; i++) {
		struct probe *p = &probes[i];

		if (p->fd >= 0) {
			if (now >= p->deadline_ms)
				probe_result(p, 0, "timed out");
		} else if (now >= p->next_ms) {
			probe_start(p, now);
		}
	}
}
