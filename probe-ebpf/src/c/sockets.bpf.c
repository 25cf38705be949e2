/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * The socket-level program set (--language python; nothing in it is
 * Python-specific): syscall tracepoints on the stream sockets of claimed
 * processes. Each read- or write-family syscall that moved bytes becomes one
 * variable-length ft_sock_data_event carrying its first max_payload_bytes;
 * user space reassembles and parses HTTP/1.x.
 *
 * Order of checks in every program, cheapest first: claimed TGID (one hash
 * lookup; the only cost other processes on the node pay), then known socket
 * (one hash lookup), then — for fds never seen — one fd-table walk.
 */
#include "common/types.h"
#include "common/sizes.h"
#include "wire.h"
#include "sockets/wire.h"
#include "common/claimed.h"
#include "common/drops.h"
#include "common/ringbuf.h"
#include "common/sock.h"
#include "common/payload.h"
#include "common/proc.h"
#include "sockets/conns.h"
#include "sockets/inflight.h"
#include "sockets/tls.h"

/* Propagation's server half: context decided at request start (the
 * sk_msg half is propagation.bpf.c). */
#include "propagation/server.h"

char LICENSE[] SEC("license") = "GPL";

/* Per-CPU scratch: data events are variable-length, built here, then copied. */
struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct ft_sock_data_scratch);
} data_scratch SEC(".maps");

static __always_inline void ft_sock_emit_open(__u64 pid_tgid, __s32 fd, __u32 role, struct sock *sk)
{
    struct ft_sock_open_event *event = ft_reserve(sizeof(*event));
    if (!event)
        return;
    ft_fill_header(&event->header, FT_EV_SOCK_OPEN, pid_tgid);
    event->fd = fd;
    event->role = role;
    ft_sock_addrs(sk, &event->local, &event->peer);
    ft_submit(event);
}

/* Start tracing fd as a connection of the given role, if it is a stream socket. */
static __always_inline int ft_sock_track(__u64 pid_tgid, __s32 fd, __u32 role)
{
    struct sock *sk = ft_stream_sock(fd);
    if (!sk)
        return 0;
    struct ft_conn_key key = {.tgid = pid_tgid >> 32, .fd = fd};
    struct ft_conn conn = {.role = role, .flags = 0};
    if (bpf_map_update_elem(&conns, &key, &conn, BPF_ANY) != 0) {
        ft_count_drop(FT_DROP_CONN_TABLE_FULL);
        return 0;
    }
    ft_sock_emit_open(pid_tgid, fd, role, sk);
    return 1;
}

/* The traced socket fd, or NULL. Adopts stream sockets opened before we attached. */
static __always_inline struct ft_conn *ft_sock_known_socket(__u64 pid_tgid, __s32 fd)
{
    struct ft_conn_key key = {.tgid = pid_tgid >> 32, .fd = fd};
    struct ft_conn *conn = bpf_map_lookup_elem(&conns, &key);
    if (conn || !ft_sock_track(pid_tgid, fd, FT_ROLE_UNKNOWN))
        return conn;
    return bpf_map_lookup_elem(&conns, &key);
}

static __always_inline void ft_sock_remember(__u64 pid_tgid, __s32 fd, __u32 kind, __u32 direction, __u64 buf, __u64 iovcnt,
                                             __u32 flags)
{
    struct ft_inflight io = {
        .buf = buf,
        .enter_ns = bpf_ktime_get_ns(),
        .iovcnt = iovcnt,
        .fd = fd,
        .kind = kind,
        .direction = direction,
        .flags = flags,
    };
    if (bpf_map_update_elem(&inflight, &pid_tgid, &io, BPF_ANY) != 0)
        ft_count_drop(FT_DROP_INFLIGHT_FULL);
}

static __always_inline void ft_sock_on_io_enter(__s32 fd, __u32 kind, __u32 direction, __u64 buf, __u64 iovcnt)
{
    __u64 pid_tgid = bpf_get_current_pid_tgid();
    if (!ft_is_claimed(pid_tgid >> 32))
        return;
    struct ft_conn *conn = ft_sock_known_socket(pid_tgid, fd);
    if (!conn)
        return;
    __u32 flags;
    if (ft_tls_on_io_enter(pid_tgid, fd, conn, direction, &flags))
        return;
    ft_sock_remember(pid_tgid, fd, kind, direction, buf, iovcnt, flags);
}

/* msghdr: the iovec array and its length live in user memory. */
static __always_inline void ft_sock_on_msg_enter(__s32 fd, __u32 direction, __u64 msg)
{
    __u64 pid_tgid = bpf_get_current_pid_tgid();
    if (!ft_is_claimed(pid_tgid >> 32))
        return;
    struct ft_conn *conn = ft_sock_known_socket(pid_tgid, fd);
    if (!conn)
        return;
    __u32 flags;
    if (ft_tls_on_io_enter(pid_tgid, fd, conn, direction, &flags))
        return;
    struct user_msghdr hdr;
    if (bpf_probe_read_user(&hdr, sizeof(hdr), (void *)msg) != 0) {
        ft_count_drop(FT_DROP_PAYLOAD_READ);
        return;
    }
    ft_sock_remember(pid_tgid, fd, FT_IO_IOV, direction, (__u64)hdr.msg_iov, hdr.msg_iovlen, flags);
}

