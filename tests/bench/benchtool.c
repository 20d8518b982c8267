/* benchtool - small load tools for tests/bench/run (libc + pthreads only).
 *
 *   benchtool server -l HOST:PORT [-m close|hold]
 *       single-threaded epoll echo server.  close: echo what a connection
 *       sends, then close it (the server closes first, as an HTTP/1.0
 *       server does, so TIME_WAIT stays on the listening side); hold: echo
 *       and keep the connection until the peer closes.  Prints
 *       "listening ADDR:PORT" once listening; on SIGUSR1 prints
 *       "accepted=N open=N echoed=N".  Exits 0 on SIGTERM/SIGINT.
 *   benchtool rate -c HOST:PORT -j CONCURRENCY -d SECONDS
 *       CONCURRENCY threads, each in a loop: connect, send 1 byte, read the
 *       1-byte echo and the server's EOF, close.  Prints one JSON object:
 *       conns, errors, seconds, per_sec, p50_us, p99_us (per connection,
 *       connect to EOF), first_error.
 *   benchtool hold -c HOST:PORT -n COUNT
 *       opens COUNT connections (4 threads), each exchanging 1 byte (so it is known to
 *       reach the server), prints "ready COUNT SECONDS", keeps them idle
 *       until stdin closes or SIGTERM, then closes them and exits 0.
 *
 * Exit status: 0 ok, 1 usage or setup error, 2 a connection failed (hold).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t stop_flag, report_flag;

static void on_stop(int s)
{
	(void)s;
	stop_flag = 1;
}

static void on_report(int s)
{
	(void)s;
	report_flag = 1;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *msg)
{
	fprintf(stderr, "benchtool: %s: %s\n", msg, strerror(errno));
	exit(1);
}

/* HOST:PORT or [V6]:PORT into a sockaddr. */
static int parse_addr(const char *s, struct sockaddr_storage *ss, socklen_t *len)
{
	char host[256];
	const char *colon, *port;
	struct addrinfo hints = { 0 }, *res;

	if (s[0] == '[') {
		const char *e = strchr(s, ']');

		if (!e || e[1] != ':' || (size_t)(e - s - 1) >= sizeof(host))
			return -1;
		memcpy(host, s + 1, e - s - 1);
		host[e - s - 1] = 0;
		port = e + 2;
	} else {
		colon = strrchr(s, ':');
		if (!colon || (size_t)(colon - s) >= sizeof(host))
			return -1;
		memcpy(host, s, colon - s);
		host[colon - s] = 0;
		port = colon + 1;
	}
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
	if (getaddrinfo(host, port, &hints, &res))
		return -1;
	memcpy(ss, res->ai_addr, res->ai_addrlen);
	*len = res->ai_addrlen;
	freeaddrinfo(res);
	return 0;
}

static void raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

/* ---- server ---- */

static int cmd_server(const char *listen_addr, int close_mode)
{
	struct sockaddr_storage ss;
	socklen_t sl;
	int lfd, ep, one = 1;
	unsigned long accepted = 0, open_now = 0, echoed = 0;
	struct epoll_event ev, evs[256];
	char buf[65536];

	if (parse_addr(listen_addr, &ss, &sl))
		return fprintf(stderr, "benchtool: bad address %s\n", listen_addr), 1;
	lfd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (lfd < 0)
		die("socket");
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(lfd, (struct sockaddr *)&ss, sl) || listen(lfd, 4096))
		die("bind/listen");
	sl = sizeof(ss);
	getsockname(lfd, (struct sockaddr *)&ss, &sl);
	{
		char h[INET6_ADDRSTRLEN] = "?";
		int port;

		if (ss.ss_family == AF_INET6) {
			inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, h, sizeof(h));
			port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
			printf("listening [%s]:%d\n", h, port);
		} else {
			inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, h, sizeof(h));
			port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
			printf("listening %s:%d\n", h, port);
		}
		fflush(stdout);
	}
	ep = epoll_create1(EPOLL_CLOEXEC);
	ev.events = EPOLLIN;
	ev.data.fd = lfd;
	epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
	while (!stop_flag) {
		int n = epoll_wait(ep, evs, 256, 100);

		if (report_flag) {
			report_flag = 0;
			printf("accepted=%lu open=%lu echoed=%lu\n", accepted, open_now, echoed);
			fflush(stdout);
		}
		for (int i = 0; i < n; i++) {
			int fd = evs[i].data.fd;

			if (fd == lfd) {
				for (;;) {
					int c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

					if (c < 0)
						break;
					accepted++;
					open_now++;
					setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
					ev.events = EPOLLIN | EPOLLRDHUP;
					ev.data.fd = c;
					epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev);
				}
				continue;
			}
			for (;;) {
				ssize_t r = read(fd, buf, sizeof(buf));

				if (r > 0) {
					ssize_t off = 0;

					while (off < r) {
						ssize_t w = write(fd, buf + off, r - off);

						if (w < 0 && errno == EAGAIN) {
							struct pollfd p = { fd, POLLOUT, 0 };

							poll(&p, 1, 1000);
							continue;
						}
						if (w <= 0)
							break;
						off += w;
					}
					echoed += r;
					if (close_mode) {
						close(fd);
						open_now--;
						break;
					}
					continue;
				}
				if (r < 0 && errno == EAGAIN)
					break;
				close(fd); /* EOF or error */
				open_now--;
				break;
			}
		}
	}
	return 0;
}

