/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * Carrying trace context out of traced clients: a sockops program puts every
 * TCP connection that a traced container opens into a sockhash, and an
 * sk_msg program on that sockhash sees each send before it is queued. When
 * a send starts an HTTP/1 request head, it gives the request a client span
 * (or takes the one the Go probe assigned) and either writes its context
 * headers right after the request line (injection) or publishes it for the
 * server on this node to find (join), and reports the span to user space.
 *
 * Never corrupt a request: the program follows each connection's request
 * framing (head, then Content-Length bytes of body, then the next head) and
 * touches a send only where a complete, well-formed request head begins.
 * Anything it cannot follow — a head longer than FT_HTTP_WINDOW or split
 * across sends, chunked bodies, Upgrade, CONNECT, a first send that is not
 * HTTP/1 — makes it leave the connection alone from then on. Requests that
 * already carry context (an SDK, or the application) are left as they are.
 *
 * These programs live in their own object (propagation.bpf.c), loaded only
 * when propagation is on: a sockhash can only be created with CAP_NET_ADMIN,
 * which a probe without propagation does not get. The maps it shares with
 * the language set it serves (claims, the ring, the thread entries, ...) are
 * that set's own, reused by the loader; two knobs say which set it serves:
 *   prop_sender_assigns_span  1: the thread's entry names the parent and
 *                             this program assigns the client span (the
 *                             socket-level set); 0: the entry is the client
 *                             span itself (the Go set).
 *   prop_syscall_inflight     1: the set's `inflight` map says which fd and
 *                             syscall this send is (socket-level set).
 */
#ifndef FT_PROP_INJECT_H
#define FT_PROP_INJECT_H

#include "common/types.h"
#include <bpf/bpf_endian.h>
#include "common/claimed.h"
#include "common/ringbuf.h"
#include "propagation/wire.h"
#include "propagation/context.h"
#include "propagation/headers.h"
#include "propagation/http.h"
#include "sockets/inflight.h"

volatile const __u32 prop_sender_assigns_span = 1;
volatile const __u32 prop_syscall_inflight = 1;

/* Request heads followed in one send (pipelining); more and the connection
 * is left alone. */
#define FT_PROP_HEADS_PER_SEND 4
/* Bytes of headers written into one request, at most. */
#define FT_PROP_OUT_CAP 1024

enum ft_prop_conn_state {
    FT_PROP_CONN_HEAD = 0, /* the next byte sent starts a request head */
    FT_PROP_CONN_BODY = 1, /* body_left bytes of the current request follow */
    FT_PROP_CONN_OFF = 2,  /* framing lost or not HTTP/1: never touched again */
};

struct ft_prop_conn {
    __u64 body_left;
    __u64 cookie; /* the socket's key in prop_socks (sk_msg programs cannot read it) */
    __u32 state;  /* enum ft_prop_conn_state */
    __u32 heads;  /* request heads seen */
};

/* Per-socket framing state, created by the sockops program; freed with the
 * socket. */
struct {
    __uint(type, BPF_MAP_TYPE_SK_STORAGE);
    __uint(map_flags, BPF_F_NO_PREALLOC);
    __type(key, int);
    __type(value, struct ft_prop_conn);
} prop_conns SEC(".maps");

/* Client TCP sockets of traced containers, keyed by socket cookie; the
 * kernel drops a socket from it when it closes. */
struct {
    __uint(type, BPF_MAP_TYPE_SOCKHASH);
    __uint(max_entries, 65536);
    __type(key, __u64);
    __type(value, __u32); /* the socket, as the kernel takes it (aya's SockHash reads 4 bytes) */
} prop_socks SEC(".maps");

struct ft_prop_scratch {
    __u8 head[FT_HTTP_WINDOW * 2];
    __u8 out[FT_PROP_OUT_CAP * 2];
};

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct ft_prop_scratch);
} prop_scratch SEC(".maps");

