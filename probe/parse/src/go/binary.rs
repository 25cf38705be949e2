//! Analysis of one Go executable: is it Go, which Go and module versions,
//! where are the probed functions and their RET instructions, and which
//! struct offsets apply. The result is cached by (device, inode, Go build
//! ID), so a binary replaced on disk is analysed afresh and never probed
//! with a stale layout.
//!
//! The binary is the workload's, so nothing it states is trusted: the file
//! is read in ranges within a byte budget ([`crate::elf`]), DWARF is
//! decompressed within [`dwarf::MAX_DWARF_BYTES`], a function is decoded
//! only up to [`MAX_FUNCTION_BYTES`], and a function with more than
//! [`MAX_RETURNS_PER_FUNCTION`] RET instructions is not probed (one uprobe
//! per RET). See [`AnalysisLimits`].

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ferrotel_probe_ebpf::go::GoOffsets;
use iced_x86::{Decoder, DecoderOptions, Mnemonic, OpKind, Register};
use object::read::ReadRef;
use object::{Object, ObjectSection, ObjectSymbol};

use crate::elf::{self, BoundedElf, ElfLimitError, ReadBudget};

use super::buildinfo::{BuildInfo, BuildInfoError, parse_go_version};
use super::dwarf::{self, DwarfError, FieldOffsets};
use super::offsets::{self, ALL_FIELDS, Feature, GOID_FIELD, OffsetsSource, OffsetsTable};
use super::pclntab::{self, FuncRange};

/// The functions the probes attach to.
pub mod symbols {
    pub const HTTP_SERVER: &str = "net/http.serverHandler.ServeHTTP";
    pub const HTTP_CLIENT: &str = "net/http.(*Transport).roundTrip";
    pub const GRPC_SERVER: &str = "google.golang.org/grpc.(*Server).handleStream";
    pub const GRPC_STATUS: &str =
        "google.golang.org/grpc/internal/transport.(*http2Server).WriteStatus";
    pub const GRPC_CLIENT: &str = "google.golang.org/grpc.(*ClientConn).Invoke";
    /// Where a gRPC server sees a request's header fields (entry only):
    /// the source of an incoming `traceparent`.
    pub const GRPC_HEADERS: &str =
        "google.golang.org/grpc/internal/transport.(*http2Server).operateHeaders";
    pub const NEWPROC: &str = "runtime.newproc1";
    /// Streaming client calls: opened by `NewStream`, ended by `finish`.
    pub const GRPC_NEW_STREAM: &str = "google.golang.org/grpc.(*ClientConn).NewStream";
    pub const GRPC_STREAM_FINISH: &str = "google.golang.org/grpc.(*clientStream).finish";
    /// The `go` statement's system-stack closure: creates the goroutine with
    /// `newproc1`, then queues it with `runqput`, whose call is probed.
    pub const NEWPROC_CLOSURE: &str = "runtime.newproc.func1";
    pub const RUNQPUT: &str = "runtime.runqput";
    /// HTTP/1's connection loop, which calls `HTTP_SERVER` and then, on
    /// every request, `(*conn).hijacked`.
    pub const HTTP1_CONN_SERVE: &str = "net/http.(*conn).serve";
    pub const HTTP1_HIJACKED: &str = "net/http.(*conn).hijacked";
    /// The other callers of `HTTP_SERVER` (HTTP/2 over TLS, h2c, the
    /// pointer-receiver wrapper).
    pub const HTTP_SERVER_OTHER_CALLERS: [&str; 3] = [
        "net/http.initALPNRequest.ServeHTTP",
        "net/http.unencryptedHTTP2Request.ServeHTTP",
        "net/http.(*serverHandler).ServeHTTP",
    ];
    /// A net/http client request on the connection it goes out on (entry
    /// only): where its connection is read and, with propagation on, the
    /// request its connection's writeLoop will write is noted.
    pub const HTTP_CLIENT_CONN: &str = "net/http.(*persistConn).roundTrip";
    /// Propagation (entry only): that write.
    pub const PROP_REQUEST_WRITE: &str = "net/http.(*Request).write";
    /// A gRPC client transport making a call's stream header fields: its
    /// entry reads the call's connection; with same-node joins on, its RETs
    /// too, and the connection's writer originating the stream under its id
    /// (entry).
    pub const GRPC_HEADER_FIELDS: &str =
        "google.golang.org/grpc/internal/transport.(*http2Client).createHeaderFields";
    pub const PROP_GRPC_HEADER: &str =
        "google.golang.org/grpc/internal/transport.(*loopyWriter).headerHandler";
    pub const ALL: [&str; 13] = [
        HTTP_CLIENT_CONN,
        PROP_REQUEST_WRITE,
        GRPC_HEADER_FIELDS,
        PROP_GRPC_HEADER,
        HTTP_SERVER,
        HTTP_CLIENT,
        GRPC_SERVER,
        GRPC_STATUS,
        GRPC_CLIENT,
        NEWPROC,
        GRPC_NEW_STREAM,
        GRPC_STREAM_FINISH,
        GRPC_HEADERS,
    ];
    /// Functions located for the analysis besides `ALL` (call sites and
    /// callers of the probed functions).
    pub const HELPERS: [&str; 7] = [
        NEWPROC_CLOSURE,
        RUNQPUT,
        HTTP1_CONN_SERVE,
        HTTP1_HIJACKED,
        HTTP_SERVER_OTHER_CALLERS[0],
        HTTP_SERVER_OTHER_CALLERS[1],
        HTTP_SERVER_OTHER_CALLERS[2],
    ];

