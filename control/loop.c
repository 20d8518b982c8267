// SPDX-License-Identifier: MIT
/*
 * loop.c - the event loop: level-triggered epoll, one timerfd tick (250 us
 * while some flow is draining or paused, 20 ms otherwise), a signalfd, and
 * the kernel path's event ring. The fast tick is short because a FIN
 * waits for it when the bytes before it are still in the kernel's queue:
 * at 2 ms it capped a connect/exchange/close client at ~950 flows/s.
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

#define TICK_FAST_US 250
#define TICK_SOON_US 20
#define TICK_SLOW_MS 20

static int timer_fd = -1, signal_fd = -1;
static struct handler timer_h, signal_h, ring_h;
static int tick_fast;
static uint64_t tick_next_ns; /* CLOCK_MONOTONIC of the next expiry */

int loop_add(int fd, uint32_t events, struct handler *h)
{
	struct epoll_event ev = {.events = events, .data.ptr = h};

	if (epoll_ctl(edge.epfd, EPOLL_CTL_ADD, fd, &ev) == -1) {
		log_warn("epoll add fd %d", fd);
		return -errno;
	}
	return 0;
}

int loop_mod(int fd, uint32_t events, struct handler *h)
{
	struct epoll_event ev = {.events = events, .data.ptr = h};

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

static void timer_arm(int fast, long first_ns)
{
	long ns = fast ? TICK_FAST_US * 1000L : TICK_SLOW_MS * 1000000L;
	struct itimerspec its = {
		.it_interval = {.tv_sec = 0, .tv_nsec = ns},
		.it_value = {.tv_sec = 0, .tv_nsec = first_ns ? first_ns : ns},
	};

	tick_fast = fast;
	tick_next_ns = now_ns() + (uint64_t)its.it_value.tv_nsec;
	timerfd_settime(timer_fd, 0, &its, NULL);
}

/*
 * loop_want_fast_tick - a flow waits for the kernel (a FIN behind bytes
 * still in the psock queue, a pause). The first look comes after 20 us:
 * a short exchange's last bytes are usually sent by then (the kernel
 * worker runs right after the softirq that queued them), and a FIN that
 * waited for a whole 250 us period cost ~140 us per connection. Later
 * looks come every 250 us.
 */
void loop_want_fast_tick(void)
{
	uint64_t now;

	if (timer_fd < 0)
		return;
	now = now_ns();
	if (!tick_fast || tick_next_ns > now + TICK_SOON_US * 1000ULL)
		timer_arm(1, TICK_SOON_US * 1000L);
}

static void timer_event(struct handler *h, uint32_t events)
{
	uint64_t n;

	if (read(timer_fd, &n, sizeof(n)) != sizeof(n))
		return;
	tick_next_ns = now_ns() + (tick_fast ? TICK_FAST_US * 1000ULL
					     : TICK_SLOW_MS * 1000000ULL);
	uint64_t now = now_ms();

	flow_tick(now);
	health_tick(now);
	resolve_tick(now);
	if (!edge.draining)
		listeners_pause(0);
	else if (!edge.nflows || now >= edge.drain_deadline_ms)
		edge.stopping = 1;
	if (edge.watchdog_usec &&
	    (now - edge.watchdog_last_ms) * 2000 >= edge.watchdog_usec) {
		sd_notify_msg("WATCHDOG=1");
		edge.watchdog_last_ms = now;
	}
	if (tick_fast && list_empty(&edge.watch))
		timer_arm(0, 0);
}

static void signal_event(struct handler *h, uint32_t events)
{
	struct signalfd_siginfo si;

	while (read(signal_fd, &si, sizeof(si)) == sizeof(si)) {
		switch (si.ssi_signo) {
		case SIGTERM:
			if (edge.draining) {
				log_info("SIGTERM again: stopping now");
				edge.stopping = 1;
				break;
			}
			/* Stop accepting; let live flows finish. */
			log_info(
				"SIGTERM: draining %llu flow(s) for up to %llu "
				"ms",
				(unsigned long long)edge.nflows,
				(unsigned long long)edge.cfg->drain_timeout_ms);
			sd_notify_msg("STOPPING=1");
			edge.draining = 1;
			edge.drain_deadline_ms =
				now_ms() + edge.cfg->drain_timeout_ms;
			listeners_close();
			if (!edge.nflows)
				edge.stopping = 1;
			break;
		case SIGINT:
			log_info("SIGINT: stopping");
			sd_notify_msg("STOPPING=1");
			edge.stopping = 1;
			break;
		case SIGHUP:
			if (!edge.draining)
				edge.reload_pending = 1;
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
	timer_arm(0, 0);

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
		if (edge.reload_pending && !edge.stopping) {
			struct ctl_client *cc = edge.reload_client;
			struct strbuf err;
			int rc;

			sb_init(&err);
			edge.reload_pending = 0;
			edge.reload_client = NULL;
			rc = edge_reload(&err);
			if (cc)
				ctl_reload_done(cc, rc,
						err.data ? err.data : "");
			sb_free(&err);
		}
	}
	close(timer_fd);
	close(signal_fd);
	return 0;
}
