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

static int listener_bind(struct listener_sock *ls)
{
	int one = 1, fd;
	char as[ADDR_STR_MAX];

	addr_str((struct sockaddr *)&ls->addr, as, sizeof(as));
	fd = socket(ls->addr.ss_family,
		    SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1) {
		log_warn("listener %s: socket for %s", ls->l->cfg->name, as);
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

		log_warn("listener %s: cannot listen on %s", ls->l->cfg->name,
			 as);
		close(fd);
		return err;
	}
	ls->fd = fd;
	ls->h.fn = listener_event;
	log_info("listener %s: listening on %s", ls->l->cfg->name, as);
	return loop_add(fd, EPOLLIN, &ls->h);
}

int listeners_open(void)
{
	int i, j, err;

	edge.nlisteners = edge.cfg->nlisteners;
	edge.listeners = calloc((size_t)edge.nlisteners, sizeof(struct listener));
	if (!edge.listeners)
		return -ENOMEM;
	for (i = 0; i < edge.nlisteners; i++) {
		struct listener *l = &edge.listeners[i];

		l->cfg = &edge.cfg->listeners[i];
		l->route_st = calloc((size_t)l->cfg->nroutes,
				     sizeof(*l->route_st));
		if (!l->route_st)
			return -ENOMEM;
		for (j = 0; j < l->cfg->nbinds; j++) {
			struct listener_sock *ls = &l->socks[j];

			ls->l = l;
			ls->fd = -1;
			ls->addr = l->cfg->binds[j];
			err = listener_bind(ls);
			if (err)
				return err;
			l->nsocks++;
		}
	}
	return 0;
}

void listeners_close(void)
{
	int i, j;

	for (i = 0; i < edge.nlisteners; i++) {
		struct listener *l = &edge.listeners[i];

		for (j = 0; j < l->nsocks; j++) {
			if (l->socks[j].fd >= 0) {
				loop_del(l->socks[j].fd);
				close(l->socks[j].fd);
				l->socks[j].fd = -1;
			}
		}
	}
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
		struct listener *l = &edge.listeners[i];

		for (j = 0; j < l->nsocks; j++)
			if (l->socks[j].fd >= 0)
				loop_mod(l->socks[j].fd, pause ? 0 : EPOLLIN,
					 &l->socks[j].h);
	}
}
