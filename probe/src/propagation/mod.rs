//! Whole traces across services without an SDK: carrying trace context out
//! of traced clients, and joining what cannot be carried.
//!
//! A language set (the Go uprobes, the socket-level set) sees each server
//! request start and each client call, so it knows which span a call is
//! made for. What it cannot do on a kernel in lockdown is write that into
//! the outgoing request: `bpf_probe_write_user` is refused. This module adds
//! a second, small program set next to it ([`ferrotel_probe_ebpf::PROPAGATION`]):
//!
//! ```text
//! sockops (on each traced container's cgroup v2 dir)
//!   ACTIVE_ESTABLISHED -> the new TCP client socket goes into a sockhash
//! sk_msg (on that sockhash), inside each send:
//!   a request head starts here? -> the span it goes out for (prop_threads,
//!   filled by the language set at request start / Go's (*Request).write)
//!     inject: traceparent / b3 / tracestate / baggage after the request line
//!     join:   publish it under the client's address for a server on this node
//!   -> a record for user space (which span, which connection)
//! ```
//!
//! The context must be in the kernel *before* the send: user space sees
//! requests only after the ring buffer's batched wake-up, long after the
//! application made its calls. So the language sets decide span identity
//! in the kernel at request start (the Go set always did; the socket-level
//! set does when propagation is on, and tells user space the ids it chose).
//!
//! The propagation object needs `CAP_NET_ADMIN` (a sockhash) and a cgroup v2
//! directory per container (sockops attach to cgroups), and the kernel's
//! `sk_msg` helpers. Where any is missing, [`Injector::load`] or
//! [`Injector::add`] refuses — logged with the reason and counted in
//! `ferrotel_probe_propagation_refused_total{reason}` — and tracing goes on
//! without propagation. The design, limits and measured costs are in
//! `docs/propagation.md`.

pub use ferrotel_parse::propagation::events;
mod injector;
pub mod pairing;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ferrotel_api::probe_config::{PropagationConfig, Propagator};
use ferrotel_probe_ebpf::contract::{globals, maps, propagation as contract};
use ferrotel_probe_ebpf::propagation::format;

use tracing::warn;

use crate::driver::Housekeeping;
use crate::ebpf::{Global, Tuning};
use crate::health::PropagationMetric;
use crate::telemetry::sampling::Sampler;

pub use injector::{Cgroup2, Injector, PropagationError};

/// The node-wide join map's name in the pin directory
/// ([`PropagationConfig::pin_dir`]): every probe on the node (one per
/// language) reuses it there, so a Python client and a Go server meet.
pub const JOINS_PIN: &str = "prop_joins";

/// Where, under the pin directory, a probe pins the maps its propagation
/// object must share with its language set, for the few milliseconds
/// between loading the two (`share/<pid>-<n>/`): aya reuses a map only
/// through a pin.
pub const SHARE_DIR: &str = "share";

/// `statfs` magic of a BPF filesystem.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Whether `path` is on a BPF filesystem (where maps can be pinned).
pub fn is_bpffs(path: &std::path::Path) -> bool {
    rustix::fs::statfs(path).is_ok_and(|fs| fs.f_type == BPF_FS_MAGIC)
}

/// Whether a pin directory would be off the BPF filesystem. It may not exist
/// yet (it is created when the first map is pinned), so the nearest existing
/// ancestor decides; with none at all there is nothing to say yet.
pub fn pin_dir_off_bpffs(dir: &std::path::Path) -> bool {
    dir.ancestors()
        .find(|p| p.exists())
        .is_some_and(|existing| !is_bpffs(existing))
}

/// The language set a propagation object serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Served {
    /// The socket-level set: the sk_msg program assigns each request's
    /// client span (the thread's entry names the server span it serves) and
    /// reads the send's fd from the set's `inflight` map.
    Sockets,
    /// The Go set: the client span was assigned at `roundTrip` entry and
    /// handed to the writing thread.
    Go,
}

