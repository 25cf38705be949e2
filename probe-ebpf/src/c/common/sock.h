/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * Socket inspection through the current task's fd table (CO-RE): is this fd
 * a stream socket, and what are its addresses. Used when a socket is
 * accepted or connected, and to adopt sockets that existed before the probe
 * attached. Costs a handful of kernel reads, so callers consult their own
 * connection map first.
 */
#ifndef FT_COMMON_SOCK_H
#define FT_COMMON_SOCK_H

#include "common/types.h"
#include "common/sizes.h"
#include "wire.h"

static __always_inline struct file *ft_fd_file(__s32 fd)
{
    if (fd < 0 || fd >= FT_MAX_FD)
        return NULL;
    struct task_struct *task = (struct task_struct *)bpf_get_current_task();
    struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
    if (!fdt)
        return NULL;
    unsigned int max_fds = BPF_CORE_READ(fdt, max_fds);
    if ((unsigned int)fd >= max_fds)
        return NULL;
    struct file **fds = BPF_CORE_READ(fdt, fd);
    struct file *file = NULL;
    bpf_core_read(&file, sizeof(file), &fds[fd]);
    return file;
}

/* The struct sock behind fd if it is a stream socket, else NULL. */
static __always_inline struct sock *ft_stream_sock(__s32 fd)
{
    struct file *file = ft_fd_file(fd);
    if (!file)
        return NULL;
    umode_t mode = BPF_CORE_READ(file, f_inode, i_mode);
    if ((mode & S_IFMT) != S_IFSOCK)
        return NULL;
    struct socket *socket = BPF_CORE_READ(file, private_data);
    if (!socket)
        return NULL;
    struct sock *sk = BPF_CORE_READ(socket, sk);
    if (!sk)
        return NULL;
    if (BPF_CORE_READ(sk, sk_type) != SOCK_STREAM)
        return NULL;
    return sk;
}

static __always_inline void ft_v4_mapped(struct ft_sock_addr *out, __be32 addr)
{
    __builtin_memset(out->addr, 0, 10);
    out->addr[10] = 0xff;
    out->addr[11] = 0xff;
    __builtin_memcpy(&out->addr[12], &addr, 4);
}

static __always_inline void ft_sock_addrs(struct sock *sk, struct ft_sock_addr *local, struct ft_sock_addr *peer)
{
    __u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
    local->family = family;
    peer->family = family;
    if (family == AF_INET) {
        ft_v4_mapped(local, BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr));
        ft_v4_mapped(peer, BPF_CORE_READ(sk, __sk_common.skc_daddr));
    } else if (family == AF_INET6) {
        BPF_CORE_READ_INTO(&local->addr, sk, __sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8);
        BPF_CORE_READ_INTO(&peer->addr, sk, __sk_common.skc_v6_daddr.in6_u.u6_addr8);
    } else {
        __builtin_memset(local->addr, 0, 16);
        __builtin_memset(peer->addr, 0, 16);
        local->port = 0;
        peer->port = 0;
        return;
    }
    local->port = BPF_CORE_READ(sk, __sk_common.skc_num);
    peer->port = __builtin_bswap16(BPF_CORE_READ(sk, __sk_common.skc_dport));
}

#endif