    /// Every function whose address the analysis needs.
    pub fn located() -> impl Iterator<Item = &'static str> {
        ALL.into_iter().chain(HELPERS)
    }
    /// The itab that marks a gRPC status error (compared in the client RET probe).
    pub const STATUS_ERROR_ITAB: &str =
        "go:itab.*google.golang.org/grpc/internal/status.Error,error";
    /// The itab that marks a TLS connection's `credentials.AuthInfo`
    /// (compared in the gRPC server's entry probe).
    pub const TLS_INFO_ITAB: &str = "go:itab.google.golang.org/grpc/credentials.TLSInfo,google.golang.org/grpc/credentials.AuthInfo";
    /// Itabs the gRPC join programs compare interface values with.
    pub const TCP_ADDR_ITAB: &str = "go:itab.*net.TCPAddr,net.Addr";
    /// Itabs of the `net.Conn` a net/http client connection holds: plain
    /// TCP, or TLS over it.
    pub const TCP_CONN_ITAB: &str = "go:itab.*net.TCPConn,net.Conn";
    pub const TLS_CONN_ITAB: &str = "go:itab.*crypto/tls.Conn,net.Conn";
    pub const HTTP2_SERVER_ITAB: &str = "go:itab.*google.golang.org/grpc/internal/transport.http2Server,google.golang.org/grpc/internal/transport.ServerTransport";
}

/// Oldest Go the probes understand: register ABI (1.17) and inline build
/// info (1.18).
pub const MIN_GO: (u32, u32) = (1, 18);

/// Why a binary cannot be probed at all.
#[derive(Debug, thiserror::Error)]
pub enum AnalysisError {
    #[error("failed to read executable {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("executable {path} is not a valid ELF file")]
    Elf {
        path: PathBuf,
        #[source]
        source: object::Error,
    },
    #[error("executable {path} is not a Go program (no .go.buildinfo section)")]
    NotGo { path: PathBuf },
    #[error("executable {path} has unreadable Go build info")]
    BuildInfo {
        path: PathBuf,
        #[source]
        source: BuildInfoError,
    },
    #[error(
        "executable {path} was built with {version}; the Go probe needs Go 1.18 or newer (register ABI)"
    )]
    TooOld { path: PathBuf, version: String },
    #[error("executable {path} is not an x86-64 binary; the Go probe reads amd64 registers")]
    Arch { path: PathBuf },
    #[error("executable {path} has neither a symbol table nor a readable .gopclntab")]
    NoFunctions {
        path: PathBuf,
        #[source]
        source: Option<pclntab::PclntabError>,
    },
    #[error("executable {path} has malformed DWARF")]
    Dwarf {
        path: PathBuf,
        #[source]
        source: DwarfError,
    },
    #[error(
        "executable {path} ({go_version}) has no DWARF and the offsets table has no entry for it; \
         rebuild without -ldflags=-w, or add this Go version to the table (go-offsets-gen)"
    )]
    UnknownOffsets { path: PathBuf, go_version: String },
    #[error("executable {path} exceeds the probe's analysis limits")]
    Limit {
        path: PathBuf,
        #[source]
        source: ElfLimitError,
    },
}

