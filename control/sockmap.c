// SPDX-License-Identifier: MIT
/*
 * sockmap.c - the kernel data path: load bpf/edge.bpf.c, splice the two
 * sockets of a flow, measure what the kernel has queued, pause and resume.
 *
 * Accounting, per direction src -> dst (all from the kernel, no guessing):
 *   sent_total(dst) = tcpi_bytes_acked + SIOCOUTQ - base   bytes that have
 *                     entered dst's send queue since the flow began;
 *   recv_total(src) = tcpi_bytes_received (- 1 once src sent FIN)
 *                     every byte the peer of src sent;
 *   redirected      = dir_stats[src slot].bytes, counted by the verdict.
 * Bytes in flight in the kernel for a direction (the psock queue, which is
 * charged to no socket buffer) = redirected + user_bytes + injected -
 * sent_total(dst). The FIN of src may be passed on only when
 * sent_total(dst) >= recv_total(src) + injected: every byte src received
 * (including bytes still in its receive queue or inside strparser) has
 * entered dst's send queue. See sockmap-field-guide §3, §4.
 */
#include <errno.h>
#include <netinet/in.h>
#include <linux/tcp.h>
#include <linux/sockios.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "edge.h"
#include "edge.skel.h"
#include "edged.h"
#include "log.h"

struct kpath {
	struct edge_bpf *skel;
	int targets_fd, splice_fd, slot_fd;
	struct edge_dir_ctl *ctl;
	struct edge_dir_stats *stats;
	size_t ctl_len, stats_len;
	struct ring_buffer *rb;
	int *free_slots;
	int nfree;
	int nslots;
	uint64_t high;
};

static struct kpath kp_state;
/* kpath_sndbuf(): the SO_SNDBUF value, 0: none, -1: not known yet */
static int sndbuf_plain = -1;

int sock_sent_total(int fd, uint64_t *sent)
{
	struct tcp_info ti;
	socklen_t len = sizeof(ti);
	int outq;

	memset(&ti, 0, sizeof(ti));
	if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) == -1)
		return -errno;
	if (ioctl(fd, SIOCOUTQ, &outq) == -1)
		return -errno;
	*sent = ti.tcpi_bytes_acked + (uint64_t)outq;
	return 0;
}

int sock_recv_total(int fd, uint64_t *recvd)
{
	struct tcp_info ti;
	socklen_t len = sizeof(ti);

	memset(&ti, 0, sizeof(ti));
	if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) == -1)
		return -errno;
	*recvd = ti.tcpi_bytes_received;
	return 0;
}

/*
 * kpath_kick - make the kernel process bytes that were queued on fd before
 * it was spliced: inserting a socket only swaps its data_ready callback,
 * so they would wait for the next segment (for a peer that waits for an
 * answer: forever). SO_RCVLOWAT runs tcp_data_ready(). A zero-length recv
 * does not kick (field guide §2).
 */
int kpath_kick(int fd)
{
	int one = 1;

	if (setsockopt(fd, SOL_SOCKET, SO_RCVLOWAT, &one, sizeof(one)) == -1)
		return -errno;
	return 0;
}

static int ring_event(void *ctx, void *data, size_t len)
{
	const struct edge_event *ev = data;

	if (len < sizeof(*ev))
		return 0;
	flow_kernel_event((int)ev->slot);
	return 0;
}

