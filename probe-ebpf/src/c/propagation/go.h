/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * The Go set's half of propagation: handing a net/http client span to the
 * thread that writes its request.
 *
 * (*Transport).roundTrip assigns the client span on the caller's goroutine
 * (go.bpf.c), but net/http writes the request on the connection's
 * writeLoop goroutine, on whatever thread that runs. So:
 *
 *   (*persistConn).roundTrip entry (caller's goroutine; go.bpf.c's
 *     ft_go_http_client_conn calls ft_go_prop_note_request): the request the
 *     writeLoop will write (transportRequest's embedded *Request, the first
 *     field: set by net/http for every Go release we support) is noted with
 *     the goroutine's client span;
 *   (*Request).write entry (writeLoop goroutine): that span becomes the
 *     writing goroutine's entry in prop_goroutines (or, where its g cannot
 *     be found from the thread, the thread's in prop_threads), which the
 *     sk_msg program (inject.h) takes for the head it sends next.
 *
 * The request pointer, not the caller's one: roundTrip may copy the
 * request (rewindable bodies), and the copy is what is written.
 */
#ifndef FT_PROP_GO_H
#define FT_PROP_GO_H

#include "go/runtime.h"
#include "go/maps.h"
#include "propagation/context.h"

struct ft_go_request_key {
    __u32 tgid;
    __u32 pad;
    __u64 request; /* *http.Request */
};

struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, 4096);
    __type(key, struct ft_go_request_key);
    __type(value, struct ft_prop_thread);
} go_prop_requests SEC(".maps");

/* The sampled flag of a Go span, as the probe's user space decides it (see
 * probe/src/go/events.rs): a chain's root follows its remote parent's flag
 * or the root rule; its descendants follow the root. */
static __always_inline __u32 ft_go_prop_sampled(const struct ft_go_trace *trace)
{
    int root = (trace->root_flags & FT_GO_ROOT_REMOTE) ? (int)(trace->root_flags & FT_GO_ROOT_SAMPLED)
                                                        : (int)ft_prop_sampled(trace->trace_id, -1);
    if (trace->parent_kind == FT_GO_PARENT_ROOT)
        return ft_prop_sampled(trace->trace_id, -1);
    return ft_prop_sampled(trace->trace_id, root);
}

/* Parsing an http.Request's RemoteAddr, "a.b.c.d:port", one character
 * per bpf_loop step (a plain loop gives the verifier a path per digit
 * pattern). IPv6 peers are not joined (docs/propagation.md). */
struct ft_go_addr_parse {
    char text[32];
    __u32 len;
    __u32 acc;    /* the number being read */
    __u32 field;  /* 0..3: octets, 4: the port */
    __u32 digits; /* of the number being read */
    __u32 bad;
    __u8 ip[4];
};

static long ft_go_addr_step(__u64 i, void *ctx)
{
    struct ft_go_addr_parse *p = ctx;
    if (i >= p->len)
        return 1;
    char c = p->text[i & 31];
    if (c >= '0' && c <= '9') {
        p->acc = p->acc * 10 + (c - '0');
        p->digits++;
        if (p->digits > 5 || (p->field < 4 && p->acc > 255) || p->acc > 65535) {
            p->bad = 1;
            return 1;
        }
        return 0;
    }
    __u32 want = p->field < 3 ? '.' : ':';
    if (c != want || p->field > 3 || p->digits == 0) {
        p->bad = 1;
        return 1;
    }
    p->ip[p->field & 3] = (__u8)p->acc;
    p->field++;
    p->acc = 0;
    p->digits = 0;
    return 0;
}

/* RemoteAddr text (`p->text`, `p->len`) into the address half of a join
 * key; 0 on success. */
static __always_inline int ft_go_prop_parse_addr(struct ft_go_addr_parse *p, struct ft_prop_join_key *key)
{
    bpf_loop(p->len < 32 ? p->len : 32, ft_go_addr_step, p, 0);
    if (p->bad || p->field != 4 || p->digits == 0)
        return -1;
    key->addr[10] = 0xff;
    key->addr[11] = 0xff;
    __builtin_memcpy(&key->addr[12], p->ip, 4);
    key->port = (__u16)p->acc;
    return 0;
}

