//! Structs of the Go program set (`src/c/go/wire.h`), mirrored against the
//! object's DWARF. The object itself is [`crate::GO`].

use crate::wire::EventHeader;

/// `enum ft_go_event_kind` (`ft_event_header.kind`).
pub mod kind {
    pub const HTTP_SERVER: u32 = 32;
    pub const HTTP_CLIENT: u32 = 33;
    pub const GRPC_SERVER: u32 = 34;
    pub const GRPC_CLIENT: u32 = 35;
}

/// `enum ft_go_parent_kind`.
pub mod parent_kind {
    pub const ROOT: u32 = 0;
    pub const REMOTE: u32 = 1;
    pub const LOCAL: u32 = 2;
}

/// `FT_GO_ROOT_*` bits of [`GoTrace::root_flags`].
pub const ROOT_REMOTE: u32 = 0x100;
pub const ROOT_SAMPLED: u32 = 0x1;

/// `FT_GO_EVENT_TLS` of [`GoRequestEvent::flags`]: the request went over TLS.
pub const EVENT_TLS: u16 = 0x1;

/// `FT_GO_NO_OFFSET`: a field this Go or module version does not have.
pub const NO_OFFSET: u32 = u32::MAX;

/// `enum ft_go_map_kind`.
pub mod map_kind {
    pub const UNKNOWN: u32 = 0;
    pub const BUCKETS: u32 = 1;
    pub const SWISS: u32 = 2;
}

pub const METHOD_CAP: usize = 16;
pub const PATH_CAP: usize = 128;
pub const HOST_CAP: usize = 64;
pub const ROUTE_CAP: usize = 64;
pub const PEER_CAP: usize = 64;

