//! `resources`: CPU, memory and network per pod, from the pod resource
//! metrics the probes export (`k8s.pod.*`, kubeletstats' names; see
//! [`ferrotel_api::probe_endpoints::metrics`]). Pure: a [`Window`] in, rows
//! out.
//!
//! CPU is the probe's own `k8s.pod.cpu.usage` gauge when it exports one,
//! otherwise the increase of `k8s.pod.cpu.time` over the window; network
//! is the increase of `k8s.pod.network.io` over the window; memory is the
//! last reading. Two probes (two languages) may report the same pod: the
//! largest reading wins, never the sum.

use std::collections::BTreeMap;

use ferrotel_api::probe_endpoints::labels as l;
use ferrotel_api::probe_endpoints::metrics as m;
use serde::Serialize;

use crate::histogram::Labels;
use crate::output::{self, Cell, Format, Style, Table};
use crate::red::Scope;
use crate::source::{Wants, Window};

const COUNTERS: [&str; 2] = [m::POD_CPU_TIME, m::POD_NETWORK_IO];
const GAUGES: [&str; 3] = [
    m::POD_CPU_USAGE,
    m::POD_MEMORY_WORKING_SET,
    m::POD_MEMORY_RSS,
];

pub fn wants() -> Wants<'static> {
    Wants {
        histograms: &[],
        counters: &COUNTERS,
        gauges: &GAUGES,
    }
}

/// One pod.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodResources {
    pub namespace: String,
    pub pod: String,
    pub workload: String,
    /// Cores.
    pub cpu: Option<f64>,
    /// Bytes.
    pub memory_working_set: Option<f64>,
    pub memory_rss: Option<f64>,
    /// Bytes per second.
    pub network_receive: Option<f64>,
    pub network_transmit: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourcesFrame {
    pub window_seconds: f64,
    pub pods: Vec<PodResources>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<String>,
}

/// Whether the window holds any pod resource series at all (probes without
/// pod resource views export none).
pub fn has_data(window: &Window) -> bool {
    COUNTERS
        .iter()
        .any(|c| window.counters.get(*c).is_some_and(|s| !s.is_empty()))
        || GAUGES
            .iter()
            .any(|g| window.gauges.get(*g).is_some_and(|s| !s.is_empty()))
}

fn pod_key(labels: &Labels) -> Option<(String, String)> {
    Some((
        labels.get(l::NAMESPACE)?.clone(),
        labels.get(l::POD)?.clone(),
    ))
}

fn max_into(slot: &mut Option<f64>, value: f64) {
    *slot = Some(slot.map_or(value, |v| v.max(value)));
}

/// Rows of `window` in `scope`, sorted by namespace and pod.
pub fn rows(window: &Window, scope: &Scope) -> ResourcesFrame {
    let mut pods: BTreeMap<(String, String), PodResources> = BTreeMap::new();
    let seconds = window.seconds;
    let workloads = &scope.workloads;
    fn entry<'a>(
        pods: &'a mut BTreeMap<(String, String), PodResources>,
        workloads: &BTreeMap<(String, String), String>,
        key: (String, String),
    ) -> &'a mut PodResources {
        pods.entry(key.clone()).or_insert_with(|| PodResources {
            workload: workloads
                .get(&key)
                .cloned()
                .unwrap_or_else(|| format!("pod/{}", key.1)),
            namespace: key.0,
            pod: key.1,
            ..PodResources::default()
        })
    }
    // CPU time and network: per probe (a series of one probe), then the
    // largest per pod.
    for series in window.counters.get(m::POD_CPU_TIME).into_iter().flatten() {
        if let Some(key) = pod_key(&series.labels)
            && seconds > 0.0
        {
            max_into(
                &mut entry(&mut pods, workloads, key).cpu,
                series.window / seconds,
            );
        }
    }
    for series in window.counters.get(m::POD_NETWORK_IO).into_iter().flatten() {
        let Some(key) = pod_key(&series.labels) else {
            continue;
        };
        if seconds <= 0.0 {
            continue;
        }
        let rate = series.window / seconds;
        let row = entry(&mut pods, workloads, key);
        match series.labels.get(l::NETWORK_DIRECTION).map(String::as_str) {
            Some("receive") => max_into(&mut row.network_receive, rate),
            Some("transmit") => max_into(&mut row.network_transmit, rate),
            _ => {}
        }
    }
    // A gauge of the probe's own wins over the window's rate.
    let mut usage: BTreeMap<(String, String), f64> = BTreeMap::new();
    for (labels, value) in window.gauges.get(m::POD_CPU_USAGE).into_iter().flatten() {
        if let Some(key) = pod_key(labels) {
            let slot = usage.entry(key).or_insert(*value);
            *slot = slot.max(*value);
        }
    }
    for (key, value) in usage {
        entry(&mut pods, workloads, key).cpu = Some(value);
    }
    for (family, pick) in [
        (
            m::POD_MEMORY_WORKING_SET,
            (|p: &mut PodResources| &mut p.memory_working_set)
                as fn(&mut PodResources) -> &mut Option<f64>,
        ),
        (m::POD_MEMORY_RSS, |p| &mut p.memory_rss),
    ] {
        for (labels, value) in window.gauges.get(family).into_iter().flatten() {
            if let Some(key) = pod_key(labels) {
                max_into(pick(entry(&mut pods, workloads, key)), *value);
            }
        }
    }
    let in_scope = |p: &PodResources| {
        scope.namespace.as_ref().is_none_or(|ns| &p.namespace == ns)
            && scope
                .pods
                .as_ref()
                .is_none_or(|pods| pods.contains(&(p.namespace.clone(), p.pod.clone())))
            && scope
                .workload
                .as_ref()
                .is_none_or(|w| crate::workload::matches(w, &p.workload))
    };
    ResourcesFrame {
        window_seconds: seconds,
        pods: pods.into_values().filter(in_scope).collect(),
        failures: window.failures.clone(),
    }
}

/// `0.25` cores → `250m`, kubectl's way.
pub fn cores(value: Option<f64>) -> String {
    match value {
        None => "-".into(),
        Some(v) if v >= 10.0 => format!("{v:.0}"),
        Some(v) => format!("{:.0}m", v * 1000.0),
    }
}

/// Bytes per second.
pub fn per_second(value: Option<f64>) -> String {
    value.map_or_else(|| "-".into(), |v| format!("{}/s", output::bytes(Some(v))))
}

pub fn render(frame: &ResourcesFrame, format: Format, style: &Style) -> String {
    if format.is_structured() {
        return output::structured(format, frame);
    }
    if frame.pods.is_empty() {
        return "No pod in scope is reported by the probes.\n".into();
    }
    let mut headers = vec!["NAMESPACE", "POD", "CPU", "MEMORY", "NET RX", "NET TX"];
    if format == Format::Wide {
        headers.extend(["RSS", "WORKLOAD"]);
    }
    let mut table = Table::new(&headers);
    for p in &frame.pods {
        let mut row: Vec<Cell> = vec![
            p.namespace.as_str().into(),
            p.pod.as_str().into(),
            cores(p.cpu).into(),
            output::bytes(p.memory_working_set).into(),
            per_second(p.network_receive).into(),
            per_second(p.network_transmit).into(),
        ];
        if format == Format::Wide {
            row.push(output::bytes(p.memory_rss).into());
            row.push(p.workload.as_str().into());
        }
        table.push(row);
    }
    table.render(style)
}
