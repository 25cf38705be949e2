/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * The Go program set: uprobes on net/http and google.golang.org/grpc.
 *
 * Every "end" program is attached to each RET instruction of its function
 * (found by decoding the function in user space), never as a uretprobe: a
 * uretprobe rewrites the return address on the goroutine stack, and the Go
 * runtime aborts ("unknown caller pc") when it next copies that stack.
 *
 * Per request: the entry program assigns the span's ids (so that client
 * calls made meanwhile can name it as parent) and parks the request per
 * goroutine; the RET program reads the results and emits one
 * ft_go_request_event. runtime.newproc1 carries the active span from a
 * goroutine to the goroutines it creates.
 */
#include "common/types.h"
#include "common/ringbuf.h"
#include "go/wire.h"
#include "go/maps.h"
#include "go/runtime.h"
#include "go/traceparent.h"
#include "common/claimed.h"
#include "common/task.h"
/* Propagation: the client span handed to the thread that writes the
 * request, for the sk_msg program (propagation.bpf.c). */
#include "propagation/go.h"

char LICENSE[] SEC("license") = "GPL";

static __always_inline struct ft_go_key ft_go_key_of(__u32 tgid, __u64 goid)
{
    struct ft_go_key key = {.tgid = tgid, .pad = 0, .goid = goid};
    return key;
}

/* A new span: child of `parent` (a local active span) if given. */
static __always_inline void ft_go_child_trace(struct ft_go_trace *trace, const struct ft_go_active *parent)
{
    ft_go_random_bytes(trace->span_id, 2);
    if (parent) {
        __builtin_memcpy(trace->trace_id, parent->trace_id, 16);
        __builtin_memcpy(trace->parent_span_id, parent->span_id, 8);
        trace->parent_kind = FT_GO_PARENT_LOCAL;
        trace->root_flags = parent->root_flags;
    } else {
        ft_go_random_bytes(trace->trace_id, 4);
        __builtin_memset(trace->parent_span_id, 0, 8);
        trace->parent_kind = FT_GO_PARENT_ROOT;
        trace->root_flags = 0;
    }
}

/* A server span: continues `incoming` if present, else starts a trace. */
static __always_inline void ft_go_server_trace(struct ft_go_trace *trace, const struct ft_traceparent *incoming)
{
    if (incoming) {
        ft_go_random_bytes(trace->span_id, 2);
        __builtin_memcpy(trace->trace_id, incoming->trace_id, 16);
        __builtin_memcpy(trace->parent_span_id, incoming->parent_id, 8);
        trace->parent_kind = FT_GO_PARENT_REMOTE;
        trace->root_flags = FT_GO_ROOT_REMOTE | (incoming->flags & FT_GO_ROOT_SAMPLED);
    } else {
        ft_go_child_trace(trace, NULL);
    }
}

/* The span the goroutine `key` works for, into `active`; 0 if it has one.
 * A goroutine serving a request works for its server span, which is kept
 * only in go_server_inflight: writing it to go_active too cost a map update
 * at every request's start and a delete at its end. Other goroutines have
 * the span they inherited when they were created (go_active). */
static __always_inline int ft_go_active_span(const struct ft_go_key *key, struct ft_go_active *active)
{
    const struct ft_go_server_inflight *server = bpf_map_lookup_elem(&go_server_inflight, key);
    if (server) {
        __builtin_memcpy(active->trace_id, server->trace.trace_id, 16);
        __builtin_memcpy(active->span_id, server->trace.span_id, 8);
        active->root_flags = server->trace.root_flags;
        active->pad = 0;
        return 0;
    }
    const struct ft_go_active *inherited = bpf_map_lookup_elem(&go_active, key);
    if (!inherited)
        return -1;
    __builtin_memcpy(active, inherited, sizeof(*active));
    return 0;
}

/* `incoming` is caller stack space; `found` == 0 says the caller already
 * filled it (gRPC), else headers are read into it when `read_headers`. */
static __always_inline void ft_go_begin_server(struct pt_regs *ctx, __u64 request, __u64 response, int read_headers,
                                               struct ft_traceparent *incoming, int found,
                                               const struct ft_go_conn *conn)
{
    __u64 pid_tgid = bpf_get_current_pid_tgid();
    __u32 tgid = pid_tgid >> 32;
    const struct ft_go_offsets *off = bpf_map_lookup_elem(&go_offsets, &tgid);
    if (!off)
        return;
    struct ft_go_key key = ft_go_key_of(tgid, ft_go_current_goid(ctx, off));
    struct ft_go_server_inflight inflight = {};
    inflight.start_ns = bpf_ktime_get_ns();
    inflight.request = request;
    inflight.response = response;
    inflight.status = -1;
    if (conn)
        __builtin_memcpy(&inflight.conn, conn, sizeof(inflight.conn));
    if (found != 0 && read_headers && off->req_header != FT_GO_NO_OFFSET &&
        ft_go_search_traceparent(off, ft_go_read_u64(request + off->req_header)) == 0)
        found = ft_go_take_found(incoming);
    if (read_headers) {
        /* net/http without a context header: propagation's join, when a
         * client on this node published its span for this connection. */
        if (found == 0)
            ft_go_prop_count_origin(FT_PROP_ORIGIN_TRACEPARENT);
        else if (ft_go_prop_join(request, off->req_remote_addr) == 0)
            found = ft_go_take_found(incoming);
    }
    ft_go_server_trace(&inflight.trace, found == 0 ? incoming : NULL);
    bpf_map_update_elem(&go_server_inflight, &key, &inflight, BPF_ANY);
}

