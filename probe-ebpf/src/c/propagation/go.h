/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * The Go set's half of propagation: handing a net/http client span to the
 * thread that writes its request.
 *
 * (*Transport).roundTrip assigns the client span on the caller's goroutine
 * (go.bpf.c), but net/http writes the request on the connection's
 * writeLoop goroutine, on whatever thread that runs. So:
 *
 *   (*persistConn).roundTrip entry (caller's goroutine): the request the
 *     writeLoop will write (transportRequest's embedded *Request, the first
 *     field: set by net/http for every Go release we support) is noted with
 *     the goroutine's client span;
 *   (*Request).write entry (writeLoop goroutine): that span becomes the
 *     writing thread's entry in prop_threads, which the sk_msg program
 *     (inject.h) takes for the head it sends next.
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

/* net/http.(*persistConn).roundTrip(pc, req *transportRequest): req in RBX. */
SEC("uprobe")
int ft_go_prop_round_trip(struct pt_regs *ctx)
{
    if (!prop_inject && !prop_join)
        return 0;
    __u64 pid_tgid = bpf_get_current_pid_tgid();
    __u32 tgid = pid_tgid >> 32;
    const struct ft_go_offsets *off = bpf_map_lookup_elem(&go_offsets, &tgid);
    if (!off || !ctx->bx)
        return 0;
    struct ft_go_key key = {.tgid = tgid, .pad = 0, .goid = ft_go_current_goid(ctx, off)};
    struct ft_go_client_inflight *client = bpf_map_lookup_elem(&go_client_inflight, &key);
    if (!client)
        return 0;
    struct ft_go_request_key rkey = {.tgid = tgid, .pad = 0, .request = ft_go_read_u64(ctx->bx)};
    if (!rkey.request)
        return 0;
    struct ft_prop_thread entry = {};
    __builtin_memcpy(entry.trace_id, client->trace.trace_id, 16);
    __builtin_memcpy(entry.span_id, client->trace.span_id, 8);
    __builtin_memcpy(entry.parent_id, client->trace.parent_span_id, 8);
    entry.kind = FT_PROP_THREAD_CLIENT;
    entry.flags = ft_go_prop_sampled(&client->trace);
    entry.fd = -1;
    bpf_map_update_elem(&go_prop_requests, &rkey, &entry, BPF_ANY);
    return 0;
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
    bpf_map_update_elem(&prop_threads, &pid_tgid, &thread, BPF_ANY);
    bpf_map_delete_elem(&go_prop_requests, &rkey);
    return 0;
}

#endif
