/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * conns: the stream sockets of claimed processes, keyed by (tgid, fd). An
 * fd not in here is checked once through the fd table (common/sock.h) and
 * adopted if it is a stream socket; anything else costs that check only.
 * LRU: sockets of processes that died without closing them age out.
 */
#ifndef FT_SOCKETS_CONNS_H
#define FT_SOCKETS_CONNS_H

#include "common/types.h"
#include "common/sizes.h"

struct ft_conn_key {
    __u32 tgid;
    __s32 fd;
};

/*
 * ft_conn.flags: what the first bytes said (sockets/tls.h). A connection
 * whose first data is a TLS record carries ciphertext: its first
 * FT_TLS_HELLO_EVENTS data events per direction are reported (the hellos:
 * SNI, protocol version), the rest is suppressed; its plaintext comes from
 * the OpenSSL uprobes.
 */
#define FT_CONN_SEEN 0x1u /* first data classified */
#define FT_CONN_TLS 0x2u  /* ... as a TLS record */
#define FT_CONN_HELLO_IN_SHIFT 8  /* ingress ciphertext events reported */
#define FT_CONN_HELLO_OUT_SHIFT 16 /* egress ciphertext events reported */

struct ft_conn {
    __u32 role;  /* enum ft_sock_role */
    __u32 flags; /* FT_CONN_* */
};

struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, FT_MAX_CONNS);
    __type(key, struct ft_conn_key);
    __type(value, struct ft_conn);
} conns SEC(".maps");

#endif