#define CAP FT_SOCK_PAYLOAD_CAP

/* Copies up to `limit` bytes from one user buffer at payload offset `off`. */
static __always_inline __u32 ft_sock_copy_chunk(struct ft_sock_data_scratch *s, __u32 off, const void *src, __u64 len, __u32 limit)
{
    if (off >= limit)
        return 0;
    __u64 n = limit - off;
    if (len < n)
        n = len;
    if (n > CAP)
        n = CAP;
    /* Redundant bounds for the verifier: off < CAP and n <= CAP. */
    off &= (CAP - 1);
    n &= (CAP * 2 - 1);
    if (bpf_probe_read_user(&s->payload[off], n, src) != 0) {
        ft_count_drop(FT_DROP_PAYLOAD_READ);
        return 0;
    }
    return n;
}

static __always_inline int ft_sock_on_io_exit(struct ft_sys_exit_ctx *ctx)
{
    /* Not gated by the claim: a claim released while one of the process's
     * syscalls was in flight (a thread blocked in a read) must still have
     * its entry taken here, or the entry would stay. */
    __u64 pid_tgid = bpf_get_current_pid_tgid();
    struct ft_inflight *found = bpf_map_lookup_elem(&inflight, &pid_tgid);
    if (!found)
        return 0;
    struct ft_inflight io = *found;
    bpf_map_delete_elem(&inflight, &pid_tgid);
    if (io.kind != FT_IO_FLAT && io.kind != FT_IO_IOV)
        return 0; /* an interrupted connect: not ours to report */
    __s64 ret = ctx->ret;
    if (ret <= 0)
        return 0; /* error, EAGAIN or EOF: nothing moved; close ends the connection */

    __u32 zero = 0;
    struct ft_sock_data_scratch *s = bpf_map_lookup_elem(&data_scratch, &zero);
    if (!s)
        return 0;
    ft_fill_header(&s->event.header, FT_EV_SOCK_DATA, pid_tgid);
    s->event.enter_ns = io.enter_ns;
    s->event.fd = io.fd;
    s->event.direction = io.direction;
    s->event.total_len = ret > 0xffffffffLL ? 0xffffffffu : (__u32)ret;

    __u32 limit = max_payload_bytes;
    if (limit > CAP)
        limit = CAP;
    if ((__u64)ret < limit)
        limit = (__u32)ret;

    __u32 captured = 0;
    if (io.kind == FT_IO_FLAT) {
        captured = ft_sock_copy_chunk(s, 0, (const void *)io.buf, limit, limit);
    } else if (io.kind == FT_IO_IOV && io.iovcnt > 0) {
        /* The first two iovecs carry the head in every writer we know of
         * (head + body); later ones are counted in total_len only. */
        struct iovec iov[2] = {};
        __u64 want = io.iovcnt > 1 ? 2 : 1;
        if (bpf_probe_read_user(iov, want * sizeof(struct iovec), (void *)io.buf) != 0) {
            ft_count_drop(FT_DROP_PAYLOAD_READ);
        } else {
            captured = ft_sock_copy_chunk(s, 0, iov[0].iov_base, iov[0].iov_len, limit);
            if (want > 1 && captured == iov[0].iov_len)
                captured += ft_sock_copy_chunk(s, captured, iov[1].iov_base, iov[1].iov_len, limit);
        }
    }
    captured &= (CAP * 4 - 1);
    if (io.flags & FT_IO_SNIFF)
        ft_tls_sniff(pid_tgid, io.fd, io.direction, s->payload, captured);
    else if (io.flags & FT_IO_HELLO)
        ft_tls_count_hello(pid_tgid, io.fd, io.direction);
    s->event.captured_len = captured;
    ft_prop_on_data(pid_tgid, &io, s->payload, captured);
    ft_output(s, sizeof(s->event) + captured);
    return 0;
}

/* ------------------------------------------------------------- programs */

#define ARG(i) (ctx->args[i])

SEC("tracepoint/syscalls/sys_enter_read")
int ft_sock_enter_read(struct ft_sys_enter_ctx *ctx)
{
    ft_sock_on_io_enter(ARG(0), FT_IO_FLAT, FT_DIR_INGRESS, ARG(1), 0);
    return 0;
}

SEC("tracepoint/syscalls/sys_enter_recvfrom")
int ft_sock_enter_recvfrom(struct ft_sys_enter_ctx *ctx)
{
    ft_sock_on_io_enter(ARG(0), FT_IO_FLAT, FT_DIR_INGRESS, ARG(1), 0);
    return 0;
}

