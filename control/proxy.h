/* SPDX-License-Identifier: MIT */
/*
 * proxy.h - HAProxy PROXY protocol v1/v2 header builder, pure code.
 */
#ifndef EDGE_PROXY_H
#define EDGE_PROXY_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* v1 lines are at most 107 bytes; v2 with a 255-byte authority TLV < 300. */
#define PROXY_HDR_MAX 536

enum proxy_version { PROXY_NONE = 0, PROXY_V1 = 1, PROXY_V2 = 2 };

/*
 * proxy_build - write a PROXY header for a TCP connection.
 * @ver: PROXY_V1 or PROXY_V2.
 * @src: the client's address (AF_INET or AF_INET6; an IPv4-mapped IPv6
 *       address is treated as plain IPv4).
 * @dst: the address the client connected to (same rules).
 * @authority: NULL, or the SNI to send as a PP2_TYPE_AUTHORITY (0x02) TLV
 *             (v2 only; ignored for v1); at most 255 bytes.
 * @out, @outlen: output buffer (PROXY_HDR_MAX is always enough).
 * Families: both IPv4 -> TCP4; both IPv6 -> TCP6; mixed -> v1 "PROXY UNKNOWN",
 * v2 maps the IPv4 side into ::ffff:a.b.c.d and sends TCP6; any other family
 * -> v1 "PROXY UNKNOWN\r\n", v2 command LOCAL (0x20) with no addresses,
 * as HAProxy 2.6 sends for a UNIX-socket client.
 * Returns the header length in bytes, or -EINVAL / -ENOSPC.
 */
int proxy_build(int ver, const struct sockaddr *src, const struct sockaddr *dst,
		const char *authority, uint8_t *out, size_t outlen);

/* proxy_version_str - "none", "v1" or "v2". */
const char *proxy_version_str(int ver);

/* --- for tests and tools --- */

/*
 * struct proxy_info - what proxy_parse() found.
 * @version: PROXY_V1 or PROXY_V2.
 * @family: AF_INET or AF_INET6 (src and dst are then filled in, ports
 *          included; a v2 UDP header also reports its address family),
 *          AF_UNIX (v2 only; sun_path as sent, not necessarily
 *          NUL-terminated), or AF_UNSPEC (v1 UNKNOWN, v2 LOCAL, v2 UNSPEC;
 *          src and dst are zeroed).
 * @authority: value of a PP2_TYPE_AUTHORITY TLV, NUL-terminated, "" if none.
 * @hdr_len: the header's length in bytes (also the return value).
 */
struct proxy_info {
	int version;
	int family;
	struct sockaddr_storage src, dst;
	char authority[256];
	size_t hdr_len;
};

/*
 * proxy_parse - decode a PROXY v1 or v2 header at the start of buf.
 * @buf, @len: the bytes received so far (may hold data after the header).
 * @out: filled in on success; zeroed otherwise.
 * Returns hdr_len (> 0) for a complete valid header, 0 if what is there is a
 * valid prefix and more bytes are needed, -EINVAL if malformed. A v2
 * PP2_TYPE_CRC32C TLV, when present, is verified. Never reads past buf[len-1].
 */
int proxy_parse(const uint8_t *buf, size_t len, struct proxy_info *out);

#endif
