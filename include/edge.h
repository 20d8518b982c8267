/* SPDX-License-Identifier: MIT */
/*
 * edge.h - the one header shared by the BPF programs (bpf/edge.bpf.c) and
 * the control plane (control/). Plain fixed-width types only; every field is
 * in host byte order (BPF and userspace run on the same CPU).
 *
 * A flow has two directions. Each spliced socket owns one "slot": an index
 * into the dir_stats and dir_ctl arrays, and its key in the sock_targets and
 * sock_splice SOCKHASHes. The slot of a socket names the direction whose
 * bytes *arrive* on that socket.
 */
#ifndef EDGE_SHARED_H
#define EDGE_SHARED_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

/*
 * Per-direction counters, written only by the verdict program (atomic adds),
 * read by userspace through an mmap()ed array. Never written by userspace:
 * a userspace write would race with the program's adds.
 */
struct edge_dir_stats {
	__u64 bytes; /* payload bytes redirected to the peer socket */
	__u64 skbs; /* messages redirected */
	__u64 last_ns; /* bpf_ktime_get_ns() of the last message */
	__u64 notified; /* the dir_ctl.limit for which an event was sent */
};

/*
 * Per-direction control, written only by userspace (mmap()ed array), read
 * by the verdict program.
 */
struct edge_dir_ctl {
	__u32 peer_slot; /* key in sock_targets of the socket to send to */
	__u32 active; /* 1 while the slot belongs to a live flow */
	__u64 limit; /* notify userspace when bytes passes this value */
};

/* Ring buffer record: "slot's redirected bytes passed its limit". */
struct edge_event {
	__u32 slot;
	__u32 pad;
	__u64 bytes;
};

_Static_assert(sizeof(struct edge_dir_stats) == 32, "dir_stats layout");
_Static_assert(sizeof(struct edge_dir_ctl) == 16, "dir_ctl layout");
_Static_assert(sizeof(struct edge_event) == 16, "event layout");

/* Default number of slots (two per flow); edged resizes before load. */
#define EDGE_DEFAULT_SLOTS 65536

#endif
