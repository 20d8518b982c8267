// SPDX-License-Identifier: MIT
/*
 * sys.c - process integration: systemd notifications and privilege drop.
 */
#include <errno.h>
#include <grp.h>
#include <linux/capability.h>
#include <pwd.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include "edged.h"
#include "log.h"

/*
 * sd_notify_msg - send a state line to systemd ($NOTIFY_SOCKET), as
 * sd_notify(3) does; a no-op when not started by systemd with Type=notify.
 */
void sd_notify_msg(const char *msg)
{
	const char *path = getenv("NOTIFY_SOCKET");
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	socklen_t len;
	int fd;

	if (!path || !*path || strlen(path) >= sizeof(sun.sun_path))
		return;
	memcpy(sun.sun_path, path, strlen(path));
	if (sun.sun_path[0] == '@')
		sun.sun_path[0] = '\0'; /* abstract namespace */
	len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) +
			  strlen(path));
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd == -1)
		return;
	if (sendto(fd, msg, strlen(msg), MSG_NOSIGNAL, (struct sockaddr *)&sun,
		   len) == -1)
		log_warn("sd_notify %s", msg);
	close(fd);
}

/* sd_watchdog_usec - WatchdogSec for this process, or 0. */
uint64_t sd_watchdog_usec(void)
{
	const char *usec = getenv("WATCHDOG_USEC"),
		   *pid = getenv("WATCHDOG_PID");

	if (!usec)
		return 0;
	if (pid && (pid_t)strtol(pid, NULL, 10) != getpid())
		return 0;
	return strtoull(usec, NULL, 10);
}

/*
 * drop_privileges - become @user (and its group), keeping only
 * CAP_NET_BIND_SERVICE (a reload may bind a new port below 1024). The BPF
 * maps and programs stay usable through their fds. Returns 0 or -errno.
 */
int drop_privileges(const char *user)
{
	struct __user_cap_header_struct hdr = {
		.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
	struct __user_cap_data_struct data[2];
	struct passwd *pw = getpwnam(user);
	int cap, err;

	if (!pw) {
		log_warnx("user '%s' does not exist", user);
		return -ENOENT;
	}
	for (cap = 0; cap <= 63; cap++) {
		if (cap == CAP_NET_BIND_SERVICE)
			continue;
		if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) == -1 &&
		    errno != EINVAL)
			log_warn("dropping capability %d from the bounding set",
				 cap);
	}
	if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) == -1 ||
	    setgroups(1, &pw->pw_gid) == -1 ||
	    setresgid(pw->pw_gid, pw->pw_gid, pw->pw_gid) == -1 ||
	    setresuid(pw->pw_uid, pw->pw_uid, pw->pw_uid) == -1) {
		err = -errno;
		log_warn("cannot switch to user %s", user);
		return err;
	}
	memset(data, 0, sizeof(data));
	data[0].effective = data[0].permitted = 1u << CAP_NET_BIND_SERVICE;
	if (syscall(SYS_capset, &hdr, data) == -1) {
		err = -errno;
		log_warn("capset");
		return err;
	}
	prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0);
	log_info("running as %s (uid %u, gid %u), keeping CAP_NET_BIND_SERVICE",
		 user, (unsigned)pw->pw_uid, (unsigned)pw->pw_gid);
	return 0;
}
