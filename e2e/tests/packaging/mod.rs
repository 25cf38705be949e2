//! Helpers shared by the packaging tests (chart, kustomize, gitops,
//! dashboards): running helm/kubectl/terraform from `make tools`, splitting
//! rendered YAML, installing the CRDs and server-side dry-runs against the
//! test bed's real kube-apiserver.
#![allow(dead_code)] // each test binary uses a different subset

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use ferrotel_e2e::{TestBed, tool_path, wait_for};
use serde_json::Value;

/// The repository root (the workspace).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("e2e/ has a parent")
        .to_path_buf()
}

pub fn repo_path(rel: &str) -> PathBuf {
    repo_root().join(rel)
}

pub fn chart_dir() -> PathBuf {
    repo_path("charts/ferrotel")
}

/// A pinned tool from `make tools`; fails the test with the fix if absent.
pub fn tool(name: &str) -> PathBuf {
    let path = tool_path(name);
    assert!(
        path.is_file(),
        "{name} not found at {}; run `make tools` (e2e/tools/install.sh) to build it",
        path.display()
    );
    path
}

/// The Kubernetes version of the test bed (e2e/tools/kube/go.mod).
pub const TEST_BED_KUBE_VERSION: &str = "1.36.0";

pub fn helm() -> Command {
    let mut cmd = Command::new(tool("helm"));
    // Keep helm's caches and config out of $HOME so parallel tests and
    // developers' own helm setups cannot interfere.
    let home = std::env::temp_dir().join("ferrotel-helm-home");
    cmd.env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"));
    cmd
}

/// Runs a command, returning stdout or a message with the command and stderr.
pub fn run(mut cmd: Command, stdin: Option<&str>) -> Result<String, String> {
    let desc = format!("{cmd:?}");
    let out = run_raw(&mut cmd, stdin);
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{desc} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

pub fn run_raw(cmd: &mut Command, stdin: Option<&str>) -> Output {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin is piped");
        pipe.write_all(input.as_bytes())
            .expect("write to child's stdin");
    }
    child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("waiting for {cmd:?}: {e}"))
}

/// `helm template` of the chart with the given release, namespace and extra
/// arguments (`-f file`, `--set k=v`, `--api-versions ...`).
pub fn helm_template(release: &str, namespace: &str, extra: &[&str]) -> Result<String, String> {
    let mut cmd = helm();
    // A `go install`ed helm has no Kubernetes version linked in and would
    // claim v1.20; the test bed runs 1.36 (helm install asks the cluster).
    cmd.args(["template", release])
        .arg(chart_dir())
        .args([
            "--namespace",
            namespace,
            "--kube-version",
            TEST_BED_KUBE_VERSION,
        ])
        .args(extra);
    run(cmd, None)
}

/// Splits a multi-document YAML stream into JSON values, skipping empty
/// documents (helm emits some for disabled templates).
pub fn yaml_docs(text: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_yaml::Deserializer::from_str(text)
        .map(|doc| {
            Value::deserialize(doc)
                .unwrap_or_else(|e| panic!("rendered YAML does not parse: {e}\n{text}"))
        })
        .filter(|v| !v.is_null())
        .collect()
}

pub fn to_yaml_stream(docs: &[Value]) -> String {
    docs.iter()
        .map(|d| serde_yaml::to_string(d).expect("serialize manifest"))
        .collect::<Vec<_>>()
        .join("---\n")
}

pub fn kind_of(doc: &Value) -> &str {
    doc["kind"].as_str().unwrap_or("")
}

pub fn name_of(doc: &Value) -> &str {
    doc["metadata"]["name"].as_str().unwrap_or("")
}

pub fn namespace_of(doc: &Value) -> Option<&str> {
    doc["metadata"]["namespace"].as_str()
}

pub fn kubectl(bed: &TestBed) -> Command {
    bed.kubectl()
}

