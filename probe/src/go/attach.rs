//! Attaching the Go program set to processes: per process, write its struct
//! offsets into `go_offsets`, then put one uprobe on each probed function's
//! entry and one on each of its RET instructions (never a uretprobe).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aya::maps::{HashMap as BpfHashMap, MapData};
use aya::programs::uprobe::{UProbeLinkId, UProbeScope};
use ferrotel_probe_ebpf::contract::propagation as propagation_programs;
use ferrotel_probe_ebpf::contract::{go as programs, maps};
use ferrotel_probe_ebpf::go::{GoOffsets, NO_OFFSET};
use tracing::{info, warn};

use super::binary::{AnalysisCache, AnalysisError, GoBinary, ProbeSite, feature_symbols, symbols};
use super::offsets::{Feature, OffsetsSource};
use crate::ebpf::{EbpfError, Kernel};

/// `(entry program, RET program)` of a probed function; a function probed
/// only at entry has no RET program.
fn programs_of(symbol: &str) -> (&'static str, Option<&'static str>) {
    use programs::*;
    match symbol {
        symbols::HTTP_SERVER => (HTTP_SERVER_START, Some(HTTP_SERVER_END)),
        symbols::HTTP_CLIENT => (HTTP_CLIENT_START, Some(HTTP_CLIENT_END)),
        symbols::GRPC_SERVER => (GRPC_SERVER_START, Some(GRPC_SERVER_END)),
        symbols::GRPC_STATUS => (GRPC_SERVER_STATUS, None),
        symbols::GRPC_CLIENT => (GRPC_CLIENT_START, Some(GRPC_CLIENT_END)),
        symbols::GRPC_NEW_STREAM => (GRPC_STREAM_START, Some(GRPC_STREAM_OPENED)),
        symbols::GRPC_STREAM_FINISH => (GRPC_STREAM_END, None),
        symbols::GRPC_HEADERS => (GRPC_SERVER_HEADERS, None),
        symbols::HTTP_CLIENT_CONN => (HTTP_CLIENT_CONN, None),
        symbols::PROP_REQUEST_WRITE => (propagation_programs::GO_REQUEST_WRITE, None),
        symbols::GRPC_HEADER_FIELDS => (
            GRPC_CLIENT_CONN,
            Some(propagation_programs::GO_GRPC_FIELDS_END),
        ),
        symbols::PROP_GRPC_HEADER => (propagation_programs::GO_GRPC_HEADER, None),
        _ => (NEWPROC_START, Some(NEWPROC_END)),
    }
}

/// Why a process was not (fully) instrumented.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error(transparent)]
    Analysis(#[from] AnalysisError),
    #[error(
        "executable {path} has none of the probed functions (net/http server/client, gRPC server/client)"
    )]
    NothingToProbe { path: PathBuf },
    #[error(
        "executable {path} has only {found:?}, which the tuning turned off (go.http / go.grpc)"
    )]
    Disabled {
        path: PathBuf,
        found: Vec<&'static str>,
    },
    #[error("pid {pid} is 0 or was already attached")]
    BadPid { pid: u32 },
    /// Boxed: aya's errors are large, and this travels through every attach.
    #[error(transparent)]
    Ebpf(#[from] Box<EbpfError>),
}

impl AttachError {
    /// Bounded label for the refusal metric and logs.
    pub fn category(&self) -> &'static str {
        match self {
            AttachError::Analysis(e) => e.category(),
            AttachError::NothingToProbe { .. } => "nothing_to_probe",
            AttachError::Disabled { .. } => "disabled",
            AttachError::BadPid { .. } => "bad_pid",
            AttachError::Ebpf(_) => "attach_failed",
        }
    }
}

/// What one process got.
#[derive(Debug)]
pub struct Attached {
    pub binary: Arc<GoBinary>,
    /// Features attached, and the reasons for those refused.
    pub features: BTreeMap<Feature, Result<(), String>>,
    links: Vec<(&'static str, UProbeLinkId)>,
}

impl Attached {
    pub fn uprobe_count(&self) -> usize {
        self.links.len()
    }
}

/// The processes the Go program set is attached to, and the map of their
/// struct offsets.
#[derive(Debug)]
pub struct GoProbes {
    offsets: BpfHashMap<MapData, u32, GoOffsets>,
    cache: Arc<AnalysisCache>,
    /// Features the tuning allows (`go.http`, `go.grpc`).
    enabled: BTreeSet<Feature>,
    /// Attach the uprobes that hand net/http client spans to the thread
    /// that writes their request (propagation on).
    propagation: bool,
    /// Attach the uprobes that publish gRPC client streams for same-node
    /// joins (propagation on, joining on).
    grpc_join: bool,
    attached: HashMap<u32, Attached>,
}

impl GoProbes {
    /// Loads (verifies) every program of the set and takes `go_offsets`.
    /// Only the `enabled` features are ever attached.
    pub fn new(
        kernel: &mut Kernel,
        cache: Arc<AnalysisCache>,
        enabled: BTreeSet<Feature>,
    ) -> Result<Self, Box<EbpfError>> {
        kernel.load_uprobes(&programs::PROGRAMS)?;
        Ok(Self {
            offsets: kernel.take_map(maps::GO_OFFSETS)?,
            cache,
            enabled,
            propagation: false,
            grpc_join: false,
            attached: HashMap::new(),
        })
    }

