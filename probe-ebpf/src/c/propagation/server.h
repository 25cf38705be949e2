/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * The server half of propagation in the socket-level set: when a traced
 * server reads the start of a request, its context is decided right there,
 * in the kernel, so that calls the thread makes while serving it carry it
 * (see context.h for why user space would be too late):
 *
 *   a traceparent (or B3, as configured) in the head -> continue it;
 *   none, and a same-node client published one for this connection -> join;
 *   else a new trace.
 *
 * The server span's ids are assigned here and reported (FT_EV_PROP_SERVER,
 * just before the read's data event) so that user space gives the span the
 * very ids its children were sent with. The thread's entry is cleared when
 * the thread answers on that connection.
 *
 * One call from the set's syscall-exit program: ft_prop_on_data().
 */
#ifndef FT_PROP_SERVER_H
#define FT_PROP_SERVER_H

#include "common/types.h"
#include "common/ringbuf.h"
#include "common/sock.h"
#include "propagation/wire.h"
#include "propagation/context.h"
#include "propagation/headers.h"
#include "propagation/http.h"
#include "sockets/wire.h"
#include "sockets/conns.h"
#include "sockets/inflight.h"

/* Longest B3 single value read: 32 + 1 + 16 + 1 + 1 + 1 + 16. */
#define FT_B3_SINGLE_MAX 68

static __always_inline void ft_prop_copy_value(__u8 *dst, __u32 cap, const __u8 *buf, struct ft_http_value v)
{
    __u32 n = v.len < cap ? v.len : cap;
    bpf_probe_read_kernel(dst, n & (FT_PROP_CARRY_CAP * 2 - 1), buf + (v.off & FT_HTTP_MASK));
}

/* The remote parent in the head's headers, by the configured formats. */
static __noinline __u32 ft_prop_incoming(const __u8 *buf, const struct ft_http_head *h, struct ft_traceparent *parent)
{
    if (!buf || !h || !parent)
        return FT_PROP_ORIGIN_NONE;
    /* One buffer for every value: the stack is small. */
    __u8 text[FT_B3_SINGLE_MAX + 4] = {};
    if ((prop_formats & FT_PROP_TRACECONTEXT) && h->traceparent.len == FT_TRACEPARENT_LEN) {
        ft_prop_copy_value(text, FT_TRACEPARENT_LEN, buf, h->traceparent);
        if (ft_parse_traceparent(text, parent) == 0)
            return FT_PROP_ORIGIN_TRACEPARENT;
    }
    if (!(prop_formats & FT_PROP_B3))
        return FT_PROP_ORIGIN_NONE;
    if (h->b3.len >= 33) {
        ft_prop_copy_value(text, FT_B3_SINGLE_MAX, buf, h->b3);
        if (ft_parse_b3_single(text, h->b3.len > FT_B3_SINGLE_MAX ? FT_B3_SINGLE_MAX : h->b3.len, parent) == 0)
            return FT_PROP_ORIGIN_B3;
    }
    if ((h->b3_trace_id.len != 16 && h->b3_trace_id.len != 32) || h->b3_span_id.len != 16)
        return FT_PROP_ORIGIN_NONE;
    ft_prop_copy_value(text, 32, buf, h->b3_trace_id);
    if (ft_parse_b3_trace_id(text, h->b3_trace_id.len, parent->trace_id) != 0)
        return FT_PROP_ORIGIN_NONE;
    ft_prop_copy_value(text, 16, buf, h->b3_span_id);
    if (ft_parse_span_id(text, parent->parent_id) != 0)
        return FT_PROP_ORIGIN_NONE;
    /* No sampling state: sampled (the caller deferred; we keep it). */
    parent->flags = 1;
    if (h->b3_sampled.len) {
        ft_prop_copy_value(text, 4, buf, h->b3_sampled);
        parent->flags = ft_b3_sampled(text, h->b3_sampled.len);
    }
    if (h->b3_flags.len == 1) {
        ft_prop_copy_value(text, 1, buf, h->b3_flags);
        if (text[0] == '1')
            parent->flags = 1;
    }
    return FT_PROP_ORIGIN_B3;
}

/* A context a same-node client published for the connection whose client
 * end is `peer` (the server's peer). */
static __always_inline int ft_prop_join_peer(struct sock *sk, const struct ft_sock_addr *peer, struct ft_traceparent *parent)
{
    struct ft_prop_join_key key = {};
    __builtin_memcpy(key.addr, peer->addr, 16);
    key.port = peer->port;
    key.netns = 0;
    if (ft_prop_is_loopback(peer->addr))
        key.netns = BPF_CORE_READ(sk, __sk_common.skc_net.net, net_cookie);
    return ft_prop_take_join(&key, parent);
}