/// `struct ft_go_offsets`: value of the `go_offsets` map, keyed by tgid.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GoOffsets {
    pub g_goid: u32,
    pub req_method: u32,
    pub req_url: u32,
    pub req_header: u32,
    pub req_host: u32,
    pub req_pattern: u32,
    pub req_content_length: u32,
    pub url_path: u32,
    pub url_host: u32,
    pub url_raw_query: u32,
    pub response_status: u32,
    pub resp_status_code: u32,
    pub grpc_server_stream_stream: u32,
    pub grpc_stream_method: u32,
    pub grpc_status_s: u32,
    pub grpc_spb_code: u32,
    pub grpc_error_s: u32,
    pub map_kind: u32,
    pub hmap_b: u32,
    pub hmap_buckets: u32,
    pub swiss_dir_ptr: u32,
    pub swiss_dir_len: u32,
    pub table_groups: u32,
    pub groups_data: u32,
    pub groups_mask: u32,
    /// `runtime.g.parentGoid` (Go >= 1.21); unknown means goroutine
    /// creation is traced at `runtime.newproc1`'s entry and RETs instead.
    pub g_parent_goid: u32,
    pub grpc_status_error_itab: u64,
    /// `net/http.Request.RemoteAddr` (the server's peer), optional.
    pub req_remote_addr: u32,
    /// Incoming gRPC `traceparent`: `transport.Stream.id`, optional.
    pub grpc_stream_id: u32,
    /// `x/net/http2.MetaHeadersFrame.HeadersFrame`, optional.
    pub h2_meta_headers: u32,
    /// `x/net/http2.MetaHeadersFrame.Fields`, optional.
    pub h2_meta_fields: u32,
    /// `x/net/http2.HeadersFrame.FrameHeader`, optional.
    pub h2_frame_header: u32,
    /// `x/net/http2.FrameHeader.StreamID`, optional.
    pub h2_stream_id: u32,
    /// `x/net/http2/hpack.HeaderField.Value`, optional.
    pub hpack_value: u32,
    /// Size of `hpack.HeaderField` (the slice stride), optional.
    pub hpack_field_size: u32,
    /// `net/http.Request.TLS`, optional.
    pub req_tls: u32,
    /// `net/http.Response.TLS`, optional.
    pub resp_tls: u32,
    /// `net/url.URL.Scheme`, optional.
    pub url_scheme: u32,
    /// `crypto/tls.ConnectionState.Version`, optional.
    pub tls_version: u32,
    /// `crypto/tls.ConnectionState.ServerName`, optional.
    pub tls_server_name: u32,
    /// gRPC over TLS, server side: where `transport.http2Server` holds the
    /// connection's `credentials.AuthInfo` interface, optional.
    pub grpc_server_auth_info: u32,
    /// `credentials.TLSInfo.State`, optional.
    pub grpc_tls_info_state: u32,
    pub reserved: u32,
    /// Address of the itab that marks a `credentials.TLSInfo` in an
    /// `AuthInfo` interface; 0 = unknown (the TLS version is not read).
    pub grpc_tls_info_itab: u64,
    /// gRPC same-node joins: `transport.http2Client.localAddr`, optional.
    pub grpc_client_local_addr: u32,
    /// `transport.http2Server.remoteAddr`, optional.
    pub grpc_server_remote_addr: u32,
    /// `net.TCPAddr.IP`, optional.
    pub tcp_addr_ip: u32,
    /// `net.TCPAddr.Port`, optional.
    pub tcp_addr_port: u32,
    /// `transport.headerFrame.streamID`, optional.
    pub grpc_header_stream_id: u32,
    /// `transport.headerFrame.hf`, optional.
    pub grpc_header_fields: u32,
    /// Address of the itab of a `*net.TCPAddr` in a `net.Addr`; 0 = unknown
    /// (the address is then checked for shape only).
    pub tcp_addr_itab: u64,
    /// Address of the itab of a `*transport.http2Server` in a
    /// `transport.ServerTransport`; 0 = unknown.
    pub grpc_http2_server_itab: u64,
    /// net/http client connections: `net/http.persistConn.conn`, optional.
    pub persist_conn_conn: u32,
    /// `net/http.persistConn.tlsState`, optional.
    pub persist_conn_tls: u32,
    /// `crypto/tls.Conn.conn`, optional.
    pub tls_conn_conn: u32,
    /// `net.TCPConn`'s embedded `net.conn.fd`, optional.
    pub net_conn_fd: u32,
    /// `net.netFD.laddr`, optional.
    pub net_fd_laddr: u32,
    /// `net.netFD.raddr`, optional.
    pub net_fd_raddr: u32,
    /// Address of the itab of a `*net.TCPConn` in a `net.Conn`; 0 = unknown.
    pub tcp_conn_itab: u64,
    /// Address of the itab of a `*tls.Conn` in a `net.Conn`; 0 = unknown.
    pub tls_conn_itab: u64,
    /// `transport.http2Client.remoteAddr`, optional.
    pub grpc_client_remote_addr: u32,
    pub reserved2: u32,
}
crate::mirrors!(
    GoOffsets = ft_go_offsets {
        g_goid,
        req_method,
        req_url,
        req_header,
        req_host,
        req_pattern,
        req_content_length,
        url_path,
        url_host,
        url_raw_query,
        response_status,
        resp_status_code,
        grpc_server_stream_stream,
        grpc_stream_method,
        grpc_status_s,
        grpc_spb_code,
        grpc_error_s,
        map_kind,
        hmap_b,
        hmap_buckets,
        swiss_dir_ptr,
        swiss_dir_len,
        table_groups,
        groups_data,
        groups_mask,
        g_parent_goid,
        grpc_status_error_itab,
        req_remote_addr,
        grpc_stream_id,
        h2_meta_headers,
        h2_meta_fields,
        h2_frame_header,
        h2_stream_id,
        hpack_value,
        hpack_field_size,
        req_tls,
        resp_tls,
        url_scheme,
        tls_version,
        tls_server_name,
        grpc_server_auth_info,
        grpc_tls_info_state,
        reserved,
        grpc_tls_info_itab,
        grpc_client_local_addr,
        grpc_server_remote_addr,
        tcp_addr_ip,
        tcp_addr_port,
        grpc_header_stream_id,
        grpc_header_fields,
        tcp_addr_itab,
        grpc_http2_server_itab,
        persist_conn_conn,
        persist_conn_tls,
        tls_conn_conn,
        net_conn_fd,
        net_fd_laddr,
        net_fd_raddr,
        tcp_conn_itab,
        tls_conn_itab,
        grpc_client_remote_addr,
        reserved2,
    }
);

