//! Which struct fields the Go probes read, where they come from (DWARF or
//! the generated offsets table), and how they fill [`GoOffsets`], the
//! per-process value the eBPF programs read.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use ferrotel_probe_ebpf::go::{GoOffsets, NO_OFFSET, map_kind};
use serde::{Deserialize, Serialize};

use super::buildinfo::BuildInfo;
use super::dwarf::FieldOffsets;

/// A probed feature: a group of functions attached together.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Feature {
    HttpServer,
    HttpClient,
    GrpcServer,
    GrpcClient,
}

impl Feature {
    pub const ALL: [Feature; 4] = [
        Feature::HttpServer,
        Feature::HttpClient,
        Feature::GrpcServer,
        Feature::GrpcClient,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Feature::HttpServer => "http_server",
            Feature::HttpClient => "http_client",
            Feature::GrpcServer => "grpc_server",
            Feature::GrpcClient => "grpc_client",
        }
    }

    /// Fields without which the feature's spans would be wrong.
    pub fn required_fields(self) -> &'static [&'static str] {
        match self {
            Feature::HttpServer => &[
                "net/http.Request.Method",
                "net/http.Request.URL",
                "net/http.Request.Host",
                "net/http.Request.ContentLength",
                "net/url.URL.Path",
                "net/http.response.status",
            ],
            Feature::HttpClient => &[
                "net/http.Request.Method",
                "net/http.Request.URL",
                "net/http.Request.ContentLength",
                "net/url.URL.Path",
                "net/url.URL.Host",
                "net/http.Response.StatusCode",
            ],
            Feature::GrpcServer => &[
                "google.golang.org/grpc/internal/transport.Stream.method",
                "google.golang.org/grpc/internal/status.Status.s",
                "google.golang.org/genproto/googleapis/rpc/status.Status.Code",
            ],
            Feature::GrpcClient => &[
                "google.golang.org/grpc/internal/status.Error.s",
                "google.golang.org/grpc/internal/status.Status.s",
                "google.golang.org/genproto/googleapis/rpc/status.Status.Code",
            ],
        }
    }
}

/// The goroutine id: without it nothing can be correlated.
pub const GOID_FIELD: &str = "runtime.g.goid";