/* Counts where a traced server request's parent came from (Go set). */
static __always_inline void ft_go_prop_count_origin(__u32 origin)
{
    if (prop_inject || prop_join)
        ft_prop_count(FT_PROP_OUTCOMES + origin);
}

/* A net/http server request (`request`) that came without context: the
 * context a client on this node published for the connection whose client
 * end is the request's RemoteAddr (at `remote_off` in the request) is
 * taken into go_found_context. Counts the origin; 0 if one was taken. A
 * global function: verified once on its own, not inside every path of the
 * server-start program. */
__noinline int ft_go_prop_join(__u64 request, __u32 remote_off)
{
    if (!prop_inject && !prop_join)
        return -1;
    __u32 zero = 0;
    struct ft_traceparent *parent = bpf_map_lookup_elem(&go_found_context, &zero);
    if (!parent)
        return -1;
    if (prop_join && remote_off != FT_GO_NO_OFFSET) {
        struct ft_go_addr_parse parse = {};
        parse.len = ft_go_read_string(parse.text, sizeof(parse.text) - 1, request + remote_off);
        struct ft_prop_join_key key = {};
        if (ft_go_prop_parse_addr(&parse, &key) == 0) {
            if (ft_prop_is_loopback(key.addr)) {
                /* On loopback the server's network namespace is the client's. */
                struct task_struct *task = (struct task_struct *)bpf_get_current_task();
                key.netns = BPF_CORE_READ(task, nsproxy, net_ns, net_cookie);
            }
            if (ft_prop_take_join(&key, parent) == 0) {
                ft_prop_count(FT_PROP_OUTCOMES + FT_PROP_ORIGIN_JOINED);
                return 0;
            }
        }
    }
    ft_prop_count(FT_PROP_OUTCOMES + FT_PROP_ORIGIN_NONE);
    return -1;
}

/* ------------------------------------------------------------ gRPC joins */

/*
 * Same-node joins of gRPC calls. HTTP/2 multiplexes calls on one
 * connection, so a join is keyed by the connection's client end and the
 * stream id, which both ends know. The client's stream id is chosen under
 * the transport's controlBuffer lock, just before its HEADERS frame is
 * queued for the connection's writer (loopyWriter) goroutine, which writes
 * it later; the server adopts the context when its handler starts, after
 * it read that frame. So the context is published on the writer's side,
 * before the frame is written, found there by the frame's header fields:
 *
 *   (*http2Client).createHeaderFields entry (caller's goroutine, inside
 *     NewStream, the call's client span in go_client_inflight; go.bpf.c's
 *     ft_go_grpc_client_conn calls ft_go_prop_grpc_note_stream): the
 *     connection's local address;
 *   its RETs: the header fields slice it made, which NewStream puts in the
 *     stream's *headerFrame; the span is noted under its backing array;
 *   (*loopyWriter).headerHandler entry (writer goroutine): the frame's
 *     stream id is set; published under (local address, stream id).
 *
 * The server (go.bpf.c, handleStream) takes it under its transport's
 * remoteAddr and the stream's id. Loopback addresses are qualified by the
 * network namespace, as for HTTP/1.
 */
struct ft_go_grpc_publish {
    struct ft_prop_join_key key; /* stream_id set when the writer originates the stream */
    struct ft_prop_join join;
};

struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, 1024);
    __type(key, struct ft_go_key); /* the goroutine in createHeaderFields */
    __type(value, struct ft_go_grpc_publish);
} go_grpc_new_streams SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, 1024);
    __type(key, struct ft_go_request_key); /* request: the header fields' backing array */
    __type(value, struct ft_go_grpc_publish);
} go_grpc_headers SEC(".maps");

/* The address in the net.Addr interface at `iface` into the address half
 * of a join key (with the netns on loopback); 0 on success. See
 * ft_go_read_tcp_addr. */
static __always_inline int ft_go_tcp_addr(const struct ft_go_offsets *off, __u64 iface, struct ft_prop_join_key *key)
{
    if (ft_go_read_tcp_addr(off, iface, key->addr, &key->port) != 0)
        return -1;
    if (ft_prop_is_loopback(key->addr)) {
        struct task_struct *task = (struct task_struct *)bpf_get_current_task();
        key->netns = BPF_CORE_READ(task, nsproxy, net_ns, net_cookie);
    }
    return 0;
}

/* The running process's Go offsets when same-node joins are on (NULL
 * otherwise, or for a process this set does not trace); `tgid` is set
 * either way. The common start of the gRPC join programs. */