/* Who is running, and the entry it parked in `map` (per goroutine) at the
 * function's entry: the shared start of every end program. */
struct ft_go_caller {
    __u64 pid_tgid;
    __u64 goid;
    const struct ft_go_offsets *off;
    struct ft_go_key key;
};

/* Fills `c` for the running goroutine; 0 if the process is not traced. */
static __always_inline int ft_go_caller_of(struct pt_regs *ctx, struct ft_go_caller *c)
{
    c->pid_tgid = bpf_get_current_pid_tgid();
    __u32 tgid = c->pid_tgid >> 32;
    c->off = bpf_map_lookup_elem(&go_offsets, &tgid);
    if (!c->off)
        return 0;
    c->goid = ft_go_current_goid(ctx, c->off);
    c->key = ft_go_key_of(tgid, c->goid);
    return 1;
}

static __always_inline void *ft_go_parked(struct pt_regs *ctx, void *map, struct ft_go_caller *c)
{
    if (!ft_go_caller_of(ctx, c))
        return NULL;
    return bpf_map_lookup_elem(map, &c->key);
}

static __always_inline struct ft_go_request_event *ft_go_new_event(__u32 kind, const struct ft_go_caller *c,
                                                                    __u64 start_ns, const struct ft_go_trace *trace)
{
    struct ft_go_request_event *event = ft_reserve(sizeof(*event));
    if (!event)
        return NULL;
    ft_fill_header(&event->header, kind, c->pid_tgid);
    event->start_ns = start_ns;
    event->goid = c->goid;
    __builtin_memcpy(&event->trace, trace, sizeof(*trace));
    event->status = -1;
    event->content_length = -1;
    event->method_len = 0;
    event->path_len = 0;
    event->host_len = 0;
    event->route_len = 0;
    event->peer_len = 0;
    event->tls_version = 0;
    event->flags = 0;
    event->pad = 0;
    __builtin_memset(&event->conn, 0, sizeof(event->conn));
    return event;
}

/* A server request ended: forget it, and with it the span its goroutine
 * worked for (ft_go_active_span). */
static __always_inline void ft_go_end_server(const struct ft_go_caller *c)
{
    bpf_map_delete_elem(&go_server_inflight, &c->key);
}

/* The request went over TLS: `state` is its *tls.ConnectionState (0 if
 * only the URL scheme said so). The server name fills an empty host. */
static __always_inline void ft_go_read_tls(struct ft_go_request_event *event, const struct ft_go_offsets *off,
                                           __u64 state)
{
    event->flags |= FT_GO_EVENT_TLS;
    if (!state)
        return;
    if (off->tls_version != FT_GO_NO_OFFSET)
        bpf_probe_read_user(&event->tls_version, sizeof(event->tls_version), (void *)(state + off->tls_version));
    if (event->host_len == 0 && off->tls_server_name != FT_GO_NO_OFFSET)
        event->host_len = ft_go_read_string(event->host, FT_GO_HOST_CAP - 1, state + off->tls_server_name);
}

/* The first bytes of an *http.Request, read in one call: the event reads
 * up to seven of its fields, and every bpf_probe_read_user costs its own
 * fault-guarded copy (most of the end program's time per request). 256
 * bytes cover every field read below in the Go releases of the offsets
 * table (the farthest, Request.Pattern, ends at 248); a layout that does
 * not fit is read field by field. */
#define FT_GO_REQUEST_WINDOW 256

struct ft_go_request_window {
    /* Twice the window, so that a length masked with 2 * WINDOW - 1 (a
     * bound the verifier keeps) always fits. */
    __u8 bytes[2 * FT_GO_REQUEST_WINDOW];
};

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct ft_go_request_window);
} go_request_window SEC(".maps");

/* How many bytes of the Request hold the fields the event reads: the end of
 * the farthest one, or 0 if that is beyond the window. */
static __always_inline __u32 ft_go_request_extent(const struct ft_go_offsets *off)
{
    __u32 end = 0;
#define FT_GO_EXTEND(field, size)                                                                                \
    if (off->field != FT_GO_NO_OFFSET && off->field + (size) > end)                                               \
        end = off->field + (size);
    FT_GO_EXTEND(req_method, 16)
    FT_GO_EXTEND(req_url, 8)
    FT_GO_EXTEND(req_host, 16)
    FT_GO_EXTEND(req_remote_addr, 16)
    FT_GO_EXTEND(req_tls, 8)
    FT_GO_EXTEND(req_pattern, 16)
    FT_GO_EXTEND(req_content_length, 8)
#undef FT_GO_EXTEND
    return end <= FT_GO_REQUEST_WINDOW ? end : 0;
}

/* The window's 8 bytes at `at` (0 outside it). */
static __always_inline __u64 ft_go_window_u64(const struct ft_go_request_window *w, __u32 at)
{
    if (at > FT_GO_REQUEST_WINDOW - 8)
        return 0;
    __u64 value;
    __builtin_memcpy(&value, &w->bytes[at & (FT_GO_REQUEST_WINDOW - 1)], 8);
    return value;
}

