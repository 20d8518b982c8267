// SPDX-License-Identifier: MIT
/*
 * loop.c - the event loop: level-triggered epoll, one timerfd tick (2 ms
 * while some flow is draining or paused, 50 ms otherwise), a signalfd, and
 * the kernel path's event ring.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "edged.h"
#include "log.h"

#define TICK_FAST_MS 2
#define TICK_SLOW_MS 50

static int timer_fd = -1, signal_fd = -1;
static struct handler timer_h, signal_h, ring_h;
static int tick_fast;

int loop_add(int fd, uint32_t events, struct handler *h)
{
	struct epoll_event ev = { .events = events, .data.ptr = h };

	if (epoll_ctl(edge.epfd, EPOLL_CTL_ADD, fd, &ev) == -1) {
		log_warn("epoll add fd %d", fd);
		return -errno;
	}
	return 0;
}

int loop_mod(int fd, uint32_t events, struct handler *h)
{
	struct epoll_event ev = { .events = events, .data.ptr = h };

	if (epoll_ctl(edge.epfd, EPOLL_CTL_MOD, fd, &ev) == -1) {
		log_warn("epoll mod fd %d", fd);
		return -errno;
	}
	return 0;
}

void loop_del(int fd)
{
	epoll_ctl(edge.epfd, EPOLL_CTL_DEL, fd, NULL);
}

static void timer_arm(int fast)
{
	long ms = fast ? TICK_FAST_MS : TICK_SLOW_MS;
	struct itimerspec its = {
		.it_interval = { .tv_sec = 0, .tv_nsec = ms * 1000000L },
		.it_value = { .tv_sec = 0, .tv_nsec = ms * 1000000L },
	};

	tick_fast = fast;
	timerfd_settime(timer_fd, 0, &its, NULL);
}

void loop_want_fast_tick(void)
{
	if (!tick_fast && timer_fd >= 0)
		timer_arm(1);
}

static void timer_event(struct handler *h, uint32_t events)
{
	uint64_t n;

	if (read(timer_fd, &n, sizeof(n)) != sizeof(n))
		return;
	flow_tick(now_ms());
	listeners_pause(0);
	if (tick_fast && list_empty(&edge.watch))
		timer_arm(0);
}

static void signal_event(struct handler *h, uint32_t events)
{
	struct signalfd_siginfo si;

	while (read(signal_fd, &si, sizeof(si)) == sizeof(si)) {
		switch (si.ssi_signo) {
		case SIGTERM:
		case SIGINT:
			log_info("%s: stopping",
				 si.ssi_signo == SIGTERM ? "SIGTERM" : "SIGINT");
			edge.stopping = 1;
			break;
		case SIGHUP:
			log_warnx("SIGHUP: reload is not supported yet; "
				  "restart edged to apply a new route file");
			break;
		default:
			break;
		}
	}
}

static void ring_event(struct handler *h, uint32_t events)
{
	kpath_ring_consume();
}

int loop_run(void)
{
	struct epoll_event evs[128];
	sigset_t mask;
	int i, n;

	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGHUP);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	signal_fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
	timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (signal_fd == -1 || timer_fd == -1)
		fatal("signalfd/timerfd");
	signal_h.fn = signal_event;
	timer_h.fn = timer_event;
	ring_h.fn = ring_event;
	loop_add(signal_fd, EPOLLIN, &signal_h);
	loop_add(timer_fd, EPOLLIN, &timer_h);
	if (kpath_ring_fd() >= 0)
		loop_add(kpath_ring_fd(), EPOLLIN, &ring_h);
	timer_arm(0);

	while (!edge.stopping) {
		n = epoll_wait(edge.epfd, evs, 128, -1);
		if (n == -1) {
			if (errno == EINTR)
				continue;
			log_warn("epoll_wait");
			return -1;
		}
		for (i = 0; i < n && !edge.stopping; i++) {
			struct handler *h = evs[i].data.ptr;

			h->fn(h, evs[i].events);
		}
		flow_reap();
	}
	close(timer_fd);
	close(signal_fd);
	return 0;
}
