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

/* Checks one map slot: key string header at key_addr, []string at elem_addr. */
static __always_inline int ft_go_match_slot(__u64 key_addr, __u64 elem_addr, struct ft_traceparent *out)
{
    struct ft_go_string key = {};
    if (bpf_probe_read_user(&key, sizeof(key), (void *)key_addr) != 0 || key.len != 11)
        return -1;
    char name[11];
    if (bpf_probe_read_user(name, sizeof(name), (void *)key.ptr) != 0)
        return -1;
    if (__builtin_memcmp(name, "Traceparent", 11) != 0)
        return -1;
    struct ft_go_slice values = {};
    if (bpf_probe_read_user(&values, sizeof(values), (void *)elem_addr) != 0 || values.len < 1)
        return -1;
    struct ft_go_string value = {};
    if (bpf_probe_read_user(&value, sizeof(value), (void *)values.ptr) != 0 || value.len != FT_TRACEPARENT_LEN)
        return -1;
    __u8 text[FT_TRACEPARENT_LEN];
    if (bpf_probe_read_user(text, sizeof(text), (void *)value.ptr) != 0)
        return -1;
    return ft_parse_traceparent(text, out);
}

static __always_inline int ft_go_scan_bucket(__u64 bucket, struct ft_traceparent *out)
{
    __u8 tophash[8];
    if (bpf_probe_read_user(tophash, sizeof(tophash), (void *)bucket) != 0)
        return -1;
    for (int i = 0; i < FT_GO_BUCKET_SLOTS; i++) {
        if (tophash[i] < 5) /* emptyRest, emptyOne, evacuated*: no key here */
            continue;
        if (ft_go_match_slot(bucket + 8 + 16 * i, bucket + 8 + 8 * 16 + 24 * i, out) == 0)
            return 0;
    }
    return -1;
}

static __always_inline int ft_go_scan_group(__u64 group, struct ft_traceparent *out)
{
    __u64 ctrl = ft_go_read_u64(group);
    for (int i = 0; i < 8; i++) {
        if ((ctrl >> (8 * i)) & 0x80) /* empty or deleted */
            continue;
        __u64 slot = group + 8 + 40 * i;
        if (ft_go_match_slot(slot, slot + 16, out) == 0)
            return 0;
    }
    return -1;
}

/* 0 if the header map at `map` holds a valid traceparent, decoded into out. */
static __always_inline int ft_go_find_traceparent(const struct ft_go_offsets *off, __u64 map, struct ft_traceparent *out)
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
            if (ft_go_scan_bucket(buckets + (__u64)i * FT_GO_BUCKET_SIZE, out) == 0)
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
            return ft_go_scan_group(dir, out);
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
                if (ft_go_scan_group(groups + g * FT_GO_GROUP_SIZE, out) == 0)
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
    if (!off || !out)
        return -1;
    return ft_go_find_traceparent(off, map, out);
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