SEC("tracepoint/syscalls/sys_enter_write")
int ft_sock_enter_write(struct ft_sys_enter_ctx *ctx)
{
    ft_sock_on_io_enter(ARG(0), FT_IO_FLAT, FT_DIR_EGRESS, ARG(1), 0);
    return 0;
}

SEC("tracepoint/syscalls/sys_enter_sendto")
int ft_sock_enter_sendto(struct ft_sys_enter_ctx *ctx)
{
    ft_sock_on_io_enter(ARG(0), FT_IO_FLAT, FT_DIR_EGRESS, ARG(1), 0);
    return 0;
}

SEC("tracepoint/syscalls/sys_enter_readv")
int ft_sock_enter_readv(struct ft_sys_enter_ctx *ctx)
{
    ft_sock_on_io_enter(ARG(0), FT_IO_IOV, FT_DIR_INGRESS, ARG(1), ARG(2));
    return 0;
}

SEC("tracepoint/syscalls/sys_enter_writev")
int ft_sock_enter_writev(struct ft_sys_enter_ctx *ctx)
{
    ft_sock_on_io_enter(ARG(0), FT_IO_IOV, FT_DIR_EGRESS, ARG(1), ARG(2));
    return 0;
}

SEC("tracepoint/syscalls/sys_enter_recvmsg")
int ft_sock_enter_recvmsg(struct ft_sys_enter_ctx *ctx)
{
    ft_sock_on_msg_enter(ARG(0), FT_DIR_INGRESS, ARG(1));
    return 0;
}

SEC("tracepoint/syscalls/sys_enter_sendmsg")
int ft_sock_enter_sendmsg(struct ft_sys_enter_ctx *ctx)
{
    ft_sock_on_msg_enter(ARG(0), FT_DIR_EGRESS, ARG(1));
    return 0;
}

/* One exit program serves every read/write-family syscall: the inflight
 * entry says what the enter saw. Attached to each sys_exit_* tracepoint. */
SEC("tracepoint/syscalls/sys_exit_read")
int ft_sock_exit_io(struct ft_sys_exit_ctx *ctx)
{
    return ft_sock_on_io_exit(ctx);
}

SEC("tracepoint/syscalls/sys_exit_accept4")
int ft_sock_exit_accept(struct ft_sys_exit_ctx *ctx)
{
    __u64 pid_tgid = bpf_get_current_pid_tgid();
    if (!ft_is_claimed(pid_tgid >> 32))
        return 0;
    if (ctx->ret < 0)
        return 0;
    ft_sock_track(pid_tgid, (__s32)ctx->ret, FT_ROLE_SERVER);
    return 0;
}

SEC("tracepoint/syscalls/sys_enter_connect")
int ft_sock_enter_connect(struct ft_sys_enter_ctx *ctx)
{
    __u64 pid_tgid = bpf_get_current_pid_tgid();
    if (!ft_is_claimed(pid_tgid >> 32))
        return 0;
    ft_sock_remember(pid_tgid, ARG(0), FT_IO_CONNECT, 0, 0, 0, 0);
    return 0;
}

SEC("tracepoint/syscalls/sys_exit_connect")
int ft_sock_exit_connect(struct ft_sys_exit_ctx *ctx)
{
    __u64 pid_tgid = bpf_get_current_pid_tgid();
    struct ft_inflight *found = bpf_map_lookup_elem(&inflight, &pid_tgid);
    if (!found)
        return 0;
    __s32 fd = found->fd;
    __u32 kind = found->kind;
    bpf_map_delete_elem(&inflight, &pid_tgid);
    if (kind != FT_IO_CONNECT)
        return 0;
    /* Non-blocking sockets (asyncio, urllib3 with timeouts) return EINPROGRESS. */
    if (ctx->ret != 0 && ctx->ret != -EINPROGRESS)
        return 0;
    ft_sock_track(pid_tgid, fd, FT_ROLE_CLIENT);
    return 0;
}

SEC("tracepoint/syscalls/sys_enter_close")
int ft_sock_enter_close(struct ft_sys_enter_ctx *ctx)
{
    __u64 pid_tgid = bpf_get_current_pid_tgid();
    if (!ft_is_claimed(pid_tgid >> 32))
        return 0;
    struct ft_conn_key key = {.tgid = pid_tgid >> 32, .fd = ARG(0)};
    struct ft_conn *conn = bpf_map_lookup_elem(&conns, &key);
    if (!conn)
        return 0;
    __u32 role = conn->role;
    bpf_map_delete_elem(&conns, &key);
    struct ft_sock_close_event *event = ft_reserve(sizeof(*event));
    if (!event)
        return 0;
    ft_fill_header(&event->header, FT_EV_SOCK_CLOSE, pid_tgid);
    event->fd = key.fd;
    event->role = role;
    ft_submit(event);
    return 0;
}

/* The OpenSSL uprobes and the exec-mapping tracepoint: they share the
 * helpers above. */
#include "sockets/tls_probes.h"