int kpath_open(int slots, char *why, size_t whylen)
{
	struct kpath *kp = &kp_state;
	struct edge_bpf *skel;
	int err, i;

	libbpf_set_print(log_libbpf);
	memset(kp, 0, sizeof(*kp));
	skel = edge_bpf__open();
	if (!skel) {
		err = -errno;
		snprintf(why, whylen, "cannot open the BPF object: %s",
			 strerror(-err));
		return err;
	}
	bpf_map__set_max_entries(skel->maps.sock_targets, slots);
	bpf_map__set_max_entries(skel->maps.sock_splice, slots);
	bpf_map__set_max_entries(skel->maps.sock_slot, slots);
	bpf_map__set_max_entries(skel->maps.dir_ctl, slots);
	bpf_map__set_max_entries(skel->maps.dir_stats, slots);
	err = edge_bpf__load(skel);
	if (err) {
		snprintf(why, whylen,
			 "cannot load the BPF programs: %s (needs CAP_BPF, "
			 "CAP_PERFMON and "
			 "CAP_NET_ADMIN, and a kernel with BTF and "
			 "bpf_cast_to_kern_ctx, 6.2+)",
			 strerror(-err));
		goto fail;
	}
	kp->skel = skel;
	kp->targets_fd = bpf_map__fd(skel->maps.sock_targets);
	kp->splice_fd = bpf_map__fd(skel->maps.sock_splice);
	kp->slot_fd = bpf_map__fd(skel->maps.sock_slot);

	err = bpf_prog_attach(bpf_program__fd(skel->progs.edge_parser),
			      kp->splice_fd, BPF_SK_SKB_STREAM_PARSER, 0);
	if (err) {
		err = -errno;
		snprintf(why, whylen, "cannot attach the stream parser: %s",
			 strerror(-err));
		goto fail;
	}
	err = bpf_prog_attach(bpf_program__fd(skel->progs.edge_verdict),
			      kp->splice_fd, BPF_SK_SKB_STREAM_VERDICT, 0);
	if (err) {
		err = -errno;
		snprintf(why, whylen, "cannot attach the stream verdict: %s",
			 strerror(-err));
		goto fail;
	}

	kp->ctl_len = (size_t)slots * sizeof(struct edge_dir_ctl);
	kp->stats_len = (size_t)slots * sizeof(struct edge_dir_stats);
	kp->ctl = mmap(NULL, kp->ctl_len, PROT_READ | PROT_WRITE, MAP_SHARED,
		       bpf_map__fd(skel->maps.dir_ctl), 0);
	if (kp->ctl == MAP_FAILED) {
		err = -errno;
		kp->ctl = NULL;
		snprintf(why, whylen, "cannot mmap dir_ctl: %s",
			 strerror(-err));
		goto fail;
	}
	kp->stats = mmap(NULL, kp->stats_len, PROT_READ | PROT_WRITE,
			 MAP_SHARED, bpf_map__fd(skel->maps.dir_stats), 0);
	if (kp->stats == MAP_FAILED) {
		err = -errno;
		kp->stats = NULL;
		snprintf(why, whylen, "cannot mmap dir_stats: %s",
			 strerror(-err));
		goto fail;
	}
	kp->rb = ring_buffer__new(bpf_map__fd(skel->maps.events), ring_event,
				  NULL, NULL);
	if (!kp->rb) {
		err = -errno;
		snprintf(why, whylen, "cannot open the event ring: %s",
			 strerror(-err));
		goto fail;
	}
	kp->free_slots = malloc(sizeof(int) * (size_t)slots);
	if (!kp->free_slots) {
		err = -ENOMEM;
		snprintf(why, whylen, "out of memory");
		goto fail;
	}
	for (i = 0; i < slots; i++)
		kp->free_slots[i] = slots - 1 - i;
	kp->nfree = slots;
	kp->nslots = slots;
	/*
	 * Pause at half the bound: the event reaches us a few ms late at
	 * GB/s, and the queue grows meanwhile. A quarter moved bulk flows
	 * that the kernel path (with its 16 MiB send buffers) would carry.
	 */
	kp->high = edge.cfg->kernel_backlog / 2;
	edge.kp = kp;
	return 0;
fail:
	kpath_close();
	if (!kp->skel)
		edge_bpf__destroy(skel);
	return err ? err : -EINVAL;
}

void kpath_close(void)
{
	struct kpath *kp = &kp_state;

	if (kp->rb)
		ring_buffer__free(kp->rb);
	if (kp->ctl)
		munmap(kp->ctl, kp->ctl_len);
	if (kp->stats)
		munmap(kp->stats, kp->stats_len);
	if (kp->skel)
		edge_bpf__destroy(kp->skel);
	free(kp->free_slots);
	memset(kp, 0, sizeof(*kp));
	edge.kp = NULL;
}