/// Propagation, resolved for one probe: what is on, the formats, and the
/// kernel's copy of the sampler.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub inject: bool,
    pub join: bool,
    /// `propagation::format` bits.
    pub formats: u32,
    pub sampling: crate::telemetry::sampling::KernelSampling,
    /// The pin directory ([`PropagationConfig::pin_dir`]).
    pub pin_dir: PathBuf,
    /// The node-wide join map ([`JOINS_PIN`] in the pin directory).
    pub joins_pin: PathBuf,
    /// This probe's private directory under [`SHARE_DIR`] (chosen when
    /// propagation is on).
    pub share_dir: PathBuf,
}

impl Settings {
    pub fn new(config: &PropagationConfig, propagators: &[Propagator], sampler: &Sampler) -> Self {
        let formats = Propagator::effective(propagators)
            .iter()
            .map(|p| match p {
                Propagator::Tracecontext => format::TRACECONTEXT,
                Propagator::Baggage => format::BAGGAGE,
                Propagator::B3 => format::B3,
            })
            .fold(0, |bits, bit| bits | bit);
        let pin_dir = PathBuf::from(
            config
                .pin_dir
                .as_deref()
                .unwrap_or(PropagationConfig::DEFAULT_PIN_DIR),
        );
        let share_dir = if config.enabled() {
            share_dir_for(&pin_dir.join(SHARE_DIR))
        } else {
            pin_dir.join(SHARE_DIR)
        };
        Self {
            inject: config.inject,
            join: config.join,
            formats,
            sampling: sampler.kernel_rule(),
            joins_pin: pin_dir.join(JOINS_PIN),
            pin_dir,
            share_dir,
        }
    }

    /// Propagation off (what a set gets when its config does not ask).
    pub fn off(sampler: &Sampler) -> Self {
        Self::new(&PropagationConfig::default(), &[], sampler)
    }

    /// Either half is on.
    pub fn enabled(&self) -> bool {
        self.inject || self.join
    }

    /// Why the maps cannot be pinned where the settings say, if so: the
    /// pin directory must be on a BPF filesystem.
    fn pin_problem(&self) -> Option<PropagationError> {
        pin_dir_off_bpffs(&self.pin_dir).then(|| PropagationError::NoBpffs {
            dir: self.pin_dir.clone(),
        })
    }