/* A Go string whose header is in the window at `at`, into `dst`. */
static __always_inline __u16 ft_go_window_string(char *dst, __u64 cap_mask, const struct ft_go_request_window *w,
                                                 __u32 at)
{
    __u64 ptr = ft_go_window_u64(w, at);
    __u64 n = ft_go_copy_len((__s64)ft_go_window_u64(w, at + 8), cap_mask);
    if (!ptr || n == 0 || bpf_probe_read_user(dst, n, (void *)ptr) != 0)
        return 0;
    return (__u16)n;
}

/* The Request's fields the event reads, either from one read of its first
 * bytes (`w`) or, when that is not possible, one read each. */
struct ft_go_request_fields {
    const struct ft_go_request_window *w;
    __u64 request;
};

static __always_inline __u16 ft_go_request_string(char *dst, __u64 cap_mask, const struct ft_go_request_fields *r,
                                                  __u32 at)
{
    if (r->w)
        return ft_go_window_string(dst, cap_mask, r->w, at);
    return ft_go_read_string(dst, cap_mask, r->request + at);
}

static __always_inline __u64 ft_go_request_u64(const struct ft_go_request_fields *r, __u32 at)
{
    if (r->w)
        return ft_go_window_u64(r->w, at);
    return ft_go_read_u64(r->request + at);
}

/* Method, URL path and host of an *http.Request into the event. */
static __always_inline void ft_go_read_http_request(struct ft_go_request_event *event,
                                                    const struct ft_go_offsets *off, __u64 request, int client)
{
    struct ft_go_request_fields r = {.w = NULL, .request = request};
    __u32 extent = ft_go_request_extent(off);
    __u32 zero = 0;
    struct ft_go_request_window *window = extent ? bpf_map_lookup_elem(&go_request_window, &zero) : NULL;
    /* The compiler knows extent <= WINDOW and would drop the mask the
     * verifier needs; the empty asm hides what it knows. */
    __u64 length = extent;
    asm volatile("" : "+r"(length));
    length &= 2 * FT_GO_REQUEST_WINDOW - 1;
    if (window && bpf_probe_read_user(window->bytes, length, (void *)request) == 0)
        r.w = window;
    event->method_len = ft_go_request_string(event->method, FT_GO_METHOD_CAP - 1, &r, off->req_method);
    __u64 url = ft_go_request_u64(&r, off->req_url);
    if (url)
        event->path_len = ft_go_read_string(event->path, FT_GO_PATH_CAP - 1, url + off->url_path);
    /* A client dials URL.Host; a server reports the Host header. */
    if (client && url) {
        event->host_len = ft_go_read_string(event->host, FT_GO_HOST_CAP - 1, url + off->url_host);
    } else {
        event->host_len = ft_go_request_string(event->host, FT_GO_HOST_CAP - 1, &r, off->req_host);
        if (off->req_remote_addr != FT_GO_NO_OFFSET)
            event->peer_len = ft_go_request_string(event->peer, FT_GO_PEER_CAP - 1, &r, off->req_remote_addr);
        __u64 state = off->req_tls != FT_GO_NO_OFFSET ? ft_go_request_u64(&r, off->req_tls) : 0;
        if (state)
            ft_go_read_tls(event, off, state);
    }
    if (off->req_pattern != FT_GO_NO_OFFSET)
        event->route_len = ft_go_request_string(event->route, FT_GO_ROUTE_CAP - 1, &r, off->req_pattern);
    event->content_length = (__s64)ft_go_request_u64(&r, off->req_content_length);
}

/* A new HTTP event of `kind` for the request parked by `c`, read from the
 * *http.Request (the client's view of it for FT_EV_GO_HTTP_CLIENT). */
static __always_inline struct ft_go_request_event *ft_go_http_event(__u32 kind, const struct ft_go_caller *c,
                                                                     __u64 start_ns, const struct ft_go_trace *trace,
                                                                     __u64 request)
{
    struct ft_go_request_event *event = ft_go_new_event(kind, c, start_ns, trace);
    if (event)
        ft_go_read_http_request(event, c->off, request, kind == FT_EV_GO_HTTP_CLIENT);
    return event;
}

/* ------------------------------------------------------------ net/http server */

/* net/http.serverHandler.ServeHTTP(sh, rw ResponseWriter, req *Request):
 * sh in RAX, rw = {itab RBX, data RCX}, req in RDI. */
SEC("uprobe")
int ft_go_http_server_start(struct pt_regs *ctx)
{
    struct ft_traceparent incoming = {};
    ft_go_begin_server(ctx, ctx->di, ctx->cx, 1, &incoming, -1, NULL);
    return 0;
}

SEC("uprobe")
int ft_go_http_server_end(struct pt_regs *ctx)
{
    struct ft_go_caller c;
    struct ft_go_server_inflight *inflight = ft_go_parked(ctx, &go_server_inflight, &c);
    if (!inflight)
        return 0;
    struct ft_go_request_event *event =
        ft_go_http_event(FT_EV_GO_HTTP_SERVER, &c, inflight->start_ns, &inflight->trace, inflight->request);
    if (event) {
        __s64 status = 0;
        if (inflight->response && c.off->response_status != FT_GO_NO_OFFSET)
            bpf_probe_read_user(&status, sizeof(status), (void *)(inflight->response + c.off->response_status));
        /* No WriteHeader/Write yet: net/http sends 200 when the handler returns. */
        event->status = status == 0 ? 200 : status;
        ft_submit(event);
    }
    ft_go_end_server(&c);
    return 0;
}

/* ------------------------------------------------------------ net/http client */

/* Request.URL.Scheme == "https": a round trip that failed before a
 * response still went (or tried to go) over TLS. */