/* The span an outgoing request goes out for. */
struct ft_prop_span {
    __u8 trace_id[16];
    __u8 span_id[8];
    __u8 parent_id[8];
    __u8 carry_key[8]; /* the span whose tracestate/baggage the request carries on */
    __u32 flags;
    __u32 found;
};

/* A Go client span handed over for the next request head (go.h): into
 * `span` if it is one and younger than `ttl_ns`; 0 if so. One request per
 * (*Request).write: the caller removes the entry either way. */
static __always_inline int ft_prop_take_client(const struct ft_prop_thread *entry, struct ft_prop_span *span, __u64 ttl_ns)
{
    if (entry->kind != FT_PROP_THREAD_CLIENT || bpf_ktime_get_ns() - entry->ts_ns > ttl_ns)
        return -1;
    __builtin_memcpy(span->trace_id, entry->trace_id, 16);
    __builtin_memcpy(span->span_id, entry->span_id, 8);
    __builtin_memcpy(span->parent_id, entry->parent_id, 8);
    __builtin_memcpy(span->carry_key, entry->parent_id, 8);
    span->flags = entry->flags;
    return 0;
}

/* 0 if a span is known for this send (see prop_sender_assigns_span). */
static __always_inline int ft_prop_span_for_send(__u64 pid_tgid, struct ft_prop_span *span)
{
    struct ft_prop_thread *thread = bpf_map_lookup_elem(&prop_threads, &pid_tgid);
    if (prop_sender_assigns_span) {
        ft_prop_random(span->span_id, 2);
        if (thread && thread->kind == FT_PROP_THREAD_PARENT) {
            __builtin_memcpy(span->trace_id, thread->trace_id, 16);
            __builtin_memcpy(span->parent_id, thread->span_id, 8);
            __builtin_memcpy(span->carry_key, thread->span_id, 8);
            span->flags = ft_prop_sampled(span->trace_id, thread->flags & 1);
        } else {
            ft_prop_random(span->trace_id, 4);
            __builtin_memset(span->parent_id, 0, 8);
            __builtin_memset(span->carry_key, 0, 8);
            span->flags = ft_prop_sampled(span->trace_id, -1);
        }
        return 0;
    }
    /* The Go set: the writing goroutine's entry, else the thread's. */
    struct ft_prop_goroutine_key gkey = {.tgid = pid_tgid >> 32, .pad = 0, .g = ft_prop_tls_g()};
    if (gkey.g) {
        struct ft_prop_thread *entry = bpf_map_lookup_elem(&prop_goroutines, &gkey);
        if (entry && ft_prop_take_client(entry, span, FT_PROP_GOROUTINE_CLIENT_TTL_NS) == 0) {
            bpf_map_delete_elem(&prop_goroutines, &gkey);
            return 0;
        }
        if (entry)
            bpf_map_delete_elem(&prop_goroutines, &gkey);
    }
    if (!thread)
        return -1;
    int taken = ft_prop_take_client(thread, span, FT_PROP_THREAD_CLIENT_TTL_NS);
    if (thread->kind == FT_PROP_THREAD_CLIENT)
        bpf_map_delete_elem(&prop_threads, &pid_tgid);
    return taken;
}

static __always_inline void ft_prop_msg_addrs(struct sk_msg_md *msg, struct ft_sock_addr *local, struct ft_sock_addr *peer)
{
    __u32 family = msg->family;
    local->family = family;
    peer->family = family;
    __builtin_memset(local->addr, 0, 16);
    __builtin_memset(peer->addr, 0, 16);
    if (family == AF_INET) {
        __u32 l = msg->local_ip4, r = msg->remote_ip4;
        local->addr[10] = local->addr[11] = 0xff;
        peer->addr[10] = peer->addr[11] = 0xff;
        __builtin_memcpy(&local->addr[12], &l, 4);
        __builtin_memcpy(&peer->addr[12], &r, 4);
    } else if (family == AF_INET6) {
        __u32 l[4], r[4];
        l[0] = msg->local_ip6[0];
        l[1] = msg->local_ip6[1];
        l[2] = msg->local_ip6[2];
        l[3] = msg->local_ip6[3];
        r[0] = msg->remote_ip6[0];
        r[1] = msg->remote_ip6[1];
        r[2] = msg->remote_ip6[2];
        r[3] = msg->remote_ip6[3];
        __builtin_memcpy(local->addr, l, 16);
        __builtin_memcpy(peer->addr, r, 16);
    }
    local->port = (__u16)msg->local_port;
    peer->port = (__u16)bpf_ntohl(msg->remote_port);
}