impl AnalysisError {
    /// Bounded label for the refusal metric.
    pub fn category(&self) -> &'static str {
        match self {
            AnalysisError::Read { .. } => "read",
            AnalysisError::Elf { .. } | AnalysisError::Arch { .. } => "not_elf_amd64",
            AnalysisError::NotGo { .. } => "not_go",
            AnalysisError::BuildInfo { .. } | AnalysisError::TooOld { .. } => "go_version",
            AnalysisError::NoFunctions { .. } => "no_functions",
            AnalysisError::Dwarf {
                source: DwarfError::TooLarge { .. },
                ..
            } => "analysis_limit",
            AnalysisError::Dwarf { .. } => "dwarf",
            AnalysisError::UnknownOffsets { .. } => "unknown_offsets",
            AnalysisError::Limit { .. } => "analysis_limit",
        }
    }
}

/// Identity of an executable's contents: the analysis cache key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BinaryKey {
    pub dev: u64,
    pub inode: u64,
    /// The Go build ID (`.note.go.buildid`); empty if absent.
    pub build_id: String,
}

/// Where to put the probes of one function, as file offsets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeSite {
    pub symbol: &'static str,
    /// File offset of the entry probe: the conditional jump of the
    /// function's stack-bound check when it has the standard prologue (see
    /// [`entry_probe_point`]), else the first instruction.
    pub entry: u64,
    /// File offsets of every RET instruction.
    pub returns: Vec<u64>,
    /// File offsets where the function's end program goes: its RETs, or
    /// for `net/http.serverHandler.ServeHTTP` the cheaper equivalent found
    /// by [`http_server_exits`].
    pub exits: Vec<u64>,
}

/// Everything the attach step needs to know about one executable.
#[derive(Clone, Debug)]
pub struct GoBinary {
    pub key: BinaryKey,
    pub build: BuildInfo,
    /// Probe sites of the functions present in the binary.
    pub sites: BTreeMap<&'static str, ProbeSite>,
    /// File offset of the `CALL runtime.runqput` in `runtime.newproc.func1`,
    /// where a new goroutine (in RBX) meets its creator's id
    /// (`g.parentGoid`): one emulated probe per `go` statement instead of
    /// an entry and a RET probe on `runtime.newproc1`.
    pub spawn_call: Option<u64>,
    /// The value written to `go_offsets` for processes of this binary.
    pub offsets: GoOffsets,
    pub offsets_source: OffsetsSource,
    /// Named field offsets (for diagnostics and the table generator).
    pub fields: FieldOffsets,
    /// Features that can be attached, and why the others cannot.
    pub features: BTreeMap<Feature, Result<(), String>>,
}

/// Bounds on the work and memory one analysis may take; the defaults fit
/// the Go probe's memory limit with room to spare.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AnalysisLimits {
    /// Bytes read from the executable, all ranges together.
    pub read_budget: u64,
    /// Decompressed DWARF bytes.
    pub dwarf_bytes: u64,
}

impl Default for AnalysisLimits {
    fn default() -> Self {
        Self {
            read_budget: elf::DEFAULT_READ_BUDGET,
            dwarf_bytes: dwarf::MAX_DWARF_BYTES,
        }
    }
}

/// A probed function with more RET instructions than this is not probed:
/// each RET costs a uprobe, and Go's functions have a handful.
pub const MAX_RETURNS_PER_FUNCTION: usize = 32;
/// Longest function body decoded; the probed functions are a few KiB.
pub const MAX_FUNCTION_BYTES: u64 = 1 << 20;

impl GoBinary {
    /// Reads and analyses the executable at `path` (e.g. `/proc/<pid>/exe`).
    pub fn analyze(path: &Path) -> Result<Self, AnalysisError> {
        let meta = std::fs::metadata(path).map_err(|source| AnalysisError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::analyze_file(
            path,
            meta.dev(),
            meta.ino(),
            OffsetsTable::builtin(),
            AnalysisLimits::default(),
        )
    }

    /// Analyses the file at `path` within `limits`, reading only the ranges
    /// the analysis needs.
    pub fn analyze_file(
        path: &Path,
        dev: u64,
        inode: u64,
        table: &OffsetsTable,
        limits: AnalysisLimits,
    ) -> Result<Self, AnalysisError> {
        let limit = |source| AnalysisError::Limit {
            path: path.to_owned(),
            source,
        };
        let bounded = match BoundedElf::open(path, limits.read_budget) {
            Ok(bounded) => bounded,
            Err(ElfLimitError::Open { source, .. }) => {
                return Err(AnalysisError::Read {
                    path: path.to_owned(),
                    source,
                });
            }
            Err(other) => return Err(limit(other)),
        };
        analyze_object(
            path,
            bounded.data(),
            dev,
            inode,
            table,
            &bounded.budget,
            limits,
        )
    }

    /// Analysis of an executable's bytes (tests and fuzzing), with the
    /// default limits.
    pub fn analyze_bytes(
        path: &Path,
        data: &[u8],
        dev: u64,
        inode: u64,
        table: &OffsetsTable,
    ) -> Result<Self, AnalysisError> {
        let limits = AnalysisLimits::default();
        let budget = ReadBudget::new(limits.read_budget);
        analyze_object(path, data, dev, inode, table, &budget, limits)
    }

    /// Features whose functions and fields are all present.
    pub fn attachable(&self) -> impl Iterator<Item = Feature> + '_ {
        self.features
            .iter()
            .filter(|(_, s)| s.is_ok())
            .map(|(f, _)| *f)
    }
}

