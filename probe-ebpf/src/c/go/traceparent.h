/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * The incoming W3C traceparent of a net/http server request, read from
 * Request.Header (a map[string][]string whose keys net/textproto has
 * canonicalised to "Traceparent").
 *
 * We cannot hash like the Go runtime does, so we scan slots and compare keys.
 * Bounded on purpose: the classic bucket map up to 8 buckets (no overflow
 * buckets), the swiss map up to 4 tables of 4 groups (8 slots each). Request
 * headers beyond those bounds are not searched; the span then starts a new
 * trace (documented in docs/probe-go.md).
 */
#ifndef FT_GO_TRACEPARENT_H
#define FT_GO_TRACEPARENT_H

#include "go/runtime.h"
#include "propagation/headers.h"

#define FT_GO_BUCKET_SLOTS 8
/* map[string][]string: tophash[8] + keys[8]string + elems[8][]string + overflow */
#define FT_GO_BUCKET_SIZE (8 + 8 * 16 + 8 * 24 + 8)
#define FT_GO_MAX_BUCKETS 8
/* swiss group: ctrl word + 8 slots of {string, []string} */
#define FT_GO_GROUP_SIZE (8 + 8 * 40)
#define FT_GO_MAX_TABLES 4
#define FT_GO_MAX_GROUPS 4

/* An incoming gRPC traceparent, parked by the header-frame probe (on the
 * connection's reader goroutine) until the stream's handler goroutine starts
 * the server span: keyed by the transport and the HTTP/2 stream id. LRU:
 * streams that never reach a handler (refused, reset) age out. */
struct ft_go_stream_key {
    __u32 tgid;
    __u32 stream_id;
    __u64 transport; /* *transport.http2Server */
};

struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, 4096);
    __type(key, struct ft_go_stream_key);
    __type(value, struct ft_traceparent);
} go_grpc_traceparent SEC(".maps");

/* A bucket or group of the header map, read in one call: every
 * bpf_probe_read_user is a fault-guarded copy of its own, and reading each
 * slot's key separately cost one per header the request carries. A slot's
 * offset is masked with FT_GO_MAP_WINDOW - 1 (a bound the verifier keeps)
 * and the buffer has room for the largest header read past it. */
#define FT_GO_MAP_WINDOW 512

struct ft_go_map_window {
    __u8 bytes[FT_GO_MAP_WINDOW + 32];
};

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct ft_go_map_window);
} go_map_window SEC(".maps");

/* Checks one map slot whose key and []string headers were read into `w` at
 * key_at and elem_at: only keys of Traceparent's length are read from the
 * process. */
static __always_inline int ft_go_match_slot(const struct ft_go_map_window *w, __u32 key_at, __u32 elem_at,
                                            struct ft_traceparent *out)
{
    struct ft_go_string key;
    __builtin_memcpy(&key, &w->bytes[key_at & (FT_GO_MAP_WINDOW - 1)], sizeof(key));
    if (key.len != 11 || !key.ptr)
        return -1;
    char name[11];
    if (bpf_probe_read_user(name, sizeof(name), (void *)key.ptr) != 0)
        return -1;
    if (__builtin_memcmp(name, "Traceparent", 11) != 0)
        return -1;
    struct ft_go_slice values;
    __builtin_memcpy(&values, &w->bytes[elem_at & (FT_GO_MAP_WINDOW - 1)], sizeof(values));
    if (values.len < 1 || !values.ptr)
        return -1;
    struct ft_go_string value = {};
    if (bpf_probe_read_user(&value, sizeof(value), (void *)values.ptr) != 0 || value.len != FT_TRACEPARENT_LEN)
        return -1;
    __u8 text[FT_TRACEPARENT_LEN];
    if (bpf_probe_read_user(text, sizeof(text), (void *)value.ptr) != 0)
        return -1;
    return ft_parse_traceparent(text, out);
}

