//! The discovery state and its one decision: which host processes this
//! probe claims, with which resource attributes.
//!
//! Three inputs change independently — pods on this node, namespaces, and
//! processes — and the decision is recomputed from all three whenever any of
//! them changes ([`Discovery::reconcile`]), then diffed against what was
//! claimed before. Recomputing instead of patching incrementally keeps the
//! rules in one place (`ferrotel_api::optin::resolve`); it is cheap because
//! only processes whose cgroup names a container are considered, and each
//! process's cgroup and language are read once (again only after an exec).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use ferrotel_api::optin::{self, Decision, Instrumentations, NamespaceView, PodView, Skip};
use ferrotel_api::probe_config::Language;
use ferrotel_api::probe_endpoints::{DiscoveryOutcome, PodRef, ProcessReport};
use tracing::{debug, warn};

use super::cgroup::{self, CgroupIdentity, ContainerId};
use super::language::LanguageDetector;
use super::metadata::{self, NamespaceInfo, Owner, PodInfo};

/// Pods on this node and every namespace, as last seen from the API.
#[derive(Debug, Default)]
pub struct ClusterState {
    pods: HashMap<String, PodInfo>,
    by_container: HashMap<ContainerId, String>,
    namespaces: HashMap<String, NamespaceInfo>,
    /// Controller owner of a ReplicaSet or Job (`namespace/name`), when known.
    grand_owners: HashMap<String, Owner>,
}

impl ClusterState {
    pub fn apply_pod(&mut self, pod: PodInfo) {
        self.delete_pod(&pod.uid.clone());
        for container in &pod.containers {
            if let Some(id) = &container.id {
                self.by_container.insert(id.clone(), pod.uid.clone());
            }
        }
        self.pods.insert(pod.uid.clone(), pod);
    }

    pub fn delete_pod(&mut self, uid: &str) {
        if let Some(old) = self.pods.remove(uid) {
            for id in old.containers.iter().filter_map(|c| c.id.as_ref()) {
                if self.by_container.get(id).is_some_and(|owner| owner == uid) {
                    self.by_container.remove(id);
                }
            }
        }
    }

    /// Replaces every pod (after a watch (re)start listed them again).
    pub fn replace_pods(&mut self, pods: impl IntoIterator<Item = PodInfo>) {
        self.pods.clear();
        self.by_container.clear();
        for pod in pods {
            self.apply_pod(pod);
        }
    }

    pub fn apply_namespace(&mut self, namespace: NamespaceInfo) {
        self.namespaces.insert(namespace.name.clone(), namespace);
    }

    pub fn delete_namespace(&mut self, name: &str) {
        self.namespaces.remove(name);
    }

    pub fn replace_namespaces(&mut self, namespaces: impl IntoIterator<Item = NamespaceInfo>) {
        self.namespaces = namespaces
            .into_iter()
            .map(|n| (n.name.clone(), n))
            .collect();
    }

    /// Records the controller owner of a ReplicaSet/Job looked up from the API.
    pub fn set_grand_owner(&mut self, namespace: &str, name: &str, owner: Owner) {
        // Bounded: owners of pods that left this node are not worth keeping.
        if self.grand_owners.len() > 4 * self.pods.len() + 64 {
            self.grand_owners.clear();
        }
        self.grand_owners
            .insert(format!("{namespace}/{name}"), owner);
    }

    pub fn grand_owner_of(&self, pod: &PodInfo) -> Option<&Owner> {
        let owner = pod.owner.as_ref()?;
        self.grand_owners
            .get(&format!("{}/{}", pod.namespace, owner.name))
    }

    /// The pods on this node.
    pub fn pods(&self) -> impl Iterator<Item = &PodInfo> {
        self.pods.values()
    }

    /// A namespace as last seen, if known.
    pub fn namespace(&self, name: &str) -> Option<&NamespaceInfo> {
        self.namespaces.get(name)
    }

    pub fn pod_count(&self) -> usize {
        self.pods.len()
    }

    pub fn namespace_count(&self) -> usize {
        self.namespaces.len()
    }