fn analyze_object<'data, R: ReadRef<'data>>(
    path: &Path,
    data: R,
    dev: u64,
    inode: u64,
    table: &OffsetsTable,
    budget: &ReadBudget,
    limits: AnalysisLimits,
) -> Result<GoBinary, AnalysisError> {
    let path_buf = || path.to_owned();
    let limit = |source| AnalysisError::Limit {
        path: path_buf(),
        source,
    };
    elf::check_eager_tables(data, budget).map_err(|source| match source {
        ElfLimitError::NotElf64(_) => AnalysisError::Arch { path: path_buf() },
        other => limit(other),
    })?;
    let file = object::File::parse(data).map_err(|source| AnalysisError::Elf {
        path: path_buf(),
        source,
    })?;
    if file.architecture() != object::Architecture::X86_64 {
        return Err(AnalysisError::Arch { path: path_buf() });
    }
    let build = read_build_info(&file, path, budget)?;
    match build.go_minor() {
        Some(v) if v >= MIN_GO => {}
        _ => {
            return Err(AnalysisError::TooOld {
                path: path_buf(),
                version: build.go_version.clone(),
            });
        }
    }
    let key = BinaryKey {
        dev,
        inode,
        build_id: go_build_id(data).unwrap_or_default(),
    };

    let code = Code { file: &file, data };
    let functions = find_functions(&file, path, budget)?;
    let mut sites = BTreeMap::new();
    let mut oversized = BTreeMap::new();
    for (name, range) in &functions {
        let Some(symbol) = symbols::ALL.iter().find(|s| *s == name) else {
            continue;
        };
        match probe_site(&code, budget, symbol, *range) {
            Ok(Some(site)) => {
                sites.insert(*symbol, site);
            }
            Ok(None) => {}
            Err(returns) => {
                oversized.insert(*symbol, returns);
            }
        }
    }
    if let Some(site) = sites.get_mut(symbols::HTTP_SERVER)
        && let Some(exits) = http_server_exits(&code, budget, &functions)
    {
        site.exits = exits;
    }
    let spawn_call = match (
        functions.get(symbols::NEWPROC_CLOSURE),
        functions.get(symbols::RUNQPUT),
    ) {
        (Some(closure), Some(runqput)) => call_site(&code, budget, *closure, runqput.start),
        _ => None,
    };

    let (fields, offsets_source) = match dwarf::field_offsets(&file, ALL_FIELDS, limits.dwarf_bytes)
    {
        Ok(fields) => (fields, OffsetsSource::Dwarf),
        Err(DwarfError::Missing) => {
            let (fields, entries) = table.lookup(&build);
            if !fields.contains_key(GOID_FIELD) {
                return Err(AnalysisError::UnknownOffsets {
                    path: path_buf(),
                    go_version: build.go_version.clone(),
                });
            }
            (fields, OffsetsSource::Table { entries })
        }
        Err(source) => {
            return Err(AnalysisError::Dwarf {
                path: path_buf(),
                source,
            });
        }
    };
    if !fields.contains_key(GOID_FIELD) {
        return Err(AnalysisError::UnknownOffsets {
            path: path_buf(),
            go_version: build.go_version.clone(),
        });
    }

    let itabs = offsets::Itabs {
        status_error: symbol_address(&file, symbols::STATUS_ERROR_ITAB).unwrap_or(0),
        tls_info: symbol_address(&file, symbols::TLS_INFO_ITAB).unwrap_or(0),
        tcp_addr: symbol_address(&file, symbols::TCP_ADDR_ITAB).unwrap_or(0),
        http2_server: symbol_address(&file, symbols::HTTP2_SERVER_ITAB).unwrap_or(0),
        tcp_conn: symbol_address(&file, symbols::TCP_CONN_ITAB).unwrap_or(0),
        tls_conn: symbol_address(&file, symbols::TLS_CONN_ITAB).unwrap_or(0),
    };
    let offsets = offsets::to_wire(&fields, offsets::uses_swiss_maps(&build), itabs);
    let features = Feature::ALL
        .iter()
        .map(|feature| {
            (
                *feature,
                feature_status(*feature, &sites, &oversized, &fields),
            )
        })
        .collect();
    Ok(GoBinary {
        key,
        build,
        sites,
        spawn_call,
        offsets,
        offsets_source,
        fields,
        features,
    })
}