static __always_inline void ft_prop_keep_carry(__u32 tgid, const __u8 *span_id, const __u8 *buf, const struct ft_http_head *h)
{
    __u32 tracestate = (prop_formats & FT_PROP_TRACECONTEXT) ? h->tracestate.len : 0;
    __u32 baggage = (prop_formats & FT_PROP_BAGGAGE) ? h->baggage.len : 0;
    if (tracestate > FT_PROP_CARRY_CAP)
        tracestate = 0; /* too long to carry whole; not cut */
    if (baggage > FT_PROP_CARRY_CAP)
        baggage = 0;
    if (!tracestate && !baggage)
        return;
    __u32 zero = 0;
    struct ft_prop_carry *carry = bpf_map_lookup_elem(&prop_carry_scratch, &zero);
    if (!carry)
        return;
    carry->tracestate_len = tracestate;
    carry->baggage_len = baggage;
    if (tracestate)
        ft_prop_copy_value((__u8 *)carry->tracestate, FT_PROP_CARRY_CAP, buf, h->tracestate);
    if (baggage)
        ft_prop_copy_value((__u8 *)carry->baggage, FT_PROP_CARRY_CAP, buf, h->baggage);
    struct ft_prop_carry_key key = {.tgid = tgid};
    __builtin_memcpy(key.span_id, span_id, 8);
    bpf_map_update_elem(&prop_carry, &key, carry, BPF_ANY);
}

/* Bytes moved on a traced socket (called at syscall exit, before the data
 * event is sent). `payload` holds the first `captured` bytes. */
static __noinline void ft_prop_on_data(__u64 pid_tgid, const struct ft_inflight *io, const __u8 *payload, __u32 captured)
{
    if (!payload || !io)
        return;
    __s32 fd = io->fd;
    if (!prop_inject && !prop_join)
        return;
    if (io->direction == FT_DIR_EGRESS) {
        /* Answering: the request this thread served on fd is done. */
        struct ft_prop_thread *thread = bpf_map_lookup_elem(&prop_threads, &pid_tgid);
        if (thread && thread->kind == FT_PROP_THREAD_PARENT && thread->fd == fd)
            bpf_map_delete_elem(&prop_threads, &pid_tgid);
        return;
    }
    struct ft_conn_key ckey = {.tgid = pid_tgid >> 32, .fd = fd};
    struct ft_conn *conn = bpf_map_lookup_elem(&conns, &ckey);
    if (!conn || conn->role != FT_ROLE_SERVER)
        return;
    /* Only a read that starts a request head: "METHOD SP". */
    if (captured < 16 || payload[0] < 'A' || payload[0] > 'Z')
        return;
    struct ft_http_head *hp = ft_http_head_slot(1);
    if (!hp)
        return;
    ft_http_scan_head(payload, captured, hp);
    /* Read in place, not copied: the head is ~100 bytes, and a stack copy
     * takes this call chain past the verifier's 512-byte stack limit. The
     * slot is this CPU's: only a program that preempts this one on the same
     * CPU could rewrite it meanwhile, as it could during the scan itself. */
    const struct ft_http_head *h = hp;
    if ((h->flags & FT_HTTP_BAD) || h->lines == 0)
        return;

    struct ft_traceparent parent = {};
    __u32 origin = ft_prop_incoming(payload, h, &parent);
    if (origin == FT_PROP_ORIGIN_NONE && prop_join) {
        struct sock *sk = ft_stream_sock(fd);
        if (sk) {
            struct ft_sock_addr local, peer;
            ft_sock_addrs(sk, &local, &peer);
            if (ft_prop_join_peer(sk, &peer, &parent) == 0)
                origin = FT_PROP_ORIGIN_JOINED;
        }
    }
    struct ft_prop_thread thread = {};
    ft_prop_random(thread.span_id, 2);
    if (origin != FT_PROP_ORIGIN_NONE) {
        __builtin_memcpy(thread.trace_id, parent.trace_id, 16);
        __builtin_memcpy(thread.parent_id, parent.parent_id, 8);
        thread.flags = ft_prop_sampled(thread.trace_id, parent.flags & 1);
    } else {
        ft_prop_random(thread.trace_id, 4);
        thread.flags = ft_prop_sampled(thread.trace_id, -1);
    }
    thread.ts_ns = bpf_ktime_get_ns();
    thread.kind = FT_PROP_THREAD_PARENT;
    thread.fd = fd;
    bpf_map_update_elem(&prop_threads, &pid_tgid, &thread, BPF_ANY);
    ft_prop_keep_carry(pid_tgid >> 32, thread.span_id, payload, h);
    ft_prop_count(FT_PROP_OUTCOMES + origin);

    struct ft_prop_server_event *event = ft_reserve(sizeof(*event));
    if (!event)
        return;
    ft_fill_header(&event->header, FT_EV_PROP_SERVER, pid_tgid);
    event->enter_ns = io->enter_ns;
    event->fd = fd;
    event->origin = origin;
    __builtin_memcpy(event->trace_id, thread.trace_id, 16);
    __builtin_memcpy(event->span_id, thread.span_id, 8);
    __builtin_memcpy(event->parent_id, thread.parent_id, 8);
    event->flags = thread.flags;
    event->pad = 0;
    ft_submit(event);
}

#endif
