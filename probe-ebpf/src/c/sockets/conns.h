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

struct ft_conn {
    __u32 role; /* enum ft_sock_role */
    __u32 reserved;
};

struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, FT_MAX_CONNS);
    __type(key, struct ft_conn_key);
    __type(value, struct ft_conn);
} conns SEC(".maps");

#endif