static __always_inline int ft_go_url_is_https(const struct ft_go_offsets *off, __u64 request)
{
    if (off->url_scheme == FT_GO_NO_OFFSET)
        return 0;
    __u64 url = ft_go_read_u64(request + off->req_url);
    if (!url)
        return 0;
    struct ft_go_string scheme = {};
    if (bpf_probe_read_user(&scheme, sizeof(scheme), (void *)(url + off->url_scheme)) != 0 || scheme.len != 5)
        return 0;
    char text[5];
    if (bpf_probe_read_user(text, sizeof(text), (void *)scheme.ptr) != 0)
        return 0;
    return __builtin_memcmp(text, "https", 5) == 0;
}

static __always_inline void ft_go_begin_client(struct pt_regs *ctx, __u64 request, __u64 method_len)
{
    __u64 pid_tgid = bpf_get_current_pid_tgid();
    __u32 tgid = pid_tgid >> 32;
    const struct ft_go_offsets *off = bpf_map_lookup_elem(&go_offsets, &tgid);
    if (!off)
        return;
    struct ft_go_key key = ft_go_key_of(tgid, ft_go_current_goid(ctx, off));
    struct ft_go_client_inflight inflight = {};
    inflight.start_ns = bpf_ktime_get_ns();
    inflight.request = request;
    inflight.method_len = method_len;
    struct ft_go_active parent;
    ft_go_child_trace(&inflight.trace, ft_go_active_span(&key, &parent) == 0 ? &parent : NULL);
    bpf_map_update_elem(&go_client_inflight, &key, &inflight, BPF_ANY);
}

/* net/http.(*Transport).roundTrip(t, req *Request): req in RBX. */
SEC("uprobe")
int ft_go_http_client_start(struct pt_regs *ctx)
{
    ft_go_begin_client(ctx, ctx->bx, 0);
    return 0;
}

/* Both ends of the TCP connection under a *persistConn into `conn`. Its
 * conn is a *net.TCPConn or a *tls.Conn over one, told apart by their
 * itabs; a binary whose symbol table does not name them (stripped) is told
 * by tlsState, which net/http sets exactly when it made the TLS connection
 * itself. Any other net.Conn (a custom dialer's) is left unread. */
static __always_inline void ft_go_persist_conn(const struct ft_go_offsets *off, __u64 pc, struct ft_go_conn *conn)
{
    if (off->persist_conn_conn == FT_GO_NO_OFFSET || off->net_conn_fd == FT_GO_NO_OFFSET ||
        off->net_fd_laddr == FT_GO_NO_OFFSET || off->net_fd_raddr == FT_GO_NO_OFFSET)
        return;
    __u64 iface[2] = {};
    if (bpf_probe_read_user(iface, sizeof(iface), (void *)(pc + off->persist_conn_conn)) != 0 || !iface[1])
        return;
    int tls;
    if (off->tcp_conn_itab && off->tls_conn_itab) {
        if (iface[0] == off->tcp_conn_itab)
            tls = 0;
        else if (iface[0] == off->tls_conn_itab)
            tls = 1;
        else
            return;
    } else if (off->persist_conn_tls != FT_GO_NO_OFFSET) {
        tls = ft_go_read_u64(pc + off->persist_conn_tls) != 0;
    } else {
        return;
    }
    if (tls) {
        if (off->tls_conn_conn == FT_GO_NO_OFFSET ||
            bpf_probe_read_user(iface, sizeof(iface), (void *)(iface[1] + off->tls_conn_conn)) != 0 || !iface[1] ||
            (off->tcp_conn_itab && iface[0] != off->tcp_conn_itab))
            return;
    }
    __u64 fd = ft_go_read_u64(iface[1] + off->net_conn_fd);
    if (!fd || ft_go_read_tcp_addr(off, fd + off->net_fd_laddr, conn->local, &conn->local_port) != 0 ||
        ft_go_read_tcp_addr(off, fd + off->net_fd_raddr, conn->remote, &conn->remote_port) != 0)
        return;
    conn->known = FT_GO_CONN_LOCAL | FT_GO_CONN_REMOTE;
}

/* net/http.(*persistConn).roundTrip(pc, req *transportRequest): pc in RAX,
 * req in RBX. Runs inside (*Transport).roundTrip on the caller's goroutine
 * once the request has its connection (a retry on another connection runs
 * it again: the last one is the one that answered). The connection pairs
 * the client span with its server's on the node (the service graph); with
 * propagation on, the request is also noted for the thread that writes it
 * (propagation/go.h). HTTP/1 only: HTTP/2 round trips do not pass here. */
SEC("uprobe")
int ft_go_http_client_conn(struct pt_regs *ctx)
{
    struct ft_go_caller c;
    struct ft_go_client_inflight *client = ft_go_parked(ctx, &go_client_inflight, &c);
    if (!client)
        return 0;
    if (ctx->ax)
        ft_go_persist_conn(c.off, ctx->ax, &client->conn);
    ft_go_prop_note_request(c.key.tgid, ctx->bx, client);
    return 0;
}