int kpath_ring_fd(void)
{
	return kp_state.rb ? ring_buffer__epoll_fd(kp_state.rb) : -1;
}

void kpath_ring_consume(void)
{
	if (kp_state.rb)
		ring_buffer__consume(kp_state.rb);
}

/* kpath_set_bound - a reload: limits.kernel_backlog, kernel_sndbuf. */
void kpath_set_bound(uint64_t bytes)
{
	kp_state.high = bytes / 2;
	sndbuf_plain = -1;
}

uint64_t kpath_high(void)
{
	return kp_state.high;
}

uint64_t kpath_dir_bytes(int slot)
{
	if (slot < 0 || !kp_state.stats)
		return 0;
	return __atomic_load_n(&kp_state.stats[slot].bytes, __ATOMIC_RELAXED);
}

uint64_t kpath_dir_last_ns(int slot)
{
	if (slot < 0 || !kp_state.stats)
		return 0;
	return __atomic_load_n(&kp_state.stats[slot].last_ns, __ATOMIC_RELAXED);
}

uint64_t kpath_dir_skbs(int slot)
{
	if (slot < 0 || !kp_state.stats)
		return 0;
	return __atomic_load_n(&kp_state.stats[slot].skbs, __ATOMIC_RELAXED);
}

void kpath_set_limit(struct dir *d, uint64_t limit)
{
	__atomic_store_n(&kp_state.ctl[d->src->slot].limit, limit,
			 __ATOMIC_RELAXED);
}

static int slot_get(void)
{
	if (!kp_state.nfree)
		return -1;
	return kp_state.free_slots[--kp_state.nfree];
}

static void slot_put(int slot)
{
	struct kpath *kp = &kp_state;

	if (slot < 0)
		return;
	kp->ctl[slot].active = 0;
	edge.slot_flow[slot] = NULL;
	kp->free_slots[kp->nfree++] = slot;
}

static int sock_cookie(int fd, uint64_t *cookie)
{
	socklen_t len = sizeof(*cookie);

	if (getsockopt(fd, SOL_SOCKET, SO_COOKIE, cookie, &len) == -1)
		return -errno;
	return 0;
}

/*
 * kpath_unsplice - take the flow's sockets out of the kernel path (used
 * when a hand-off fails halfway, and at close). close() would remove them
 * from the SOCKHASHes too; the plain HASH entries must be deleted here.
 */
void kpath_unsplice(struct flow *f, int closing)
{
	struct kpath *kp = &kp_state;
	struct side *s[2] = {&f->c, &f->u};
	int i;

	if (!kp->skel)
		return;
	for (i = 0; i < 2; i++) {
		uint32_t key = (uint32_t)s[i]->slot;

		if (s[i]->slot < 0)
			continue;
		/* close() removes a socket from the SOCKHASHes itself. */
		if (!closing) {
			bpf_map_delete_elem(kp->splice_fd, &key);
			bpf_map_delete_elem(kp->targets_fd, &key);
		}
		if (s[i]->cookie)
			bpf_map_delete_elem(kp->slot_fd, &s[i]->cookie);
		s[i]->cookie = 0;
		slot_put(s[i]->slot);
		s[i]->slot = -1;
	}
}

/*
 * Send buffers of redirect targets. The psock worker that sends redirected
 * skbs out of a target (sk_psock_backlog(), net/core/skmsg.c) gives up as
 * soon as the socket is not writeable (queued > sk_sndbuf / 2) and runs
 * again only when the next skb is redirected to it: it never sets
 * SOCK_NOSPACE, so no write_space wake-up comes. With the autotuned 4 MiB
 * buffer the worker drained 128 KiB writes at ~5 Gbit/s while the sender
 * pushed 10-13 and the queue grew by hundreds of MB a second; with 16 MiB
 * it kept up (11.9-13.4 Gbit/s, no growth). See LESSONS.md.
 *
 * limits.kernel_sndbuf is the sk_sndbuf wanted (setsockopt takes half and
 * the kernel doubles it). SO_SNDBUFFORCE needs CAP_NET_ADMIN, which edged
 * drops with `user:`; then SO_SNDBUF, capped by net.core.wmem_max, and
 * only when that beats the autotuning ceiling (net.ipv4.tcp_wmem[2]):
 * setting a buffer turns autotuning off for the socket.
 */