static __always_inline const struct ft_go_offsets *ft_go_prop_join_offsets(__u32 *tgid)
{
    *tgid = bpf_get_current_pid_tgid() >> 32;
    if (!prop_join)
        return NULL;
    return bpf_map_lookup_elem(&go_offsets, tgid);
}

/* At transport.(*http2Client).createHeaderFields's entry (go.bpf.c's
 * ft_go_grpc_client_conn), on the caller's goroutine `key`: `transport` is
 * the *http2Client, `client` the call's span. Joining on: the span is noted
 * for the header fields this call makes. */
static __always_inline void ft_go_prop_grpc_note_stream(__u64 transport, const struct ft_go_offsets *off,
                                                        const struct ft_go_key *key,
                                                        const struct ft_go_client_inflight *client)
{
    if (!prop_join || off->grpc_client_local_addr == FT_GO_NO_OFFSET)
        return;
    struct ft_go_grpc_publish p = {};
    if (ft_go_tcp_addr(off, transport + off->grpc_client_local_addr, &p.key) != 0)
        return;
    __builtin_memcpy(p.join.trace_id, client->trace.trace_id, 16);
    __builtin_memcpy(p.join.span_id, client->trace.span_id, 8);
    p.join.flags = ft_go_prop_sampled(&client->trace);
    p.join.tgid = key->tgid;
    p.join.ts_ns = bpf_ktime_get_ns();
    bpf_map_update_elem(&go_grpc_new_streams, key, &p, BPF_ANY);
}

/* At its RETs: ([]hpack.HeaderField = {ptr RAX, len RBX, cap RCX}, error =
 * {RDI, RSI}). */
SEC("uprobe")
int ft_go_prop_grpc_fields_end(struct pt_regs *ctx)
{
    __u32 tgid;
    const struct ft_go_offsets *off = ft_go_prop_join_offsets(&tgid);
    if (!off)
        return 0;
    struct ft_go_key key = {.tgid = tgid, .pad = 0, .goid = ft_go_current_goid(ctx, off)};
    struct ft_go_grpc_publish *p = bpf_map_lookup_elem(&go_grpc_new_streams, &key);
    if (!p)
        return 0;
    if (ctx->ax && !ctx->di) {
        struct ft_go_grpc_publish copy = *p;
        struct ft_go_request_key fkey = {.tgid = tgid, .pad = 0, .request = ctx->ax};
        bpf_map_update_elem(&go_grpc_headers, &fkey, &copy, BPF_ANY);
    }
    bpf_map_delete_elem(&go_grpc_new_streams, &key);
    return 0;
}

/* transport.(*loopyWriter).headerHandler(l, h *headerFrame): h in RBX. On a
 * client, the frame that originates a stream, its id set. */
SEC("uprobe")
int ft_go_prop_grpc_header(struct pt_regs *ctx)
{
    __u32 tgid;
    const struct ft_go_offsets *off = ft_go_prop_join_offsets(&tgid);
    if (!off || !ctx->bx || off->grpc_header_stream_id == FT_GO_NO_OFFSET ||
        off->grpc_header_fields == FT_GO_NO_OFFSET)
        return 0;
    struct ft_go_request_key hkey = {.tgid = tgid, .pad = 0,
                                     .request = ft_go_read_u64(ctx->bx + off->grpc_header_fields)};
    if (!hkey.request)
        return 0;
    struct ft_go_grpc_publish *p = bpf_map_lookup_elem(&go_grpc_headers, &hkey);
    if (!p)
        return 0;
    struct ft_go_grpc_publish copy = *p;
    bpf_map_delete_elem(&go_grpc_headers, &hkey);
    __u32 id = 0;
    if (bpf_probe_read_user(&id, sizeof(id), (void *)(ctx->bx + off->grpc_header_stream_id)) != 0 || id == 0)
        return 0;
    __u64 now = bpf_ktime_get_ns();
    /* Fields noted long ago (their call failed before queueing its frame)
     * whose memory now holds another call's: not published. */
    if (now - copy.join.ts_ns > FT_PROP_JOIN_TTL_NS)
        return 0;
    copy.key.stream_id = id;
    copy.join.ts_ns = now;
    bpf_map_update_elem(&ferrotel_prop_joins, &copy.key, &copy.join, BPF_ANY);
    ft_prop_count(FT_PROP_PUBLISHED);
    return 0;
}

