//! Prometheus metrics shared by every controller, labelled by controller name
//! so one set of families serves all of them.

use std::time::Instant;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

use super::ErrorCategory;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControllerLabels {
    controller: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    controller: &'static str,
    category: &'static str,
}

/// The operator's metrics; encode with [`Metrics::encode`].
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    reconciles: Family<ControllerLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    duration: Family<ControllerLabels, Histogram>,
    leader: Gauge,
}

fn duration_histogram() -> Histogram {
    // 1 ms .. ~16 s: a reconcile is a handful of API calls.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.001, 2.0, 15,
    ))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("ferrotel_operator");
        let reconciles = Family::<ControllerLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let duration = Family::<ControllerLabels, Histogram>::new_with_constructor(
            duration_histogram as fn() -> Histogram,
        );
        let leader = Gauge::default();
        registry.register(
            "reconciles",
            "Reconciliations started, per controller",
            reconciles.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Failed reconciliations, per controller and error category",
            errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time spent in one reconciliation, per controller",
            duration.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader lease",
            leader.clone(),
        );
        Self {
            registry,
            reconciles,
            errors,
            duration,
            leader,
        }
    }
}

impl Metrics {
    /// Counts a reconcile of `controller` and times it until the returned
    /// guard is dropped (so early returns and `?` are measured too).
    pub fn reconcile(&self, controller: &'static str) -> ReconcileTimer {
        let labels = ControllerLabels { controller };
        self.reconciles.get_or_create(&labels).inc();
        ReconcileTimer {
            histogram: self.duration.get_or_create_owned(&labels),
            start: Instant::now(),
        }
    }

    /// Counts one failed reconcile.
    pub fn error(&self, controller: &'static str, category: ErrorCategory) {
        self.errors
            .get_or_create(&ErrorLabels {
                controller,
                category: category.as_str(),
            })
            .inc();
    }

    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// Prometheus text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Records the reconcile duration when dropped.
#[derive(Debug)]
pub struct ReconcileTimer {
    histogram: Histogram,
    start: Instant,
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconcile_count_duration_and_error_category_are_exported() {
        let m = Metrics::default();
        drop(m.reconcile("collector"));
        m.error("collector", ErrorCategory::Transient);
        let text = m.encode();
        assert!(
            text.contains(r#"ferrotel_operator_reconciles_total{controller="collector"} 1"#),
            "reconcile counter missing:\n{text}"
        );
        assert!(
            text.contains(
                r#"ferrotel_operator_reconcile_duration_seconds_count{controller="collector"} 1"#
            ),
            "duration histogram missing:\n{text}"
        );
        assert!(
            text.contains(r#"ferrotel_operator_reconcile_errors_total{controller="collector",category="transient"} 1"#),
            "error counter missing:\n{text}"
        );
    }
}
