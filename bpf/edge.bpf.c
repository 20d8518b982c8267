// SPDX-License-Identifier: GPL-2.0
/*
 * edge.bpf.c - the kernel data path of edged.
 *
 * Two sockets of a flow (client and upstream) are spliced by an sk_skb
 * stream parser + stream verdict pair attached to the sock_splice SOCKHASH:
 * every message that arrives on a socket in sock_splice is redirected
 * (egress, flags 0) out of its peer socket, found in sock_targets.
 *
 * Maps, and who writes / reads them:
 *   sock_targets  SOCKHASH u32 slot -> socket. Written by edged at hand-off
 *                 (and by close(), which removes the socket). Read here as
 *                 the redirect target. No program attached: being a target
 *                 only needs a psock.
 *   sock_splice   SOCKHASH u32 slot -> socket, with parser and verdict
 *                 attached. Written by edged: inserted once the peer is a
 *                 target and everything userspace had to send first is in
 *                 the peer's send queue; deleted to pause a direction
 *                 (backpressure), re-inserted to resume.
 *   sock_slot     HASH socket cookie -> u32 slot. Written by edged at
 *                 hand-off, deleted at close. Read here.
 *   dir_ctl       ARRAY slot -> struct edge_dir_ctl, mmap()ed; written by
 *                 edged only (peer slot, notify limit). Read here.
 *   dir_stats     ARRAY slot -> struct edge_dir_stats, mmap()ed; written
 *                 here only (atomic adds). Read by edged.
 *   events        RINGBUF of struct edge_event: written here when a
 *                 direction's redirected bytes pass its limit, read by
 *                 edged's event loop, which then measures the real backlog.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "edge.h"

char LICENSE[] SEC("license") = "GPL";

extern void *bpf_cast_to_kern_ctx(void *obj) __ksym;

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, EDGE_DEFAULT_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} sock_targets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, EDGE_DEFAULT_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} sock_splice SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, EDGE_DEFAULT_SLOTS);
	__type(key, __u64);
	__type(value, __u32);
} sock_slot SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, EDGE_DEFAULT_SLOTS);
	__type(key, __u32);
	__type(value, struct edge_dir_ctl);
} dir_ctl SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, EDGE_DEFAULT_SLOTS);
	__type(key, __u32);
	__type(value, struct edge_dir_stats);
} dir_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} events SEC(".maps");

/*
 * strparser keeps, in the head skb's control block, the offset at which
 * the message starts. It is non-zero when TCP queued a retransmitted
 * segment that partly overlaps bytes already received (the skb starts
 * before rcv_nxt), or when userspace read a prefix of the skb before the
 * socket was spliced. skb->len includes that stale prefix.
 */
static __always_inline struct strp_msg *strp_of(struct __sk_buff *skb)
{
	struct sk_buff *kskb = bpf_cast_to_kern_ctx(skb);

	return &((struct sk_skb_cb *)kskb->cb)->strp.strp;
}

/*
 * Parser: a message is everything the skb holds past strparser's offset.
 * Returning skb->len instead asks for `offset` bytes that will never come
 * at the end of a stream: the flow stalls (LESSONS.md, "stall at the end
 * of an echo"). Without any parser the kernel forwards the stale prefix
 * again: duplicated bytes. Guarded by tests/kernel/test_integrity.py and
 * test_prefix_read.
 */
SEC("sk_skb/stream_parser")
int edge_parser(struct __sk_buff *skb)
{
	__u32 len = skb->len;
	int off = strp_of(skb)->offset;

	if (off < 0 || (__u32)off > len)
		return len;
	return len - off;
}

/*
 * Verdict: count the message and send it out of the peer socket.
 * A zero-length skb is a FIN: pass it, so the socket reports EOF to edged,
 * which propagates it once every byte before it reached the peer
 * (redirecting it would make the peer's backlog report EPIPE).
 */
SEC("sk_skb/stream_verdict")
int edge_verdict(struct __sk_buff *skb)
{
	__u32 len = skb->len;
	__u64 cookie = bpf_get_socket_cookie(skb);
	struct edge_dir_stats *st;
	struct edge_dir_ctl *ctl;
	struct edge_event *ev;
	__u32 *slotp, slot, peer;
	__u64 bytes;
	int full;

	if (len == 0)
		return SK_PASS;
	slotp = bpf_map_lookup_elem(&sock_slot, &cookie);
	if (!slotp)
		return SK_PASS; /* not ours: leave it to the socket's reader */
	slot = *slotp;
	ctl = bpf_map_lookup_elem(&dir_ctl, &slot);
	st = bpf_map_lookup_elem(&dir_stats, &slot);
	if (!ctl || !st)
		return SK_PASS;
	peer = ctl->peer_slot;

	full = strp_of(skb)->full_len;
	if (full <= 0 || (__u32)full > len)
		full = len;
	bytes = __sync_fetch_and_add(&st->bytes, full) + full;
	__sync_fetch_and_add(&st->skbs, 1);
	st->last_ns = bpf_ktime_get_ns();

	if (bytes > ctl->limit && st->notified != ctl->limit) {
		st->notified = ctl->limit;
		ev = bpf_ringbuf_reserve(&events, sizeof(*ev), 0);
		if (ev) {
			ev->slot = slot;
			ev->pad = 0;
			ev->bytes = bytes;
			bpf_ringbuf_submit(ev, 0);
		}
	}
	return bpf_sk_redirect_hash(skb, &sock_targets, &peer, 0);
}