/* At RET: (*Response in RAX, error = {RBX, RCX}). */
SEC("uprobe")
int ft_go_http_client_end(struct pt_regs *ctx)
{
    struct ft_go_caller c;
    struct ft_go_client_inflight *inflight = ft_go_parked(ctx, &go_client_inflight, &c);
    if (!inflight)
        return 0;
    struct ft_go_request_event *event =
        ft_go_http_event(FT_EV_GO_HTTP_CLIENT, &c, inflight->start_ns, &inflight->trace, inflight->request);
    if (event) {
        __u64 response = ctx->ax;
        __u64 state = 0;
        if (response) {
            __s64 status = -1;
            bpf_probe_read_user(&status, sizeof(status), (void *)(response + c.off->resp_status_code));
            event->status = status;
            if (c.off->resp_tls != FT_GO_NO_OFFSET)
                state = ft_go_read_u64(response + c.off->resp_tls);
        }
        if (state || ft_go_url_is_https(c.off, inflight->request))
            ft_go_read_tls(event, c.off, state);
        __builtin_memcpy(&event->conn, &inflight->conn, sizeof(event->conn));
        ft_submit(event);
    }
    bpf_map_delete_elem(&go_client_inflight, &c.key);
    return 0;
}

/* ------------------------------------------------------------ gRPC server */

/* transport.(*http2Server).operateHeaders(t, ctx context.Context, frame *http2.MetaHeadersFrame, handle):
 * t in RAX, ctx = {RBX, RCX}, frame in RDI. Runs on the connection's reader
 * goroutine before the stream exists; the handler runs later on another
 * goroutine, so a valid `traceparent` field is parked under
 * (tgid, transport, stream id) for ft_go_grpc_server_start. HTTP/2 header
 * names arrive lowercase. */
#define FT_GO_MAX_HEADER_FIELDS 32

SEC("uprobe")
int ft_go_grpc_server_headers(struct pt_regs *ctx)
{
    __u32 tgid = bpf_get_current_pid_tgid() >> 32;
    const struct ft_go_offsets *off = bpf_map_lookup_elem(&go_offsets, &tgid);
    if (!off || off->hpack_field_size == FT_GO_NO_OFFSET || off->hpack_field_size > 256 ||
        off->h2_meta_fields == FT_GO_NO_OFFSET || off->h2_meta_headers == FT_GO_NO_OFFSET ||
        off->h2_frame_header == FT_GO_NO_OFFSET || off->h2_stream_id == FT_GO_NO_OFFSET ||
        off->hpack_value == FT_GO_NO_OFFSET || off->grpc_stream_id == FT_GO_NO_OFFSET)
        return 0;
    __u64 transport = ctx->ax, frame = ctx->di;
    if (!transport || !frame)
        return 0;
    struct ft_go_slice fields = {};
    if (bpf_probe_read_user(&fields, sizeof(fields), (void *)(frame + off->h2_meta_fields)) != 0 || !fields.ptr)
        return 0;
    for (__u32 i = 0; i < FT_GO_MAX_HEADER_FIELDS; i++) {
        if (i >= fields.len)
            return 0;
        __u64 field = fields.ptr + (__u64)i * off->hpack_field_size;
        struct ft_go_string name = {};
        if (bpf_probe_read_user(&name, sizeof(name), (void *)field) != 0 || name.len != 11)
            continue;
        char text[11];
        if (bpf_probe_read_user(text, sizeof(text), (void *)name.ptr) != 0 ||
            __builtin_memcmp(text, "traceparent", 11) != 0)
            continue;
        struct ft_go_string value = {};
        if (bpf_probe_read_user(&value, sizeof(value), (void *)(field + off->hpack_value)) != 0 ||
            value.len != FT_TRACEPARENT_LEN)
            return 0;
        __u8 raw[FT_TRACEPARENT_LEN];
        struct ft_traceparent parsed = {};
        if (bpf_probe_read_user(raw, sizeof(raw), (void *)value.ptr) != 0 || ft_parse_traceparent(raw, &parsed) != 0)
            return 0;
        __u64 headers = ft_go_read_u64(frame + off->h2_meta_headers);
        if (!headers)
            return 0;
        struct ft_go_stream_key key = {.tgid = tgid, .stream_id = 0, .transport = transport};
        bpf_probe_read_user(&key.stream_id, sizeof(key.stream_id),
                            (void *)(headers + off->h2_frame_header + off->h2_stream_id));
        bpf_map_update_elem(&go_grpc_traceparent, &key, &parsed, BPF_ANY);
        return 0;
    }
    return 0;
}

/* The *tls.ConnectionState of a gRPC server transport's connection, or 0:
 * its AuthInfo interface {itab, data} holds a credentials.TLSInfo (data
 * points to a copy of it) exactly when the itab is TLSInfo's. The itab
 * comparison also rejects a transport that is not an *http2Server (the
 * ServeHTTP handler transport), whose memory at that offset is something
 * else. */
static __always_inline __u64 ft_go_grpc_tls_state(const struct ft_go_offsets *off, __u64 transport)
{
    if (!transport || off->grpc_tls_info_itab == 0 || off->grpc_server_auth_info == FT_GO_NO_OFFSET ||
        off->grpc_tls_info_state == FT_GO_NO_OFFSET)
        return 0;
    if (ft_go_read_u64(transport + off->grpc_server_auth_info) != off->grpc_tls_info_itab)
        return 0;
    __u64 info = ft_go_read_u64(transport + off->grpc_server_auth_info + 8);
    return info ? info + off->grpc_tls_info_state : 0;
}

/* grpc.(*Server).handleStream(s, t ServerTransport, stream *Stream|*ServerStream[, trInfo]):
 * s in RAX, t = {RBX, RCX}, stream in RDI. */