/// Applies the repository's generated CRDs (crds/) server-side and waits
/// until the API server serves them. Idempotent.
pub async fn install_crds(bed: &TestBed) {
    let crds = repo_path("crds");
    let mut cmd = kubectl(bed);
    cmd.args(["apply", "--server-side", "--force-conflicts", "-f"])
        .arg(&crds);
    run(cmd, None).unwrap_or_else(|e| panic!("installing crds/ failed: {e}"));
    for name in crd_names() {
        wait_for(
            &format!("CRD {name} to be established"),
            Duration::from_secs(60),
            || {
                let mut cmd = kubectl(bed);
                cmd.args([
                    "get",
                    "crd",
                    &name,
                    "-o",
                    "jsonpath={.status.conditions[?(@.type==\"Established\")].status}",
                ]);
                async move {
                    match run(cmd, None) {
                        Ok(s) if s.trim() == "True" => Ok(()),
                        Ok(s) => Err(format!("Established={s:?}")),
                        Err(e) => Err(e),
                    }
                }
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    }
}

/// Names of the CRDs in crds/.
pub fn crd_names() -> Vec<String> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(repo_path("crds")).expect("crds/ exists") {
        let path = entry.expect("read crds/").path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let text = std::fs::read_to_string(&path).expect("read CRD");
            for doc in yaml_docs(&text) {
                if kind_of(&doc) == "CustomResourceDefinition" {
                    names.push(name_of(&doc).to_string());
                }
            }
        }
    }
    assert!(
        !names.is_empty(),
        "crds/ holds no CustomResourceDefinition; run `make generate`"
    );
    names.sort();
    names
}

/// Creates the namespaces the documents live in (server dry-run of a
/// namespaced object fails if its namespace does not exist).
pub fn ensure_namespaces(bed: &TestBed, docs: &[Value]) {
    let mut namespaces: Vec<&str> = docs.iter().filter_map(namespace_of).collect();
    namespaces.sort_unstable();
    namespaces.dedup();
    for ns in namespaces {
        let mut get = kubectl(bed);
        get.args(["get", "namespace", ns]);
        if run(get, None).is_ok() {
            continue;
        }
        let mut create = kubectl(bed);
        create.args(["create", "namespace", ns]);
        // Another test may have created it meanwhile.
        if let Err(e) = run(create, None) {
            assert!(e.contains("AlreadyExists"), "creating namespace {ns}: {e}");
        }
    }
}

/// `kubectl apply --server-side --dry-run=server` of a YAML stream: the real
/// API server validates every object (schema, CEL rules, RBAC escalation
/// checks, defaulting) without persisting anything.
pub fn server_dry_run(bed: &TestBed, yaml: &str, field_manager: &str) -> Result<String, String> {
    let mut cmd = kubectl(bed);
    cmd.args([
        "apply",
        "--server-side",
        "--dry-run=server",
        "--field-manager",
        field_manager,
        "-f",
        "-",
    ]);
    run(cmd, Some(yaml))
}

