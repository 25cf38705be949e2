//! Process identity: which service a PID belongs to, and the resource
//! attributes its spans and metrics carry.
//!
//! Discovery fills the registry: standalone, nothing needs to be set (the
//! service name falls back to the executable's name); in Kubernetes the
//! discovery module calls [`ResourceRegistry::set_process_resource`] with the
//! pod's attributes when it claims a process, and [`ResourceRegistry::remove`]
//! when the process exits.
//!
//! Precedence of `service.name`, highest first:
//! 1. `service.name` set per process by discovery (e.g. the
//!    `ferrotel.io/service-name` annotation, or derived from the workload);
//! 2. `OTEL_SERVICE_NAME`;
//! 3. `service.name` in `OTEL_RESOURCE_ATTRIBUTES`;
//! 4. `service.name` in the config's `resourceAttributes`;
//! 5. the executable's file name (`/proc/<pid>/exe`), else `unknown_service`.
//!
//! Other attributes: per-process attributes override `OTEL_RESOURCE_ATTRIBUTES`,
//! which overrides the config's `resourceAttributes` (the OTel SDK rule that the
//! environment wins over files, with the more specific source on top).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, RwLock};

/// The resource of one process: every attribute, `service.name` included.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ProcessResource {
    pub attributes: BTreeMap<String, String>,
}

impl ProcessResource {
    pub fn service_name(&self) -> &str {
        self.attributes
            .get("service.name")
            .map(String::as_str)
            .unwrap_or("unknown_service")
    }
}

/// Probe-wide resource inputs, resolved once from config and environment.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct BaseResource {
    /// Config `resourceAttributes` merged under `OTEL_RESOURCE_ATTRIBUTES`.
    pub attributes: BTreeMap<String, String>,
    /// `OTEL_SERVICE_NAME`, if set and non-empty.
    pub service_name_override: Option<String>,
}

impl BaseResource {
    /// Builds the base from the config map and the two OTel environment
    /// variables (passed in so that tests need not touch the process env).
    pub fn resolve(
        config_attributes: &BTreeMap<String, String>,
        otel_resource_attributes: Option<&str>,
        otel_service_name: Option<&str>,
    ) -> Self {
        let mut attributes = config_attributes.clone();
        if let Some(env) = otel_resource_attributes {
            attributes.extend(parse_resource_attributes(env));
        }
        let service_name_override = otel_service_name
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned);
        Self {
            attributes,
            service_name_override,
        }
    }

    /// Reads `OTEL_RESOURCE_ATTRIBUTES` and `OTEL_SERVICE_NAME` from the process env.
    pub fn from_env(config_attributes: &BTreeMap<String, String>) -> Self {
        let attrs = std::env::var("OTEL_RESOURCE_ATTRIBUTES").ok();
        let name = std::env::var("OTEL_SERVICE_NAME").ok();
        Self::resolve(config_attributes, attrs.as_deref(), name.as_deref())
    }
}

/// Parses `key1=value1,key2=value2` (W3C-baggage-like, values percent-decoded)
/// as used by `OTEL_RESOURCE_ATTRIBUTES`. Malformed entries are skipped.
pub fn parse_resource_attributes(text: &str) -> BTreeMap<String, String> {
    text.split(',')
        .filter_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            let key = key.trim();
            if key.is_empty() {
                return None;
            }
            Some((key.to_owned(), percent_decode(value.trim())))
        })
        .collect()
}

fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(Ok(byte)) = value
                .get(i + 1..i + 3)
                .map(|hex| u8::from_str_radix(hex, 16))
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Resources by PID, looked up for every span: foldhash, not SipHash (PIDs
/// are the kernel's, not traffic's).
type ByPid = HashMap<u32, Arc<ProcessResource>, foldhash::fast::FixedState>;

/// PID → resource lookup shared by discovery (writer) and the pipeline
/// (reader). Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct ResourceRegistry {
    base: Arc<BaseResource>,
    per_process: Arc<RwLock<ByPid>>,
    /// Resources derived for processes discovery said nothing about, cached
    /// so that `/proc` is read once per process.
    derived: Arc<RwLock<ByPid>>,
    proc_root: Arc<std::path::PathBuf>,
}

impl ResourceRegistry {
    pub fn new(base: BaseResource) -> Self {
        Self::with_proc_root(base, "/proc")
    }

    /// A registry reading process names under `proc_root` (tests).
    pub fn with_proc_root(base: BaseResource, proc_root: impl Into<std::path::PathBuf>) -> Self {
        Self {
            base: Arc::new(base),
            per_process: Arc::default(),
            derived: Arc::default(),
            proc_root: Arc::new(proc_root.into()),
        }
    }

    /// Sets the discovery-provided attributes of `pid` (e.g. `k8s.pod.name`,
    /// `service.name`); they override the probe-wide ones. Replaces what was
    /// set before for this pid.
    pub fn set_process_resource(&self, pid: u32, attributes: BTreeMap<String, String>) {
        let resource = self.compose(pid, Some(&attributes));
        self.per_process
            .write()
            .expect("registry lock")
            .insert(pid, Arc::new(resource));
        self.derived.write().expect("registry lock").remove(&pid);
    }

    /// Forgets `pid` (the process exited or is no longer claimed).
    pub fn remove(&self, pid: u32) {
        self.per_process
            .write()
            .expect("registry lock")
            .remove(&pid);
        self.derived.write().expect("registry lock").remove(&pid);
    }