SEC("uprobe")
int ft_go_grpc_server_start(struct pt_regs *ctx)
{
    __u32 tgid = bpf_get_current_pid_tgid() >> 32;
    const struct ft_go_offsets *off = bpf_map_lookup_elem(&go_offsets, &tgid);
    if (!off)
        return 0;
    struct ft_traceparent incoming = {};
    int found = -1;
    __u64 stream = ctx->di;
    if (stream && off->grpc_server_stream_stream != FT_GO_NO_OFFSET)
        stream = ft_go_read_u64(stream + off->grpc_server_stream_stream);
    __u32 stream_id = 0;
    if (stream && off->grpc_stream_id != FT_GO_NO_OFFSET)
        bpf_probe_read_user(&stream_id, sizeof(stream_id), (void *)(stream + off->grpc_stream_id));
    /* t's data word is the *http2Server that operateHeaders ran on. */
    if (stream_id && ctx->cx) {
        struct ft_go_stream_key key = {.tgid = tgid, .stream_id = stream_id, .transport = ctx->cx};
        struct ft_traceparent *parked = bpf_map_lookup_elem(&go_grpc_traceparent, &key);
        if (parked) {
            __builtin_memcpy(&incoming, parked, sizeof(incoming));
            found = 0;
            bpf_map_delete_elem(&go_grpc_traceparent, &key);
        }
    }
    /* Without a traceparent: propagation's join, when a client on this node
     * published its span for this connection and stream. */
    if (found == 0)
        ft_go_prop_count_origin(FT_PROP_ORIGIN_TRACEPARENT);
    else if (ft_go_prop_grpc_join(ctx->bx, ctx->cx, stream_id) == 0)
        found = ft_go_take_found(&incoming);
    /* The caller's end, which pairs the span with its client's on the node:
     * only an *http2Server has the remoteAddr read here. */
    struct ft_go_conn conn = {};
    if (ctx->cx && off->grpc_server_remote_addr != FT_GO_NO_OFFSET &&
        (!off->grpc_http2_server_itab || ctx->bx == off->grpc_http2_server_itab) &&
        ft_go_read_tcp_addr(off, ctx->cx + off->grpc_server_remote_addr, conn.remote, &conn.remote_port) == 0)
        conn.known = FT_GO_CONN_REMOTE;
    ft_go_begin_server(ctx, ctx->di, ft_go_grpc_tls_state(off, ctx->cx), 0, &incoming, found, &conn);
    return 0;
}

/* transport.(*http2Server).WriteStatus(t, s *Stream, st *status.Status): st in RCX. */
SEC("uprobe")
int ft_go_grpc_server_status(struct pt_regs *ctx)
{
    __u32 tgid = bpf_get_current_pid_tgid() >> 32;
    const struct ft_go_offsets *off = bpf_map_lookup_elem(&go_offsets, &tgid);
    if (!off)
        return 0;
    struct ft_go_key key = ft_go_key_of(tgid, ft_go_current_goid(ctx, off));
    struct ft_go_server_inflight *inflight = bpf_map_lookup_elem(&go_server_inflight, &key);
    if (!inflight)
        return 0;
    __s64 code = 0;
    __u64 status = ctx->cx;
    __u64 proto = status ? ft_go_read_u64(status + off->grpc_status_s) : 0;
    if (proto) {
        __s32 value = 0;
        bpf_probe_read_user(&value, sizeof(value), (void *)(proto + off->grpc_spb_code));
        code = value;
    }
    inflight->status = code;
    return 0;
}

SEC("uprobe")
int ft_go_grpc_server_end(struct pt_regs *ctx)
{
    struct ft_go_caller c;
    struct ft_go_server_inflight *inflight = ft_go_parked(ctx, &go_server_inflight, &c);
    if (!inflight)
        return 0;
    struct ft_go_request_event *event =
        ft_go_new_event(FT_EV_GO_GRPC_SERVER, &c, inflight->start_ns, &inflight->trace);
    if (event) {
        __u64 stream = inflight->request;
        if (stream && c.off->grpc_server_stream_stream != FT_GO_NO_OFFSET)
            stream = ft_go_read_u64(stream + c.off->grpc_server_stream_stream);
        if (stream)
            event->path_len = ft_go_read_string(event->path, FT_GO_PATH_CAP - 1, stream + c.off->grpc_stream_method);
        event->status = inflight->status;
        __builtin_memcpy(&event->conn, &inflight->conn, sizeof(event->conn));
        /* gRPC has no URL scheme and no Host to fill from the server name:
         * the TLS flag and version only. */
        if (inflight->response) {
            event->flags |= FT_GO_EVENT_TLS;
            if (c.off->tls_version != FT_GO_NO_OFFSET)
                bpf_probe_read_user(&event->tls_version, sizeof(event->tls_version),
                                    (void *)(inflight->response + c.off->tls_version));
        }
        ft_submit(event);
    }
    ft_go_end_server(&c);
    return 0;
}

/* ------------------------------------------------------------ gRPC client */

/* The gRPC code of a returned error interface {itab, data}: 0 for nil, the
 * status' code for a *status.Error, 2 (Unknown) for anything else. */
