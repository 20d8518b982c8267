// SPDX-License-Identifier: MIT
/*
 * metrics.c - a minimal HTTP/1.0 server for Prometheus: GET /metrics
 * answers the text exposition format (stats.c), anything else 404. One
 * request per connection; a client that does not send its request within
 * the next tick or sends more than 4 KiB is closed.
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

#define METRICS_REQ_MAX 4096
#define METRICS_CLIENTS_MAX 32

struct metrics_client {
	struct handler h;
	int fd;
	char req[METRICS_REQ_MAX];
	size_t req_len;
	struct strbuf out;
	size_t out_off;
	int replying;
};

static struct handler metrics_h;
static int metrics_fd = -1, metrics_nclients;

static void mc_free(struct metrics_client *mc)
{
	loop_del(mc->fd);
	close(mc->fd);
	sb_free(&mc->out);
	free(mc);
	metrics_nclients--;
}

static void mc_answer(struct metrics_client *mc)
{
	struct strbuf body;

	sb_init(&body);
	if (!strncmp(mc->req, "GET /metrics ", 13) ||
	    !strncmp(mc->req, "GET /metrics?", 13)) {
		stats_prometheus(&body);
		sb_printf(&mc->out,
			  "HTTP/1.0 200 OK\r\nContent-Type: text/plain; "
			  "version=0.0.4\r\nContent-Length: %zu\r\n"
			  "Connection: close\r\n\r\n",
			  body.len);
		if (body.len)
			sb_printf(&mc->out, "%.*s", (int)body.len, body.data);
	} else {
		sb_printf(&mc->out,
			  "HTTP/1.0 404 Not Found\r\nContent-Length: "
			  "10\r\nConnection: close\r\n\r\nnot found\n");
	}
	sb_free(&body);
	mc->replying = 1;
	loop_mod(mc->fd, EPOLLOUT, &mc->h);
}

static void mc_event(struct handler *h, uint32_t events)
{
	struct metrics_client *mc = container_of(h, struct metrics_client, h);
	ssize_t n;

	if (!mc->replying) {
		n = recv(mc->fd, mc->req + mc->req_len,
			 sizeof(mc->req) - 1 - mc->req_len, 0);
		if (n <= 0) {
			if (n == -1 && errno == EAGAIN)
				return;
			mc_free(mc);
			return;
		}
		mc->req_len += (size_t)n;
		mc->req[mc->req_len] = '\0';
		if (strstr(mc->req, "\r\n\r\n") || strstr(mc->req, "\n\n"))
			mc_answer(mc);
		else if (mc->req_len >= sizeof(mc->req) - 1)
			mc_free(mc);
		return;
	}
	while (mc->out_off < mc->out.len) {
		n = send(mc->fd, mc->out.data + mc->out_off,
			 mc->out.len - mc->out_off, MSG_NOSIGNAL);
		if (n == -1) {
			if (errno == EAGAIN)
				return;
			break;
		}
		mc->out_off += (size_t)n;
	}
	mc_free(mc);
}

static void metrics_accept(struct handler *h, uint32_t events)
{
	for (;;) {
		int fd = accept4(metrics_fd, NULL, NULL,
				 SOCK_NONBLOCK | SOCK_CLOEXEC);
		struct metrics_client *mc;

		if (fd == -1)
			return;
		if (metrics_nclients >= METRICS_CLIENTS_MAX ||
		    !(mc = calloc(1, sizeof(*mc)))) {
			close(fd);
			continue;
		}
		mc->fd = fd;
		mc->h.fn = mc_event;
		sb_init(&mc->out);
		metrics_nclients++;
		if (loop_add(fd, EPOLLIN, &mc->h)) {
			close(fd);
			free(mc);
			metrics_nclients--;
		}
	}
}

int metrics_open(const struct sockaddr_storage *addr)
{
	char as[ADDR_STR_MAX];
	int one = 1, fd, err;

	addr_str((const struct sockaddr *)addr, as, sizeof(as));
	fd = socket(addr->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
		    0);
	if (fd == -1)
		return -errno;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (const struct sockaddr *)addr,
		 addr_len((const struct sockaddr *)addr)) == -1 ||
	    listen(fd, 64) == -1) {
		err = -errno;
		log_warn("metrics: cannot listen on %s", as);
		close(fd);
		return err;
	}
	metrics_fd = fd;
	metrics_h.fn = metrics_accept;
	log_info("metrics: serving http://%s/metrics", as);
	return loop_add(fd, EPOLLIN, &metrics_h);
}

void metrics_close(void)
{
	if (metrics_fd < 0)
		return;
	loop_del(metrics_fd);
	close(metrics_fd);
	metrics_fd = -1;
}