    /// The resource of `pid`: what discovery set, else derived from the
    /// probe-wide attributes and the executable name.
    pub fn get(&self, pid: u32) -> Arc<ProcessResource> {
        if let Some(found) = self.per_process.read().expect("registry lock").get(&pid) {
            return found.clone();
        }
        if let Some(found) = self.derived.read().expect("registry lock").get(&pid) {
            return found.clone();
        }
        let resource = Arc::new(self.compose(pid, None));
        // A record can arrive after its process exited and was removed:
        // cached then, nothing would ever remove it.
        if self.proc_root.join(pid.to_string()).exists() {
            self.derived
                .write()
                .expect("registry lock")
                .insert(pid, resource.clone());
        }
        resource
    }

    fn compose(&self, pid: u32, discovered: Option<&BTreeMap<String, String>>) -> ProcessResource {
        let mut attributes = self.base.attributes.clone();
        let exe = std::fs::read_link(self.proc_root.join(pid.to_string()).join("exe")).ok();
        let exe_name = exe
            .as_deref()
            .and_then(Path::file_name)
            .map(|n| n.to_string_lossy().into_owned());
        if let Some(exe) = &exe {
            attributes
                .entry("process.executable.path".into())
                .or_insert_with(|| exe.display().to_string());
        }
        if let Some(name) = &exe_name {
            attributes
                .entry("process.executable.name".into())
                .or_insert_with(|| name.clone());
        }
        attributes.insert("process.pid".into(), pid.to_string());
        if let Some(name) = &self.base.service_name_override {
            attributes.insert("service.name".into(), name.clone());
        }
        if !attributes.contains_key("service.name") {
            let fallback = exe_name
                .map(|n| n.to_string())
                .unwrap_or_else(|| "unknown_service".to_owned());
            attributes.insert("service.name".into(), fallback);
        }
        if let Some(discovered) = discovered {
            attributes.extend(discovered.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        attributes.insert("telemetry.distro.name".into(), "ferrotel".into());
        attributes.insert(
            "telemetry.distro.version".into(),
            env!("CARGO_PKG_VERSION").into(),
        );
        ProcessResource { attributes }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn resource_attributes_env_is_parsed_and_percent_decoded() {
        let parsed = parse_resource_attributes("deployment.environment=prod, team=a%2Cb,broken,=x");
        assert_eq!(
            parsed,
            map(&[("deployment.environment", "prod"), ("team", "a,b")])
        );
    }

    #[test]
    fn env_resource_attributes_override_config_and_service_name_env_wins() {
        let config = map(&[
            ("service.name", "from-config"),
            ("deployment.environment", "dev"),
            ("team", "x"),
        ]);
        let base = BaseResource::resolve(
            &config,
            Some("deployment.environment=prod,service.name=from-attrs"),
            None,
        );
        let registry = ResourceRegistry::with_proc_root(base.clone(), "/nonexistent");
        let resource = registry.get(42);
        assert_eq!(
            resource.service_name(),
            "from-attrs",
            "OTEL_RESOURCE_ATTRIBUTES beats the config"
        );
        assert_eq!(
            resource.attributes["deployment.environment"], "prod",
            "env beats config"
        );
        assert_eq!(
            resource.attributes["team"], "x",
            "config attributes not in env survive"
        );

        let base =
            BaseResource::resolve(&config, Some("service.name=from-attrs"), Some("from-env"));
        let resource = ResourceRegistry::with_proc_root(base, "/nonexistent").get(42);
        assert_eq!(
            resource.service_name(),
            "from-env",
            "OTEL_SERVICE_NAME beats OTEL_RESOURCE_ATTRIBUTES"
        );
    }

    #[test]
    fn discovered_attributes_override_the_probe_wide_ones_until_removed() {
        let base = BaseResource::resolve(&BTreeMap::new(), None, Some("probe-wide"));
        let registry = ResourceRegistry::with_proc_root(base, "/nonexistent");
        registry.set_process_resource(
            7,
            map(&[("service.name", "checkout"), ("k8s.pod.name", "checkout-1")]),
        );
        let resource = registry.get(7);
        assert_eq!(resource.service_name(), "checkout");
        assert_eq!(resource.attributes["k8s.pod.name"], "checkout-1");
        assert_eq!(resource.attributes["process.pid"], "7");
        registry.remove(7);
        assert_eq!(
            registry.get(7).service_name(),
            "probe-wide",
            "after remove the pid falls back"
        );
    }

    #[test]
    fn a_process_that_has_exited_is_not_cached() {
        let registry = ResourceRegistry::new(BaseResource::default());
        let gone = crate::telemetry::metrics::exited_pid();
        assert_eq!(
            registry.get(gone).attributes["process.pid"],
            gone.to_string()
        );
        registry.get(std::process::id());
        let cached: Vec<u32> = registry
            .derived
            .read()
            .expect("registry lock")
            .keys()
            .copied()
            .collect();
        assert_eq!(cached, [std::process::id()], "only the running process");
    }

    #[test]
    fn service_name_falls_back_to_the_executable_name() {
        let registry = ResourceRegistry::new(BaseResource::default());
        let me = std::process::id();
        let exe = std::env::current_exe().expect("current exe");
        let expected = exe.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(
            registry.get(me).service_name(),
            expected,
            "service.name is the exe file name"
        );
        assert_eq!(
            ResourceRegistry::with_proc_root(BaseResource::default(), "/nonexistent")
                .get(1)
                .service_name(),
            "unknown_service"
        );
    }
}
