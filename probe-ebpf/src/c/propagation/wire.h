/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * Wire structs of trace-context propagation (the propagation/ headers), shared by
 * every language set that includes it. Source of truth; mirrored in
 * probe-ebpf/src/propagation.rs.
 */
#ifndef FT_PROP_WIRE_H
#define FT_PROP_WIRE_H

#include "../wire.h"

/* ft_event_header.kind of propagation events (64..79). */
enum ft_prop_event_kind {
    FT_EV_PROP_CLIENT = 80, /* an outgoing request head passed the sk_msg program */
    FT_EV_PROP_SERVER = 81, /* a server request started with a kernel-assigned context */
};

/* Trace-context formats (the `propagators` knob, a bit set). */
#define FT_PROP_TRACECONTEXT 1u
#define FT_PROP_BAGGAGE 2u
#define FT_PROP_B3 4u

/* What one outgoing HTTP/1 request head came to (ft_prop_client_event.outcome,
 * and the index into `prop_outcomes`). */
enum ft_prop_outcome {
    FT_PROP_INJECTED = 0,     /* headers added after the request line */
    FT_PROP_PUBLISHED = 1,    /* not injected (injection off): published for a same-node join */
    FT_PROP_APP_CONTEXT = 2,  /* the request already carried trace context: left as it is */
    FT_PROP_NO_CONTEXT = 3,   /* no span known for the sending thread (Go: not a net/http client) */
    FT_PROP_HEAD_TOO_LARGE = 4, /* head longer than the window or split across sends: connection left alone */
    FT_PROP_NOT_HTTP1 = 5,    /* the connection does not speak HTTP/1 (TLS, HTTP/2, ...): left alone */
    FT_PROP_UNFRAMED = 6,     /* chunked, Upgrade or CONNECT: later requests of the connection left alone */
    FT_PROP_PUSH_FAILED = 7,  /* the kernel refused to grow the message */
    FT_PROP_NOT_TRACED = 8,   /* sent by a process of the container that is not traced: left alone */
    FT_PROP_OUTCOMES = 9,
};

/* Where a server span's parent came from (ft_prop_server_event.origin). */
enum ft_prop_origin {
    FT_PROP_ORIGIN_NONE = 0,        /* a new trace */
    FT_PROP_ORIGIN_TRACEPARENT = 1, /* W3C traceparent header */
    FT_PROP_ORIGIN_B3 = 2,          /* B3 single or multi headers */
    FT_PROP_ORIGIN_JOINED = 3,      /* a same-node client published its span for this connection */
};

/* Most bytes of tracestate / baggage carried from a request to the calls
 * it makes; longer values are not propagated (counted). */
#define FT_PROP_CARRY_CAP 256

/*
 * One outgoing request head seen by the sk_msg program: the identity of the
 * client span whose context went out (or was published), and where; or a
 * connection the program lets go of (no span, `outcome` says why), which
 * user space takes out of the sockhash. 128 bytes.
 */
struct ft_prop_client_event {
    struct ft_event_header header;
    __u64 cookie;   /* socket cookie: its key in the sockhash */
    __u64 enter_ns; /* entry of the send syscall (socket-level set; 0 if unknown) */
    __s32 fd;       /* -1 if unknown */
    __u32 outcome;  /* enum ft_prop_outcome */
    struct ft_sock_addr local;
    struct ft_sock_addr peer;
    __u8 trace_id[16];
    __u8 span_id[8];   /* the client span */
    __u8 parent_id[8]; /* its parent; zero for a root */
    __u32 flags;       /* bit 0: sampled */
    __u32 pad;
};

/*
 * A server request whose context the kernel assigned when it was read
 * (socket-level set): user space gives the server span these ids. 80 bytes.
 */
struct ft_prop_server_event {
    struct ft_event_header header;
    __u64 enter_ns; /* entry of the read syscall: matches its data event */
    __s32 fd;
    __u32 origin;   /* enum ft_prop_origin */
    __u8 trace_id[16];
    __u8 span_id[8];   /* the server span */
    __u8 parent_id[8]; /* its remote parent; zero for a new trace */
    __u32 flags;       /* bit 0: sampled */
    __u32 pad;
};

#endif