/* Publishes `span` for the server of this connection (same node). */
static __always_inline void ft_prop_publish(const struct ft_sock_addr *local, __u64 netns, const struct ft_prop_span *span, __u32 tgid)
{
    struct ft_prop_join_key key = {};
    __builtin_memcpy(key.addr, local->addr, 16);
    key.port = local->port;
    key.netns = ft_prop_is_loopback(local->addr) ? netns : 0;
    struct ft_prop_join join = {};
    __builtin_memcpy(join.trace_id, span->trace_id, 16);
    __builtin_memcpy(join.span_id, span->span_id, 8);
    join.ts_ns = bpf_ktime_get_ns();
    join.flags = span->flags;
    join.tgid = tgid;
    bpf_map_update_elem(&ferrotel_prop_joins, &key, &join, BPF_ANY);
}

/* Appends "<name><value>\r\n" at out[at]; returns the new length. */
static __always_inline __u32 ft_prop_put_carried(__u8 *out, __u32 at, const char *name, __u32 name_len, const char *value,
                                                 __u32 value_len)
{
    if (value_len == 0 || value_len > FT_PROP_CARRY_CAP || at + name_len + value_len + 2 > FT_PROP_OUT_CAP)
        return at;
    at &= FT_PROP_OUT_CAP - 1;
    for (int i = 0; i < 16; i++) {
        if (i >= name_len)
            break;
        out[(at + i) & (FT_PROP_OUT_CAP * 2 - 1)] = name[i];
    }
    at += name_len;
    at &= FT_PROP_OUT_CAP - 1;
    bpf_probe_read_kernel(&out[at], value_len & (FT_PROP_CARRY_CAP * 2 - 1), value);
    at += value_len;
    at &= FT_PROP_OUT_CAP - 1;
    out[at] = '\r';
    out[at + 1] = '\n';
    return at + 2;
}

/* The context headers for `span`, in the configured formats; their length. */
static __always_inline __u32 ft_prop_build_headers(__u8 *out, const struct ft_prop_span *span, __u32 tgid)
{
    __u32 n = 0;
    if (prop_formats & FT_PROP_TRACECONTEXT) {
        ft_put_traceparent_line(out, span->trace_id, span->span_id, span->flags & 1);
        n = FT_TRACEPARENT_LINE;
    }
    if (prop_formats & FT_PROP_B3) {
        ft_put_b3_line(out + FT_TRACEPARENT_LINE, span->trace_id, span->span_id, span->flags & 1);
        if (n == 0)
            __builtin_memcpy(out, out + FT_TRACEPARENT_LINE, FT_B3_LINE);
        n += FT_B3_LINE;
    }
    if (ft_prop_is_zero(span->carry_key, 8))
        return n;
    struct ft_prop_carry_key key = {.tgid = tgid};
    __builtin_memcpy(key.span_id, span->carry_key, 8);
    struct ft_prop_carry *carry = bpf_map_lookup_elem(&prop_carry, &key);
    if (!carry)
        return n;
    if (prop_formats & FT_PROP_TRACECONTEXT)
        n = ft_prop_put_carried(out, n, "tracestate: ", 12, carry->tracestate, carry->tracestate_len);
    if (prop_formats & FT_PROP_BAGGAGE)
        n = ft_prop_put_carried(out, n, "baggage: ", 9, carry->baggage, carry->baggage_len);
    return n;
}

