/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * TLS plaintext through OpenSSL (see sockets/tls.h for how it meets the
 * syscall programs). Included at the end of sockets.bpf.c: it uses its
 * per-CPU scratch and payload copy.
 *
 * User space attaches these to the SSL_* functions of every libssl (or
 * statically linked OpenSSL with a symbol table) that a claimed process
 * maps, once per file for every process that maps it (a uprobe is set on
 * the file's inode). So the first thing every program does is the claimed
 * check: a process we do not trace pays the trap and one hash lookup, and
 * writes nothing to the ring.
 *
 *  SSL_read(ssl, buf, num)                     ft_tls_read_enter     + ft_tls_return
 *  SSL_read_ex(ssl, buf, num, size_t *read)    ft_tls_read_ex_enter  + ft_tls_return
 *  SSL_write(ssl, buf, num)                    ft_tls_write_enter    + ft_tls_return
 *  SSL_write_ex(ssl, buf, num, size_t *wrote)  ft_tls_write_ex_enter + ft_tls_return
 *  SSL_do_handshake(ssl)                       ft_tls_handshake_enter + ft_tls_return
 *  SSL_free(ssl)                               ft_tls_free
 *
 * A call that OpenSSL makes from inside another probed call replaces its
 * entry (one per thread), so a request is reported once either way.
 */
#ifndef FT_SOCKETS_TLS_PROBES_H
#define FT_SOCKETS_TLS_PROBES_H

#include "sockets/tls.h"

#ifndef PROT_EXEC
#define PROT_EXEC 0x4
#endif
#ifndef MAP_ANONYMOUS
#define MAP_ANONYMOUS 0x20
#endif

static __always_inline int ft_tls_enter(__u32 kind, __u64 ssl, __u64 buf, __u64 len_ptr)
{
    __u64 pid_tgid = bpf_get_current_pid_tgid();
    if (!ft_is_claimed(pid_tgid >> 32))
        return 0;
    struct ft_tls_call call = {
        .ssl = ssl,
        .buf = buf,
        .len_ptr = len_ptr,
        .enter_ns = bpf_ktime_get_ns(),
        .fd = -1,
        .kind = kind,
    };
    if (bpf_map_update_elem(&tls_calls, &pid_tgid, &call, BPF_ANY) != 0)
        ft_count_drop(FT_DROP_INFLIGHT_FULL);
    return 0;
}

SEC("uprobe")
int ft_tls_read_enter(struct pt_regs *ctx)
{
    return ft_tls_enter(FT_TLS_CALL_READ, PT_REGS_PARM1(ctx), PT_REGS_PARM2(ctx), 0);
}

SEC("uprobe")
int ft_tls_read_ex_enter(struct pt_regs *ctx)
{
    return ft_tls_enter(FT_TLS_CALL_READ, PT_REGS_PARM1(ctx), PT_REGS_PARM2(ctx), PT_REGS_PARM4(ctx));
}

SEC("uprobe")
int ft_tls_write_enter(struct pt_regs *ctx)
{
    return ft_tls_enter(FT_TLS_CALL_WRITE, PT_REGS_PARM1(ctx), PT_REGS_PARM2(ctx), 0);
}

SEC("uprobe")
int ft_tls_write_ex_enter(struct pt_regs *ctx)
{
    return ft_tls_enter(FT_TLS_CALL_WRITE, PT_REGS_PARM1(ctx), PT_REGS_PARM2(ctx), PT_REGS_PARM4(ctx));
}

SEC("uprobe")
int ft_tls_handshake_enter(struct pt_regs *ctx)
{
    return ft_tls_enter(FT_TLS_CALL_HANDSHAKE, PT_REGS_PARM1(ctx), 0, 0);
}

/* SSL_free: the pointer may name another connection's SSL next. */
SEC("uprobe")
int ft_tls_free(struct pt_regs *ctx)
{
    __u64 pid_tgid = bpf_get_current_pid_tgid();
    if (!ft_is_claimed(pid_tgid >> 32))
        return 0;
    struct ft_tls_ssl_key key = {.ssl = PT_REGS_PARM1(ctx), .tgid = pid_tgid >> 32, .pad = 0};
    bpf_map_delete_elem(&tls_fds, &key);
    return 0;
}

/* Bytes an SSL_read/SSL_write(_ex) call moved: 0 if it failed (WANT_READ
 * on a non-blocking socket, an error, a closed connection). */
static __always_inline __u64 ft_tls_moved(const struct ft_tls_call *call, __s64 ret)
{
    if (!call->len_ptr)
        return ret > 0 ? (__u64)ret : 0;
    if (ret != 1)
        return 0;
    __u64 moved = 0;
    if (bpf_probe_read_user(&moved, sizeof(moved), (void *)call->len_ptr) != 0)
        return 0;
    return moved;
}

SEC("uretprobe")
int ft_tls_return(struct pt_regs *ctx)
{
    __u64 pid_tgid = bpf_get_current_pid_tgid();
    struct ft_tls_call *found = bpf_map_lookup_elem(&tls_calls, &pid_tgid);
    if (!found)
        return 0;
    struct ft_tls_call call = *found;
    bpf_map_delete_elem(&tls_calls, &pid_tgid);
    __u32 tgid = pid_tgid >> 32;

    __s32 fd = call.fd;
    if (fd < 0) {
        /* No socket I/O inside the call: a memory BIO, or bytes OpenSSL
         * already had. Data calls use what is known; a handshake guesses
         * again (see sockets/tls.h). */
        struct ft_tls_ssl_key key = {.ssl = call.ssl, .tgid = tgid, .pad = 0};
        struct ft_tls_fd *known = bpf_map_lookup_elem(&tls_fds, &key);
        if (known && call.kind != FT_TLS_CALL_HANDSHAKE) {
            fd = known->fd;
        } else {
            __s32 *last = bpf_map_lookup_elem(&tls_last_fd, &pid_tgid);
            if (last) {
                fd = *last;
                ft_tls_map_fd(call.ssl, tgid, fd, FT_TLS_FD_GUESSED);
            } else if (known) {
                fd = known->fd;
            }
        }
    }
    if (call.kind == FT_TLS_CALL_HANDSHAKE)
        return 0;
    __u64 moved = ft_tls_moved(&call, PT_REGS_RC(ctx));
    if (moved == 0)
        return 0;
    if (fd < 0) {
        ft_count_drop(FT_DROP_TLS_NO_FD);
        return 0;
    }

    __u32 zero = 0;
    struct ft_sock_data_scratch *s = bpf_map_lookup_elem(&data_scratch, &zero);
    if (!s)
        return 0;
    ft_fill_header(&s->event.header, FT_EV_TLS_DATA, pid_tgid);
    /* A write ends when its ciphertext started leaving (see io_ns); a read
     * when it returns (its last syscall may have waited for the peer). */
    if (call.kind == FT_TLS_CALL_WRITE && call.io_ns != 0)
        s->event.header.ts_ns = call.io_ns;
    s->event.enter_ns = call.enter_ns;
    s->event.fd = fd;
    s->event.direction = call.kind == FT_TLS_CALL_READ ? FT_DIR_INGRESS : FT_DIR_EGRESS;
    s->event.total_len = moved > 0xffffffffULL ? 0xffffffffu : (__u32)moved;
    __u32 limit = max_payload_bytes;
    if (limit > CAP)
        limit = CAP;
    if (moved < limit)
        limit = (__u32)moved;
    __u32 captured = ft_sock_copy_chunk(s, 0, (const void *)call.buf, limit, limit);
    captured &= (CAP * 4 - 1);
    s->event.captured_len = captured;
    ft_output(s, sizeof(s->event) + captured);
    return 0;
}

/* mmap(addr, len, prot, flags, fd, off) of a claimed process mapping a file
 * executable: a library (libssl among them) may have been loaded after the
 * process was claimed. User space reads /proc/<pid>/maps. */
SEC("tracepoint/syscalls/sys_enter_mmap")
int ft_tls_enter_mmap(struct ft_sys_enter_ctx *ctx)
{
    __u64 pid_tgid = bpf_get_current_pid_tgid();
    if (!ft_is_claimed(pid_tgid >> 32))
        return 0;
    __u64 prot = ctx->args[2];
    __s32 fd = (__s32)ctx->args[4];
    if (!(prot & PROT_EXEC) || (ctx->args[3] & MAP_ANONYMOUS) || fd < 0)
        return 0;
    struct ft_exec_map_event *event = ft_reserve(sizeof(*event));
    if (!event)
        return 0;
    ft_fill_header(&event->header, FT_EV_EXEC_MAP, pid_tgid);
    event->fd = fd;
    event->prot = (__u32)prot;
    ft_submit(event);
    return 0;
}

#endif
