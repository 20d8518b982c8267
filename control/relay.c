// SPDX-License-Identifier: MIT
/*
 * relay.c - the userspace data paths, one direction at a time.
 *   copy:   read() into a buffer, write() it out;
 *   splice: splice(2) socket -> pipe -> socket, no copy to userspace.
 * Used when the kernel path is off, unavailable, or refused a socket (a
 * client that sent FIN before the hand-off). Level-triggered: the caller
 * asks for EPOLLIN on src while there is room and EPOLLOUT on dst while
 * bytes are pending (relay_has_pending()).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "edged.h"

#define RELAY_BUF (64 * 1024)
#define RELAY_PIPE (256 * 1024)
/* Bound the work done for one flow per wake-up (fairness). */
#define RELAY_ROUNDS 16

int relay_init(struct dir *d, int mode)
{
	d->mode = mode;
	d->pipe[0] = d->pipe[1] = -1;
	if (mode == PATH_SPLICE) {
		if (pipe2(d->pipe, O_NONBLOCK | O_CLOEXEC) == -1)
			return -errno;
		fcntl(d->pipe[1], F_SETPIPE_SZ, RELAY_PIPE);
	}
	return 0;
}

void relay_free(struct dir *d)
{
	free(d->buf);
	d->buf = NULL;
	d->buf_len = d->buf_off = 0;
	if (d->pipe[0] >= 0)
		close(d->pipe[0]);
	if (d->pipe[1] >= 0)
		close(d->pipe[1]);
	d->pipe[0] = d->pipe[1] = -1;
	d->pipe_len = 0;
}

int relay_has_pending(const struct dir *d)
{
	if (d->mode == PATH_SPLICE)
		return d->pipe_len > 0;
	return d->buf_len > d->buf_off;
}

static int flush_copy(struct dir *d, struct side **failed)
{
	while (d->buf_len > d->buf_off) {
		ssize_t n = send(d->dst->fd, d->buf + d->buf_off,
				 d->buf_len - d->buf_off, MSG_NOSIGNAL);
		if (n == -1) {
			if (errno == EAGAIN || errno == EINTR)
				return 0;
			*failed = d->dst;
			return -errno;
		}
		d->buf_off += (size_t)n;
	}
	d->buf_off = d->buf_len = 0;
	return 0;
}

static int pump_copy(struct dir *d, struct side **failed)
{
	int err, round;

	for (round = 0; round < RELAY_ROUNDS; round++) {
		err = flush_copy(d, failed);
		if (err)
			return err;
		if (d->buf_len > d->buf_off || d->src->fin)
			return 0;
		if (!d->buf) {
			d->buf = malloc(RELAY_BUF);
			if (!d->buf)
				return 0; /* try again on the next event */
		}
		ssize_t n = recv(d->src->fd, d->buf, RELAY_BUF, 0);
		if (n == 0) {
			d->src->fin = 1;
			return 0;
		}
		if (n == -1) {
			if (errno == EAGAIN || errno == EINTR)
				return 0;
			*failed = d->src;
			return -errno;
		}
		d->buf_off = 0;
		d->buf_len = (size_t)n;
		d->user_bytes += (uint64_t)n;
	}
	return 0;
}

static int pump_splice(struct dir *d, struct side **failed)
{
	int round;

	for (round = 0; round < RELAY_ROUNDS; round++) {
		while (d->pipe_len) {
			ssize_t n = splice(d->pipe[0], NULL, d->dst->fd, NULL,
					   d->pipe_len,
					   SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
			if (n == -1) {
				if (errno == EAGAIN || errno == EINTR)
					return 0;
				*failed = d->dst;
				return -errno;
			}
			d->pipe_len -= (size_t)n;
		}
		if (d->src->fin)
			return 0;
		ssize_t n =
			splice(d->src->fd, NULL, d->pipe[1], NULL, RELAY_PIPE,
			       SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
		if (n == 0) {
			d->src->fin = 1;
			return 0;
		}
		if (n == -1) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN) {
				/*
				 * EAGAIN means either "socket empty" or
				 * "pipe full"; the pipe is empty here, so
				 * the socket is.
				 */
				return 0;
			}
			*failed = d->src;
			return -errno;
		}
		d->pipe_len += (size_t)n;
		d->user_bytes += (uint64_t)n;
	}
	return 0;
}

int relay_pump(struct dir *d, struct side **failed)
{
	if (d->mode == PATH_SPLICE)
		return pump_splice(d, failed);
	return pump_copy(d, failed);
}