/* Grows the message by n bytes at `at` and copies out[0, n) there. */
static __always_inline int ft_prop_insert(struct sk_msg_md *msg, __u32 at, const __u8 *out, __u32 n)
{
    if (n == 0 || n > FT_PROP_OUT_CAP)
        return -1;
    if (bpf_msg_push_data(msg, at, n, 0) != 0)
        return -1;
    if (bpf_msg_pull_data(msg, at, at + n, 0) != 0) {
        /* Never send the gap: take it out again. */
        if (bpf_msg_pop_data(msg, at, n, 0) != 0)
            return -2;
        return -1;
    }
    __u8 *data = msg->data;
    __u8 *end = msg->data_end;
    for (int i = 0; i < FT_PROP_OUT_CAP / 8; i++) {
        __u32 off = i * 8;
        if (off + 8 > n)
            break;
        if ((void *)(data + off + 8) > (void *)end)
            return -2; /* cannot happen: [at, at + n) was just pulled */
        __u64 word;
        __builtin_memcpy(&word, out + off, 8);
        __builtin_memcpy(data + off, &word, 8);
    }
    __u32 done = n & ~7u;
    for (int i = 0; i < 7; i++) {
        __u32 off = done + i;
        if (off >= n)
            break;
        if ((void *)(data + off + 1) > (void *)end)
            return -2;
        data[off] = out[off & (FT_PROP_OUT_CAP * 2 - 1)];
    }
    return 0;
}

/* Reports an outgoing request head (`span` set: the client span it went
 * out for) or a connection let go of (`span` NULL). A global function:
 * checked once, on its own stack, from every place that reports. */
__noinline int ft_prop_report(struct sk_msg_md *msg, const struct ft_prop_conn *conn, __u64 pid_tgid, __u32 outcome,
                              const struct ft_prop_span *span)
{
    if (!msg || !conn)
        return 0;
    struct ft_prop_client_event *event = ft_reserve(sizeof(*event));
    if (!event)
        return 0;
    ft_fill_header(&event->header, FT_EV_PROP_CLIENT, pid_tgid);
    event->cookie = conn->cookie;
    event->enter_ns = 0;
    event->fd = -1;
    if (prop_syscall_inflight) {
        struct ft_inflight *io = bpf_map_lookup_elem(&inflight, &pid_tgid);
        if (io) {
            event->enter_ns = io->enter_ns;
            event->fd = io->fd;
        }
    }
    event->outcome = outcome;
    ft_prop_msg_addrs(msg, &event->local, &event->peer);
    if (span) {
        __builtin_memcpy(event->trace_id, span->trace_id, 16);
        __builtin_memcpy(event->span_id, span->span_id, 8);
        __builtin_memcpy(event->parent_id, span->parent_id, 8);
        event->flags = span->flags;
    } else {
        __builtin_memset(event->trace_id, 0, 16);
        __builtin_memset(event->span_id, 0, 8);
        __builtin_memset(event->parent_id, 0, 8);
        event->flags = 0;
    }
    event->pad = 0;
    ft_submit(event);
    return 0;
}

/* The connection is never touched again (`outcome` says why), and is
 * reported so that user space takes the socket out of the sockhash. A
 * socket in a sockhash has its receive path replaced by the kernel's
 * sockmap one, which fails a blocking recv() with EAGAIN on a wake-up
 * without data (a signal, the peer's ACK of our FIN): no socket should stay
 * there that the program will not rewrite. */
static __always_inline void ft_prop_release(struct sk_msg_md *msg, struct ft_prop_conn *conn, __u32 outcome, __u64 pid_tgid)
{
    conn->state = FT_PROP_CONN_OFF;
    ft_prop_report(msg, conn, pid_tgid, outcome, NULL);
}

/* Counted, then released. */
static __always_inline void ft_prop_leave(struct sk_msg_md *msg, struct ft_prop_conn *conn, __u32 outcome, __u64 pid_tgid)
{
    ft_prop_count(outcome);
    ft_prop_release(msg, conn, outcome, pid_tgid);
}

