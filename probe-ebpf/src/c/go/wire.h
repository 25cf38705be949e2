/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * Wire structs of the Go program set (go.bpf.c). Source of truth; mirrored
 * in probe-ebpf/src/go.rs with size asserts.
 */
#ifndef FT_GO_WIRE_H
#define FT_GO_WIRE_H

#include "wire.h"

/* ft_event_header.kind of Go events (32..63 are the Go range in wire.h). */
enum ft_go_event_kind {
    FT_EV_GO_HTTP_SERVER = 32,
    FT_EV_GO_HTTP_CLIENT = 33,
    FT_EV_GO_GRPC_SERVER = 34,
    FT_EV_GO_GRPC_CLIENT = 35,
};

/* Where a span's parent lives (ft_go_trace.parent_kind). */
enum ft_go_parent_kind {
    FT_GO_PARENT_ROOT = 0,   /* starts a trace */
    FT_GO_PARENT_REMOTE = 1, /* from an incoming traceparent */
    FT_GO_PARENT_LOCAL = 2,  /* the server span active on the goroutine (or its creator) */
};

/* ft_go_trace.root_flags: what the local root of the chain knew. */
#define FT_GO_ROOT_REMOTE 0x100u /* the local root server span had a remote parent */
#define FT_GO_ROOT_SAMPLED 0x1u  /* ...whose traceparent said "sampled" */

/* A field this Go or module version does not have. */
#define FT_GO_NO_OFFSET 0xffffffffu

/* How Request.Header (map[string][]string) is laid out in memory. */
enum ft_go_map_kind {
    FT_GO_MAP_UNKNOWN = 0, /* don't read headers: no incoming traceparent */
    FT_GO_MAP_BUCKETS = 1, /* runtime.hmap (Go <= 1.23, or GOEXPERIMENT=noswissmap) */
    FT_GO_MAP_SWISS = 2,   /* internal/runtime/maps.Map (Go >= 1.24) */
};

/*
 * Struct field offsets of one Go binary (DWARF or the offsets table), written
 * by user space into `go_offsets` under each traced process's tgid before
 * its probes are attached. Unknown optional fields are FT_GO_NO_OFFSET.
 * 224 bytes.
 */
struct ft_go_offsets {
    __u32 g_goid;                    /* runtime.g.goid */
    __u32 req_method;                /* net/http.Request.Method */
    __u32 req_url;                   /* net/http.Request.URL */
    __u32 req_header;                /* net/http.Request.Header */
    __u32 req_host;                  /* net/http.Request.Host */
    __u32 req_pattern;               /* net/http.Request.Pattern (Go >= 1.23), optional */
    __u32 req_content_length;        /* net/http.Request.ContentLength */
    __u32 url_path;                  /* net/url.URL.Path */
    __u32 url_host;                  /* net/url.URL.Host */
    __u32 url_raw_query;             /* net/url.URL.RawQuery */
    __u32 response_status;           /* net/http.response.status (server side) */
    __u32 resp_status_code;          /* net/http.Response.StatusCode (client side) */
    __u32 grpc_server_stream_stream; /* transport.ServerStream's embedded *Stream, optional */
    __u32 grpc_stream_method;        /* transport.Stream.method */
    __u32 grpc_status_s;             /* grpc/internal/status.Status.s */
    __u32 grpc_spb_code;             /* genproto rpc/status.Status.Code */
    __u32 grpc_error_s;              /* grpc/internal/status.Error.s */
    __u32 map_kind;                  /* enum ft_go_map_kind */
    __u32 hmap_b;                    /* runtime.hmap.B */
    __u32 hmap_buckets;              /* runtime.hmap.buckets */
    __u32 swiss_dir_ptr;             /* maps.Map.dirPtr */
    __u32 swiss_dir_len;             /* maps.Map.dirLen */
    __u32 table_groups;              /* maps.table.groups */
    __u32 groups_data;               /* maps.groupsReference.data */
    __u32 groups_mask;               /* maps.groupsReference.lengthMask */
    __u32 g_parent_goid;             /* runtime.g.parentGoid (Go >= 1.21), optional */
    __u64 grpc_status_error_itab;    /* address of go:itab.*status.Error,error; 0 = unknown */
    __u32 req_remote_addr;           /* net/http.Request.RemoteAddr, optional */
    /* Incoming gRPC traceparent (all optional; any unknown: not read). */
    __u32 grpc_stream_id;   /* transport.Stream.id */
    __u32 h2_meta_headers;  /* x/net/http2.MetaHeadersFrame.HeadersFrame (*HeadersFrame) */
    __u32 h2_meta_fields;   /* x/net/http2.MetaHeadersFrame.Fields */
    __u32 h2_frame_header;  /* x/net/http2.HeadersFrame.FrameHeader */
    __u32 h2_stream_id;     /* x/net/http2.FrameHeader.StreamID */
    __u32 hpack_value;      /* x/net/http2/hpack.HeaderField.Value */
    __u32 hpack_field_size; /* sizeof(hpack.HeaderField), from its last field */
    /* TLS (all optional): Request.TLS and Response.TLS are a
     * *tls.ConnectionState, nil without TLS. */
    __u32 req_tls;         /* net/http.Request.TLS */
    __u32 resp_tls;        /* net/http.Response.TLS */
    __u32 url_scheme;      /* net/url.URL.Scheme */
    __u32 tls_version;     /* crypto/tls.ConnectionState.Version */
    __u32 tls_server_name; /* crypto/tls.ConnectionState.ServerName */
    /* gRPC over TLS, server side (all optional): the transport's AuthInfo
     * interface holds a credentials.TLSInfo (by value) under TLS credentials,
     * whose State is the connection's tls.ConnectionState. */
    __u32 grpc_server_auth_info; /* transport.http2Server's AuthInfo {itab, data} */
    __u32 grpc_tls_info_state;   /* credentials.TLSInfo.State */
    __u32 reserved;
    __u64 grpc_tls_info_itab; /* address of go:itab.credentials.TLSInfo,credentials.AuthInfo; 0 = unknown */
    /* gRPC same-node joins (propagation/go.h; all optional; any offset
     * unknown: that end does not join). The transports' addresses are a
     * net.Addr interface {itab, data} holding a *net.TCPAddr for TCP. */
    __u32 grpc_client_local_addr;  /* transport.http2Client.localAddr */
    __u32 grpc_server_remote_addr; /* transport.http2Server.remoteAddr */
    __u32 tcp_addr_ip;             /* net.TCPAddr.IP ([]byte, 4 or 16 bytes) */
    __u32 tcp_addr_port;           /* net.TCPAddr.Port (int) */
    __u32 grpc_header_stream_id;   /* transport.headerFrame.streamID */
    __u32 grpc_header_fields;      /* transport.headerFrame.hf ([]hpack.HeaderField) */
    __u64 tcp_addr_itab;          /* go:itab.*net.TCPAddr,net.Addr; 0 = unknown */
    __u64 grpc_http2_server_itab; /* go:itab.*transport.http2Server,transport.ServerTransport; 0 = unknown */
    /* The connection of a net/http client request (all optional; any
     * unknown: client spans carry no connection). persistConn.conn is a
     * net.Conn {itab, data}: a *net.TCPConn, or a *tls.Conn over one. */
    __u32 persist_conn_conn; /* net/http.persistConn.conn */
    __u32 persist_conn_tls;  /* net/http.persistConn.tlsState (nil without TLS) */
    __u32 tls_conn_conn;     /* crypto/tls.Conn.conn */
    __u32 net_conn_fd;       /* net.TCPConn's embedded net.conn.fd (*netFD) */
    __u32 net_fd_laddr;      /* net.netFD.laddr */
    __u32 net_fd_raddr;      /* net.netFD.raddr */
    __u64 tcp_conn_itab;     /* go:itab.*net.TCPConn,net.Conn; 0 = unknown */
    __u64 tls_conn_itab;     /* go:itab.*crypto/tls.Conn,net.Conn; 0 = unknown */
    /* The remote end of a gRPC client transport (optional). */
    __u32 grpc_client_remote_addr; /* transport.http2Client.remoteAddr */
    __u32 reserved2;
};