static __always_inline __s64 ft_go_grpc_error_code(const struct ft_go_offsets *off, __u64 itab, __u64 data)
{
    if (!itab)
        return 0;
    __s64 code = 2;
    if (data && (off->grpc_status_error_itab == 0 || off->grpc_status_error_itab == itab)) {
        __u64 status = ft_go_read_u64(data + off->grpc_error_s);
        __u64 proto = status ? ft_go_read_u64(status + off->grpc_status_s) : 0;
        if (proto) {
            __s32 value = 2;
            bpf_probe_read_user(&value, sizeof(value), (void *)(proto + off->grpc_spb_code));
            if (value >= 0 && value <= 16)
                code = value;
        }
    }
    return code;
}

/* A client stream between NewStream's RET and (*clientStream).finish, keyed
 * by (tgid, *clientStream): the stream may end on another goroutine. */
struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, FT_GO_MAX_GOROUTINES);
    __type(key, struct ft_go_key);
    __type(value, struct ft_go_client_inflight);
} go_stream_inflight SEC(".maps");

/* Emits the client span of a gRPC call parked in `inflight`, ended by `err`. */
static __always_inline void ft_go_emit_grpc_client(const struct ft_go_caller *c,
                                                   const struct ft_go_client_inflight *inflight, __u64 err_itab,
                                                   __u64 err_data)
{
    struct ft_go_request_event *event =
        ft_go_new_event(FT_EV_GO_GRPC_CLIENT, c, inflight->start_ns, &inflight->trace);
    if (!event)
        return;
    __u64 n = ft_go_copy_len((__s64)inflight->method_len, FT_GO_PATH_CAP - 1);
    if (n && inflight->request && bpf_probe_read_user(event->path, n, (void *)inflight->request) == 0)
        event->path_len = (__u16)n;
    event->status = ft_go_grpc_error_code(c->off, err_itab, err_data);
    __builtin_memcpy(&event->conn, &inflight->conn, sizeof(event->conn));
    ft_submit(event);
}

/* grpc.(*ClientConn).Invoke(cc, ctx, method string, args, reply any, opts...):
 * cc in RAX, ctx = {RBX, RCX}, method = {RDI, RSI}. */
SEC("uprobe")
int ft_go_grpc_client_start(struct pt_regs *ctx)
{
    ft_go_begin_client(ctx, ctx->di, ctx->si);
    return 0;
}

/* At RET: error = {itab RAX, data RBX}. */
SEC("uprobe")
int ft_go_grpc_client_end(struct pt_regs *ctx)
{
    struct ft_go_caller c;
    struct ft_go_client_inflight *inflight = ft_go_parked(ctx, &go_client_inflight, &c);
    if (inflight) {
        ft_go_emit_grpc_client(&c, inflight, ctx->ax, ctx->bx);
        bpf_map_delete_elem(&go_client_inflight, &c.key);
    }
    return 0;
}

/* transport.(*http2Client).createHeaderFields(t, ctx, callHdr): t in RAX.
 * Runs on the caller's goroutine while its call (unary or a stream) makes
 * its stream on the transport, the call's span in go_client_inflight: the
 * transport's ends pair the span with its server's on the node. With
 * propagation's joining on, the call is also noted for the writer that
 * sends its HEADERS frame (propagation/go.h). */
SEC("uprobe")
int ft_go_grpc_client_conn(struct pt_regs *ctx)
{
    struct ft_go_caller c;
    struct ft_go_client_inflight *client = ft_go_parked(ctx, &go_client_inflight, &c);
    if (!client || !ctx->ax)
        return 0;
    const struct ft_go_offsets *off = c.off;
    struct ft_go_conn *conn = &client->conn;
    if (off->grpc_client_local_addr != FT_GO_NO_OFFSET && off->grpc_client_remote_addr != FT_GO_NO_OFFSET &&
        ft_go_read_tcp_addr(off, ctx->ax + off->grpc_client_local_addr, conn->local, &conn->local_port) == 0 &&
        ft_go_read_tcp_addr(off, ctx->ax + off->grpc_client_remote_addr, conn->remote, &conn->remote_port) == 0)
        conn->known = FT_GO_CONN_LOCAL | FT_GO_CONN_REMOTE;
    ft_go_prop_grpc_note_stream(ctx->ax, off, &c.key, client);
    return 0;
}

/* grpc.(*ClientConn).NewStream(cc, ctx, desc, method string, opts...):
 * method = {RSI, R8}. Streaming calls only (unary Invoke does not pass here). */
SEC("uprobe")
int ft_go_grpc_stream_start(struct pt_regs *ctx)
{
    ft_go_begin_client(ctx, ctx->si, ctx->r8);
    return 0;
}

/* At NewStream's RET: (ClientStream = {RAX, RBX}, error = {RCX, RDI}). */
SEC("uprobe")
int ft_go_grpc_stream_opened(struct pt_regs *ctx)
{
    struct ft_go_caller c;
    struct ft_go_client_inflight *inflight = ft_go_parked(ctx, &go_client_inflight, &c);
    if (!inflight)
        return 0;
    __u64 stream = ctx->bx;
    if (ctx->cx || !stream) {
        /* Failed to open: the span ends here with the error's code. */
        ft_go_emit_grpc_client(&c, inflight, ctx->cx, ctx->di);
    } else {
        struct ft_go_key stream_key = ft_go_key_of(c.key.tgid, stream);
        bpf_map_update_elem(&go_stream_inflight, &stream_key, inflight, BPF_ANY);
    }
    bpf_map_delete_elem(&go_client_inflight, &c.key);
    return 0;
}

/* grpc.(*clientStream).finish(cs, err error): cs in RAX, err = {RBX, RCX}.
 * Also runs for unary calls, whose streams are not in the map. */