/// The functions a feature attaches to (entry + RETs unless noted).
pub fn feature_symbols(feature: Feature) -> &'static [&'static str] {
    match feature {
        Feature::HttpServer => &[symbols::HTTP_SERVER],
        Feature::HttpClient => &[symbols::HTTP_CLIENT],
        Feature::GrpcServer => &[symbols::GRPC_SERVER, symbols::GRPC_STATUS],
        Feature::GrpcClient => &[symbols::GRPC_CLIENT],
    }
}

fn feature_status(
    feature: Feature,
    sites: &BTreeMap<&'static str, ProbeSite>,
    oversized: &BTreeMap<&'static str, usize>,
    fields: &FieldOffsets,
) -> Result<(), String> {
    if let Some((symbol, returns)) = feature_symbols(feature)
        .iter()
        .find_map(|s| oversized.get_key_value(s))
    {
        return Err(format!(
            "function {symbol} has {returns} RET instructions, above the cap of {MAX_RETURNS_PER_FUNCTION} (one uprobe each)"
        ));
    }
    let missing_symbols: Vec<&str> = feature_symbols(feature)
        .iter()
        .copied()
        .filter(|s| !sites.contains_key(s))
        .collect();
    if !missing_symbols.is_empty() {
        return Err(format!(
            "function(s) not in binary: {}",
            missing_symbols.join(", ")
        ));
    }
    let missing_fields: Vec<&str> = feature
        .required_fields()
        .iter()
        .copied()
        .filter(|f| !fields.contains_key(*f))
        .collect();
    if !missing_fields.is_empty() {
        return Err(format!(
            "struct offsets unknown: {}",
            missing_fields.join(", ")
        ));
    }
    Ok(())
}

fn read_build_info<'data, R: ReadRef<'data>>(
    file: &object::File<'data, R>,
    path: &Path,
    budget: &ReadBudget,
) -> Result<BuildInfo, AnalysisError> {
    let section = file
        .section_by_name(".go.buildinfo")
        .ok_or_else(|| AnalysisError::NotGo {
            path: path.to_owned(),
        })?;
    let data = section_data(&section, path, budget)?;
    BuildInfo::parse(data).map_err(|source| AnalysisError::BuildInfo {
        path: path.to_owned(),
        source,
    })
}

/// A section's contents, if its stated size fits the read budget.
fn section_data<'data, 'file, R: ReadRef<'data>>(
    section: &object::Section<'data, 'file, R>,
    path: &Path,
    budget: &ReadBudget,
) -> Result<&'data [u8], AnalysisError> {
    let name = section.name().unwrap_or("?");
    budget
        .check(format!("section {name}"), section.size())
        .map_err(|source| AnalysisError::Limit {
            path: path.to_owned(),
            source,
        })?;
    section.data().map_err(|source| AnalysisError::Elf {
        path: path.to_owned(),
        source,
    })
}

/// The Go build ID from the `.note.go.buildid` ELF note (name "Go", type
/// 4). Reads the section table and the note only, not the symbol tables:
/// this is the analysis cache's key, computed on every attach.
pub fn go_build_id<'data, R: ReadRef<'data>>(data: R) -> Option<String> {
    use object::elf::FileHeader64;
    use object::read::elf::{FileHeader, SectionHeader};
    let header = FileHeader64::<object::Endianness>::parse(data).ok()?;
    let endian = header.endian().ok()?;
    let sections = header.sections(endian, data).ok()?;
    let (_, section) = sections.section_by_name(endian, b".note.go.buildid")?;
    // A real note is under a hundred bytes.
    if section.sh_size(endian) > 4096 {
        return None;
    }
    let note = section.data(endian, data).ok()?;
    let u32_at = |o: usize| {
        note.get(o..o.checked_add(4)?)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
    };
    let namesz = u32_at(0)? as usize;
    let descsz = u32_at(4)? as usize;
    let desc_start = 12usize.checked_add(namesz.div_ceil(4).checked_mul(4)?)?;
    let desc = note.get(desc_start..desc_start.checked_add(descsz)?)?;
    Some(String::from_utf8_lossy(desc).into_owned())
}

