// SPDX-License-Identifier: MIT
/*
 * listener.c - bound sockets and accept. At EMFILE/ENFILE accept is paused
 * for a moment (a pending connection would keep the listener readable and
 * spin the loop), as relayd does.
 */
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "edged.h"
#include "log.h"

#define ACCEPT_BATCH 64
#define ACCEPT_PAUSE_MS 100

static int accept_paused;

static void listener_event(struct handler *h, uint32_t events)
{
	struct listener_sock *ls = container_of(h, struct listener_sock, h);
	int i;

	for (i = 0; i < ACCEPT_BATCH; i++) {
		struct sockaddr_storage peer;
		socklen_t len = sizeof(peer);
		int fd = accept4(ls->fd, (struct sockaddr *)&peer, &len,
				 SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd == -1) {
			if (errno == EAGAIN || errno == EINTR ||
			    errno == ECONNABORTED)
				return;
			if (errno == EMFILE || errno == ENFILE ||
			    errno == ENOBUFS || errno == ENOMEM) {
				log_warn("accept on listener %s: pausing "
					 "accept for %d ms",
					 ls->l->cfg->name, ACCEPT_PAUSE_MS);
				listeners_pause(1);
				return;
			}
			log_warn("accept on listener %s", ls->l->cfg->name);
			return;
		}
		flow_accept(ls->l, fd, &peer);
	}
}

static int listener_bind(struct listener_sock *ls, const char *name)
{
	int one = 1, fd;
	char as[ADDR_STR_MAX];

	addr_str((struct sockaddr *)&ls->addr, as, sizeof(as));
	fd = socket(ls->addr.ss_family,
		    SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1) {
		log_warn("listener %s: socket for %s", name, as);
		return -errno;
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	/* "[::]:25" next to "0.0.0.0:25" must not collide. */
	if (ls->addr.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&ls->addr,
		 addr_len((struct sockaddr *)&ls->addr)) == -1 ||
	    listen(fd, 4096) == -1) {
		int err = -errno;

		log_warn("listener %s: cannot listen on %s", name, as);
		close(fd);
		return err;
	}
	ls->fd = fd;
	ls->h.fn = listener_event;
	log_info("listener %s: listening on %s", name, as);
	return loop_add(fd, EPOLLIN, &ls->h);
}

static struct listener *listener_new(struct listener_cfg *lc)
{
	struct listener *l = calloc(1, sizeof(*l));

	if (!l)
		return NULL;
	l->cfg = lc;
	l->route_st = calloc((size_t)lc->nroutes, sizeof(*l->route_st));
	if (!l->route_st) {
		free(l);
		return NULL;
	}
	return l;
}

static void listener_close_socks(struct listener *l)
{
	int j;

	for (j = 0; j < l->nsocks; j++) {
		if (l->socks[j].fd >= 0) {
			loop_del(l->socks[j].fd);
			close(l->socks[j].fd);
			l->socks[j].fd = -1;
		}
	}
	l->nsocks = 0;
}

static void listener_free(struct listener *l)
{
	listener_close_socks(l);
	free(l->route_st);
	free(l);
}

/* listener_unref - a flow of @l ended: free a retired listener at last. */
void listener_unref(struct listener *l)
{
	if (l->retired && l->st.active == 0)
		listener_free(l);
}

int listeners_open(void)
{
	int i, j, err;

	edge.nlisteners = edge.cfg->nlisteners;
	edge.listeners =
		calloc((size_t)edge.nlisteners, sizeof(*edge.listeners));
	if (!edge.listeners)
		return -ENOMEM;
	for (i = 0; i < edge.nlisteners; i++) {
		struct listener *l = listener_new(&edge.cfg->listeners[i]);

		if (!l)
			return -ENOMEM;
		edge.listeners[i] = l;
		for (j = 0; j < l->cfg->nbinds; j++) {
			struct listener_sock *ls = &l->socks[j];

			ls->l = l;
			ls->fd = -1;
			ls->addr = l->cfg->binds[j];
			err = listener_bind(ls, l->cfg->name);
			if (err)
				return err;
			l->nsocks++;
		}
	}
	return 0;
}

void listeners_close(void)
{
	int i;

	for (i = 0; i < edge.nlisteners; i++)
		listener_close_socks(edge.listeners[i]);
}