static int sndbuf_force = 1; /* until SO_SNDBUFFORCE fails with EPERM */
static int sndbuf_warned;

static uint64_t sysctl_u64(const char *path, int field)
{
	unsigned long long v[3] = {0, 0, 0};
	FILE *fp = fopen(path, "r");
	int n = 0;

	if (fp) {
		n = fscanf(fp, "%llu %llu %llu", &v[0], &v[1], &v[2]);
		fclose(fp);
	}
	return field < n ? v[field] : 0;
}

/*
 * The SO_SNDBUF value without CAP_NET_ADMIN, from the sysctls: read once
 * (not per socket), again after a reload.
 */
static int sndbuf_plain_value(uint64_t want)
{
	uint64_t wmem_max = sysctl_u64("/proc/sys/net/core/wmem_max", 0);
	uint64_t autotune = sysctl_u64("/proc/sys/net/ipv4/tcp_wmem", 2);

	if (wmem_max * 2 < want && !sndbuf_warned) {
		sndbuf_warned = 1;
		log_warnx("kernel path: send buffers capped at %llu bytes "
			  "by net.core.wmem_max (limits.kernel_sndbuf "
			  "%llu; no CAP_NET_ADMIN); sysctl "
			  "net.core.wmem_max=%llu lets the kernel path "
			  "keep up with fast senders (README, Tuning)",
			  (unsigned long long)(wmem_max * 2),
			  (unsigned long long)want,
			  (unsigned long long)(want / 2));
	}
	if (wmem_max * 2 <= autotune)
		return 0;
	return (int)(want / 2 > wmem_max ? wmem_max : want / 2);
}

static void kpath_sndbuf(int fd)
{
	uint64_t want = edge.cfg->kernel_sndbuf;
	int val;

	if (!want)
		return;
	val = (int)(want / 2);
	if (sndbuf_force) {
		if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &val,
			       sizeof(val)) == 0)
			return;
		if (errno != EPERM)
			return;
		sndbuf_force = 0;
	}
	if (sndbuf_plain < 0)
		sndbuf_plain = sndbuf_plain_value(want);
	if (sndbuf_plain)
		setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf_plain,
			   sizeof(sndbuf_plain));
}

static int splice_insert(struct side *s)
{
	uint32_t key = (uint32_t)s->slot;
	uint64_t val = (uint64_t)s->fd;

	if (bpf_map_update_elem(kp_state.splice_fd, &key, &val, BPF_ANY))
		return -errno;
	return kpath_kick(s->fd);
}

/*
 * The hand-off, in two steps. Order matters:
 *  kpath_splice_upstream(), right after the connect, before anything is
 *  written upstream:
 *   1. both sockets become redirect targets (sock_targets), and their
 *      cookie -> slot entries and peer slots are set: from now on any
 *      byte the verdict sees has somewhere to go (an absent target drops
 *      bytes that TCP has already acknowledged);
 *   2. the upstream's receive side is spliced and kicked: a server that
 *      answers (or speaks first) and closes at once is still ESTABLISHED
 *      now, and its bytes go to the client from the kernel.
 *  kpath_splice_client(), once the PROXY header and the bytes read from
 *  the client are in the upstream's send queue: the client's receive side
 *  is spliced and kicked, so redirected bytes queue behind them.
 * A socket that is no longer ESTABLISHED (its peer sent FIN) is refused
 * with EOPNOTSUPP.
 * kpath_splice_upstream() returns 0, or -errno with @why set and nothing
 * spliced. kpath_splice_client() returns 0, or -errno with @why set: then
 * only the upstream -> client direction runs in the kernel.
 */
