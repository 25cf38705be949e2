//! The pods on this node as the views need them, published by Kubernetes
//! discovery after every change and read by the sampler.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};

use ferrotel_api::probe_config::Language;

/// One pod on this node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodePod {
    pub uid: String,
    /// The pod's resource attributes (`k8s.pod.*`, `k8s.namespace.name`,
    /// `k8s.node.name`, its workload, `service.name`, `service.namespace`).
    pub attributes: BTreeMap<String, String>,
    /// Its `service.name` and namespace (what the service graph calls it).
    pub service: String,
    pub namespace: String,
    /// Host pids of its processes that discovery knows.
    pub pids: Vec<u32>,
    /// This probe traces (claimed) one of its processes.
    pub traced_here: bool,
    /// It is opted in for a language, so another probe may trace it.
    pub traced_elsewhere: bool,
    /// Languages detected among its processes.
    pub languages: BTreeSet<Language>,
}

/// The latest list. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct NodePods(Arc<RwLock<Vec<NodePod>>>);

impl NodePods {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn replace(&self, pods: Vec<NodePod>) {
        *self.0.write().expect("node pods lock") = pods;
    }

    pub fn snapshot(&self) -> Vec<NodePod> {
        self.0.read().expect("node pods lock").clone()
    }
}