/// Every `(struct, field)` the probes may read, required or optional.
pub const ALL_FIELDS: &[(&str, &str)] = &[
    ("runtime.g", "goid"),
    ("runtime.g", "parentGoid"),
    ("net/http.Request", "Method"),
    ("net/http.Request", "URL"),
    ("net/http.Request", "Header"),
    ("net/http.Request", "Host"),
    ("net/http.Request", "Pattern"),
    ("net/http.Request", "ContentLength"),
    ("net/http.Request", "RemoteAddr"),
    ("net/url.URL", "Path"),
    ("net/url.URL", "Host"),
    ("net/url.URL", "RawQuery"),
    ("net/http.response", "status"),
    ("net/http.Response", "StatusCode"),
    (
        "google.golang.org/grpc/internal/transport.ServerStream",
        "Stream",
    ),
    ("google.golang.org/grpc/internal/transport.Stream", "method"),
    ("google.golang.org/grpc/internal/status.Status", "s"),
    ("google.golang.org/grpc/internal/status.Error", "s"),
    (
        "google.golang.org/genproto/googleapis/rpc/status.Status",
        "Code",
    ),
    // Incoming gRPC traceparent (HTTP/2 header fields); optional.
    ("google.golang.org/grpc/internal/transport.Stream", "id"),
    ("golang.org/x/net/http2.MetaHeadersFrame", "HeadersFrame"),
    ("golang.org/x/net/http2.MetaHeadersFrame", "Fields"),
    ("golang.org/x/net/http2.HeadersFrame", "FrameHeader"),
    ("golang.org/x/net/http2.FrameHeader", "StreamID"),
    ("golang.org/x/net/http2/hpack.HeaderField", "Value"),
    ("golang.org/x/net/http2/hpack.HeaderField", "Sensitive"),
    ("runtime.hmap", "B"),
    ("runtime.hmap", "buckets"),
    ("internal/runtime/maps.Map", "dirPtr"),
    ("internal/runtime/maps.Map", "dirLen"),
    ("internal/runtime/maps.table", "groups"),
    ("internal/runtime/maps.groupsReference", "data"),
    ("internal/runtime/maps.groupsReference", "lengthMask"),
    // TLS of HTTP requests; optional.
    ("net/http.Request", "TLS"),
    ("net/http.Response", "TLS"),
    ("net/url.URL", "Scheme"),
    ("crypto/tls.ConnectionState", "Version"),
    ("crypto/tls.ConnectionState", "ServerName"),
    // TLS of gRPC server connections; optional. The transport's AuthInfo is
    // `peer.AuthInfo` of its `peer` field or, in older releases, its own
    // `authInfo` field.
    (
        "google.golang.org/grpc/internal/transport.http2Server",
        "peer",
    ),
    ("google.golang.org/grpc/peer.Peer", "AuthInfo"),
    (
        "google.golang.org/grpc/internal/transport.http2Server",
        "authInfo",
    ),
    ("google.golang.org/grpc/credentials.TLSInfo", "State"),
    // The transports' ends of the connection (pairing, and same-node gRPC
    // joins of propagation) and the stream id a client's HEADERS frame gets;
    // optional. The
    // server's peer address is `peer.Peer.Addr` of its `peer` field or, in
    // older releases, its own `remoteAddr` field.
    (
        "google.golang.org/grpc/internal/transport.http2Client",
        "localAddr",
    ),
    (
        "google.golang.org/grpc/internal/transport.http2Client",
        "remoteAddr",
    ),
    (
        "google.golang.org/grpc/internal/transport.http2Server",
        "remoteAddr",
    ),
    ("google.golang.org/grpc/peer.Peer", "Addr"),
    ("net.TCPAddr", "IP"),
    ("net.TCPAddr", "Port"),
    (
        "google.golang.org/grpc/internal/transport.headerFrame",
        "streamID",
    ),
    (
        "google.golang.org/grpc/internal/transport.headerFrame",
        "hf",
    ),
    // The connection of a net/http client request; optional (without it
    // client spans do not pair with their servers on the node).
    ("net/http.persistConn", "conn"),
    ("net/http.persistConn", "tlsState"),
    ("crypto/tls.Conn", "conn"),
    ("net.TCPConn", "conn"),
    ("net.conn", "fd"),
    ("net.netFD", "laddr"),
    ("net.netFD", "raddr"),
];

/// Where a binary's offsets came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OffsetsSource {
    /// The binary's own DWARF.
    Dwarf,
    /// The generated table; names the table entries used.
    Table { entries: Vec<String> },
}

/// The module that owns a struct's package, by longest module-path prefix;
/// `None` for the standard library.
pub fn owning_module<'a>(
    build: &'a BuildInfo,
    qualified_field: &str,
) -> Option<(&'a str, &'a str)> {
    build
        .modules
        .iter()
        .filter(|(path, _)| {
            qualified_field.starts_with(path.as_str())
                && qualified_field
                    .as_bytes()
                    .get(path.len())
                    .is_some_and(|b| *b == b'/' || *b == b'.')
        })
        .max_by_key(|(path, _)| path.len())
        .map(|(p, v)| (p.as_str(), v.as_str()))
}

/// The committed offsets table (see `go-offsets-gen`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetsTable {
    /// How the table was made (shown in docs and by the generator).
    #[serde(default)]
    pub generated_by: String,
    /// Go version (`go1.23.5`) -> standard-library field offsets.
    pub go: BTreeMap<String, BTreeMap<String, u64>>,
    /// Module path -> module version -> field offsets of that module's structs.
    pub modules: BTreeMap<String, BTreeMap<String, BTreeMap<String, u64>>>,
}

const TABLE_JSON: &str = include_str!("offsets_table.json");