/* The request head starting at `pos`: follow its framing and carry its
 * context. Returns where the next head or body byte is (past whatever was
 * inserted); the connection's state says what follows. A global function:
 * the verifier checks it once, not once per head a send may hold. */
__noinline __u32 ft_prop_head(struct sk_msg_md *msg, struct ft_prop_conn *conn, __u32 pos, __u64 pid_tgid)
{
    if (!msg || !conn)
        return 0;
    __u32 zero = 0;
    struct ft_prop_scratch *s = bpf_map_lookup_elem(&prop_scratch, &zero);
    if (!s) {
        ft_prop_leave(msg, conn, FT_PROP_PUSH_FAILED, pid_tgid);
        return pos;
    }
    __u32 size = msg->size;
    if (pos >= size)
        return pos;
    __u32 n = size - pos;
    if (n > FT_HTTP_WINDOW)
        n = FT_HTTP_WINDOW;
    if (bpf_msg_pull_data(msg, pos, pos + n, 0) != 0) {
        ft_prop_leave(msg, conn, FT_PROP_PUSH_FAILED, pid_tgid);
        return pos;
    }
    void *data = msg->data;
    void *end = msg->data_end;
    if (data + n > end) {
        ft_prop_leave(msg, conn, FT_PROP_PUSH_FAILED, pid_tgid);
        return pos;
    }
    if (bpf_probe_read_kernel(s->head, n & (FT_HTTP_WINDOW * 2 - 1), data) != 0) {
        ft_prop_leave(msg, conn, FT_PROP_PUSH_FAILED, pid_tgid);
        return pos;
    }
    struct ft_http_head *hp = ft_http_head_slot(0);
    if (!hp) {
        ft_prop_leave(msg, conn, FT_PROP_PUSH_FAILED, pid_tgid);
        return pos;
    }
    ft_http_scan_head(s->head, n, hp);
    /* A copy the verifier can follow exactly (offsets used below). */
    struct ft_http_head h = *hp;
    if (h.flags & FT_HTTP_BAD) {
        ft_prop_leave(msg, conn, FT_PROP_NOT_HTTP1, pid_tgid);
        return pos;
    }
    if (!(h.flags & FT_HTTP_DONE)) {
        /* Longer than the window, or the rest of the head is in a later
         * send: its end (and so the body's) cannot be found. */
        ft_prop_leave(msg, conn, FT_PROP_HEAD_TOO_LARGE, pid_tgid);
        return pos;
    }
    conn->heads++;

    struct ft_sock_addr local, peer;
    ft_prop_msg_addrs(msg, &local, &peer);
    __u32 outcome = FT_PROP_NO_CONTEXT;
    __u32 inserted = 0;
    struct ft_prop_span span = {};
    int have_span = 0;
    if (h.flags & FT_HTTP_APP_CONTEXT) {
        outcome = FT_PROP_APP_CONTEXT;
    } else if (ft_prop_span_for_send(pid_tgid, &span) == 0) {
        have_span = 1;
        if (prop_inject) {
            __u32 len = ft_prop_build_headers(s->out, &span, pid_tgid >> 32);
            int err = len > 0 ? ft_prop_insert(msg, pos + h.line_end, s->out, len) : -1;
            if (err == 0) {
                inserted = len;
                outcome = FT_PROP_INJECTED;
                /* The insert split the head into three scatterlist
                 * elements, and the kernel sends each element of a message
                 * as a TCP write of its own: with TCP_NODELAY (Go's and
                 * Python's http clients set it) each leaves in a segment of
                 * its own, and a server that parses the first read of a
                 * request (the probe's own server side does) would see the
                 * request line without the headers written after it. One
                 * element again, from the request line to the head's end,
                 * leaves as one segment. Should the copy fail, the headers
                 * are still in place, only split. */
                bpf_msg_pull_data(msg, pos, pos + h.head_len + len, 0);
            } else {
                outcome = FT_PROP_PUSH_FAILED;
                if (err == -2)
                    conn->state = FT_PROP_CONN_OFF; /* the message may hold the gap: released below */
            }
        }
        if (prop_join && outcome != FT_PROP_INJECTED) {
            ft_prop_publish(&local, bpf_get_netns_cookie(msg), &span, pid_tgid >> 32);
            if (outcome == FT_PROP_NO_CONTEXT)
                outcome = FT_PROP_PUBLISHED;
        }
    }
    ft_prop_count(outcome);
    ft_prop_report(msg, conn, pid_tgid, outcome, have_span ? &span : NULL);
    if (conn->state == FT_PROP_CONN_OFF) {
        ft_prop_release(msg, conn, FT_PROP_PUSH_FAILED, pid_tgid); /* counted above */
        return pos;
    }
    if (h.flags & FT_HTTP_UNFRAMED) {
        ft_prop_leave(msg, conn, FT_PROP_UNFRAMED, pid_tgid);
        return pos;
    }
    conn->body_left = h.content_length;
    conn->state = h.content_length ? FT_PROP_CONN_BODY : FT_PROP_CONN_HEAD;
    return pos + h.head_len + inserted;
}

