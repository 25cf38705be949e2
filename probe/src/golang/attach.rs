//! Attaching the Go program set to processes: per process, write its struct
//! offsets into `go_offsets`, then put one uprobe on each probed function's
//! entry and one on each of its RET instructions (never a uretprobe).

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aya::Ebpf;
use aya::maps::{HashMap as BpfHashMap, MapData};
use aya::programs::UProbe;
use aya::programs::uprobe::{UProbeAttachLocation, UProbeLinkId, UProbeScope};
use ferrotel_probe_ebpf::go::{GoOffsets, NO_OFFSET};
use tracing::{info, warn};

use super::binary::{AnalysisCache, AnalysisError, GoBinary, ProbeSite, feature_symbols, symbols};
use super::offsets::{Feature, OffsetsSource};
use crate::ebpf::EbpfError;

const SET: &str = "go";

/// Every program of `go.bpf.c`.
pub const PROGRAMS: [&str; 16] = [
    "ft_go_http_server_start",
    "ft_go_http_server_end",
    "ft_go_http_client_start",
    "ft_go_http_client_end",
    "ft_go_grpc_server_start",
    "ft_go_grpc_server_status",
    "ft_go_grpc_server_end",
    "ft_go_grpc_client_start",
    "ft_go_grpc_client_end",
    "ft_go_newproc_start",
    "ft_go_newproc_end",
    "ft_go_newproc_spawn",
    "ft_go_grpc_stream_start",
    "ft_go_grpc_stream_opened",
    "ft_go_grpc_stream_end",
    "ft_go_grpc_server_headers",
];

/// `(entry program, RET program)` of a probed function; a function probed
/// only at entry has no RET program.
fn programs_of(symbol: &str) -> (&'static str, Option<&'static str>) {
    match symbol {
        symbols::HTTP_SERVER => ("ft_go_http_server_start", Some("ft_go_http_server_end")),
        symbols::HTTP_CLIENT => ("ft_go_http_client_start", Some("ft_go_http_client_end")),
        symbols::GRPC_SERVER => ("ft_go_grpc_server_start", Some("ft_go_grpc_server_end")),
        symbols::GRPC_STATUS => ("ft_go_grpc_server_status", None),
        symbols::GRPC_CLIENT => ("ft_go_grpc_client_start", Some("ft_go_grpc_client_end")),
        symbols::GRPC_NEW_STREAM => ("ft_go_grpc_stream_start", Some("ft_go_grpc_stream_opened")),
        symbols::GRPC_STREAM_FINISH => ("ft_go_grpc_stream_end", None),
        symbols::GRPC_HEADERS => ("ft_go_grpc_server_headers", None),
        _ => ("ft_go_newproc_start", Some("ft_go_newproc_end")),
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

/// The loaded Go program set and the processes it is attached to.
#[derive(Debug)]
pub struct GoProbes {
    ebpf: Ebpf,
    offsets: BpfHashMap<MapData, u32, GoOffsets>,
    cache: Arc<AnalysisCache>,
    attached: HashMap<u32, Attached>,
}

impl GoProbes {
    /// Loads (verifies) every program of the set; `ebpf` comes from
    /// [`crate::ebpf::load`] with the `events` map already taken.
    pub fn new(mut ebpf: Ebpf, cache: Arc<AnalysisCache>) -> Result<Self, Box<EbpfError>> {
        for name in PROGRAMS {
            let program: &mut UProbe = ebpf
                .program_mut(name)
                .ok_or_else(|| EbpfError::MissingProgram {
                    set: SET,
                    name: name.to_owned(),
                })?
                .try_into()
                .map_err(|_| EbpfError::WrongProgramType {
                    set: SET,
                    name: name.to_owned(),
                    expected: "uprobe",
                })?;
            program.load().map_err(|source| EbpfError::Attach {
                set: SET,
                name: name.to_owned(),
                target: "load".to_owned(),
                source,
            })?;
        }
        let map = ebpf.take_map("go_offsets").ok_or(EbpfError::MissingMap {
            set: SET,
            name: "go_offsets",
        })?;
        let offsets = BpfHashMap::try_from(map).map_err(|source| EbpfError::Map {
            set: SET,
            name: "go_offsets",
            source,
        })?;
        Ok(Self {
            ebpf,
            offsets,
            cache,
            attached: HashMap::new(),
        })
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
    pub fn attach(&mut self, pid: u32, binary: Arc<GoBinary>) -> Result<&Attached, AttachError> {
        let Some(nz_pid) = NonZeroU32::new(pid).filter(|_| !self.attached.contains_key(&pid))
        else {
            return Err(AttachError::BadPid { pid });
        };
        let exe = PathBuf::from(format!("/proc/{pid}/exe"));
        let features: Vec<Feature> = binary.attachable().collect();
        if features.is_empty() {
            return Err(AttachError::NothingToProbe { path: exe });
        }
        self.offsets
            .insert(pid, binary.offsets, 0)
            .map_err(|source| {
                Box::new(EbpfError::Map {
                    set: SET,
                    name: "go_offsets",
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
            match self.attach_at("ft_go_newproc_spawn", offset, &exe, nz_pid) {
                Ok(link) => links.push(("ft_go_newproc_spawn", link)),
                Err(error) => {
                    let _ = self.offsets.remove(&pid);
                    return Err(error.into());
                }
            }
        }
        for site in sites {
            let (entry_program, ret_program) = programs_of(site.symbol);
            let result = self
                .attach_at(entry_program, site.entry, &exe, nz_pid)
                .and_then(|link| {
                    links.push((entry_program, link));
                    if let Some(ret_program) = ret_program {
                        for ret in &site.exits {
                            links.push((
                                ret_program,
                                self.attach_at(ret_program, *ret, &exe, nz_pid)?,
                            ));
                        }
                    }
                    Ok(())
                });
            if let Err(error) = result {
                self.detach_links(&mut links);
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

    fn attach_at(
        &mut self,
        program: &'static str,
        offset: u64,
        exe: &Path,
        pid: NonZeroU32,
    ) -> Result<UProbeLinkId, Box<EbpfError>> {
        let uprobe: &mut UProbe = self
            .ebpf
            .program_mut(program)
            .ok_or_else(|| EbpfError::MissingProgram {
                set: SET,
                name: program.to_owned(),
            })?
            .try_into()
            .map_err(|_| EbpfError::WrongProgramType {
                set: SET,
                name: program.to_owned(),
                expected: "uprobe",
            })?;
        uprobe
            .attach(
                UProbeAttachLocation::AbsoluteOffset(offset),
                exe,
                UProbeScope::OneProcess(pid),
            )
            .map_err(|source| {
                Box::new(EbpfError::Attach {
                    set: SET,
                    name: program.to_owned(),
                    target: format!("{}+{offset:#x}", exe.display()),
                    source,
                })
            })
    }

    fn detach_links(&mut self, links: &mut Vec<(&'static str, UProbeLinkId)>) {
        for (program, link) in links.drain(..) {
            if let Some(Ok(uprobe)) = self.ebpf.program_mut(program).map(<&mut UProbe>::try_from) {
                let _ = uprobe.detach(link);
            }
        }
    }

    /// Removes the probes of `pid` (it exited or stopped matching).
    pub fn detach(&mut self, pid: u32) -> bool {
        let Some(mut attached) = self.attached.remove(&pid) else {
            return false;
        };
        self.detach_links(&mut attached.links);
        let _ = self.offsets.remove(&pid);
        info!(pid, "Detached Go probes");
        true
    }

    pub fn cache(&self) -> &Arc<AnalysisCache> {
        &self.cache
    }
}
