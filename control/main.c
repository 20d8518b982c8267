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
#include <pwd.h>
#include <sys/resource.h>
#include <unistd.h>

#include "edge.h"
#include "edged.h"
#include "log.h"

struct edge edge;

static void usage(FILE *out)
{
	fprintf(out, "usage: edged [-t] [-d] -c FILE\n"
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

int edge_reload(struct strbuf *err)
{
	struct edge_config *ncfg, *old = edge.cfg;
	struct strbuf errs;
	char msg[128];
	int rc;

	snprintf(msg, sizeof(msg), "RELOADING=1\nMONOTONIC_USEC=%llu",
		 (unsigned long long)(now_ns() / 1000));
	sd_notify_msg(msg);
	log_info("reloading %s", old->path);
	sb_init(&errs);
	rc = config_load(old->path, &ncfg, &errs);
	if (rc) {
		char *line, *save;

		sb_printf(err, "%s",
			  errs.data ? errs.data : "invalid route file\n");
		for (line = strtok_r(errs.data, "\n", &save); line;
		     line = strtok_r(NULL, "\n", &save))
			log_warnx("reload refused: %s", line);
		sb_free(&errs);
		sd_notify_msg("READY=1");
		return rc;
	}
	sb_free(&errs);
	if (strcmp(ncfg->control_socket, old->control_socket))
		log_warnx("reload: control_socket changes need a restart; "
			  "still %s",
			  old->control_socket);
	if (strcmp(ncfg->user, old->user))
		log_warnx("reload: user changes need a restart");
	rc = listeners_reload(ncfg, err);
	if (rc) {
		log_warnx("reload refused: %s", err->data ? err->data : "");
		config_free(ncfg);
		sd_notify_msg("READY=1");
		return rc;
	}
	if (ncfg->metrics != old->metrics ||
	    memcmp(&ncfg->metrics_addr, &old->metrics_addr,
		   sizeof(old->metrics_addr))) {
		metrics_close();
		if (ncfg->metrics && metrics_open(&ncfg->metrics_addr))
			log_warnx("reload: metrics listener not open");
	}
	edge.cfg = ncfg;
	if (edge.kp)
		kpath_set_bound(ncfg->kernel_backlog);
	health_start(ncfg);
	config_unref(old);
	log_info("reloaded: %d listener(s)", ncfg->nlisteners);
	sd_notify_msg("READY=1");
	return 0;
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
	/*
	 * Each flow holds two descriptors: take the hard limit, as a
	 * systemd soft limit of 1024 would let a few hundred silent clients
	 * lock everyone out.
	 */
	{
		struct rlimit rl;

		if (getrlimit(RLIMIT_NOFILE, &rl) == 0 &&
		    rl.rlim_cur < rl.rlim_max) {
			rl.rlim_cur = rl.rlim_max;
			setrlimit(RLIMIT_NOFILE, &rl);
		}
	}
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
			log_warnx(
				"kernel path unavailable, flows use splice(2): "
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
	if (edge.cfg->user[0]) {
		struct passwd *pw = getpwnam(edge.cfg->user);

		if (!pw ||
		    ctl_chown(pw->pw_uid, edge.cfg->control_gid >= 0
						  ? (gid_t)edge.cfg->control_gid
						  : pw->pw_gid) ||
		    drop_privileges(edge.cfg->user))
			fatalx("cannot drop privileges to user %s",
			       edge.cfg->user);
	}
	health_start(edge.cfg);
	edge.watchdog_usec = sd_watchdog_usec();
	log_info("ready: %d listener(s), control socket %s",
		 edge.cfg->nlisteners, edge.cfg->control_socket);
	sd_notify_msg("READY=1");

	loop_run();

	listeners_close();
	flow_close_all(END_SHUTDOWN);
	flow_reap();
	health_stop();
	resolve_stop();
	ctl_close();
	metrics_close();
	kpath_close();
	listeners_free();
	config_unref(edge.cfg);
	free(edge.slot_flow);
	close(edge.epfd);
	log_info("stopped");
	return 0;
}