    /// Whether processes attached from now on get propagation's uprobes.
    pub fn set_propagation(&mut self, on: bool) {
        self.propagation = on;
    }

    /// Whether processes attached from now on get the gRPC client's join
    /// uprobes (only with propagation on).
    pub fn set_grpc_join(&mut self, on: bool) {
        self.grpc_join = on;
    }

    pub fn attached_count(&self) -> usize {
        self.attached.len()
    }

    /// The attached processes.
    pub fn pids(&self) -> Vec<u32> {
        self.attached.keys().copied().collect()
    }

    pub fn is_attached(&self, pid: u32) -> bool {
        self.attached.contains_key(&pid)
    }

    /// Instruments process `pid` through `/proc/<pid>/exe`, which names the
    /// inode the process runs even after its file was replaced on disk.
    /// `binary` is the analysis of that file (see [`AnalysisCache::get`]).
    pub fn attach(
        &mut self,
        kernel: &mut Kernel,
        pid: u32,
        binary: Arc<GoBinary>,
    ) -> Result<&Attached, AttachError> {
        let Some(nz_pid) = NonZeroU32::new(pid).filter(|_| !self.attached.contains_key(&pid))
        else {
            return Err(AttachError::BadPid { pid });
        };
        let exe = PathBuf::from(format!("/proc/{pid}/exe"));
        let found: Vec<Feature> = binary.attachable().collect();
        let features: Vec<Feature> = found
            .iter()
            .copied()
            .filter(|f| self.enabled.contains(f))
            .collect();
        if found.is_empty() {
            return Err(AttachError::NothingToProbe { path: exe });
        }
        if features.is_empty() {
            return Err(AttachError::Disabled {
                path: exe,
                found: found.iter().map(|f| f.as_str()).collect(),
            });
        }
        self.offsets
            .insert(&pid, &binary.offsets, 0)
            .map_err(|source| {
                Box::new(EbpfError::Map {
                    set: kernel.set(),
                    name: maps::GO_OFFSETS,
                    source,
                })
            })?;

        let mut sites: Vec<&ProbeSite> = features
            .iter()
            .flat_map(|f| feature_symbols(*f))
            .filter_map(|s| binary.sites.get(s))
            .collect();
        // Streaming client calls, where the binary has both ends of them.
        if features.contains(&Feature::GrpcClient)
            && let (Some(open), Some(finish)) = (
                binary.sites.get(symbols::GRPC_NEW_STREAM),
                binary.sites.get(symbols::GRPC_STREAM_FINISH),
            )
        {
            sites.extend([open, finish]);
        }
        // Incoming traceparent of gRPC server calls, where the binary has
        // the header function and its offsets (the program checks them all;
        // without them server spans start new traces).
        if features.contains(&Feature::GrpcServer)
            && binary.offsets.hpack_field_size != NO_OFFSET
            && let Some(headers) = binary.sites.get(symbols::GRPC_HEADERS)
        {
            sites.push(headers);
        }
        // The connection of each net/http client request, which pairs its
        // span with the server's on the node; with propagation on, the same
        // probe hands the span to the thread that writes the request, and
        // that write is probed too, for the sk_msg program
        // (propagation/go.h). Entry probes only.
        if features.contains(&Feature::HttpClient) {
            let o = &binary.offsets;
            let connections = [
                o.persist_conn_conn,
                o.net_conn_fd,
                o.net_fd_laddr,
                o.net_fd_raddr,
                o.tcp_addr_ip,
                o.tcp_addr_port,
            ]
            .iter()
            .all(|offset| *offset != NO_OFFSET);
            if (connections || self.propagation)
                && let Some(site) = binary.sites.get(symbols::HTTP_CLIENT_CONN)
            {
                sites.push(site);
            }
            if self.propagation
                && let Some(site) = binary.sites.get(symbols::PROP_REQUEST_WRITE)
            {
                sites.push(site);
            }
        }
        // gRPC client calls' connections, which pair their spans with their
        // servers' on the node: createHeaderFields' entry. With same-node
        // joins on, its RETs and the writer's headerHandler too: each
        // stream's span is published under (connection, stream id) before
        // its HEADERS frame is written (propagation/go.h). Both functions
        // and the offsets the programs read, or no join.
        let o = &binary.offsets;
        let known = |offsets: &[u32]| offsets.iter().all(|offset| *offset != NO_OFFSET);
        let join_symbols = [symbols::GRPC_HEADER_FIELDS, symbols::PROP_GRPC_HEADER];
        let mut entry_only: Vec<&ProbeSite> = Vec::new();
        if features.contains(&Feature::GrpcClient)
            && known(&[o.grpc_client_local_addr, o.tcp_addr_ip, o.tcp_addr_port])
        {
            let join = self.propagation
                && self.grpc_join
                && known(&[o.grpc_header_stream_id, o.grpc_header_fields])
                && join_symbols.iter().all(|s| binary.sites.contains_key(s));
            if join {
                sites.extend(join_symbols.iter().filter_map(|s| binary.sites.get(s)));
            } else if o.grpc_client_remote_addr != NO_OFFSET
                && let Some(site) = binary.sites.get(symbols::GRPC_HEADER_FIELDS)
            {
                entry_only.push(site);
            }
        }
        // Context propagation to spawned goroutines; without it client
        // calls from spawned goroutines start their own traces. One probe
        // at the runqput call where the new g knows its parent (Go >= 1.21),
        // else newproc1's entry and RETs.
        let spawn_call = binary
            .spawn_call
            .filter(|_| binary.offsets.g_parent_goid != NO_OFFSET);
        if spawn_call.is_none() {
            match binary.sites.get(symbols::NEWPROC) {
                Some(site) => sites.push(site),
                None => warn!(
                    pid,
                    "Go binary has no runtime.newproc1; spawned goroutines will not inherit spans"
                ),
            }
        }

        let mut links = Vec::new();
        if let Some(offset) = spawn_call {
            match attach_at(kernel, programs::NEWPROC_SPAWN, offset, &exe, nz_pid) {
                Ok(link) => links.push((programs::NEWPROC_SPAWN, link)),
                Err(error) => {
                    let _ = self.offsets.remove(&pid);
                    return Err(error.into());
                }
            }
        }
        let sites = sites
            .into_iter()
            .map(|site| (site, true))
            .chain(entry_only.into_iter().map(|site| (site, false)));
        for (site, with_ret) in sites {
            let (entry_program, ret_program) = programs_of(site.symbol);
            let ret_program = ret_program.filter(|_| with_ret);
            let result =
                attach_at(kernel, entry_program, site.entry, &exe, nz_pid).and_then(|link| {
                    links.push((entry_program, link));
                    if let Some(ret_program) = ret_program {
                        for ret in &site.exits {
                            links.push((
                                ret_program,
                                attach_at(kernel, ret_program, *ret, &exe, nz_pid)?,
                            ));
                        }
                    }
                    Ok(())
                });
            if let Err(error) = result {
                detach_links(kernel, &mut links);
                let _ = self.offsets.remove(&pid);
                return Err(error.into());
            }
        }
        let source = match &binary.offsets_source {
            OffsetsSource::Dwarf => "dwarf".to_owned(),
            OffsetsSource::Table { entries } => format!("table({})", entries.join(", ")),
        };
        info!(
            pid,
            go = %binary.build.go_version,
            offsets = %source,
            features = ?features.iter().map(|f| f.as_str()).collect::<Vec<_>>(),
            uprobes = links.len(),
            "Attached Go probes"
        );
        let attached = Attached {
            features: binary.features.clone(),
            binary,
            links,
        };
        Ok(self.attached.entry(pid).or_insert(attached))
    }

    /// Removes the probes of `pid` (it exited or stopped matching).
    pub fn detach(&mut self, kernel: &mut Kernel, pid: u32) -> bool {
        let Some(mut attached) = self.attached.remove(&pid) else {
            return false;
        };
        detach_links(kernel, &mut attached.links);
        let _ = self.offsets.remove(&pid);
        info!(pid, "Detached Go probes");
        true
    }

    pub fn cache(&self) -> &Arc<AnalysisCache> {
        &self.cache
    }
}

fn attach_at(
    kernel: &mut Kernel,
    program: &'static str,
    offset: u64,
    exe: &Path,
    pid: NonZeroU32,
) -> Result<UProbeLinkId, Box<EbpfError>> {
    kernel.attach_uprobe(program, offset, exe, UProbeScope::OneProcess(pid))
}

fn detach_links(kernel: &mut Kernel, links: &mut Vec<(&'static str, UProbeLinkId)>) {
    kernel.detach_uprobes(links);
}