/* Skips what is left of the body the connection is in, from `pos` in a
 * send of `size` bytes: the position of the next head, or `size` when the
 * body goes on past this send. */
static __always_inline __u32 ft_prop_skip_body(struct ft_prop_conn *conn, __u32 pos, __u32 size)
{
    if (conn->state != FT_PROP_CONN_BODY)
        return pos;
    __u64 rest = size > pos ? size - pos : 0;
    if (conn->body_left >= rest) {
        conn->body_left -= rest;
        return size;
    }
    pos += (__u32)conn->body_left;
    conn->body_left = 0;
    conn->state = FT_PROP_CONN_HEAD;
    return pos;
}

SEC("sockops")
int ft_prop_sockops(struct bpf_sock_ops *skops)
{
    if (skops->op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB)
        return 1;
    if (skops->family != AF_INET && skops->family != AF_INET6)
        return 1;
    struct bpf_sock *sk = skops->sk;
    if (!sk)
        return 1;
    struct ft_prop_conn *conn = bpf_sk_storage_get(&prop_conns, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
    if (!conn)
        return 1; /* no state, no rewriting: the socket stays out */
    __u64 cookie = bpf_get_socket_cookie(skops);
    conn->cookie = cookie;
    bpf_sock_hash_update(skops, &prop_socks, &cookie, BPF_ANY);
    return 1;
}

SEC("sk_msg")
int ft_prop_msg(struct sk_msg_md *msg)
{
    __u64 pid_tgid = bpf_get_current_pid_tgid();
    struct bpf_sock *sk = msg->sk;
    if (!sk)
        return SK_PASS;
    struct ft_prop_conn *conn = bpf_sk_storage_get(&prop_conns, sk, 0, 0);
    if (!conn || conn->state == FT_PROP_CONN_OFF)
        return SK_PASS;
    /* Containers hold other processes too (shells, sidecars): their
     * connections are let go at their first send. */
    if (!ft_is_claimed(pid_tgid >> 32)) {
        ft_prop_leave(msg, conn, FT_PROP_NOT_TRACED, pid_tgid);
        return SK_PASS;
    }
    __u32 pos = 0;
    for (int r = 0; r < FT_PROP_HEADS_PER_SEND; r++) {
        if (conn->state == FT_PROP_CONN_OFF)
            return SK_PASS;
        __u32 size = msg->size;
        pos = ft_prop_skip_body(conn, pos, size);
        if (pos >= size)
            return SK_PASS;
        pos = ft_prop_head(msg, conn, pos, pid_tgid);
    }
    if (conn->state == FT_PROP_CONN_OFF)
        return SK_PASS;
    __u32 size = msg->size;
    pos = ft_prop_skip_body(conn, pos, size);
    if (pos < size) /* more pipelined heads in one send than we follow */
        ft_prop_leave(msg, conn, FT_PROP_HEAD_TOO_LARGE, pid_tgid);
    return SK_PASS;
}

#endif