/* A gRPC server call (`transport` the ServerTransport {itab, data} of
 * handleStream, `stream_id` its stream's id, 0 if unknown) that came
 * without context: the context a client on this node published for this
 * connection and stream is taken into go_found_context. Counts the origin;
 * 0 if one was taken. A global function, verified on its own. */
__noinline int ft_go_prop_grpc_join(__u64 transport_itab, __u64 transport, __u32 stream_id)
{
    if (!prop_inject && !prop_join)
        return -1;
    __u32 tgid = bpf_get_current_pid_tgid() >> 32;
    const struct ft_go_offsets *off = bpf_map_lookup_elem(&go_offsets, &tgid);
    __u32 zero = 0;
    struct ft_traceparent *parent = bpf_map_lookup_elem(&go_found_context, &zero);
    if (!off || !parent)
        return -1;
    /* Only an *http2Server has the remoteAddr read here (not the ServeHTTP
     * transport). */
    if (prop_join && stream_id && transport && off->grpc_server_remote_addr != FT_GO_NO_OFFSET &&
        (!off->grpc_http2_server_itab || transport_itab == off->grpc_http2_server_itab)) {
        struct ft_prop_join_key key = {};
        if (ft_go_tcp_addr(off, transport + off->grpc_server_remote_addr, &key) == 0) {
            key.stream_id = stream_id;
            if (ft_prop_take_join(&key, parent) == 0) {
                ft_prop_count(FT_PROP_OUTCOMES + FT_PROP_ORIGIN_JOINED);
                return 0;
            }
        }
    }
    ft_prop_count(FT_PROP_OUTCOMES + FT_PROP_ORIGIN_NONE);
    return -1;
}

/* At net/http.(*persistConn).roundTrip's entry (go.bpf.c), on the caller's
 * goroutine: `treq` is its *transportRequest, `client` the goroutine's
 * client span. */
static __always_inline void ft_go_prop_note_request(__u32 tgid, __u64 treq,
                                                    const struct ft_go_client_inflight *client)
{
    if ((!prop_inject && !prop_join) || !treq)
        return;
    struct ft_go_request_key rkey = {.tgid = tgid, .pad = 0, .request = ft_go_read_u64(treq)};
    if (!rkey.request)
        return;
    struct ft_prop_thread entry = {};
    __builtin_memcpy(entry.trace_id, client->trace.trace_id, 16);
    __builtin_memcpy(entry.span_id, client->trace.span_id, 8);
    __builtin_memcpy(entry.parent_id, client->trace.parent_span_id, 8);
    entry.kind = FT_PROP_THREAD_CLIENT;
    entry.flags = ft_go_prop_sampled(&client->trace);
    entry.fd = -1;
    bpf_map_update_elem(&go_prop_requests, &rkey, &entry, BPF_ANY);
}

/* net/http.(*Request).write(r, w io.Writer, usingProxy, extraHeaders, waitForContinue): r in RAX. */
SEC("uprobe")
int ft_go_prop_request_write(struct pt_regs *ctx)
{
    if (!prop_inject && !prop_join)
        return 0;
    __u64 pid_tgid = bpf_get_current_pid_tgid();
    struct ft_go_request_key rkey = {.tgid = pid_tgid >> 32, .pad = 0, .request = ctx->ax};
    struct ft_prop_thread *entry = bpf_map_lookup_elem(&go_prop_requests, &rkey);
    if (!entry)
        return 0;
    struct ft_prop_thread thread = *entry;
    thread.ts_ns = bpf_ktime_get_ns();
    /* Handed to this goroutine, wherever it sends from (context.h), when
     * the sk_msg program can find it: the TLS holds the g in R14. */
    __u64 g = ctx->r14;
    if (g && ft_prop_tls_g() == g) {
        struct ft_prop_goroutine_key gkey = {.tgid = pid_tgid >> 32, .pad = 0, .g = g};
        bpf_map_update_elem(&prop_goroutines, &gkey, &thread, BPF_ANY);
    } else {
        bpf_map_update_elem(&prop_threads, &pid_tgid, &thread, BPF_ANY);
    }
    bpf_map_delete_elem(&go_prop_requests, &rkey);
    return 0;
}

#endif