fn symbol_address<'data, R: ReadRef<'data>>(
    file: &object::File<'data, R>,
    name: &str,
) -> Option<u64> {
    file.symbols()
        .find(|s| s.name() == Ok(name))
        .map(|s| s.address())
}

/// Address ranges of the probed functions: from `.symtab` when present,
/// else from the runtime's own `.gopclntab` (stripped binaries).
fn find_functions<'data, R: ReadRef<'data>>(
    file: &object::File<'data, R>,
    path: &Path,
    budget: &ReadBudget,
) -> Result<HashMap<String, FuncRange>, AnalysisError> {
    let mut found = HashMap::new();
    for symbol in file.symbols() {
        if let Ok(name) = symbol.name()
            && symbols::located().any(|s| s == name)
            && symbol.size() > 0
        {
            found.insert(
                name.to_owned(),
                FuncRange {
                    start: symbol.address(),
                    end: symbol.address().saturating_add(symbol.size()),
                },
            );
        }
    }
    if !found.is_empty() {
        return Ok(found);
    }
    let no_functions = |source| AnalysisError::NoFunctions {
        path: path.to_owned(),
        source,
    };
    let section = file
        .section_by_name(".gopclntab")
        .ok_or_else(|| no_functions(None))?;
    let data = section_data(&section, path, budget)?;
    let text_start = file
        .section_by_name(".text")
        .map(|s| s.address())
        .unwrap_or(0);
    let wanted: Vec<&str> = symbols::located().collect();
    pclntab::find_functions(data, text_start, &wanted).map_err(|e| no_functions(Some(e)))
}

/// The parsed file and its reader: function bodies are read by range, not
/// by reading `.text` whole.
struct Code<'a, 'data, R: ReadRef<'data>> {
    file: &'a object::File<'data, R>,
    data: R,
}

impl<'data, R: ReadRef<'data>> Code<'_, 'data, R> {
    /// The code of `range` and the file offset of its first byte; `None` if
    /// the range is not inside one section, longer than
    /// [`MAX_FUNCTION_BYTES`], or over the read budget.
    fn function(&self, budget: &ReadBudget, range: FuncRange) -> Option<(&'data [u8], u64)> {
        let len = range.end.checked_sub(range.start)?;
        if len > MAX_FUNCTION_BYTES {
            return None;
        }
        let text = self.file.sections().find(|s| {
            s.address() <= range.start
                && s.address()
                    .checked_add(s.size())
                    .is_some_and(|end| range.end <= end)
        })?;
        let (section_start, section_len) = text.file_range()?;
        let offset = range.start - text.address();
        if offset.checked_add(len)? > section_len {
            return None;
        }
        let file_start = section_start.checked_add(offset)?;
        budget.check("function code", len).ok()?;
        let bytes = self.data.read_bytes_at(file_start, len).ok()?;
        Some((bytes, file_start))
    }
}

/// Where an HTTP server request ends, without a RET probe on the hot path.
///
/// A RET cannot be emulated by the kernel: its uprobe single-steps a copy,
/// a second trap that dominated the probe's cost per request. HTTP/1's
/// `(*conn).serve` calls `serverHandler.ServeHTTP` and, right after it
/// returns (and `w.cancelCtx()`), `c.hijacked()` — a direct CALL, which is
/// emulated, on the same goroutine, on every request, hijacked or not. The
/// rarer HTTP/2 callers keep RET probes of their own. `None` (use
/// ServeHTTP's own RETs) unless that shape is found exactly.
fn http_server_exits<'data, R: ReadRef<'data>>(
    code: &Code<'_, 'data, R>,
    budget: &ReadBudget,
    functions: &HashMap<String, FuncRange>,
) -> Option<Vec<u64>> {
    let serve_http = functions.get(symbols::HTTP_SERVER)?.start;
    let hijacked = functions.get(symbols::HTTP1_HIJACKED)?.start;
    let conn_serve = *functions.get(symbols::HTTP1_CONN_SERVE)?;
    let (bytes, file_start) = code.function(budget, conn_serve)?;
    let decoder = Decoder::with_ip(64, bytes, conn_serve.start, DecoderOptions::NONE);
    let mut direct_calls = decoder
        .into_iter()
        .filter(|i| i.mnemonic() == Mnemonic::Call && i.op0_kind() == OpKind::NearBranch64);
    direct_calls.find(|i| i.near_branch_target() == serve_http)?;
    let next = direct_calls.next()?;
    if next.near_branch_target() != hijacked {
        return None;
    }
    let mut exits = vec![next.ip() - conn_serve.start + file_start];
    for caller in symbols::HTTP_SERVER_OTHER_CALLERS {
        if let Some(range) = functions.get(caller) {
            let (bytes, file_start) = code.function(budget, *range)?;
            let rets = ret_offsets(bytes, range.start);
            if rets.len() > MAX_RETURNS_PER_FUNCTION {
                return None;
            }
            exits.extend(rets.into_iter().map(|addr| addr - range.start + file_start));
        }
    }
    Some(exits)
}