/* ---- rate ---- */

struct rate_ctx {
	struct sockaddr_storage ss;
	socklen_t sl;
	double end;
	atomic_ulong conns, errors;
	pthread_mutex_t mu;
	char first_error[200];
	/* per-connection durations, microseconds, sampled */
	uint32_t *lat;
	size_t nlat, caplat;
};

static void rate_err(struct rate_ctx *c, const char *what)
{
	atomic_fetch_add(&c->errors, 1);
	pthread_mutex_lock(&c->mu);
	if (!c->first_error[0])
		snprintf(c->first_error, sizeof(c->first_error), "%s: %s", what, strerror(errno));
	pthread_mutex_unlock(&c->mu);
}

static void *rate_thread(void *arg)
{
	struct rate_ctx *c = arg;
	struct timeval tv = { 5, 0 };
	uint32_t local[4096];
	size_t nlocal = 0;

	while (now_s() < c->end) {
		double t0 = now_s();
		int fd = socket(c->ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
		char b = 'x', r[2];
		ssize_t got;
		size_t total = 0;

		if (fd < 0) {
			rate_err(c, "socket");
			usleep(1000);
			continue;
		}
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
		if (connect(fd, (struct sockaddr *)&c->ss, c->sl)) {
			rate_err(c, "connect");
			close(fd);
			usleep(1000);
			continue;
		}
		if (write(fd, &b, 1) != 1) {
			rate_err(c, "write");
			close(fd);
			continue;
		}
		/* the echoed byte, then EOF from the server */
		while ((got = read(fd, r, sizeof(r))) > 0)
			total += got;
		close(fd);
		if (got < 0 || total != 1) {
			if (got == 0)
				errno = EPROTO;
			rate_err(c, total == 1 ? "read" : "echo");
			continue;
		}
		atomic_fetch_add(&c->conns, 1);
		if (nlocal < sizeof(local) / sizeof(local[0]))
			local[nlocal++] = (uint32_t)((now_s() - t0) * 1e6);
	}
	pthread_mutex_lock(&c->mu);
	for (size_t i = 0; i < nlocal && c->nlat < c->caplat; i++)
		c->lat[c->nlat++] = local[i];
	pthread_mutex_unlock(&c->mu);
	return NULL;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

static int cmd_rate(const char *addr, int conc, double secs)
{
	struct rate_ctx c;
	pthread_t *th;
	double t0, t1;

	memset(&c, 0, sizeof(c));
	if (parse_addr(addr, &c.ss, &c.sl))
		return fprintf(stderr, "benchtool: bad address %s\n", addr), 1;
	pthread_mutex_init(&c.mu, NULL);
	c.caplat = 1 << 20;
	c.lat = calloc(c.caplat, sizeof(*c.lat));
	th = calloc(conc, sizeof(*th));
	t0 = now_s();
	c.end = t0 + secs;
	for (int i = 0; i < conc; i++)
		if (pthread_create(&th[i], NULL, rate_thread, &c))
			die("pthread_create");
	for (int i = 0; i < conc; i++)
		pthread_join(th[i], NULL);
	t1 = now_s();
	qsort(c.lat, c.nlat, sizeof(*c.lat), cmp_u32);
	printf("{\"conns\": %lu, \"errors\": %lu, \"seconds\": %.4f, \"per_sec\": %.1f, "
	       "\"p50_us\": %u, \"p99_us\": %u, \"first_error\": \"%s\"}\n",
	       (unsigned long)c.conns, (unsigned long)c.errors, t1 - t0,
	       c.conns / (t1 - t0), c.nlat ? c.lat[c.nlat / 2] : 0,
	       c.nlat ? c.lat[(size_t)(c.nlat * 0.99)] : 0, c.first_error);
	return 0;
}

/* ---- hold ---- */

struct hold_ctx {
	struct sockaddr_storage ss;
	socklen_t sl;
	int *fds;
	long from, to;
	int failed;
};

static void *hold_thread(void *arg)
{
	struct hold_ctx *h = arg;
	struct timeval tv = { 10, 0 };
	char b = 'h';

	for (long i = h->from; i < h->to; i++) {
		char r;
		int fd = socket(h->ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);

		if (fd < 0) {
			fprintf(stderr, "benchtool: flow %ld: socket: %s\n", i, strerror(errno));
			h->failed = 1;
			return NULL;
		}
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		if (connect(fd, (struct sockaddr *)&h->ss, h->sl) || write(fd, &b, 1) != 1 ||
		    read(fd, &r, 1) != 1 || r != b) {
			fprintf(stderr, "benchtool: flow %ld: connect/echo: %s\n", i, strerror(errno));
			close(fd);
			h->failed = 1;
			return NULL;
		}
		h->fds[i] = fd;
	}
	return NULL;
}

static int cmd_hold(const char *addr, long count)
{
	enum { NT = 4 };
	struct hold_ctx h[NT];
	pthread_t th[NT];
	struct sockaddr_storage ss;
	socklen_t sl;
	int *fds, failed = 0;
	double t0 = now_s();

	if (parse_addr(addr, &ss, &sl))
		return fprintf(stderr, "benchtool: bad address %s\n", addr), 1;
	fds = calloc(count, sizeof(*fds));
	for (long i = 0; i < count; i++)
		fds[i] = -1;
	for (int t = 0; t < NT; t++) {
		h[t].ss = ss;
		h[t].sl = sl;
		h[t].fds = fds;
		h[t].from = count * t / NT;
		h[t].to = count * (t + 1) / NT;
		h[t].failed = 0;
		if (pthread_create(&th[t], NULL, hold_thread, &h[t]))
			die("pthread_create");
	}
	for (int t = 0; t < NT; t++) {
		pthread_join(th[t], NULL);
		failed |= h[t].failed;
	}
	if (failed)
		return 2;
	printf("ready %ld %.3f\n", count, now_s() - t0);
	fflush(stdout);
	{
		char buf[64];

		while (!stop_flag && read(0, buf, sizeof(buf)) > 0)
			;
	}
	for (long i = 0; i < count; i++)
		close(fds[i]);
	return 0;
}

int main(int argc, char **argv)
{
	const char *addr = NULL, *mode = "close";
	int conc = 1, opt;
	double secs = 1;
	long count = 1;
	struct sigaction sa = { 0 };

	if (argc < 2) {
usage:
		fprintf(stderr, "usage: benchtool server -l HOST:PORT [-m close|hold]\n"
				"       benchtool rate -c HOST:PORT -j CONC -d SECONDS\n"
				"       benchtool hold -c HOST:PORT -n COUNT\n");
		return 1;
	}
	sa.sa_handler = on_stop;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sa.sa_handler = on_report;
	sa.sa_flags = SA_RESTART;
	sigaction(SIGUSR1, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	raise_nofile();
	optind = 2;
	while ((opt = getopt(argc, argv, "l:c:m:j:d:n:")) != -1) {
		switch (opt) {
		case 'l':
		case 'c':
			addr = optarg;
			break;
		case 'm':
			mode = optarg;
			break;
		case 'j':
			conc = atoi(optarg);
			break;
		case 'd':
			secs = atof(optarg);
			break;
		case 'n':
			count = atol(optarg);
			break;
		default:
			goto usage;
		}
	}
	if (!addr || conc < 1 || count < 1)
		goto usage;
	if (!strcmp(argv[1], "server"))
		return cmd_server(addr, strcmp(mode, "hold") != 0);
	if (!strcmp(argv[1], "rate"))
		return cmd_rate(addr, conc, secs);
	if (!strcmp(argv[1], "hold"))
		return cmd_hold(addr, count);
	goto usage;
}