impl OffsetsTable {
    /// The table compiled into the probe.
    pub fn builtin() -> &'static OffsetsTable {
        static TABLE: OnceLock<OffsetsTable> = OnceLock::new();
        TABLE.get_or_init(|| {
            serde_json::from_str(TABLE_JSON)
                .expect("offsets_table.json is valid (checked by tests)")
        })
    }

    /// Adds what DWARF says about one binary: standard-library fields under
    /// its Go version, module fields under their module's version.
    pub fn record(&mut self, build: &BuildInfo, fields: &FieldOffsets) {
        for (field, offset) in fields {
            match owning_module(build, field) {
                Some((module, version)) => {
                    self.modules
                        .entry(module.to_owned())
                        .or_default()
                        .entry(version.to_owned())
                        .or_default()
                        .insert(field.clone(), *offset);
                }
                None => {
                    self.go
                        .entry(build.go_version.clone())
                        .or_default()
                        .insert(field.clone(), *offset);
                }
            }
        }
    }

    /// Field offsets for a binary without DWARF: the standard library by
    /// exact Go version, else another patch release of the same minor
    /// (struct layouts do not change in patch releases); modules by exact
    /// version only. Returns the fields and the entries used.
    pub fn lookup(&self, build: &BuildInfo) -> (FieldOffsets, Vec<String>) {
        let mut fields = FieldOffsets::new();
        let mut entries = Vec::new();
        let go_entry = self.go.get_key_value(&build.go_version).or_else(|| {
            let minor = build.go_minor()?;
            self.go
                .iter()
                .filter(|(v, _)| {
                    super::buildinfo::parse_go_version(v).map(|(a, b, _)| (a, b)) == Some(minor)
                })
                .max_by_key(|(v, _)| super::buildinfo::parse_go_version(v))
        });
        if let Some((version, stdlib)) = go_entry {
            fields.extend(stdlib.iter().map(|(k, v)| (k.clone(), *v)));
            entries.push(version.clone());
        }
        for (module, versions) in &self.modules {
            if let Some(version) = build.module_version(module)
                && let Some(module_fields) = versions.get(version)
            {
                fields.extend(module_fields.iter().map(|(k, v)| (k.clone(), *v)));
                entries.push(format!("{module}@{version}"));
            }
        }
        (fields, entries)
    }
}

/// Where `transport.http2Server` keeps its connection's `AuthInfo`: in its
/// `peer` (`peer.Peer.AuthInfo`) or, in older grpc releases, in a field of
/// its own.
fn grpc_server_auth_info(fields: &FieldOffsets) -> u32 {
    let field = |name: &str| fields.get(name).copied();
    let offset = match (
        field("google.golang.org/grpc/internal/transport.http2Server.peer"),
        field("google.golang.org/grpc/peer.Peer.AuthInfo"),
    ) {
        (Some(peer), Some(auth)) => Some(peer + auth),
        _ => field("google.golang.org/grpc/internal/transport.http2Server.authInfo"),
    };
    offset
        .and_then(|o| u32::try_from(o).ok())
        .unwrap_or(NO_OFFSET)
}

/// Where `transport.http2Server` keeps its peer's address: in its `peer`
/// (`peer.Peer.Addr`) or, in older grpc releases, in a field of its own.
fn grpc_server_remote_addr(fields: &FieldOffsets) -> u32 {
    let field = |name: &str| fields.get(name).copied();
    let offset = match (
        field("google.golang.org/grpc/internal/transport.http2Server.peer"),
        field("google.golang.org/grpc/peer.Peer.Addr"),
    ) {
        (Some(peer), Some(addr)) => Some(peer + addr),
        _ => field("google.golang.org/grpc/internal/transport.http2Server.remoteAddr"),
    };
    offset
        .and_then(|o| u32::try_from(o).ok())
        .unwrap_or(NO_OFFSET)
}

