//! The Go program set under the [driver](crate::driver): uprobes attached
//! per process after analysing its executable off the event loop.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::Notify;

use ferrotel_api::probe_config::LanguageTuning;

use super::attach::GoProbes;
use super::binary::{AnalysisCache, AnalysisError, GoBinary};
use super::events;
use super::offsets::Feature;
use crate::analysis::{Analysed, Analyzer, DEFAULT_MAX_PENDING, Failure};
use crate::driver::{Adding, DecodeError, Housekeeping, ProgramSet, Refusal};
use crate::ebpf::{EbpfError, Kernel, Tuning};
use crate::propagation::events::PropagationEvent;
use crate::propagation::pairing::Pairings;
use crate::propagation::{self, Propagation, Served};
use crate::targets::ProcessTarget;
use crate::telemetry::RequestRecord;
use crate::telemetry::record::SpanKind;
use crate::telemetry::sampling::Sampler;

/// `--language go`.
#[derive(Debug)]
pub struct GoSet {
    tuning: Tuning,
    /// Features `go.http` and `go.grpc` allow.
    enabled: BTreeSet<Feature>,
    sampler: Sampler,
    cache: Arc<AnalysisCache>,
    /// Executables being analysed, by pid: one at a time, off the loop, so
    /// the ring is drained while a large binary is read.
    analyses: Analyzer<u32, Arc<GoBinary>, AnalysisError>,
    /// Outcomes of finished attaches, for the driver's `take_added`.
    added: Vec<(u32, Result<(), Refusal>)>,
    /// Set by `attach`.
    probes: Option<GoProbes>,
    propagation: Propagation,
    /// Connections of recent client spans (from propagation's records):
    /// Go client spans get their addresses from here.
    pairings: Pairings,
}

impl GoSet {
    /// The set as `tuning` (the config's `go` section) asks for it; span
    /// sampling decisions come from `sampler`; no propagation.
    pub fn new(tuning: &LanguageTuning, sampler: Sampler) -> Self {
        let off = propagation::Settings::off(&sampler);
        Self::with_propagation(tuning, sampler, off)
    }

    /// The set with trace-context propagation as `propagation` says.
    pub fn with_propagation(
        tuning: &LanguageTuning,
        sampler: Sampler,
        propagation: propagation::Settings,
    ) -> Self {
        // Every knob, named: a new one does not compile until it is used.
        let LanguageTuning {
            http,
            grpc,
            ring_buffer_bytes,
            max_payload_bytes,
        } = *tuning;
        let enabled = Feature::ALL
            .into_iter()
            .filter(|feature| match feature {
                Feature::HttpServer | Feature::HttpClient => http,
                Feature::GrpcServer | Feature::GrpcClient => grpc,
            })
            .collect();
        Self {
            tuning: Tuning::from_language(ring_buffer_bytes, max_payload_bytes),
            enabled,
            sampler,
            cache: Arc::default(),
            analyses: Analyzer::new(DEFAULT_MAX_PENDING),
            added: Vec::new(),
            probes: None,
            propagation: Propagation::new(propagation, Served::Go),
            pairings: Pairings::default(),
        }
    }

    /// Attaches to `pid` from its executable's analysis.
    fn attach_analysed(
        &mut self,
        kernel: &mut Kernel,
        pid: u32,
        analysis: Result<Arc<GoBinary>, Failure<AnalysisError>>,
    ) -> Result<(), Refusal> {
        let binary = analysis.map_err(|failure| match failure {
            Failure::Failed(error) => Refusal::new(error.category(), error),
            Failure::Panicked(message) => Refusal::new(
                "analysis_failed",
                anyhow::anyhow!("analysing /proc/{pid}/exe panicked: {message}"),
            ),
        })?;
        self.probes()
            .attach(kernel, pid, binary)
            .map_err(|error| Refusal::new(error.category(), error))?;
        if self.propagation.is_active() {
            // The sk_msg program recognises traced processes by their claim.
            crate::driver::claim(kernel, pid, false)?;
            self.propagation.add(pid);
        }
        Ok(())
    }

    fn probes(&mut self) -> &mut GoProbes {
        self.probes
            .as_mut()
            .expect("the driver attaches a set before it adds targets")
    }
}

impl ProgramSet for GoSet {
    type Output = RequestRecord;