    /// The knobs every object with a propagation half gets.
    pub(crate) fn globals(&self) -> [(&'static str, Global); 6] {
        [
            (globals::PROP_INJECT, Global::U32(u32::from(self.inject))),
            (globals::PROP_JOIN, Global::U32(u32::from(self.join))),
            (globals::PROP_FORMATS, Global::U32(self.formats)),
            (globals::PROP_SAMPLE_ROOT, Global::U32(self.sampling.root)),
            (
                globals::PROP_SAMPLE_PARENT_BASED,
                Global::U32(u32::from(self.sampling.parent_based)),
            ),
            (
                globals::PROP_SAMPLE_THRESHOLD,
                Global::U64(self.sampling.threshold),
            ),
        ]
    }

    /// A language set's tuning with its propagation half: the knobs; when
    /// on, the maps the propagation object will reuse pinned in the share
    /// directory and the join map at [`Settings::joins_pin`]; when off,
    /// propagation's maps shrunk to one entry (LRU maps are preallocated).
    pub fn language_tuning(&self, mut tuning: Tuning, served: Served) -> Tuning {
        for (name, value) in self.globals() {
            tuning = tuning.with_global(name, value);
        }
        if !self.enabled() {
            for name in contract::LANGUAGE_MAPS {
                tuning = tuning.with_map_size(name, 1);
            }
            return tuning;
        }
        for name in shared_maps(served) {
            tuning = tuning.with_map_pin(name, self.share_dir.join(name));
        }
        if served != Served::Go {
            // Go client spans only (context.h declares it for every set).
            tuning = tuning.with_map_size(maps::PROP_GOROUTINES, 1);
        }
        if self.join {
            tuning = tuning.with_map_pin(maps::PROP_JOINS, self.joins_pin.clone());
        } else {
            tuning = tuning.with_map_size(maps::PROP_JOINS, 1);
        }
        tuning
    }
}

/// Propagation as a language set runs it: the settings, the propagation
/// object once loaded, and what was refused.
#[derive(Debug)]
pub struct Propagation {
    settings: Settings,
    served: Served,
    injector: Option<Injector>,
    /// Why propagation was turned off before loading (no BPF filesystem).
    unusable: Option<PropagationError>,
    refused: BTreeMap<&'static str, u64>,
}

impl Propagation {
    /// Propagation as `settings` ask, if the pin directory is usable; else
    /// off, refused at [`Propagation::start`] (the language set must load
    /// without the pins it would otherwise ask for).
    pub fn new(mut settings: Settings, served: Served) -> Self {
        let unusable = settings.enabled().then(|| settings.pin_problem()).flatten();
        if unusable.is_some() {
            settings.inject = false;
            settings.join = false;
        }
        Self {
            settings,
            served,
            injector: None,
            unusable,
            refused: BTreeMap::new(),
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The language set's tuning with its propagation half
    /// ([`Settings::language_tuning`]).
    pub fn tuning(&self, tuning: Tuning) -> Tuning {
        self.settings.language_tuning(tuning, self.served)
    }

    /// Loads the propagation object, once the language set is loaded. A
    /// node that cannot is refused (logged, counted): tracing goes on.
    pub fn start(&mut self, wakeup_bytes: u64) {
        let result = match self.unusable.take() {
            Some(error) => Err(error),
            None if !self.settings.enabled() => return,
            None => Injector::load(&self.settings, self.served, wakeup_bytes),
        };
        match result {
            Ok(injector) => self.injector = Some(injector),
            Err(error) => {
                let reason = error.reason();
                warn!(
                    reason,
                    error = format!("{:#}", anyhow::Error::new(error)),
                    "Propagation refused on this node: traces will not continue across services from here"
                );
                self.refuse(reason);
            }
        }
    }

    /// The propagation object is loaded and attached.
    pub fn is_active(&self) -> bool {
        self.injector.is_some()
    }

    /// Carries context for `pid`'s outgoing connections from now on. A
    /// refusal is logged and counted; the process is traced regardless.
    pub fn add(&mut self, pid: u32) {
        let Some(injector) = self.injector.as_mut() else {
            return;
        };
        if let Err(refusal) = injector.add(pid) {
            warn!(
                pid,
                reason = refusal.reason,
                error = format!("{:#}", refusal.error),
                "Propagation refused for process"
            );
            self.refuse(refusal.reason);
        }
    }

    pub fn remove(&mut self, pid: u32) {
        if let Some(injector) = self.injector.as_mut() {
            injector.remove(pid);
        }
    }

    /// A client record: a connection the kernel lets go of leaves the
    /// sockhash (see `propagation/inject.h` for why that matters).
    pub fn on_client(&mut self, ctx: &events::ClientContext) {
        if ctx.outcome.releases()
            && let Some(injector) = self.injector.as_mut()
        {
            injector.release(ctx.cookie);
        }
    }

    /// Reports the kernel's counts and the refusals.
    pub fn housekeeping(&self, tick: &mut Housekeeping<'_>) {
        for (reason, total) in &self.refused {
            tick.propagation_total(PropagationMetric::Refused, reason, *total);
        }
        let Some(injector) = &self.injector else {
            return;
        };
        let counts = injector.counts();
        for (outcome, total) in counts.outcomes {
            tick.propagation_total(PropagationMetric::Outcome, outcome, total);
        }
        for (origin, total) in counts.origins {
            tick.propagation_total(PropagationMetric::Origin, origin, total);
        }
        tick.propagation_cgroups(injector.cgroups());
    }

    fn refuse(&mut self, reason: &'static str) {
        *self.refused.entry(reason).or_insert(0) += 1;
    }
}

/// The language set's maps the propagation object reuses.
fn shared_maps(served: Served) -> Vec<&'static str> {
    let mut names = contract::SHARED_MAPS.to_vec();
    match served {
        Served::Sockets => names.push(maps::INFLIGHT),
        Served::Go => names.push(maps::PROP_GOROUTINES),
    }
    names
}

/// A directory of its own under `root` for this probe process; directories
/// left by probes that died between loading their two objects are removed
/// on the way (their pins would keep dead maps alive).
fn share_dir_for(root: &Path) -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let pid = std::process::id();
    if let Ok(entries) = std::fs::read_dir(root) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(owner) = name
                .to_str()
                .and_then(|n| n.split('-').next())
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            if owner != pid && !Path::new(&format!("/proc/{owner}")).exists() {
                remove_pins(&entry.path());
            }
        }
    }
    root.join(format!("{pid}-{}", NEXT.fetch_add(1, Ordering::Relaxed)))
}