/* ft_go_conn.known */
#define FT_GO_CONN_LOCAL 0x1u
#define FT_GO_CONN_REMOTE 0x2u

/* A request's TCP connection as this process sees it. A client's remote end
 * is the address it dialled (a Service's ClusterIP, not the pod's); a
 * server's is its caller. 40 bytes. */
struct ft_go_conn {
    __u8 local[16]; /* IPv4-mapped for IPv4 */
    __u8 remote[16];
    __u16 local_port;
    __u16 remote_port;
    __u32 known; /* FT_GO_CONN_* of the ends read */
};

/* Trace identity of one span, assigned in the kernel at request start so
 * that child spans (which end first) can name their parent. 40 bytes. */
struct ft_go_trace {
    __u8 trace_id[16];
    __u8 span_id[8];
    __u8 parent_span_id[8]; /* zero for a root */
    __u32 parent_kind;      /* enum ft_go_parent_kind */
    __u32 root_flags;       /* FT_GO_ROOT_* of the chain's local root */
};

/* ft_go_request_event.flags */
#define FT_GO_EVENT_TLS 0x1u /* the request went over TLS (url.scheme https) */

#define FT_GO_METHOD_CAP 16
#define FT_GO_PATH_CAP 128
#define FT_GO_HOST_CAP 64
#define FT_GO_ROUTE_CAP 64
#define FT_GO_PEER_CAP 64

/*
 * One finished request, server or client, HTTP or gRPC. For gRPC, `path`
 * holds the full method ("/pkg.Service/Method") and `status` the gRPC code.
 * Strings are not NUL-terminated: the *_len fields say how many bytes are
 * valid (truncated to CAP - 1). 488 bytes.
 */
struct ft_go_request_event {
    struct ft_event_header header; /* ts_ns: request end */
    __u64 start_ns;
    __u64 goid;
    struct ft_go_trace trace;
    __s64 status;         /* HTTP status or gRPC code; -1 = none seen */
    __s64 content_length; /* request Content-Length; -1 unknown */
    __u16 method_len;
    __u16 path_len;
    __u16 host_len;
    __u16 route_len;
    __u16 peer_len;    /* server: Request.RemoteAddr ("ip:port") */
    __u16 tls_version; /* the connection's TLS version (0x0304: 1.3); 0 unknown */
    __u16 flags;       /* FT_GO_EVENT_* */
    __u16 pad;
    char method[FT_GO_METHOD_CAP];
    char path[FT_GO_PATH_CAP];
    char host[FT_GO_HOST_CAP];
    char route[FT_GO_ROUTE_CAP];
    char peer[FT_GO_PEER_CAP];
    struct ft_go_conn conn; /* HTTP/1 and gRPC clients, gRPC servers: the connection */
};

#endif