impl Default for GoOffsets {
    /// Every field unknown.
    fn default() -> Self {
        Self {
            g_goid: NO_OFFSET,
            req_method: NO_OFFSET,
            req_url: NO_OFFSET,
            req_header: NO_OFFSET,
            req_host: NO_OFFSET,
            req_pattern: NO_OFFSET,
            req_content_length: NO_OFFSET,
            url_path: NO_OFFSET,
            url_host: NO_OFFSET,
            url_raw_query: NO_OFFSET,
            response_status: NO_OFFSET,
            resp_status_code: NO_OFFSET,
            grpc_server_stream_stream: NO_OFFSET,
            grpc_stream_method: NO_OFFSET,
            grpc_status_s: NO_OFFSET,
            grpc_spb_code: NO_OFFSET,
            grpc_error_s: NO_OFFSET,
            map_kind: map_kind::UNKNOWN,
            hmap_b: NO_OFFSET,
            hmap_buckets: NO_OFFSET,
            swiss_dir_ptr: NO_OFFSET,
            swiss_dir_len: NO_OFFSET,
            table_groups: NO_OFFSET,
            groups_data: NO_OFFSET,
            groups_mask: NO_OFFSET,
            g_parent_goid: NO_OFFSET,
            grpc_status_error_itab: 0,
            req_remote_addr: NO_OFFSET,
            grpc_stream_id: NO_OFFSET,
            h2_meta_headers: NO_OFFSET,
            h2_meta_fields: NO_OFFSET,
            h2_frame_header: NO_OFFSET,
            h2_stream_id: NO_OFFSET,
            hpack_value: NO_OFFSET,
            hpack_field_size: NO_OFFSET,
            req_tls: NO_OFFSET,
            resp_tls: NO_OFFSET,
            url_scheme: NO_OFFSET,
            tls_version: NO_OFFSET,
            tls_server_name: NO_OFFSET,
            grpc_server_auth_info: NO_OFFSET,
            grpc_tls_info_state: NO_OFFSET,
            reserved: 0,
            grpc_tls_info_itab: 0,
            grpc_client_local_addr: NO_OFFSET,
            grpc_server_remote_addr: NO_OFFSET,
            tcp_addr_ip: NO_OFFSET,
            tcp_addr_port: NO_OFFSET,
            grpc_header_stream_id: NO_OFFSET,
            grpc_header_fields: NO_OFFSET,
            tcp_addr_itab: 0,
            grpc_http2_server_itab: 0,
            persist_conn_conn: NO_OFFSET,
            persist_conn_tls: NO_OFFSET,
            tls_conn_conn: NO_OFFSET,
            net_conn_fd: NO_OFFSET,
            net_fd_laddr: NO_OFFSET,
            net_fd_raddr: NO_OFFSET,
            tcp_conn_itab: 0,
            tls_conn_itab: 0,
            grpc_client_remote_addr: NO_OFFSET,
            reserved2: 0,
        }
    }
}

/// `struct ft_go_trace`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GoTrace {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent_span_id: [u8; 8],
    pub parent_kind: u32,
    pub root_flags: u32,
}
crate::mirrors!(
    GoTrace = ft_go_trace {
        trace_id,
        span_id,
        parent_span_id,
        parent_kind,
        root_flags
    }
);

/// `FT_GO_CONN_*` bits of [`GoConn::known`]: which ends were read.
pub const CONN_LOCAL: u32 = 0x1;
pub const CONN_REMOTE: u32 = 0x2;

