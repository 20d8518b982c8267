// SPDX-License-Identifier: MIT
/*
 * main.c - edged: options, start-up, shutdown.
 *   edged -c FILE        run in the foreground, log to stderr
 *   edged -t -c FILE     check FILE: exit 0, or FILE:LINE:COL: messages, 1
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "edge.h"
#include "edged.h"
#include "log.h"

struct edge edge;

static void usage(FILE *out)
{
	fprintf(out,
		"usage: edged [-t] [-d] -c FILE\n"
		"  -c FILE  route file (YAML)\n"
		"  -t       check the route file and exit (0: valid)\n"
		"  -d       debug logging\n"
		"  -h       this help\n");
}

static int need_kernel_path(const struct edge_config *cfg, int *forced)
{
	int i, need = 0;

	*forced = 0;
	for (i = 0; i < cfg->nlisteners; i++) {
		if (cfg->listeners[i].datapath == DP_AUTO)
			need = 1;
		if (cfg->listeners[i].datapath == DP_SOCKMAP)
			need = *forced = 1;
	}
	return need;
}

int main(int argc, char **argv)
{
	const char *file = NULL;
	struct strbuf errs;
	int opt, check = 0, debug = 0, forced;

	while ((opt = getopt(argc, argv, "c:tdh")) != -1) {
		switch (opt) {
		case 'c':
			file = optarg;
			break;
		case 't':
			check = 1;
			break;
		case 'd':
			debug = 1;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (!file || optind != argc) {
		usage(stderr);
		return 2;
	}
	log_init("edged", debug ? LOG_LVL_DEBUG : LOG_LVL_INFO);
	setvbuf(stderr, NULL, _IOLBF, 0);

	sb_init(&errs);
	if (config_load(file, &edge.cfg, &errs)) {
		fputs(errs.data ? errs.data : "invalid route file\n", stderr);
		sb_free(&errs);
		return 1;
	}
	sb_free(&errs);
	if (check) {
		printf("%s: ok\n", file);
		config_free(edge.cfg);
		return 0;
	}

	signal(SIGPIPE, SIG_IGN);
	list_init(&edge.flows);
	list_init(&edge.watch);
	list_init(&edge.dead);
	edge.start_ms = now_ms();
	edge.epfd = epoll_create1(EPOLL_CLOEXEC);
	if (edge.epfd == -1)
		fatal("epoll_create1");

	edge.nslots = EDGE_DEFAULT_SLOTS;
	edge.slot_flow = calloc((size_t)edge.nslots, sizeof(struct flow *));
	if (!edge.slot_flow)
		fatal("calloc");
	snprintf(edge.kp_why, sizeof(edge.kp_why),
		 "kernel path not requested (datapath setting)");
	if (need_kernel_path(edge.cfg, &forced)) {
		if (kpath_open(edge.nslots, edge.kp_why, sizeof(edge.kp_why))) {
			if (forced)
				fatalx("datapath sockmap: %s", edge.kp_why);
			log_warnx("kernel path unavailable, flows use splice(2): "
				  "%s",
				  edge.kp_why);
		} else {
			log_info("kernel path loaded (sockmap, %d slots)",
				 edge.nslots);
		}
	}
	if (listeners_open())
		fatalx("cannot open the listeners");
	if (ctl_open(edge.cfg->control_socket, edge.cfg->control_gid))
		fatalx("cannot open the control socket %s",
		       edge.cfg->control_socket);
	if (edge.cfg->metrics && metrics_open(&edge.cfg->metrics_addr))
		fatalx("cannot open the metrics listener");
	log_info("ready: %d listener(s), control socket %s",
		 edge.cfg->nlisteners, edge.cfg->control_socket);

	loop_run();

	listeners_close();
	flow_close_all(END_SHUTDOWN);
	flow_reap();
	ctl_close();
	metrics_close();
	kpath_close();
	config_free(edge.cfg);
	free(edge.listeners);
	free(edge.slot_flow);
	close(edge.epfd);
	log_info("stopped");
	return 0;
}
