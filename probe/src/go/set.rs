//! The Go program set under the [driver](crate::driver): uprobes attached
//! per process after analysing its executable.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use ferrotel_api::probe_config::LanguageTuning;

use super::attach::GoProbes;
use super::binary::AnalysisCache;
use super::events;
use super::offsets::Feature;
use crate::driver::{DecodeError, ProgramSet, Refusal};
use crate::ebpf::{EbpfError, Kernel, Tuning};
use crate::targets::ProcessTarget;
use crate::telemetry::RequestRecord;
use crate::telemetry::sampling::Sampler;

/// `--language go`.
#[derive(Debug)]
pub struct GoSet {
    tuning: Tuning,
    /// Features `go.http` and `go.grpc` allow.
    enabled: BTreeSet<Feature>,
    sampler: Sampler,
    cache: Arc<AnalysisCache>,
    /// Set by `attach`.
    probes: Option<GoProbes>,
}

impl GoSet {
    /// The set as `tuning` (the config's `go` section) asks for it; span
    /// sampling decisions come from `sampler`.
    pub fn new(tuning: &LanguageTuning, sampler: Sampler) -> Self {
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
            probes: None,
        }
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
        self.tuning.clone()
    }

    fn attach(&mut self, kernel: &mut Kernel) -> Result<(), EbpfError> {
        // Uprobes attach per process; here they are only verified.
        let probes = GoProbes::new(kernel, self.cache.clone(), self.enabled.clone())
            .map_err(|error| *error)?;
        self.probes = Some(probes);
        Ok(())
    }

    async fn add_target(
        &mut self,
        kernel: &mut Kernel,
        target: &ProcessTarget,
    ) -> Result<(), Refusal> {
        let pid = target.pid;
        let cache = self.cache.clone();
        let exe = PathBuf::from(format!("/proc/{pid}/exe"));
        // DWARF and symbol tables can take a while: off the event loop.
        let analysed = tokio::task::spawn_blocking(move || cache.get(&exe))
            .await
            .map_err(|e| Refusal::new("analysis_failed", e))?;
        let binary = analysed.map_err(|error| Refusal::new(error.category(), error))?;
        self.probes()
            .attach(kernel, pid, binary)
            .map(|_| ())
            .map_err(|error| Refusal::new(error.category(), error))
    }

    fn remove_target(&mut self, kernel: &mut Kernel, pid: u32) {
        self.probes().detach(kernel, pid);
    }

    fn decode(&mut self, record: &[u8], out: &mut Vec<RequestRecord>) -> Result<(), DecodeError> {
        out.push(events::decode(record, &self.sampler).map_err(DecodeError::new)?);
        Ok(())
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
        assert_eq!(
            load.globals,
            vec![(globals::MAX_PAYLOAD_BYTES, Global::U32(100))]
        );
        assert_eq!(
            set.enabled,
            BTreeSet::from([Feature::GrpcServer, Feature::GrpcClient]),
            "http: false leaves the HTTP features out"
        );
    }
}