    /// The pod and container a process belongs to. By container ID first;
    /// by pod UID for single-container pods whose status has no ID yet (the
    /// kubelet reports it a moment after the process starts).
    pub fn locate(&self, identity: &CgroupIdentity) -> Option<(&PodInfo, &str)> {
        if let Some(id) = &identity.container_id
            && let Some(pod) = self.by_container.get(id).and_then(|uid| self.pods.get(uid))
            && let Some(container) = pod.container_by_id(id)
        {
            return Some((pod, container.name.as_str()));
        }
        let pod = self.pods.get(identity.pod_uid.as_ref()?)?;
        match pod.containers.as_slice() {
            [only] if identity.container_id.is_none() || only.id.is_none() => {
                Some((pod, only.name.as_str()))
            }
            _ => None,
        }
    }
}

#[derive(Debug)]
struct ProcessEntry {
    identity: CgroupIdentity,
    exe: Option<PathBuf>,
    /// `None` until detection ran for the current executable.
    language: Option<Option<Language>>,
}

/// What the probe wants claimed for one process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredClaim {
    pub exe: PathBuf,
    pub attributes: BTreeMap<String, String>,
}

/// A change to publish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Claim {
        pid: u32,
        claim: DesiredClaim,
    },
    /// Same process, new attributes (an annotation or label changed).
    Update {
        pid: u32,
        claim: DesiredClaim,
    },
    Release {
        pid: u32,
    },
}

/// Everything discovery knows, and the claims it made.
#[derive(Debug)]
pub struct Discovery {
    pub cluster: ClusterState,
    language: Language,
    node_name: String,
    instrumentations: Instrumentations,
    /// The Instrumentation this probe serves (`namespace/name`): pods the
    /// opt-in rules give to another are that one's probes' to trace, with
    /// its exporter. `None`: every claim is this probe's.
    serves: Option<String>,
    proc_root: PathBuf,
    exclude_pid: u32,
    processes: HashMap<u32, ProcessEntry>,
    detector: LanguageDetector,
    claimed: BTreeMap<u32, DesiredClaim>,
    /// Opt-in errors already logged (pod uid + message), so that a bad
    /// annotation is reported once, not on every scan.
    reported: HashSet<(String, String)>,
    /// What the last reconcile decided for every container process located
    /// in a pod, claimed or not, and why ([`Discovery::take_decisions`]).
    decisions: BTreeMap<u32, ProcessReport>,
}

impl Discovery {
    pub fn new(
        language: Language,
        node_name: impl Into<String>,
        instrumentations: Instrumentations,
        proc_root: impl Into<PathBuf>,
        exclude_pid: u32,
    ) -> Self {
        Self {
            cluster: ClusterState::default(),
            language,
            node_name: node_name.into(),
            instrumentations,
            serves: None,
            proc_root: proc_root.into(),
            exclude_pid,
            processes: HashMap::new(),
            detector: LanguageDetector::new(),
            claimed: BTreeMap::new(),
            reported: HashSet::new(),
            decisions: BTreeMap::new(),
        }
    }

    /// Claims only pods the opt-in rules give to `instrumentation`
    /// (`namespace/name`); other claims are reported, not traced.
    pub fn serving(mut self, instrumentation: Option<String>) -> Self {
        self.serves = instrumentation;
        self
    }

    /// Every Instrumentation the opt-in rules consider.
    pub fn instrumentations(&self) -> &Instrumentations {
        &self.instrumentations
    }

    /// The decision of the last [`Discovery::reconcile`] for every container
    /// process located in a pod (for [`crate::ledger`]); taken, not copied.
    pub fn take_decisions(&mut self) -> BTreeMap<u32, ProcessReport> {
        std::mem::take(&mut self.decisions)
    }

    pub fn claimed(&self) -> &BTreeMap<u32, DesiredClaim> {
        &self.claimed
    }