/// `kubectl diff --server-side`: what an apply of `yaml` would change (the
/// check ArgoCD's diffing does). `Ok(None)` means no diff.
pub fn server_side_diff(
    bed: &TestBed,
    yaml: &str,
    field_manager: &str,
) -> Result<Option<String>, String> {
    let mut cmd = kubectl(bed);
    cmd.args([
        "diff",
        "--server-side",
        // Helm and kubectl's client-side apply own fields under "Update"
        // operations; ArgoCD's server-side diff takes them over the same way.
        "--force-conflicts",
        "--field-manager",
        field_manager,
        "-f",
        "-",
    ]);
    let out = run_raw(&mut cmd, Some(yaml));
    match out.status.code() {
        Some(0) => Ok(None),
        Some(1) => Ok(Some(String::from_utf8_lossy(&out.stdout).into_owned())),
        _ => Err(format!(
            "kubectl diff failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )),
    }
}

/// The `.yaml` files of a directory, sorted.
pub fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    files
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// A kubeconfig for the test bed's API server that authenticates with a
/// token of ServiceAccount `namespace/name` (TokenRequest API): whatever
/// runs with it has exactly the RBAC that account was granted (as a pod
/// using it would).
pub async fn service_account_kubeconfig(
    bed: &TestBed,
    namespace: &str,
    name: &str,
    dir: &Path,
) -> PathBuf {
    ferrotel_e2e::stack::service_account_kubeconfig(
        &bed.client(),
        bed.kubeconfig(),
        namespace,
        name,
        &dir.join(format!("kubeconfig-{namespace}-{name}")),
    )
    .await
    .unwrap_or_else(|e| panic!("token for ServiceAccount {namespace}/{name}: {e}"))
}

/// The first container of a rendered Deployment (or Job) pod template.
pub fn pod_spec(doc: &Value) -> &Value {
    &doc["spec"]["template"]["spec"]
}

/// `args` of the named container of a pod template.
pub fn container_args(doc: &Value, container: &str) -> Vec<String> {
    let spec = pod_spec(doc);
    let containers = spec["containers"].as_array().into_iter().flatten();
    let init = spec["initContainers"].as_array().into_iter().flatten();
    let c = containers
        .chain(init)
        .find(|c| c["name"] == container)
        .unwrap_or_else(|| panic!("no container {container} in {}", name_of(doc)));
    c["args"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|v| v.as_str().expect("args are strings").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// The operator container's env vars with literal values or downward-API
/// fields resolved for a pod named `pod` in `namespace`.
pub fn container_env(
    doc: &Value,
    container: &str,
    pod: &str,
    namespace: &str,
) -> Vec<(String, String)> {
    let spec = pod_spec(doc);
    let c = spec["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["name"] == container)
        .unwrap_or_else(|| panic!("no container {container}"));
    let mut env = Vec::new();
    for var in c["env"].as_array().into_iter().flatten() {
        let name = var["name"].as_str().expect("env name").to_string();
        if let Some(value) = var["value"].as_str() {
            env.push((name, value.to_string()));
        } else {
            let value = match var["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                Some("metadata.namespace") => namespace.to_string(),
                Some("metadata.name") => pod.to_string(),
                other => panic!("env {name}: unsupported valueFrom {other:?}; teach the test"),
            };
            env.push((name, value));
        }
    }
    env
}

/// `ferrotel-operator <args> --help`: clap rejects an unknown or malformed
/// flag before it looks at `--help`, so success means the binary accepts
/// every argument the manifest passes.
pub fn assert_operator_accepts_args(args: &[String], origin: &str) {
    let binary =
        ferrotel_e2e::workspace_binary("ferrotel-operator").unwrap_or_else(|e| panic!("{e}"));
    let mut cmd = Command::new(binary);
    cmd.args(args).arg("--help");
    run(cmd, None)
        .unwrap_or_else(|e| panic!("the operator rejects the arguments of {origin}: {e}"));
}

/// Runs an ArgoCD health script the way ArgoCD does: the object as the
/// global `obj` (JSON nulls become nil), the returned table read as
/// `(status, message)`. mlua runs Lua 5.1, the dialect of ArgoCD's gopher-lua.
pub fn run_health_script(script: &str, name: &str, obj: &Value) -> (String, String) {
    use mlua::LuaSerdeExt;
    let lua = mlua::Lua::new();
    let options = mlua::serde::SerializeOptions::new()
        .serialize_none_to_null(false)
        .serialize_unit_to_null(false);
    let value = lua
        .to_value_with(obj, options)
        .expect("object converts to a Lua table");
    lua.globals().set("obj", value).expect("set obj");
    let result: mlua::Table = lua
        .load(script)
        .set_name(name)
        .eval()
        .unwrap_or_else(|e| panic!("health script {name} failed on {obj}: {e}"));
    let status: String = result
        .get("status")
        .unwrap_or_else(|e| panic!("{name}: no status returned: {e}"));
    let message: String = result.get("message").unwrap_or_default();
    (status, message)
}

/// ArgoCD's view of a Ferrotel CR's health, from our Lua health checks in
/// docs/gitops/argocd/health/.
pub fn argocd_health(obj: &Value) -> (String, String) {
    let kind = kind_of(obj);
    let path = repo_path(&format!("docs/gitops/argocd/health/ferrotel.io_{kind}.lua"));
    run_health_script(&read(&path), &path.display().to_string(), obj)
}
