//! User side of the pod network program set (`probe-ebpf/src/c/podnet.bpf.c`):
//! attaches its two cgroup_skb programs at the cgroup2 root, keeps the
//! kernel's set of counted cgroups equal to the reported pods' containers,
//! and reads their counters.
//!
//! # Why the cgroup2 root, and why it coexists
//!
//! One attachment covers every pod, present and future: no attach/detach per
//! pod and no race with a container starting. aya attaches through a BPF
//! link on kernels ≥ 5.7 (`bpf_link_create` with no flags, aya's
//! `CgroupAttachMode::Single`); cgroup links always run next to other
//! programs attached to the same cgroup, so two probes on a node (one per
//! language) and other tools (Cilium, systemd's IP accounting) keep theirs.
//! Asking aya for `AllowMultiple` would pass `BPF_F_ALLOW_MULTI` to
//! `bpf_link_create`, which the kernel refuses (EINVAL): the PLATFORM.md
//! observation that only "single" mode attaches.
//!
//! The link is released when this value is dropped (the probe exits).

use std::collections::BTreeSet;
use std::path::Path;

use aya::maps::{MapData, PerCpuHashMap, PerCpuValues};
use aya::programs::{CgroupAttachMode, CgroupSkb, CgroupSkbAttachType};
use ferrotel_probe_ebpf::contract::{maps, podnet};
use ferrotel_probe_ebpf::views::NetCounters;

use super::ViewsError;
use crate::ebpf::{self, EbpfError, Kernel};

const SET: &str = "podnet";

/// The loaded, attached program set and its counters.
pub struct PodNet {
    // Owns the programs and their links: dropping it detaches them.
    _kernel: Kernel,
    traffic: PerCpuHashMap<MapData, u64, NetCounters>,
    watched: BTreeSet<u64>,
    cpus: usize,
}

impl std::fmt::Debug for PodNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodNet")
            .field("watched", &self.watched.len())
            .finish_non_exhaustive()
    }
}

impl PodNet {
    /// Loads the set and attaches it to the cgroup2 hierarchy at
    /// `cgroup2_root` (the mount point, from mountinfo).
    pub fn start(cgroup2_root: &Path) -> Result<Self, ViewsError> {
        let mut kernel = ebpf::load_maps_only(SET, ferrotel_probe_ebpf::PODNET)?;
        let root = std::fs::File::open(cgroup2_root).map_err(|source| ViewsError::CgroupRoot {
            path: cgroup2_root.to_owned(),
            source,
        })?;
        for (name, attach_type) in [
            (podnet::INGRESS, CgroupSkbAttachType::Ingress),
            (podnet::EGRESS, CgroupSkbAttachType::Egress),
        ] {
            let attach_err = |source| EbpfError::Attach {
                set: SET,
                name: name.to_owned(),
                target: format!("cgroup {}", cgroup2_root.display()),
                source,
            };
            let program: &mut CgroupSkb = kernel.program(name, "cgroup_skb")?;
            program.load().map_err(attach_err)?;
            program
                .attach(&root, attach_type, CgroupAttachMode::Single)
                .map_err(attach_err)?;
        }
        let traffic = kernel.take_map(maps::CGROUP_TRAFFIC)?;
        let cpus = aya::util::nr_cpus().map_err(|(_, source)| ViewsError::Cpus(source))?;
        Ok(Self {
            _kernel: kernel,
            traffic,
            watched: BTreeSet::new(),
            cpus: cpus.get() as usize,
        })
    }

    /// Makes the counted cgroups exactly `ids`: new ones start at zero,
    /// gone ones are removed (their counts with them). Returns how many
    /// could not be added (the map is full).
    pub fn watch(&mut self, ids: &BTreeSet<u64>) -> usize {
        let gone: Vec<u64> = self.watched.difference(ids).copied().collect();
        for id in gone {
            let _ = self.traffic.remove(&id);
            self.watched.remove(&id);
        }
        let mut refused = 0;
        for id in ids.difference(&self.watched.clone()) {
            let zeros = PerCpuValues::try_from(vec![NetCounters::default(); self.cpus])
                .expect("one value per possible CPU");
            // NOEXIST: an entry left by an earlier run of this map cannot
            // exist (the map is ours), but never reset live counts.
            match self.traffic.insert(id, zeros, 1 /* BPF_NOEXIST */) {
                Ok(()) => {
                    self.watched.insert(*id);
                }
                Err(_) => refused += 1,
            }
        }
        refused
    }

    /// The counters of cgroup `id`, summed over CPUs (`None` if not watched).
    pub fn read(&self, id: u64) -> Option<NetCounters> {
        let values = self.traffic.get(&id, 0).ok()?;
        Some(values.iter().fold(NetCounters::default(), |mut sum, v| {
            sum.rx_bytes += v.rx_bytes;
            sum.rx_packets += v.rx_packets;
            sum.tx_bytes += v.tx_bytes;
            sum.tx_packets += v.tx_packets;
            sum
        }))
    }
}
