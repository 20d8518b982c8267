// SPDX-License-Identifier: MIT
/*
 * resolve.c - periodic re-resolution of upstream host names, off the
 * event loop. A worker thread runs getaddrinfo(); answers come back
 * through a pipe and are applied in the loop. A failed lookup keeps the
 * last good addresses. An answer for a configuration that a reload has
 * replaced is dropped (matched by generation, never dereferenced).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "edged.h"
#include "log.h"

struct rjob {
	struct rjob *next;
	uint64_t generation;
	int li, ri, ui; /* listener, route, upstream indices */
	struct upstream_cfg up;
	struct sockaddr_storage addrs[ROUTE_ADDRS_MAX];
	int n; /* addresses, or -1 on failure */
	char why[128];
};

static pthread_t worker;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static struct rjob *queue;
static int pipefd[2] = {-1, -1}, quit, started, inflight;
static struct handler pipe_h;
static uint64_t next_ms;

static void *worker_main(void *arg)
{
	for (;;) {
		struct rjob *j;
		const char *why = "";

		pthread_mutex_lock(&mu);
		while (!queue && !quit)
			pthread_cond_wait(&cv, &mu);
		if (quit) {
			pthread_mutex_unlock(&mu);
			return NULL;
		}
		j = queue;
		queue = j->next;
		pthread_mutex_unlock(&mu);
		j->n = upstream_resolve(&j->up, j->addrs, ROUTE_ADDRS_MAX,
					&why);
		if (j->n < 0)
			snprintf(j->why, sizeof(j->why), "%s", why);
		if (write(pipefd[1], &j, sizeof(j)) != sizeof(j))
			free(j);
	}
	return arg;
}

static int is_literal(const char *host)
{
	struct in6_addr a6;
	struct in_addr a4;

	return inet_pton(AF_INET, host, &a4) == 1 ||
	       inet_pton(AF_INET6, host, &a6) == 1;
}

/* Replace upstream ui's addresses in route r; keep the others' order. */
static int route_apply(struct route *r, int ui, struct sockaddr_storage *na,
		       int n)
{
	struct sockaddr_storage addrs[ROUTE_ADDRS_MAX];
	int up[ROUTE_ADDRS_MAX], k = 0, i, changed = 0, old = 0;

	for (i = 0; i < r->naddrs; i++) {
		if (r->addr_up[i] == ui) {
			if (old < n &&
			    !memcmp(&r->addrs[i], &na[old], sizeof(na[0])))
				;
			else
				changed = 1;
			old++;
		}
	}
	if (old != n)
		changed = 1;
	if (!changed)
		return 0;
	for (i = 0; i < r->naddrs && k < ROUTE_ADDRS_MAX; i++) {
		if (r->addr_up[i] < ui) {
			addrs[k] = r->addrs[i];
			up[k++] = r->addr_up[i];
		}
	}
	for (i = 0; i < n && k < ROUTE_ADDRS_MAX; i++) {
		addrs[k] = na[i];
		up[k++] = ui;
	}
	for (i = 0; i < r->naddrs && k < ROUTE_ADDRS_MAX; i++) {
		if (r->addr_up[i] > ui) {
			addrs[k] = r->addrs[i];
			up[k++] = r->addr_up[i];
		}
	}
	memcpy(r->addrs, addrs, sizeof(addrs[0]) * (size_t)k);
	memcpy(r->addr_up, up, sizeof(up[0]) * (size_t)k);
	memset(r->health, 0, sizeof(r->health));
	r->naddrs = k;
	return 1;
}

static void pipe_event(struct handler *h, uint32_t events)
{
	struct rjob *j;
	int health_changed = 0;

	while (read(pipefd[0], &j, sizeof(j)) == sizeof(j)) {
		struct edge_config *cfg = edge.cfg;

		inflight--;
		if (j->generation != cfg->generation ||
		    j->li >= cfg->nlisteners ||
		    j->ri >= cfg->listeners[j->li].nroutes) {
			free(j);
			continue;
		}
		struct route *r = &cfg->listeners[j->li].routes[j->ri];
		if (j->n < 0) {
			log_warnx("resolve: %s: %s; keeping the last good "
				  "addresses",
				  j->up.text, j->why);
		} else if (route_apply(r, j->ui, j->addrs, j->n)) {
			log_info("resolve: %s now has %d address(es)",
				 j->up.text, j->n);
			health_changed |= r->health_check;
		}
		free(j);
	}
	if (health_changed)
		health_start(edge.cfg);
}

static int resolver_start(void)
{
	if (started)
		return 0;
	if (pipe2(pipefd, O_CLOEXEC) == -1)
		return -errno;
	fcntl(pipefd[0], F_SETFL, O_NONBLOCK);
	if (pthread_create(&worker, NULL, worker_main, NULL)) {
		close(pipefd[0]);
		close(pipefd[1]);
		return -EAGAIN;
	}
	pipe_h.fn = pipe_event;
	loop_add(pipefd[0], EPOLLIN, &pipe_h);
	started = 1;
	return 0;
}

/* resolve_tick - every resolve_interval, look every host name up again. */
void resolve_tick(uint64_t now)
{
	struct edge_config *cfg = edge.cfg;
	int li, ri, ui;

	if (!cfg->resolve_interval_ms || now < next_ms || inflight)
		return;
	next_ms = now + cfg->resolve_interval_ms;
	for (li = 0; li < cfg->nlisteners; li++) {
		for (ri = 0; ri < cfg->listeners[li].nroutes; ri++) {
			struct route *r = &cfg->listeners[li].routes[ri];

			for (ui = 0; ui < r->nups; ui++) {
				struct rjob *j;

				if (is_literal(r->ups[ui].host) ||
				    resolver_start())
					continue;
				j = calloc(1, sizeof(*j));
				if (!j)
					continue;
				j->generation = cfg->generation;
				j->li = li;
				j->ri = ri;
				j->ui = ui;
				j->up = r->ups[ui];
				pthread_mutex_lock(&mu);
				j->next = queue;
				queue = j;
				inflight++;
				pthread_cond_signal(&cv);
				pthread_mutex_unlock(&mu);
			}
		}
	}
}

void resolve_stop(void)
{
	if (!started)
		return;
	pthread_mutex_lock(&mu);
	quit = 1;
	pthread_cond_signal(&cv);
	pthread_mutex_unlock(&mu);
	pthread_join(worker, NULL);
	loop_del(pipefd[0]);
	close(pipefd[0]);
	close(pipefd[1]);
	while (queue) {
		struct rjob *j = queue;

		queue = j->next;
		free(j);
	}
	started = 0;
}