    /// Re-reads the process list: new PIDs get their cgroup read once;
    /// processes in containers get their executable re-checked (an exec
    /// keeps the PID but may change the language); exited PIDs are dropped.
    pub fn scan_processes(&mut self) {
        let Ok(entries) = std::fs::read_dir(&self.proc_root) else {
            warn!(proc_root = %self.proc_root.display(), "Cannot read the proc filesystem");
            return;
        };
        let mut seen = HashSet::with_capacity(self.processes.len());
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if pid == self.exclude_pid {
                continue;
            }
            seen.insert(pid);
            match self.processes.get_mut(&pid) {
                Some(known) if !known.identity.is_empty() => {
                    let exe = std::fs::read_link(entry.path().join("exe")).ok();
                    if exe != known.exe {
                        debug!(pid, exe = ?exe, "Process executed a new program");
                        known.exe = exe;
                        known.language = None;
                    }
                }
                Some(_) => {}
                None => {
                    if let Some(process) = self.examine(pid) {
                        self.processes.insert(pid, process);
                    }
                }
            }
        }
        self.processes.retain(|pid, _| seen.contains(pid));
    }

    /// Examines one process the kernel reported (exec, or fork of a
    /// container process): its cgroup is read again (a container runtime
    /// moves its init into the container's cgroup before the exec) and its
    /// language is detected anew. Returns whether it is in a container, i.e.
    /// whether its forks and exit are worth reporting.
    pub fn observe_process(&mut self, pid: u32) -> bool {
        if pid == self.exclude_pid {
            return false;
        }
        match self.examine(pid) {
            Some(process) if !process.identity.is_empty() => {
                debug!(pid, exe = ?process.exe, "Examining a new container process");
                self.processes.insert(pid, process);
                true
            }
            // Gone already, or not in a container: nothing to track (the
            // rescan remembers host processes; events need not).
            _ => {
                self.processes.remove(&pid);
                false
            }
        }
    }

    /// Reads what discovery keeps of one process: its container identity
    /// from its cgroup and, for container processes only, its executable.
    /// `None` when the process is gone.
    fn examine(&self, pid: u32) -> Option<ProcessEntry> {
        let identity = cgroup::read_process_identity(&self.proc_root, pid).ok()?;
        let exe = if identity.is_empty() {
            None
        } else {
            std::fs::read_link(self.proc_root.join(pid.to_string()).join("exe")).ok()
        };
        Some(ProcessEntry {
            identity,
            exe,
            language: None,
        })
    }

    /// Forgets a process that exited; returns whether it was known.
    pub fn forget_process(&mut self, pid: u32) -> bool {
        self.processes.remove(&pid).is_some()
    }

    /// Whether `pid` is tracked as a container process.
    pub fn knows_container_process(&self, pid: u32) -> bool {
        self.processes
            .get(&pid)
            .is_some_and(|p| !p.identity.is_empty())
    }

    /// Processes known to run in a container.
    pub fn container_pids(&self) -> impl Iterator<Item = u32> + '_ {
        self.processes
            .iter()
            .filter(|(_, p)| !p.identity.is_empty())
            .map(|(pid, _)| *pid)
    }

    /// Recomputes the claims and returns what changed since the last call.
    pub fn reconcile(&mut self) -> Vec<Change> {
        let desired = self.desired();
        let mut changes = Vec::new();
        for pid in self.claimed.keys() {
            if !desired.contains_key(pid) {
                changes.push(Change::Release { pid: *pid });
            }
        }
        for (pid, claim) in &desired {
            match self.claimed.get(pid) {
                None => changes.push(Change::Claim {
                    pid: *pid,
                    claim: claim.clone(),
                }),
                Some(old) if old.exe != claim.exe => {
                    // A new program in the same PID: the front-end must
                    // re-attach (new ELF, new symbols).
                    changes.push(Change::Release { pid: *pid });
                    changes.push(Change::Claim {
                        pid: *pid,
                        claim: claim.clone(),
                    });
                }
                Some(old) if old != claim => changes.push(Change::Update {
                    pid: *pid,
                    claim: claim.clone(),
                }),
                Some(_) => {}
            }
        }
        self.claimed = desired;
        changes
    }

    fn desired(&mut self) -> BTreeMap<u32, DesiredClaim> {
        let mut desired = BTreeMap::new();
        let mut decisions = BTreeMap::new();
        let no_labels = BTreeMap::new();
        let serves = self.serves.clone();
        for (pid, process) in self.processes.iter_mut() {
            if process.identity.is_empty() {
                continue;
            }
            let Some(exe) = process.exe.clone() else {
                continue;
            };
            let Some((pod, container)) = self.cluster.locate(&process.identity) else {
                continue;
            };
            let fallback_namespace = NamespaceInfo {
                name: pod.namespace.clone(),
                ..Default::default()
            };
            let namespace = self
                .cluster
                .namespaces
                .get(&pod.namespace)
                .unwrap_or(&fallback_namespace);
            let ns_view = NamespaceView {
                name: &namespace.name,
                labels: if namespace.labels.is_empty() {
                    &no_labels
                } else {
                    &namespace.labels
                },
                annotations: &namespace.annotations,
            };
            let pod_view = PodView {
                labels: &pod.labels,
                annotations: &pod.annotations,
            };
            // First without a language: most pods are not opted in, and then
            // no executable needs to be opened.
            let decide = |detected| {
                optin::resolve(
                    &self.instrumentations,
                    &ns_view,
                    &pod_view,
                    self.language,
                    detected,
                )
            };
            let first = decide(None);
            if let Err(error) = &first {
                report(&mut self.reported, pod, error);
            }
            let (outcome, detected) = match first {
                Err(error) => (opt_in_error(&error), None),
                Ok(Decision::Skipped(skip)) => (skipped(&skip), None),
                Ok(Decision::Claimed(claim))
                    if claim.language_source == optin::LanguageSource::Annotation =>
                {
                    // Pinned by annotation; still skip a process that is
                    // certainly the other language (e.g. a Python sidecar
                    // script in a Go pod).
                    let detected = *process
                        .language
                        .get_or_insert_with(|| self.detector.detect(&self.proc_root, *pid));
                    let outcome = match detected {
                        Some(other) if other != self.language => {
                            DiscoveryOutcome::OtherLanguage { language: other }
                        }
                        _ => claimed(&claim),
                    };
                    (outcome, detected)
                }
                Ok(Decision::Claimed(_)) => {
                    let detected = *process
                        .language
                        .get_or_insert_with(|| self.detector.detect(&self.proc_root, *pid));
                    let outcome = match detected {
                        None => DiscoveryOutcome::UnknownLanguage,
                        Some(other) if other != self.language => {
                            DiscoveryOutcome::OtherLanguage { language: other }
                        }
                        Some(_) => match decide(detected) {
                            Ok(Decision::Claimed(claim)) => claimed(&claim),
                            Ok(Decision::Skipped(skip)) => skipped(&skip),
                            Err(error) => opt_in_error(&error),
                        },
                    };
                    (outcome, detected)
                }
            };
            let is_claimed = matches!(
                &outcome,
                DiscoveryOutcome::Claimed { instrumentation }
                    if serves.as_ref().is_none_or(|own| own == instrumentation)
            );
            decisions.insert(
                *pid,
                ProcessReport {
                    pid: *pid,
                    exe: exe.display().to_string(),
                    pod: Some(PodRef {
                        namespace: pod.namespace.clone(),
                        name: pod.name.clone(),
                        uid: pod.uid.clone(),
                        container: container.to_owned(),
                    }),
                    detected,
                    discovery: Some(outcome),
                    tracing: None,
                },
            );
            if !is_claimed {
                continue;
            }
            let grand_owner = self.cluster.grand_owner_of(pod);
            let attributes = metadata::resource_attributes(
                pod,
                container,
                &self.node_name,
                grand_owner,
                &BTreeMap::new(),
            );
            desired.insert(*pid, DesiredClaim { exe, attributes });
        }
        self.decisions = decisions;
        desired
    }
}