/// File offset of the first direct CALL to `target` in the function.
fn call_site<'data, R: ReadRef<'data>>(
    code: &Code<'_, 'data, R>,
    budget: &ReadBudget,
    range: FuncRange,
    target: u64,
) -> Option<u64> {
    let (bytes, file_start) = code.function(budget, range)?;
    let mut decoder = Decoder::with_ip(64, bytes, range.start, DecoderOptions::NONE);
    decoder
        .iter()
        .find(|i| i.mnemonic() == Mnemonic::Call && i.near_branch_target() == target)
        .map(|i| i.ip() - range.start + file_start)
}

/// Virtual address of the instruction the entry probe goes on.
///
/// A uprobe on an instruction the kernel cannot emulate costs a second trap
/// (single-stepping a copy of the instruction), which on this platform
/// costs several times the probe itself; x86 uprobes emulate jumps, calls
/// and NOPs. A Go function with a frame starts with its stack-bound check,
/// `[LEA R12, [RSP-n];] CMP RSP|R12, 16(R14); JBE morestack`, which leaves
/// every argument register as it was at entry: probing the JBE sees the
/// same arguments with one trap. (When the stack must grow, the function
/// restarts after `morestack` and the probe fires a second time with the
/// same arguments; the entry programs overwrite what the first run parked.)
/// Functions without that prologue are probed at their first instruction.
pub fn entry_probe_point(code: &[u8], ip: u64) -> u64 {
    let decoder = Decoder::with_ip(64, code, ip, DecoderOptions::NONE);
    let mut compared = false;
    for (i, instruction) in decoder.into_iter().take(3).enumerate() {
        match instruction.mnemonic() {
            Mnemonic::Lea if i == 0 && instruction.op0_register() == Register::R12 => {}
            Mnemonic::Cmp
                if !compared
                    && instruction.memory_base() == Register::R14
                    && matches!(instruction.op0_register(), Register::RSP | Register::R12) =>
            {
                compared = true;
            }
            Mnemonic::Jbe if compared => return instruction.ip(),
            _ => break,
        }
    }
    ip
}

/// Decodes the function and lists its RETs, as file offsets: `Ok(None)`
/// if its code cannot be read or has no RET, `Err(count)` if it has more
/// RETs than [`MAX_RETURNS_PER_FUNCTION`].
fn probe_site<'data, R: ReadRef<'data>>(
    code: &Code<'_, 'data, R>,
    budget: &ReadBudget,
    symbol: &'static str,
    range: FuncRange,
) -> Result<Option<ProbeSite>, usize> {
    let Some((bytes, file_start)) = code.function(budget, range) else {
        return Ok(None);
    };
    let to_file = |addr: u64| addr - range.start + file_start;
    let returns = ret_offsets(bytes, range.start);
    if returns.len() > MAX_RETURNS_PER_FUNCTION {
        return Err(returns.len());
    }
    let returns = returns.into_iter().map(to_file).collect::<Vec<_>>();
    if returns.is_empty() {
        return Ok(None);
    }
    Ok(Some(ProbeSite {
        symbol,
        entry: to_file(entry_probe_point(bytes, range.start)),
        exits: returns.clone(),
        returns,
    }))
}

/// Virtual addresses of the RET instructions in `code` (which starts at `ip`).
pub fn ret_offsets(code: &[u8], ip: u64) -> Vec<u64> {
    let mut decoder = Decoder::with_ip(64, code, ip, DecoderOptions::NONE);
    let mut rets = Vec::new();
    for instruction in &mut decoder {
        if instruction.mnemonic() == Mnemonic::Ret {
            rets.push(instruction.ip());
        }
    }
    rets
}

/// Analyses kept at most; the least recently used goes first. A node runs
/// far fewer distinct Go executables; churn beyond this (a workload
/// rebuilding its binary in a loop) costs re-analysis, never memory.
pub const MAX_CACHED_ANALYSES: usize = 64;

/// Analyses shared by every process running the same executable contents.
#[derive(Debug)]
pub struct AnalysisCache {
    entries: Mutex<CacheEntries>,
    capacity: usize,
    limits: AnalysisLimits,
}

