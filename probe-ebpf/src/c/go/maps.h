/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * Maps of the Go program set. Keys are (tgid, goroutine id): goroutines
 * migrate between threads, so thread ids mean nothing to Go code, and goids
 * (unlike g pointers, which the runtime recycles) are never reused.
 */
#ifndef FT_GO_MAPS_H
#define FT_GO_MAPS_H

#include "common/types.h"
#include "common/sizes.h"
#include "go/wire.h"

/* Goroutines tracked at once (active spans, in-flight requests). */
#define FT_GO_MAX_GOROUTINES 65536

struct ft_go_key {
    __u32 tgid;
    __u32 pad;
    __u64 goid;
};

/* The span a goroutine inherited from the goroutine that created it (go_active).
 * A goroutine serving a request works for its own server span instead, read
 * from go_server_inflight. Consulted when a client call starts. */
struct ft_go_active {
    __u8 trace_id[16];
    __u8 span_id[8];
    __u32 root_flags;
    __u32 pad;
};

/* A server request between function entry and RET. */
struct ft_go_server_inflight {
    __u64 start_ns;
    __u64 request;  /* *http.Request or *transport.(Server)Stream */
    __u64 response; /* *http.response (HTTP); *tls.ConnectionState of a gRPC call over TLS, else 0 */
    __s64 status;   /* gRPC: code from WriteStatus; -1 until then */
    struct ft_go_trace trace;
    struct ft_go_conn conn; /* gRPC: the caller's end */
};

/* A client call between function entry and RET. */
struct ft_go_client_inflight {
    __u64 start_ns;
    __u64 request;    /* *http.Request (HTTP) or method string data (gRPC) */
    __u64 method_len; /* gRPC: method string length */
    struct ft_go_trace trace;
    struct ft_go_conn conn; /* set when the transport's connection is known */
};

/* A goroutine being created by a goroutine that has an active span: parked
 * per thread between runtime.newproc1's entry and RET (it runs on the system
 * stack, so the thread does not change). */
struct ft_go_newproc {
    struct ft_go_active active;
    __u64 callergp;
};

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, FT_MAX_CLAIMED_TGIDS);
    __type(key, __u32);
    __type(value, struct ft_go_offsets);
} go_offsets SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, FT_GO_MAX_GOROUTINES);
    __type(key, struct ft_go_key);
    __type(value, struct ft_go_active);
} go_active SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, FT_GO_MAX_GOROUTINES);
    __type(key, struct ft_go_key);
    __type(value, struct ft_go_server_inflight);
} go_server_inflight SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, FT_GO_MAX_GOROUTINES);
    __type(key, struct ft_go_key);
    __type(value, struct ft_go_client_inflight);
} go_client_inflight SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, 4096);
    __type(key, __u64); /* pid_tgid */
    __type(value, struct ft_go_newproc);
} go_newproc SEC(".maps");

#endif