/*
 * refused - why the sockmap refused a socket. flow.c counts the reasons
 * by these words (fallback_of()): keep "not ESTABLISHED" and the side.
 */
static void refused(char *why, size_t whylen, const char *side, int err)
{
	snprintf(why, whylen, "%s socket refused by sockmap: %s", side,
		 err == -EOPNOTSUPP ? "not ESTABLISHED (already half-closed)"
				    : strerror(-err));
}

int kpath_splice_upstream(struct flow *f, char *why, size_t whylen)
{
	struct kpath *kp = &kp_state;
	struct side *s[2] = {&f->c, &f->u};
	int i, err;

	for (i = 0; i < 2; i++) {
		s[i]->slot = slot_get();
		if (s[i]->slot < 0) {
			snprintf(why, whylen, "no free kernel slot");
			err = -ENOSPC;
			goto undo;
		}
		edge.slot_flow[s[i]->slot] = f;
		memset(&kp->stats[s[i]->slot], 0, sizeof(kp->stats[0]));
	}
	for (i = 0; i < 2; i++) {
		struct edge_dir_ctl *c = &kp->ctl[s[i]->slot];
		uint32_t key = (uint32_t)s[i]->slot;
		uint64_t val = (uint64_t)s[i]->fd, cookie;

		c->peer_slot = (uint32_t)s[!i]->slot;
		c->limit = f->lc->datapath == DP_AUTO &&
					   kp->high > AUTO_PROBE_BYTES
				   ? AUTO_PROBE_BYTES
				   : kp->high;
		c->active = 1;
		err = sock_cookie(s[i]->fd, &cookie);
		if (err) {
			snprintf(why, whylen, "SO_COOKIE: %s", strerror(-err));
			goto undo;
		}
		if (bpf_map_update_elem(kp->slot_fd, &cookie, &key, BPF_ANY)) {
			err = -errno;
			snprintf(why, whylen, "sock_slot update: %s",
				 strerror(-err));
			goto undo;
		}
		s[i]->cookie = cookie;
		if (bpf_map_update_elem(kp->targets_fd, &key, &val, BPF_ANY)) {
			err = -errno;
			refused(why, whylen, i ? "upstream" : "client", err);
			goto undo;
		}
		kpath_sndbuf(s[i]->fd);
	}
	err = splice_insert(&f->u);
	if (err) {
		refused(why, whylen, "upstream", err);
		goto undo;
	}
	return 0;
undo:
	kpath_unsplice(f, 0);
	return err;
}

int kpath_splice_client(struct flow *f, char *why, size_t whylen)
{
	int err = splice_insert(&f->c);

	if (err)
		refused(why, whylen, "client", err);
	return err;
}

/* kpath_backlog - bytes of direction d queued inside the kernel. */
int kpath_backlog(struct dir *d, int64_t *backlog)
{
	uint64_t sent;
	int err;

	err = sock_sent_total(d->dst->fd, &sent);
	if (err)
		return err;
	sent -= d->dst->base_sent;
	*backlog = (int64_t)(kpath_dir_bytes(d->src->slot) + d->user_bytes +
			     d->injected) -
		   (int64_t)sent;
	return 0;
}

/*
 * kpath_pause - stop the kernel from reading d->src: delete it from
 * sock_splice only (it must stay a target for the other direction).
 * TCP flow control then throttles the sender. Never pause by passing
 * bytes: they would be overtaken by later redirected ones. There is no
 * resume: re-inserting a paused socket corrupted bidirectional streams on
 * Linux 6.18 (LESSONS.md), so a paused direction continues in userspace
 * once the kernel queue is empty.
 */
int kpath_pause(struct dir *d)
{
	uint32_t key = (uint32_t)d->src->slot;

	if (bpf_map_delete_elem(kp_state.splice_fd, &key))
		return -errno;
	d->paused = 1;
	return 0;
}