impl Discovery {
    /// This node's pods for the views ([`crate::views::pods`]): their
    /// pod-level resource attributes, known processes, whether this probe
    /// claimed one of them, and the languages detected among them.
    pub fn node_pods(&self) -> Vec<crate::views::pods::NodePod> {
        let mut by_uid: HashMap<&str, crate::views::pods::NodePod> = HashMap::new();
        for pod in self.cluster.pods.values() {
            let grand_owner = self.cluster.grand_owner_of(pod);
            let container = pod
                .containers
                .first()
                .map(|c| c.name.as_str())
                .unwrap_or("");
            let mut attributes = metadata::resource_attributes(
                pod,
                container,
                &self.node_name,
                grand_owner,
                &BTreeMap::new(),
            );
            // Container-level attributes do not describe the pod.
            attributes.remove("k8s.container.name");
            attributes.remove("service.instance.id");
            let inputs = super::peers::opt_in_inputs(pod, &self.instrumentations);
            let opted_in = super::peers::is_traced(
                &self.cluster,
                &self.instrumentations,
                &pod.namespace,
                &inputs,
            );
            by_uid.insert(
                pod.uid.as_str(),
                crate::views::pods::NodePod {
                    uid: pod.uid.clone(),
                    service: attributes.get("service.name").cloned().unwrap_or_default(),
                    namespace: pod.namespace.clone(),
                    attributes,
                    traced_elsewhere: opted_in,
                    ..Default::default()
                },
            );
        }
        for (pid, process) in &self.processes {
            let Some((pod, _)) = self.cluster.locate(&process.identity) else {
                continue;
            };
            let Some(entry) = by_uid.get_mut(pod.uid.as_str()) else {
                continue;
            };
            entry.pids.push(*pid);
            if let Some(Some(language)) = process.language {
                entry.languages.insert(language);
            }
            if self.claimed.contains_key(pid) {
                entry.traced_here = true;
            }
        }
        let mut pods: Vec<_> = by_uid.into_values().collect();
        for pod in &mut pods {
            pod.pids.sort_unstable();
        }
        pods.sort_by(|a, b| a.uid.cmp(&b.uid));
        pods
    }
}

