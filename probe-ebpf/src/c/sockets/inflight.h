/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * inflight: arguments of a traced syscall between its enter and exit
 * tracepoints (the exit record only carries the return value), keyed by
 * pid_tgid: a thread is in at most one syscall at a time.
 */
#ifndef FT_SOCKETS_INFLIGHT_H
#define FT_SOCKETS_INFLIGHT_H

#include "common/types.h"
#include "common/sizes.h"

enum ft_io_kind {
    FT_IO_FLAT = 1,    /* buf, len: read, write, recvfrom, sendto */
    FT_IO_IOV = 2,     /* iovec array, count: readv, writev, recvmsg, sendmsg */
    FT_IO_CONNECT = 3, /* connect: only the fd matters */
};

struct ft_inflight {
    __u64 buf;      /* flat buffer or struct iovec * */
    __u64 enter_ns;
    __u64 iovcnt;
    __s32 fd;
    __u32 kind;      /* enum ft_io_kind */
    __u32 direction; /* enum ft_sock_dir */
    __u32 flags;     /* FT_IO_* */
};

/* ft_inflight.flags: the connection's first data, whose exit classifies
 * it; or a TLS hello, counted at exit if the syscall moved bytes (a
 * non-blocking read may return EAGAIN first). */
#define FT_IO_SNIFF 0x1u
#define FT_IO_HELLO 0x2u

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, FT_MAX_INFLIGHT);
    __type(key, __u64);
    __type(value, struct ft_inflight);
} inflight SEC(".maps");

#endif