/// `struct ft_go_conn`: a request's TCP connection as its process sees it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GoConn {
    /// IPv4-mapped for IPv4.
    pub local: [u8; 16],
    /// A client's: as dialled (a Service's ClusterIP, not the pod behind
    /// it); a server's: its caller.
    pub remote: [u8; 16],
    pub local_port: u16,
    pub remote_port: u16,
    /// [`CONN_LOCAL`] and [`CONN_REMOTE`] of the ends read.
    pub known: u32,
}
crate::mirrors!(
    GoConn = ft_go_conn {
        local,
        remote,
        local_port,
        remote_port,
        known
    }
);

/// `struct ft_go_request_event`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GoRequestEvent {
    pub header: EventHeader,
    pub start_ns: u64,
    pub goid: u64,
    pub trace: GoTrace,
    pub status: i64,
    pub content_length: i64,
    pub method_len: u16,
    pub path_len: u16,
    pub host_len: u16,
    pub route_len: u16,
    pub peer_len: u16,
    /// The connection's TLS version (`0x0304`: 1.3); 0 unknown.
    pub tls_version: u16,
    /// [`EVENT_TLS`].
    pub flags: u16,
    pub pad: u16,
    pub method: [u8; METHOD_CAP],
    pub path: [u8; PATH_CAP],
    pub host: [u8; HOST_CAP],
    pub route: [u8; ROUTE_CAP],
    pub peer: [u8; PEER_CAP],
    /// HTTP/1 and gRPC clients, gRPC servers: the connection.
    pub conn: GoConn,
}
crate::mirrors!(
    GoRequestEvent = ft_go_request_event {
        header,
        start_ns,
        goid,
        trace,
        status,
        content_length,
        method_len,
        path_len,
        host_len,
        route_len,
        peer_len,
        tls_version,
        flags,
        pad,
        method,
        path,
        host,
        route,
        peer,
        conn,
    }
);

impl Default for GoRequestEvent {
    fn default() -> Self {
        Self {
            header: EventHeader::default(),
            start_ns: 0,
            goid: 0,
            trace: GoTrace::default(),
            status: -1,
            content_length: -1,
            method_len: 0,
            path_len: 0,
            host_len: 0,
            route_len: 0,
            peer_len: 0,
            tls_version: 0,
            flags: 0,
            pad: 0,
            method: [0; METHOD_CAP],
            path: [0; PATH_CAP],
            host: [0; HOST_CAP],
            route: [0; ROUTE_CAP],
            peer: [0; PEER_CAP],
            conn: GoConn::default(),
        }
    }
}

// SAFETY: repr(C), integers and integer arrays only, sizes asserted against
// the -Wpadded C definitions.
unsafe impl crate::Wire for GoOffsets {}
// SAFETY: as above.
unsafe impl crate::Wire for GoTrace {}
// SAFETY: as above.
unsafe impl crate::Wire for GoConn {}
// SAFETY: as above.
unsafe impl crate::Wire for GoRequestEvent {}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: `Wire` types are plain old data (see the trait's contract).
    unsafe impl aya::Pod for super::GoOffsets {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::GoRequestEvent {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Wire;

    #[test]
    fn embedded_go_object_is_an_aligned_bpf_elf() {
        assert_eq!(
            &crate::GO[..4],
            b"\x7fELF",
            "the Go program set must be an ELF object"
        );
        assert_eq!(
            crate::GO.as_ptr() as usize % 32,
            0,
            "aya needs the object aligned"
        );
        assert_eq!(
            u16::from_le_bytes([crate::GO[18], crate::GO[19]]),
            247,
            "the object must target BPF"
        );
    }

    #[test]
    fn request_events_decode_field_by_field_and_short_records_are_refused() {
        let mut bytes = [0u8; size_of::<GoRequestEvent>()];
        bytes[0..4].copy_from_slice(&kind::GRPC_SERVER.to_le_bytes());
        // status at 24 (header) + 8 + 8 + 40 (trace) = 80
        bytes[80..88].copy_from_slice(&5i64.to_le_bytes());
        let event = GoRequestEvent::read(&bytes).expect("a full record decodes");
        assert_eq!(event.header.kind, kind::GRPC_SERVER);
        assert_eq!(event.status, 5);
        assert!(
            GoRequestEvent::read(&bytes[..100]).is_none(),
            "a short record is refused"
        );
    }
}