fn claimed(claim: &optin::Claim) -> DiscoveryOutcome {
    DiscoveryOutcome::Claimed {
        instrumentation: claim.instrumentation.to_string(),
    }
}

fn skipped(skip: &Skip) -> DiscoveryOutcome {
    match skip {
        Skip::NotOptedIn => DiscoveryOutcome::NotOptedIn,
        Skip::OptedOut { .. } => DiscoveryOutcome::OptedOut,
        Skip::OtherLanguage { language, .. } => DiscoveryOutcome::OtherLanguage {
            language: *language,
        },
        Skip::LanguageNotEnabled { instrumentation } => DiscoveryOutcome::LanguageNotEnabled {
            instrumentation: instrumentation.to_string(),
        },
        Skip::PodSelectorMismatch { instrumentation } => DiscoveryOutcome::PodSelectorMismatch {
            instrumentation: instrumentation.to_string(),
        },
    }
}

fn opt_in_error(error: &optin::OptInError) -> DiscoveryOutcome {
    DiscoveryOutcome::OptInError {
        category: error.category().to_owned(),
        message: error.to_string(),
    }
}

fn report(reported: &mut HashSet<(String, String)>, pod: &PodInfo, error: &optin::OptInError) {
    let key = (pod.uid.clone(), error.to_string());
    if reported.len() > 10_000 {
        reported.clear();
    }
    if reported.insert(key) {
        warn!(pod = %pod.name, namespace = %pod.namespace, reason = error.category(), "{error}");
    }
}