SEC("uprobe")
int ft_go_grpc_stream_end(struct pt_regs *ctx)
{
    struct ft_go_caller c;
    if (!ft_go_caller_of(ctx, &c))
        return 0;
    /* Keyed by the stream, not the goroutine: it may finish on another. */
    struct ft_go_key key = ft_go_key_of(c.key.tgid, ctx->ax);
    struct ft_go_client_inflight *inflight = bpf_map_lookup_elem(&go_stream_inflight, &key);
    if (!inflight)
        return 0;
    ft_go_emit_grpc_client(&c, inflight, ctx->bx, ctx->cx);
    bpf_map_delete_elem(&go_stream_inflight, &key);
    return 0;
}

/* ------------------------------------------------------------ goroutine creation */

/* runtime.newproc1(fn *funcval, callergp *g, ...) *g: callergp in RBX. Runs on
 * the system stack (R14 is g0), so the caller is taken from the argument. */
SEC("uprobe")
int ft_go_newproc_start(struct pt_regs *ctx)
{
    __u64 pid_tgid = bpf_get_current_pid_tgid();
    __u32 tgid = pid_tgid >> 32;
    const struct ft_go_offsets *off = bpf_map_lookup_elem(&go_offsets, &tgid);
    if (!off)
        return 0;
    __u64 callergp = ctx->bx;
    struct ft_go_key key = ft_go_key_of(tgid, ft_go_goid_of(off, callergp));
    struct ft_go_newproc parked = {};
    if (ft_go_active_span(&key, &parked.active) != 0)
        return 0;
    parked.callergp = callergp;
    bpf_map_update_elem(&go_newproc, &pid_tgid, &parked, BPF_ANY);
    return 0;
}

/* At RET: the new g in RAX, its goid already assigned. */
SEC("uprobe")
int ft_go_newproc_end(struct pt_regs *ctx)
{
    __u64 pid_tgid = bpf_get_current_pid_tgid();
    struct ft_go_newproc *parked = bpf_map_lookup_elem(&go_newproc, &pid_tgid);
    if (!parked)
        return 0;
    __u32 tgid = pid_tgid >> 32;
    const struct ft_go_offsets *off = bpf_map_lookup_elem(&go_offsets, &tgid);
    if (off) {
        struct ft_go_key key = ft_go_key_of(tgid, ft_go_goid_of(off, ctx->ax));
        if (key.goid)
            bpf_map_update_elem(&go_active, &key, &parked->active, BPF_ANY);
    }
    bpf_map_delete_elem(&go_newproc, &pid_tgid);
    return 0;
}

/* runtime.newproc.func1 (the system-stack closure of a `go` statement), at
 * its CALL runtime.runqput(pp, newg, next): newg in RBX, its goid and
 * parentGoid (Go >= 1.21) already set. One probe on a CALL, which the
 * kernel emulates (no single-step), instead of newproc1's entry and RET. */
SEC("uprobe")
int ft_go_newproc_spawn(struct pt_regs *ctx)
{
    __u32 tgid = bpf_get_current_pid_tgid() >> 32;
    const struct ft_go_offsets *off = bpf_map_lookup_elem(&go_offsets, &tgid);
    if (!off || off->g_parent_goid == FT_GO_NO_OFFSET)
        return 0;
    __u64 newg = ctx->bx;
    if (!newg)
        return 0;
    struct ft_go_key parent = ft_go_key_of(tgid, ft_go_read_u64(newg + off->g_parent_goid));
    struct ft_go_active copy;
    if (ft_go_active_span(&parent, &copy) != 0)
        return 0;
    struct ft_go_key child = ft_go_key_of(tgid, ft_go_goid_of(off, newg));
    if (child.goid)
        bpf_map_update_elem(&go_active, &child, &copy, BPF_ANY);
    return 0;
}

/* A traced process left: forget what its goroutines left in the
 * per-goroutine maps (a request cut by the exit, a context a goroutine
 * inherited and never finished with). Without this they would stay until
 * the LRU pushed them out, and a node churning through processes would keep
 * the maps full of the dead. Runs only for processes the set traces. */
static long ft_go_forget_goroutine(void *map, struct ft_go_key *key, void *value, __u32 *tgid)
{
    if (key->tgid == *tgid)
        bpf_map_delete_elem(map, key);
    return 0;
}

static long ft_go_forget_thread(void *map, __u64 *pid_tgid, void *value, __u32 *tgid)
{
    if ((__u32)(*pid_tgid >> 32) == *tgid)
        bpf_map_delete_elem(map, pid_tgid);
    return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(ft_go_exit, struct task_struct *task)
{
    __u64 pid_tgid = bpf_get_current_pid_tgid();
    __u32 tgid = pid_tgid >> 32;
    if (!ft_whole_process_exits(pid_tgid))
        return 0;
    if (!bpf_map_lookup_elem(&go_offsets, &tgid))
        return 0;
    bpf_for_each_map_elem(&go_active, ft_go_forget_goroutine, &tgid, 0);
    bpf_for_each_map_elem(&go_server_inflight, ft_go_forget_goroutine, &tgid, 0);
    bpf_for_each_map_elem(&go_client_inflight, ft_go_forget_goroutine, &tgid, 0);
    bpf_for_each_map_elem(&go_stream_inflight, ft_go_forget_goroutine, &tgid, 0);
    bpf_for_each_map_elem(&go_newproc, ft_go_forget_thread, &tgid, 0);
    return 0;
}