/// Unpins every map in `dir` and removes it. The maps live on in the
/// objects that hold them.
pub(crate) fn remove_pins(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    let _ = std::fs::remove_dir(dir);
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrotel_api::probe_config::{SamplerConfig, SamplerType};

    fn sampler() -> Sampler {
        crate::config::sampler(&SamplerConfig::default())
    }

    #[test]
    fn an_empty_propagator_list_means_tracecontext_and_baggage() {
        let settings = Settings::off(&sampler());
        assert_eq!(settings.formats, format::TRACECONTEXT | format::BAGGAGE);
        let b3 = Settings::new(&PropagationConfig::default(), &[Propagator::B3], &sampler());
        assert_eq!(b3.formats, format::B3, "b3 alone writes and reads b3 only");
    }

    #[test]
    fn off_shrinks_propagation_maps_and_pins_nothing() {
        let tuning = Settings::off(&sampler())
            .language_tuning(Tuning::from_language(1 << 20, 512), Served::Sockets);
        assert!(tuning.map_pins.is_empty(), "no pins when off");
        for name in contract::LANGUAGE_MAPS {
            assert!(
                tuning.map_sizes.contains(&(name, 1)),
                "{name} must be shrunk when propagation is off"
            );
        }
        assert!(
            tuning
                .globals
                .contains(&(globals::PROP_INJECT, Global::U32(0))),
            "the kernel is told injection is off"
        );
    }

    #[test]
    fn on_pins_the_shared_maps_and_the_node_wide_join_map() {
        let config = PropagationConfig {
            inject: true,
            join: true,
            pin_dir: None,
        };
        let settings = Settings::new(&config, &[], &sampler());
        let tuning = settings.language_tuning(Tuning::from_language(1 << 20, 512), Served::Sockets);
        for name in shared_maps(Served::Sockets) {
            assert!(
                tuning
                    .map_pins
                    .contains(&(name, settings.share_dir.join(name))),
                "{name} must be shared with the propagation object"
            );
        }
        assert!(tuning.map_pins.contains(&(
            maps::PROP_JOINS,
            Path::new(PropagationConfig::DEFAULT_PIN_DIR).join(JOINS_PIN)
        )));
        assert!(
            !shared_maps(Served::Go).contains(&maps::INFLIGHT),
            "the Go set has no syscall map to share"
        );
        assert!(
            shared_maps(Served::Go).contains(&maps::PROP_GOROUTINES),
            "the sk_msg program takes Go client spans by goroutine"
        );
        assert!(
            tuning.map_sizes.contains(&(maps::PROP_GOROUTINES, 1)),
            "the socket-level set hands no spans to goroutines"
        );
    }

    #[test]
    fn the_kernel_samples_like_user_space() {
        let ratio = crate::config::sampler(&SamplerConfig {
            kind: SamplerType::ParentbasedTraceIdRatio,
            ratio: 0.25,
        });
        let rule = ratio.kernel_rule();
        assert_eq!((rule.root, rule.parent_based), (2, true));
        assert_eq!(rule.threshold, (0.25 * u64::MAX as f64) as u64);
        let never = crate::config::sampler(&SamplerConfig {
            kind: SamplerType::TraceIdRatio,
            ratio: 0.0,
        });
        assert_eq!(
            never.kernel_rule().root,
            0,
            "ratio 0 keeps nothing, as should_sample does"
        );
    }
}