/// Reads a process's container identity (exposed for diagnostics and tests).
pub fn identity_of(proc_root: &Path, pid: u32) -> Option<CgroupIdentity> {
    cgroup::read_process_identity(proc_root, pid).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrotel_api::optin::Candidate;

    use super::super::metadata::ContainerInfo;

    const ID_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const ID_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const ID_C: &str = "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";
    const GO: &str = "/usr/local/go/bin/go";

    /// A fake /proc: `<pid>/cgroup` files and `<pid>/exe` links to real
    /// executables (so language detection reads real ELF files).
    struct FakeProc {
        dir: tempfile::TempDir,
    }

    impl FakeProc {
        fn new() -> Self {
            Self {
                dir: tempfile::tempdir().expect("tempdir"),
            }
        }

        fn spawn(&self, pid: u32, container: Option<&str>, exe: &str) {
            let dir = self.dir.path().join(pid.to_string());
            std::fs::create_dir_all(&dir).expect("mkdir pid");
            let cgroup = match container {
                Some(id) => format!("0::/kubepods.slice/cri-containerd-{id}.scope\n"),
                None => "0::/system.slice/sshd.service\n".to_owned(),
            };
            std::fs::write(dir.join("cgroup"), cgroup).expect("write cgroup");
            let _ = std::fs::remove_file(dir.join("exe"));
            std::os::unix::fs::symlink(exe, dir.join("exe")).expect("exe link");
        }

        fn exit(&self, pid: u32) {
            std::fs::remove_dir_all(self.dir.path().join(pid.to_string())).expect("rm pid");
        }
    }

    fn python_exe() -> String {
        // The python3 on PATH, resolved (pyenv shims are shell scripts).
        let out = std::process::Command::new("python3")
            .args([
                "-c",
                "import sys, os; print(os.path.realpath(sys.executable))",
            ])
            .output()
            .expect("python3 must be installed for this test");
        String::from_utf8(out.stdout)
            .expect("utf8")
            .trim()
            .to_owned()
    }

    fn instrumentations() -> Instrumentations {
        Instrumentations::new([Candidate {
            namespace: "observability".into(),
            name: "default".into(),
            languages: vec![Language::Go, Language::Python],
            namespace_selector: None,
            pod_selector: None,
        }])
    }

    fn pod(uid: &str, namespace: &str, name: &str, id: &str) -> PodInfo {
        PodInfo {
            uid: uid.into(),
            namespace: namespace.into(),
            name: name.into(),
            node_name: Some("kwok-node-0".into()),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            owner: None,
            containers: vec![ContainerInfo {
                name: "app".into(),
                id: ContainerId::parse(id),
            }],
            ips: Vec::new(),
        }
    }

    fn namespace(name: &str, instrument: Option<&str>) -> NamespaceInfo {
        NamespaceInfo {
            name: name.into(),
            labels: BTreeMap::new(),
            annotations: instrument
                .map(|v| BTreeMap::from([("ferrotel.io/instrument".to_owned(), v.to_owned())]))
                .unwrap_or_default(),
        }
    }

    fn discovery(proc: &FakeProc, language: Language) -> Discovery {
        Discovery::new(
            language,
            "kwok-node-0",
            instrumentations(),
            proc.dir.path(),
            0,
        )
    }

    /// A Go probe's discovery that knows pod shop/backend-0 (container
    /// ID_A) in the opted-in namespace shop, after one /proc scan.
    fn opted_in_backend(proc: &FakeProc) -> Discovery {
        let mut discovery = discovery(proc, Language::Go);
        discovery
            .cluster
            .apply_pod(pod("u1", "shop", "backend-0", ID_A));
        discovery
            .cluster
            .apply_namespace(namespace("shop", Some("true")));
        discovery.scan_processes();
        discovery
    }

    fn claimed_pids(changes: &[Change]) -> Vec<u32> {
        changes
            .iter()
            .filter_map(|c| {
                if let Change::Claim { pid, .. } = c {
                    Some(*pid)
                } else {
                    None
                }
            })
            .collect()
    }

    #[test]
    fn annotating_the_namespace_claims_its_go_process_and_removing_it_releases() {
        let proc = FakeProc::new();
        proc.spawn(100, Some(ID_A), GO);
        proc.spawn(200, None, GO);
        let mut discovery = discovery(&proc, Language::Go);
        discovery
            .cluster
            .apply_pod(pod("u1", "shop", "backend-0", ID_A));
        discovery.cluster.apply_namespace(namespace("shop", None));
        discovery.scan_processes();
        assert_eq!(
            discovery.reconcile(),
            vec![],
            "nothing is claimed before opt-in"
        );

        discovery
            .cluster
            .apply_namespace(namespace("shop", Some("true")));
        let changes = discovery.reconcile();
        assert_eq!(
            claimed_pids(&changes),
            vec![100],
            "only the pod's process, not the host one: {changes:?}"
        );
        let Change::Claim { claim, .. } = &changes[0] else {
            panic!("expected a claim, got {changes:?}")
        };
        assert_eq!(
            claim.attributes.get("k8s.pod.name").map(String::as_str),
            Some("backend-0")
        );
        assert_eq!(
            claim
                .attributes
                .get("k8s.namespace.name")
                .map(String::as_str),
            Some("shop")
        );
        assert_eq!(
            claim.attributes.get("k8s.node.name").map(String::as_str),
            Some("kwok-node-0")
        );

        discovery.cluster.apply_namespace(namespace("shop", None));
        assert_eq!(
            discovery.reconcile(),
            vec![Change::Release { pid: 100 }],
            "removing the annotation releases"
        );
    }

    #[test]
    fn a_pod_another_instrumentation_claims_is_left_to_that_ones_probes() {
        let proc = FakeProc::new();
        proc.spawn(100, Some(ID_A), GO);
        let two = || {
            Instrumentations::new(["default", "other"].map(|name| Candidate {
                namespace: "observability".into(),
                name: name.into(),
                languages: vec![Language::Go],
                namespace_selector: None,
                pod_selector: None,
            }))
        };
        let probe_of = |instrumentation: &str| {
            let mut discovery =
                Discovery::new(Language::Go, "kwok-node-0", two(), proc.dir.path(), 0)
                    .serving(Some(format!("observability/{instrumentation}")));
            discovery
                .cluster
                .apply_pod(pod("u1", "shop", "backend-0", ID_A));
            discovery
                .cluster
                .apply_namespace(namespace("shop", Some("observability/other")));
            discovery.scan_processes();
            discovery
        };

        let mut default = probe_of("default");
        assert_eq!(default.reconcile(), vec![], "not default's to trace");
        assert_eq!(
            default.take_decisions()[&100].discovery,
            Some(DiscoveryOutcome::Claimed {
                instrumentation: "observability/other".into()
            }),
            "the decision names who claimed it"
        );
        let mut other = probe_of("other");
        assert_eq!(claimed_pids(&other.reconcile()), vec![100]);
    }

    #[test]
    fn a_pod_opted_out_stays_dark_in_an_opted_in_namespace() {
        let proc = FakeProc::new();
        proc.spawn(100, Some(ID_A), GO);
        proc.spawn(101, Some(ID_B), GO);
        let mut discovery = discovery(&proc, Language::Go);
        let mut dark = pod("u2", "shop", "dark", ID_B);
        dark.annotations
            .insert("ferrotel.io/instrument".into(), "false".into());
        discovery.cluster.apply_pod(pod("u1", "shop", "lit", ID_A));
        discovery.cluster.apply_pod(dark);
        discovery
            .cluster
            .apply_namespace(namespace("shop", Some("true")));
        discovery.scan_processes();
        assert_eq!(claimed_pids(&discovery.reconcile()), vec![100]);
    }

    #[test]
    fn every_container_process_gets_a_decision_with_its_reason_claimed_or_not() {
        let proc = FakeProc::new();
        let python = python_exe();
        proc.spawn(100, Some(ID_A), GO);
        proc.spawn(101, Some(ID_B), &python);
        proc.spawn(102, Some(ID_C), GO);
        proc.spawn(200, None, GO);
        let mut discovery = discovery(&proc, Language::Go);
        let mut dark = pod("u3", "shop", "dark", ID_C);
        dark.annotations
            .insert("ferrotel.io/instrument".into(), "false".into());
        discovery
            .cluster
            .apply_pod(pod("u1", "shop", "go-pod", ID_A));
        discovery
            .cluster
            .apply_pod(pod("u2", "shop", "py-pod", ID_B));
        discovery.cluster.apply_pod(dark);
        discovery
            .cluster
            .apply_namespace(namespace("shop", Some("true")));
        discovery.scan_processes();
        discovery.reconcile();
        let decisions = discovery.take_decisions();
        let outcome = |pid: u32| decisions.get(&pid).and_then(|r| r.discovery.clone());
        assert_eq!(
            outcome(100),
            Some(DiscoveryOutcome::Claimed {
                instrumentation: "observability/default".into()
            })
        );
        assert_eq!(decisions[&100].detected, Some(Language::Go));
        assert_eq!(
            decisions[&100].pod.as_ref().map(|p| p.uid.as_str()),
            Some("u1")
        );
        assert_eq!(
            outcome(101),
            Some(DiscoveryOutcome::OtherLanguage {
                language: Language::Python
            }),
            "the Go probe says the Python pod is Python"
        );
        assert_eq!(outcome(102), Some(DiscoveryOutcome::OptedOut));
        assert_eq!(
            decisions[&102].detected, None,
            "an opted-out pod's binary is not opened"
        );
        assert!(
            !decisions.contains_key(&200),
            "host processes are none of our business"
        );
        assert!(discovery.take_decisions().is_empty(), "taken, not copied");
    }

    #[test]
    fn each_probe_claims_only_processes_of_its_own_language() {
        let proc = FakeProc::new();
        let python = python_exe();
        proc.spawn(100, Some(ID_A), GO);
        proc.spawn(101, Some(ID_B), &python);
        let setup = |language| {
            let mut d = discovery(&proc, language);
            d.cluster.apply_pod(pod("u1", "shop", "go-pod", ID_A));
            d.cluster.apply_pod(pod("u2", "shop", "py-pod", ID_B));
            d.cluster.apply_namespace(namespace("shop", Some("true")));
            d.scan_processes();
            d
        };
        assert_eq!(
            claimed_pids(&setup(Language::Go).reconcile()),
            vec![100],
            "Go probe claims the Go binary"
        );
        assert_eq!(
            claimed_pids(&setup(Language::Python).reconcile()),
            vec![101],
            "Python probe claims {python}"
        );
    }

    #[test]
    fn exited_processes_are_released_and_new_ones_claimed() {
        let proc = FakeProc::new();
        proc.spawn(100, Some(ID_A), GO);
        let mut discovery = opted_in_backend(&proc);
        assert_eq!(claimed_pids(&discovery.reconcile()), vec![100]);
        proc.exit(100);
        proc.spawn(150, Some(ID_A), GO);
        discovery.scan_processes();
        let changes = discovery.reconcile();
        assert_eq!(
            changes.first(),
            Some(&Change::Release { pid: 100 }),
            "exit releases: {changes:?}"
        );
        assert_eq!(
            claimed_pids(&changes),
            vec![150],
            "the new process of the container is claimed"
        );
    }

    #[test]
    fn a_process_reported_by_an_exec_event_is_claimed_without_a_rescan_and_forgotten_at_exit() {
        let proc = FakeProc::new();
        let mut discovery = opted_in_backend(&proc);
        assert_eq!(discovery.reconcile(), vec![], "no process yet");
        proc.spawn(100, Some(ID_A), GO);
        proc.spawn(200, None, GO);
        assert!(
            discovery.observe_process(100),
            "a container process is worth watching"
        );
        assert!(
            !discovery.observe_process(200),
            "a host process is not watched"
        );
        assert_eq!(claimed_pids(&discovery.reconcile()), vec![100]);
        assert_eq!(discovery.container_pids().collect::<Vec<_>>(), vec![100]);
        assert!(discovery.forget_process(100), "it was known");
        assert_eq!(discovery.reconcile(), vec![Change::Release { pid: 100 }]);
    }

    #[test]
    fn exec_into_another_language_releases_the_process() {
        let proc = FakeProc::new();
        proc.spawn(100, Some(ID_A), GO);
        let mut discovery = opted_in_backend(&proc);
        assert_eq!(claimed_pids(&discovery.reconcile()), vec![100]);
        proc.spawn(100, Some(ID_A), &python_exe());
        discovery.scan_processes();
        assert_eq!(discovery.reconcile(), vec![Change::Release { pid: 100 }]);
    }

    #[test]
    fn changing_the_service_name_annotation_updates_attributes_in_place() {
        let proc = FakeProc::new();
        proc.spawn(100, Some(ID_A), GO);
        let mut discovery = opted_in_backend(&proc);
        discovery.reconcile();
        let mut renamed = pod("u1", "shop", "backend-0", ID_A);
        renamed
            .annotations
            .insert("ferrotel.io/service-name".into(), "billing".into());
        discovery.cluster.apply_pod(renamed);
        let changes = discovery.reconcile();
        let [Change::Update { pid: 100, claim }] = changes.as_slice() else {
            panic!("expected one update: {changes:?}")
        };
        assert_eq!(
            claim.attributes.get("service.name").map(String::as_str),
            Some("billing")
        );
    }

    #[test]
    fn deleting_the_pod_releases_its_processes() {
        let proc = FakeProc::new();
        proc.spawn(100, Some(ID_A), GO);
        let mut discovery = opted_in_backend(&proc);
        discovery.reconcile();
        discovery.cluster.delete_pod("u1");
        assert_eq!(discovery.reconcile(), vec![Change::Release { pid: 100 }]);
    }

    #[test]
    fn single_container_pod_is_located_by_pod_uid_before_its_status_has_the_id() {
        let mut cluster = ClusterState::default();
        let uid = "0e3a6c39-5b0d-4f9b-9d86-6a3a3a0c9f11";
        let mut info = pod(uid, "shop", "fresh", ID_A);
        info.containers[0].id = None;
        cluster.apply_pod(info);
        let identity = cgroup::parse_proc_cgroup(&format!(
            "0::/kubepods.slice/kubepods-pod{}.slice/cri-containerd-{ID_A}.scope\n",
            uid.replace('-', "_")
        ));
        let (found, container) = cluster.locate(&identity).expect("located by pod uid");
        assert_eq!((found.name.as_str(), container), ("fresh", "app"));
    }
}