#[derive(Debug, Default)]
struct CacheEntries {
    /// Key -> (analysis, last use).
    map: HashMap<BinaryKey, (Arc<GoBinary>, u64)>,
    clock: u64,
}

impl Default for AnalysisCache {
    fn default() -> Self {
        Self::new(MAX_CACHED_ANALYSES, AnalysisLimits::default())
    }
}

impl AnalysisCache {
    pub fn new(capacity: usize, limits: AnalysisLimits) -> Self {
        Self {
            entries: Mutex::default(),
            capacity: capacity.max(1),
            limits,
        }
    }

    /// The analysis of the executable at `path`: cached if its (device,
    /// inode, build ID) was seen, computed otherwise. The key is read from
    /// the file itself (its section table and build ID note, not the whole
    /// file), so `/proc/<pid>/exe` of a process whose binary was replaced on
    /// disk resolves to the old contents.
    pub fn get(&self, path: &Path) -> Result<Arc<GoBinary>, AnalysisError> {
        let read_err = |source| AnalysisError::Read {
            path: path.to_owned(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(read_err)?;
        let build_id = match BoundedElf::open(path, self.limits.read_budget) {
            Ok(bounded) => go_build_id(bounded.data()).unwrap_or_default(),
            Err(ElfLimitError::Open { source, .. }) => return Err(read_err(source)),
            Err(source) => {
                return Err(AnalysisError::Limit {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        let key = BinaryKey {
            dev: meta.dev(),
            inode: meta.ino(),
            build_id,
        };
        {
            let mut entries = self.entries.lock().expect("analysis cache lock");
            entries.clock += 1;
            let now = entries.clock;
            if let Some((hit, used)) = entries.map.get_mut(&key) {
                *used = now;
                return Ok(hit.clone());
            }
        }
        let analysed = Arc::new(GoBinary::analyze_file(
            path,
            meta.dev(),
            meta.ino(),
            OffsetsTable::builtin(),
            self.limits,
        )?);
        let mut entries = self.entries.lock().expect("analysis cache lock");
        if entries.map.len() >= self.capacity
            && let Some(oldest) = entries
                .map
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone())
        {
            entries.map.remove(&oldest);
        }
        entries.clock += 1;
        let now = entries.clock;
        entries.map.insert(key, (analysed.clone(), now));
        Ok(analysed)
    }

    pub fn len(&self) -> usize {
        self.entries.lock().expect("analysis cache lock").map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `true` if `version` is at least Go `major.minor`.
pub fn go_at_least(version: &str, major: u32, minor: u32) -> bool {
    parse_go_version(version).is_some_and(|(a, b, _)| (a, b) >= (major, minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_ret_of_a_decoded_function_is_found_and_nothing_else() {
        // push rbp; test eax,eax; je +1; ret; xor eax,eax; ret (0xc3 inside an immediate must not count)
        let code = [
            0x55, 0x85, 0xc0, 0x74, 0x01, 0xc3, 0x31, 0xc0, 0xb8, 0xc3, 0, 0, 0, 0xc3,
        ];
        assert_eq!(ret_offsets(&code, 0x1000), vec![0x1005, 0x100d]);
    }

    #[test]
    fn entry_probe_goes_on_the_jump_of_the_stack_check_when_the_prologue_is_standard() {
        // CMPQ SP, 0x10(R14); JBE +0x8a; PUSHQ BP
        let small = [0x49, 0x3b, 0x66, 0x10, 0x0f, 0x86, 0x8a, 0, 0, 0, 0x55];
        assert_eq!(entry_probe_point(&small, 0x1000), 0x1004);
        // LEAQ -0x118(SP), R12; CMPQ R12, 0x10(R14); JBE +0x10
        let large = [
            0x4c, 0x8d, 0xa4, 0x24, 0xe8, 0xfe, 0xff, 0xff, 0x4d, 0x3b, 0x66, 0x10, 0x76, 0x10,
        ];
        assert_eq!(entry_probe_point(&large, 0x2000), 0x200c);
        // PUSHQ BP; MOVQ SP, BP: no stack check, probe the first instruction.
        assert_eq!(entry_probe_point(&[0x55, 0x48, 0x89, 0xe5], 0x3000), 0x3000);
        // A JBE after a compare of something else is not the stack check.
        let other = [0x48, 0x39, 0xc3, 0x76, 0x10];
        assert_eq!(entry_probe_point(&other, 0x4000), 0x4000);
    }
}