void listeners_free(void)
{
	int i;

	for (i = 0; i < edge.nlisteners; i++) {
		edge.listeners[i]->retired = 1;
		if (edge.listeners[i]->st.active == 0)
			listener_free(edge.listeners[i]);
	}
	free(edge.listeners);
	edge.listeners = NULL;
	edge.nlisteners = 0;
}

static struct listener_sock *sock_find(struct listener *l,
				       const struct sockaddr_storage *a)
{
	int j;

	for (j = 0; j < l->nsocks; j++)
		if (l->socks[j].fd >= 0 &&
		    !memcmp(&l->socks[j].addr, a, sizeof(*a)))
			return &l->socks[j];
	return NULL;
}

/*
 * listeners_reload - switch to the listeners of @ncfg. A listener whose
 * name stays keeps its object (counters) and every socket whose address
 * stays, so its ports never refuse a connection; new addresses are bound
 * before anything is changed, and if one cannot be bound nothing changes.
 * Removed listeners stop accepting; their live flows go on (the object is
 * freed with the last one). Live flows keep the routes they were accepted
 * with; route counters follow route names. Returns 0 or -errno (@err says
 * why).
 */
int listeners_reload(struct edge_config *ncfg, struct strbuf *err)
{
	struct listener **nl;
	struct listener_sock *fresh;
	int i, j, k, nfresh = 0, maxfresh = 0, rc = 0;

	nl = calloc((size_t)ncfg->nlisteners, sizeof(*nl));
	for (i = 0; i < ncfg->nlisteners; i++)
		maxfresh += ncfg->listeners[i].nbinds;
	fresh = calloc((size_t)maxfresh + 1, sizeof(*fresh));
	if (!nl || !fresh) {
		free(nl);
		free(fresh);
		sb_printf(err, "out of memory\n");
		return -ENOMEM;
	}
	/* 1. Match listeners by name; bind every new address. */
	for (i = 0; i < ncfg->nlisteners; i++) {
		struct listener_cfg *lc = &ncfg->listeners[i];
		struct listener *old = NULL;

		for (k = 0; k < edge.nlisteners; k++)
			if (!strcmp(edge.listeners[k]->cfg->name, lc->name))
				old = edge.listeners[k];
		for (j = 0; j < lc->nbinds; j++) {
			if (old && sock_find(old, &lc->binds[j]))
				continue;
			/* Another old listener may own it (a rename). */
			struct listener_sock *elsewhere = NULL;

			for (k = 0; k < edge.nlisteners && !elsewhere; k++)
				elsewhere = sock_find(edge.listeners[k],
						      &lc->binds[j]);
			if (elsewhere) {
				char a[ADDR_STR_MAX];

				sb_printf(err,
					  "%s is bound by listener '%s': "
					  "moving an address between "
					  "listeners needs two reloads "
					  "(remove, then add)\n",
					  addr_str((struct sockaddr *)&lc
							   ->binds[j],
						   a, sizeof(a)),
					  elsewhere->l->cfg->name);
				rc = -EADDRINUSE;
				goto undo;
			}
			fresh[nfresh].fd = -1;
			fresh[nfresh].addr = lc->binds[j];
			fresh[nfresh].l = NULL;
			rc = listener_bind(&fresh[nfresh], lc->name);
			if (rc) {
				char a[ADDR_STR_MAX];

				sb_printf(err, "cannot listen on %s: %s\n",
					  addr_str((struct sockaddr *)&lc
							   ->binds[j],
						   a, sizeof(a)),
					  strerror(-rc));
				goto undo;
			}
			nfresh++;
		}
		nl[i] = old;
	}
	/* 2. Commit: build the new listener set. */
	for (i = 0; i < ncfg->nlisteners; i++) {
		struct listener_cfg *lc = &ncfg->listeners[i];
		struct listener *l = nl[i];
		struct listener_sock socks[LISTENER_BINDS_MAX];
		int ns = 0;

		if (l) {
			struct listener_stats *rs;

			rs = calloc((size_t)lc->nroutes, sizeof(*rs));
			if (!rs) {
				sb_printf(err, "out of memory\n");
				rc = -ENOMEM;
				goto undo; /* nothing committed yet for l */
			}
			for (j = 0; j < lc->nroutes; j++)
				for (k = 0; k < l->cfg->nroutes; k++)
					if (!strcmp(lc->routes[j].name,
						    l->cfg->routes[k].name))
						rs[j] = l->route_st[k];
			/* Live flows: route counters by name, or none. */
			for (struct list *it = edge.flows.next;
			     it != &edge.flows; it = it->next) {
				struct flow *f =
					container_of(it, struct flow, all);

				if (f->l != l || f->route < 0)
					continue;
				int nr = -1;
				for (j = 0; j < lc->nroutes && f->rt; j++)
					if (!strcmp(lc->routes[j].name,
						    f->rt->name))
						nr = j;
				f->route = nr;
			}
			free(l->route_st);
			l->route_st = rs;
			/* Keep the sockets whose address stays. */
			for (k = 0; k < l->nsocks; k++) {
				int keep = 0;

				for (j = 0; j < lc->nbinds; j++)
					if (!memcmp(&l->socks[k].addr,
						    &lc->binds[j],
						    sizeof(lc->binds[j])))
						keep = 1;
				if (keep) {
					socks[ns++] = l->socks[k];
				} else if (l->socks[k].fd >= 0) {
					char a[ADDR_STR_MAX];

					log_info("listener %s: no longer "
						 "listening on %s",
						 lc->name,
						 addr_str((struct sockaddr *)&l
								  ->socks[k]
								  .addr,
							  a, sizeof(a)));
					loop_del(l->socks[k].fd);
					close(l->socks[k].fd);
				}
			}
			l->cfg = lc;
		} else {
			l = listener_new(lc);
			if (!l) {
				sb_printf(err, "out of memory\n");
				rc = -ENOMEM;
				goto undo;
			}
			nl[i] = l;
			log_info("listener %s: added", lc->name);
		}
		for (j = 0; j < nfresh; j++) {
			for (k = 0; k < lc->nbinds; k++) {
				if (fresh[j].fd >= 0 &&
				    !memcmp(&fresh[j].addr, &lc->binds[k],
					    sizeof(lc->binds[k]))) {
					socks[ns++] = fresh[j];
					fresh[j].fd = -1;
				}
			}
		}
		memcpy(l->socks, socks, sizeof(socks[0]) * (size_t)ns);
		l->nsocks = ns;
		for (j = 0; j < ns; j++) {
			l->socks[j].l = l;
			loop_mod(l->socks[j].fd, EPOLLIN, &l->socks[j].h);
		}
	}
	/* 3. Retire the listeners that are gone. */
	for (k = 0; k < edge.nlisteners; k++) {
		struct listener *old = edge.listeners[k];
		int kept = 0;

		for (i = 0; i < ncfg->nlisteners; i++)
			if (nl[i] == old)
				kept = 1;
		if (kept)
			continue;
		log_info("listener %s: removed (%llu live flows continue)",
			 old->cfg->name, (unsigned long long)old->st.active);
		listener_close_socks(old);
		old->retired = 1;
		if (old->st.active == 0)
			listener_free(old);
	}
	free(edge.listeners);
	edge.listeners = nl;
	edge.nlisteners = ncfg->nlisteners;
	free(fresh);
	return 0;
undo:
	for (j = 0; j < nfresh; j++) {
		if (fresh[j].fd >= 0) {
			loop_del(fresh[j].fd);
			close(fresh[j].fd);
		}
	}
	free(fresh);
	free(nl);
	return rc;
}

/* listeners_pause - pause (1) or, once the pause has passed, resume (0). */
void listeners_pause(int pause)
{
	int i, j;

	if (pause) {
		edge.accept_resume_ms = now_ms() + ACCEPT_PAUSE_MS;
		if (accept_paused)
			return;
	} else if (!accept_paused || now_ms() < edge.accept_resume_ms) {
		return;
	}
	accept_paused = pause;
	for (i = 0; i < edge.nlisteners; i++) {
		struct listener *l = edge.listeners[i];

		for (j = 0; j < l->nsocks; j++)
			if (l->socks[j].fd >= 0)
				loop_mod(l->socks[j].fd, pause ? 0 : EPOLLIN,
					 &l->socks[j].h);
	}
}