static __always_inline int ft_go_scan_bucket(struct ft_go_map_window *w, __u64 bucket, struct ft_traceparent *out)
{
    if (bpf_probe_read_user(w->bytes, FT_GO_BUCKET_SIZE, (void *)bucket) != 0)
        return -1;
    for (int i = 0; i < FT_GO_BUCKET_SLOTS; i++) {
        if (w->bytes[i] < 5) /* tophash emptyRest, emptyOne, evacuated*: no key here */
            continue;
        if (ft_go_match_slot(w, 8 + 16 * i, 8 + 8 * 16 + 24 * i, out) == 0)
            return 0;
    }
    return -1;
}

static __always_inline int ft_go_scan_group(struct ft_go_map_window *w, __u64 group, struct ft_traceparent *out)
{
    if (bpf_probe_read_user(w->bytes, FT_GO_GROUP_SIZE, (void *)group) != 0)
        return -1;
    __u64 ctrl;
    __builtin_memcpy(&ctrl, w->bytes, sizeof(ctrl));
    for (int i = 0; i < 8; i++) {
        if ((ctrl >> (8 * i)) & 0x80) /* empty or deleted */
            continue;
        if (ft_go_match_slot(w, 8 + 40 * i, 8 + 40 * i + 16, out) == 0)
            return 0;
    }
    return -1;
}

/* 0 if the header map at `map` holds a valid traceparent, decoded into out. */
static __always_inline int ft_go_find_traceparent(const struct ft_go_offsets *off, __u64 map,
                                                  struct ft_go_map_window *w, struct ft_traceparent *out)
{
    if (!map)
        return -1;
    if (off->map_kind == FT_GO_MAP_BUCKETS) {
        __u8 b = 0;
        bpf_probe_read_user(&b, 1, (void *)(map + off->hmap_b));
        __u64 buckets = ft_go_read_u64(map + off->hmap_buckets);
        if (!buckets || b > 3)
            return -1;
        __u32 count = 1u << b;
        for (__u32 i = 0; i < FT_GO_MAX_BUCKETS; i++) {
            if (i >= count)
                break;
            if (ft_go_scan_bucket(w, buckets + (__u64)i * FT_GO_BUCKET_SIZE, out) == 0)
                return 0;
        }
        return -1;
    }
    if (off->map_kind == FT_GO_MAP_SWISS) {
        __s64 dir_len = (__s64)ft_go_read_u64(map + off->swiss_dir_len);
        __u64 dir = ft_go_read_u64(map + off->swiss_dir_ptr);
        if (!dir)
            return -1;
        if (dir_len <= 0) /* small map: dirPtr is the single group */
            return ft_go_scan_group(w, dir, out);
        for (__s64 t = 0; t < FT_GO_MAX_TABLES; t++) {
            if (t >= dir_len)
                break;
            __u64 table = ft_go_read_u64(dir + 8 * t);
            if (!table)
                continue;
            __u64 groups = ft_go_read_u64(table + off->table_groups + off->groups_data);
            __u64 mask = ft_go_read_u64(table + off->table_groups + off->groups_mask);
            for (__u64 g = 0; g < FT_GO_MAX_GROUPS; g++) {
                if (g > mask)
                    break;
                if (ft_go_scan_group(w, groups + g * FT_GO_GROUP_SIZE, out) == 0)
                    return 0;
            }
        }
    }
    return -1;
}

/* Where the searches below leave the context they found (per CPU). */
struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct ft_traceparent);
} go_found_context SEC(".maps");

/* ft_go_find_traceparent as a global function: verified once, on its own,
 * instead of inside every path of the program that starts a server span
 * (which it would otherwise take past the verifier's budget). 0 if found,
 * decoded into go_found_context. */
__noinline int ft_go_search_traceparent(const struct ft_go_offsets *off, __u64 map)
{
    __u32 zero = 0;
    struct ft_traceparent *out = bpf_map_lookup_elem(&go_found_context, &zero);
    struct ft_go_map_window *w = bpf_map_lookup_elem(&go_map_window, &zero);
    if (!off || !out || !w)
        return -1;
    return ft_go_find_traceparent(off, map, w, out);
}

/* The context a search left in go_found_context, into `out`; 0 on success. */
static __always_inline int ft_go_take_found(struct ft_traceparent *out)
{
    __u32 zero = 0;
    struct ft_traceparent *found = bpf_map_lookup_elem(&go_found_context, &zero);
    if (!found)
        return -1;
    *out = *found;
    return 0;
}

#endif