/// Addresses of the itabs the probes compare interface values with (0 =
/// not in the binary's symbol table).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Itabs {
    /// `*status.Error` as an `error`: a gRPC status error.
    pub status_error: u64,
    /// `credentials.TLSInfo` as a `credentials.AuthInfo`: a TLS connection.
    pub tls_info: u64,
    /// `*net.TCPAddr` as a `net.Addr`: a TCP connection's address.
    pub tcp_addr: u64,
    /// `*transport.http2Server` as a `transport.ServerTransport`.
    pub http2_server: u64,
    /// `*net.TCPConn` as a `net.Conn`: a plain client connection.
    pub tcp_conn: u64,
    /// `*tls.Conn` as a `net.Conn`: a TLS client connection.
    pub tls_conn: u64,
}

/// Fills the eBPF-side struct from named fields. `swiss` says which map
/// implementation the binary's runtime uses.
pub fn to_wire(fields: &FieldOffsets, swiss: bool, itabs: Itabs) -> GoOffsets {
    let get = |name: &str| {
        fields
            .get(name)
            .and_then(|v| u32::try_from(*v).ok())
            .unwrap_or(NO_OFFSET)
    };
    let mut out = GoOffsets {
        g_goid: get("runtime.g.goid"),
        req_method: get("net/http.Request.Method"),
        req_url: get("net/http.Request.URL"),
        req_header: get("net/http.Request.Header"),
        req_host: get("net/http.Request.Host"),
        req_pattern: get("net/http.Request.Pattern"),
        req_content_length: get("net/http.Request.ContentLength"),
        url_path: get("net/url.URL.Path"),
        url_host: get("net/url.URL.Host"),
        url_raw_query: get("net/url.URL.RawQuery"),
        response_status: get("net/http.response.status"),
        resp_status_code: get("net/http.Response.StatusCode"),
        grpc_server_stream_stream: get(
            "google.golang.org/grpc/internal/transport.ServerStream.Stream",
        ),
        grpc_stream_method: get("google.golang.org/grpc/internal/transport.Stream.method"),
        grpc_status_s: get("google.golang.org/grpc/internal/status.Status.s"),
        grpc_spb_code: get("google.golang.org/genproto/googleapis/rpc/status.Status.Code"),
        grpc_error_s: get("google.golang.org/grpc/internal/status.Error.s"),
        map_kind: map_kind::UNKNOWN,
        hmap_b: get("runtime.hmap.B"),
        hmap_buckets: get("runtime.hmap.buckets"),
        swiss_dir_ptr: get("internal/runtime/maps.Map.dirPtr"),
        swiss_dir_len: get("internal/runtime/maps.Map.dirLen"),
        table_groups: get("internal/runtime/maps.table.groups"),
        groups_data: get("internal/runtime/maps.groupsReference.data"),
        groups_mask: get("internal/runtime/maps.groupsReference.lengthMask"),
        g_parent_goid: get("runtime.g.parentGoid"),
        grpc_status_error_itab: itabs.status_error,
        req_remote_addr: get("net/http.Request.RemoteAddr"),
        grpc_stream_id: get("google.golang.org/grpc/internal/transport.Stream.id"),
        h2_meta_headers: get("golang.org/x/net/http2.MetaHeadersFrame.HeadersFrame"),
        h2_meta_fields: get("golang.org/x/net/http2.MetaHeadersFrame.Fields"),
        h2_frame_header: get("golang.org/x/net/http2.HeadersFrame.FrameHeader"),
        h2_stream_id: get("golang.org/x/net/http2.FrameHeader.StreamID"),
        hpack_value: get("golang.org/x/net/http2/hpack.HeaderField.Value"),
        // HeaderField is {Name, Value string; Sensitive bool}: its size is
        // the last field's end rounded up to the 8-byte alignment of strings.
        hpack_field_size: match get("golang.org/x/net/http2/hpack.HeaderField.Sensitive") {
            NO_OFFSET => NO_OFFSET,
            sensitive => (sensitive + 1).next_multiple_of(8),
        },
        req_tls: get("net/http.Request.TLS"),
        resp_tls: get("net/http.Response.TLS"),
        url_scheme: get("net/url.URL.Scheme"),
        tls_version: get("crypto/tls.ConnectionState.Version"),
        tls_server_name: get("crypto/tls.ConnectionState.ServerName"),
        grpc_server_auth_info: grpc_server_auth_info(fields),
        grpc_tls_info_state: get("google.golang.org/grpc/credentials.TLSInfo.State"),
        reserved: 0,
        grpc_tls_info_itab: itabs.tls_info,
        grpc_client_local_addr: get(
            "google.golang.org/grpc/internal/transport.http2Client.localAddr",
        ),
        grpc_server_remote_addr: grpc_server_remote_addr(fields),
        tcp_addr_ip: get("net.TCPAddr.IP"),
        tcp_addr_port: get("net.TCPAddr.Port"),
        grpc_header_stream_id: get(
            "google.golang.org/grpc/internal/transport.headerFrame.streamID",
        ),
        grpc_header_fields: get("google.golang.org/grpc/internal/transport.headerFrame.hf"),
        tcp_addr_itab: itabs.tcp_addr,
        grpc_http2_server_itab: itabs.http2_server,
        persist_conn_conn: get("net/http.persistConn.conn"),
        persist_conn_tls: get("net/http.persistConn.tlsState"),
        tls_conn_conn: get("crypto/tls.Conn.conn"),
        // TCPConn embeds conn, whose only field is fd.
        net_conn_fd: match (fields.get("net.TCPConn.conn"), fields.get("net.conn.fd")) {
            (Some(conn), Some(fd)) => u32::try_from(conn + fd).unwrap_or(NO_OFFSET),
            _ => NO_OFFSET,
        },
        net_fd_laddr: get("net.netFD.laddr"),
        net_fd_raddr: get("net.netFD.raddr"),
        tcp_conn_itab: itabs.tcp_conn,
        tls_conn_itab: itabs.tls_conn,
        grpc_client_remote_addr: get(
            "google.golang.org/grpc/internal/transport.http2Client.remoteAddr",
        ),
        reserved2: 0,
    };
    // Header maps are only walked when every offset of that layout is known.
    let known = |offsets: &[u32]| offsets.iter().all(|o| *o != NO_OFFSET);
    out.map_kind = if swiss {
        if known(&[
            out.swiss_dir_ptr,
            out.swiss_dir_len,
            out.table_groups,
            out.groups_data,
            out.groups_mask,
        ]) {
            map_kind::SWISS
        } else {
            map_kind::UNKNOWN
        }
    } else if known(&[out.hmap_b, out.hmap_buckets]) {
        map_kind::BUCKETS
    } else {
        map_kind::UNKNOWN
    };
    out
}