    fn name(&self) -> &'static str {
        "go"
    }

    fn object(&self) -> &'static [u8] {
        ferrotel_probe_ebpf::GO
    }

    fn tuning(&self) -> Tuning {
        self.propagation.tuning(self.tuning.clone())
    }

    fn attach(&mut self, kernel: &mut Kernel) -> Result<(), EbpfError> {
        // Uprobes attach per process; here they are only verified.
        let mut probes = GoProbes::new(kernel, self.cache.clone(), self.enabled.clone())
            .map_err(|error| *error)?;
        kernel.attach_btf_tracepoint(
            ferrotel_probe_ebpf::contract::go::EXIT,
            ferrotel_probe_ebpf::contract::go::EXIT_TRACEPOINT,
        )?;
        self.propagation.start(self.tuning.wakeup_bytes);
        // The uprobes that hand client spans to the writing thread cost two
        // traps per request: only when the sk_msg program is there.
        probes.set_propagation(self.propagation.is_active());
        // gRPC client streams are published for a server on this node only
        // when joining is on (three traps per call).
        probes.set_grpc_join(self.propagation.is_active() && self.propagation.settings().join);
        if self.propagation.is_active() {
            // The sk_msg program recognises traced processes by their claim.
            kernel.claims()?;
        }
        self.probes = Some(probes);
        Ok(())
    }

    async fn add_target(
        &mut self,
        _kernel: &mut Kernel,
        target: &ProcessTarget,
    ) -> Result<Adding, Refusal> {
        let pid = target.pid;
        let cache = self.cache.clone();
        let exe = PathBuf::from(format!("/proc/{pid}/exe"));
        // DWARF and symbol tables can take a while: off the event loop's
        // thread (the ring is drained meanwhile), and a panic in the
        // analysis costs this target only. `settle` attaches.
        self.analyses
            .submit(pid, move || cache.get(&exe))
            .map_err(|busy| Refusal::new("analysis_busy", busy))?;
        Ok(Adding::Pending)
    }

    fn settle(&mut self, kernel: &mut Kernel) {
        while let Some(Analysed { key: pid, outcome }) = self.analyses.try_next() {
            let attached = self.attach_analysed(kernel, pid, outcome);
            self.added.push((pid, attached));
        }
    }

    fn background(&self) -> Option<Arc<Notify>> {
        Some(self.analyses.wakeup())
    }

    fn background_pending(&self) -> usize {
        self.analyses.pending()
    }

    fn take_added(&mut self) -> Vec<(u32, Result<(), Refusal>)> {
        std::mem::take(&mut self.added)
    }

    fn remove_target(&mut self, kernel: &mut Kernel, pid: u32) {
        // An analysis under way, or an outcome not handed over yet, belongs
        // to the process that left (its pid may come back as another).
        self.analyses.cancel(&pid);
        self.added.retain(|(added, _)| *added != pid);
        self.probes().detach(kernel, pid);
        if self.propagation.is_active() {
            if let Ok(claims) = kernel.claims() {
                claims.release(pid);
            }
            self.propagation.remove(pid);
        }
    }

    fn decode(&mut self, record: &[u8], out: &mut Vec<RequestRecord>) -> Result<(), DecodeError> {
        if let Some(event) = propagation::events::decode(record) {
            if let PropagationEvent::Client(ctx) = event.map_err(DecodeError::new)? {
                self.propagation.on_client(&ctx);
                self.pairings.record(&ctx);
            }
            return Ok(());
        }
        let mut record = events::decode(record, &self.sampler).map_err(DecodeError::new)?;
        if record.kind == SpanKind::Client
            && record.local.is_none()
            && let Some(end) = self.pairings.connection_of(record.span.span_id)
        {
            record.local = Some(end.local);
            record.peer = end.peer;
        }
        out.push(record);
        Ok(())
    }

    fn housekeeping(
        &mut self,
        _kernel: &mut Kernel,
        tick: &mut Housekeeping<'_>,
        _out: &mut Vec<RequestRecord>,
    ) {
        self.propagation.housekeeping(tick);
    }

    fn attached(&self, _kernel: &Kernel, _targets: &BTreeSet<u32>) -> usize {
        self.probes.as_ref().map_or(0, GoProbes::attached_count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrotel_probe_ebpf::contract::globals;

    use crate::ebpf::Global;

    #[test]
    fn every_go_knob_reaches_the_load_or_the_attach() {
        let tuning = LanguageTuning {
            http: false,
            grpc: true,
            ring_buffer_bytes: 1 << 16,
            max_payload_bytes: 100,
        };
        let set = GoSet::new(&tuning, Sampler::default());
        let load = set.tuning();
        assert_eq!(load.ring_buffer_bytes, 1 << 16);
        // The language knob, then propagation's, all off (its maps shrunk).
        let mut expected = vec![(globals::MAX_PAYLOAD_BYTES, Global::U32(100))];
        expected.extend(propagation::Settings::off(&Sampler::default()).globals());
        assert_eq!(load.globals, expected);
        assert!(
            load.globals
                .contains(&(globals::PROP_INJECT, Global::U32(0)))
                && load.globals.contains(&(globals::PROP_JOIN, Global::U32(0))),
            "propagation is off unless the config asks"
        );
        assert_eq!(
            set.enabled,
            BTreeSet::from([Feature::GrpcServer, Feature::GrpcClient]),
            "http: false leaves the HTTP features out"
        );
    }
}