/// Whether the binary's runtime uses swiss-table maps: Go ≥ 1.24 unless
/// built with `GOEXPERIMENT=noswissmap` (an option Go 1.26 removed).
pub fn uses_swiss_maps(build: &BuildInfo) -> bool {
    let experiment = build
        .settings
        .get("GOEXPERIMENT")
        .map(String::as_str)
        .unwrap_or("");
    let opted_out = experiment.split(',').any(|e| e == "noswissmap");
    matches!(build.go_minor(), Some((1, minor)) if minor >= 24) && !opted_out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(go: &str, modules: &[(&str, &str)]) -> BuildInfo {
        BuildInfo {
            go_version: go.to_owned(),
            modules: modules
                .iter()
                .map(|(p, v)| ((*p).to_owned(), (*v).to_owned()))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn module_fields_are_owned_by_the_longest_matching_module_path() {
        let b = build(
            "go1.23.5",
            &[
                ("google.golang.org/grpc", "v1.68.1"),
                ("google.golang.org/genproto/googleapis/rpc", "v0.1"),
            ],
        );
        assert_eq!(
            owning_module(&b, "google.golang.org/grpc/internal/status.Status.s"),
            Some(("google.golang.org/grpc", "v1.68.1"))
        );
        assert_eq!(
            owning_module(
                &b,
                "google.golang.org/genproto/googleapis/rpc/status.Status.Code"
            ),
            Some(("google.golang.org/genproto/googleapis/rpc", "v0.1"))
        );
        assert_eq!(
            owning_module(&b, "net/http.Request.Method"),
            None,
            "standard library has no module"
        );
    }

    #[test]
    fn table_lookup_uses_exact_module_versions_and_same_minor_go_patches() {
        let mut table = OffsetsTable::default();
        let recorded = build("go1.23.5", &[("google.golang.org/grpc", "v1.68.1")]);
        let fields: FieldOffsets = [
            ("runtime.g.goid".to_owned(), 152),
            (
                "google.golang.org/grpc/internal/transport.Stream.method".to_owned(),
                104,
            ),
        ]
        .into();
        table.record(&recorded, &fields);

        let (found, entries) =
            table.lookup(&build("go1.23.9", &[("google.golang.org/grpc", "v1.68.1")]));
        assert_eq!(
            found.get("runtime.g.goid"),
            Some(&152),
            "same minor, other patch"
        );
        assert_eq!(
            found.get("google.golang.org/grpc/internal/transport.Stream.method"),
            Some(&104)
        );
        assert_eq!(
            entries,
            vec![
                "go1.23.5".to_owned(),
                "google.golang.org/grpc@v1.68.1".to_owned()
            ]
        );

        let (found, _) = table.lookup(&build("go1.22.1", &[("google.golang.org/grpc", "v1.60.0")]));
        assert!(
            found.is_empty(),
            "other minor and other module version must not match: {found:?}"
        );
    }

    #[test]
    fn header_map_walk_is_enabled_only_with_a_complete_layout() {
        let mut fields: FieldOffsets = [
            ("runtime.hmap.B".to_owned(), 9),
            ("runtime.hmap.buckets".to_owned(), 16),
        ]
        .into();
        assert_eq!(
            to_wire(&fields, false, Itabs::default()).map_kind,
            map_kind::BUCKETS
        );
        assert_eq!(
            to_wire(&fields, true, Itabs::default()).map_kind,
            map_kind::UNKNOWN,
            "swiss runtime without swiss offsets"
        );
        fields.remove("runtime.hmap.buckets");
        assert_eq!(
            to_wire(&fields, false, Itabs::default()).map_kind,
            map_kind::UNKNOWN
        );
        assert_eq!(
            to_wire(&fields, false, Itabs::default()).req_method,
            NO_OFFSET,
            "absent fields stay unknown"
        );
    }

    #[test]
    fn hpack_field_stride_is_the_end_of_sensitive_rounded_to_eight_bytes() {
        let mut fields: FieldOffsets = [(
            "golang.org/x/net/http2/hpack.HeaderField.Sensitive".to_owned(),
            32,
        )]
        .into();
        assert_eq!(
            to_wire(&fields, false, Itabs::default()).hpack_field_size,
            40,
            "{{Name, Value string; Sensitive bool}} is 40 bytes"
        );
        fields.clear();
        assert_eq!(
            to_wire(&fields, false, Itabs::default()).hpack_field_size,
            NO_OFFSET,
            "unknown layout stays unknown, so the header probe is not attached"
        );
    }

    #[test]
    fn swiss_maps_follow_the_go_version_and_experiment() {
        assert!(!uses_swiss_maps(&build("go1.23.5", &[])));
        assert!(uses_swiss_maps(&build("go1.26.8", &[])));
        let mut b = build("go1.24.2", &[]);
        b.settings
            .insert("GOEXPERIMENT".to_owned(), "noswissmap".to_owned());
        assert!(!uses_swiss_maps(&b));
    }

    #[test]
    fn builtin_table_parses() {
        let table = OffsetsTable::builtin();
        assert!(
            !table.go.is_empty(),
            "the committed table must hold at least one Go version"
        );
    }
}
