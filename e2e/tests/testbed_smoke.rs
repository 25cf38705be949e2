//! Smoke tests proving the test bed's parts are real: each one needs the
//! component it names and fails without it (kube-controller-manager for
//! ReplicaSets, DaemonSet pods and garbage collection, kube-scheduler for
//! placement, kwok for Running/Ready, RBAC for the restricted user).

use std::collections::BTreeSet;
use std::time::Duration;

use ferrotel_e2e::{TestBed, TestBedOptions, wait_for};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};

const TIMEOUT: Duration = Duration::from_secs(90);

fn labels(app: &str) -> serde_json::Value {
    serde_json::json!({ "app": app })
}

fn pod_template(app: &str) -> serde_json::Value {
    serde_json::json!({
        "metadata": {"labels": labels(app)},
        "spec": {"containers": [{"name": "app", "image": "registry.invalid/ferrotel/smoke:1"}]}
    })
}

fn deployment(name: &str, replicas: i32) -> Deployment {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels(name)},
            "template": pod_template(name),
        }
    }))
    .expect("valid Deployment")
}

fn pod_running_and_ready(pod: &Pod) -> bool {
    let status = pod.status.as_ref();
    status.and_then(|s| s.phase.as_deref()) == Some("Running")
        && status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

async fn running_pods(pods: &Api<Pod>, app: &str, want: usize) -> Vec<Pod> {
    let selector = format!("app={app}");
    wait_for(
        &format!("{want} Running and Ready pods with {selector}"),
        TIMEOUT,
        || async {
            let list = pods
                .list(&ListParams::default().labels(&selector))
                .await
                .map_err(|e| e.to_string())?;
            let total = list.items.len();
            let unscheduled = list
                .items
                .iter()
                .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_none())
                .count();
            let ready: Vec<Pod> = list
                .items
                .into_iter()
                .filter(pod_running_and_ready)
                .collect();
            if ready.len() == want {
                Ok(ready)
            } else {
                Err(format!(
                    "{} Running and Ready of {total} pods ({unscheduled} not scheduled)",
                    ready.len()
                ))
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn deployment_gets_a_replicaset_and_running_ready_pods_on_kwok_nodes() {
    let bed = TestBed::shared();
    let ns = bed.create_namespace("smoke-deploy").await;
    let client = bed.client();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    deployments
        .create(&PostParams::default(), &deployment("web", 3))
        .await
        .expect("create Deployment");

    let replicasets: Api<ReplicaSet> = Api::namespaced(client.clone(), &ns);
    let rs = wait_for("a ReplicaSet owned by Deployment web", TIMEOUT, || async {
        let list = replicasets
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?;
        list.items
            .into_iter()
            .find(|rs| {
                rs.metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|o| o.kind == "Deployment" && o.name == "web")
            })
            .ok_or_else(|| "no ReplicaSet yet".to_string())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));

    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let running = running_pods(&pods, "web", 3).await;
    let rs_name = rs.metadata.name.expect("ReplicaSet name");
    for pod in &running {
        let name = pod.metadata.name.clone().unwrap_or_default();
        assert!(
            pod.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.kind == "ReplicaSet" && o.name == rs_name),
            "pod {name} should be owned by ReplicaSet {rs_name}"
        );
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        assert!(
            bed.node_names().contains(&node),
            "pod {name} should be scheduled on a kwok node {:?}, got {node:?}",
            bed.node_names()
        );
    }

    let ready = wait_for(
        "Deployment web to report 3 ready replicas",
        TIMEOUT,
        || async {
            let d = deployments.get("web").await.map_err(|e| e.to_string())?;
            match d.status.and_then(|s| s.ready_replicas) {
                Some(3) => Ok(3),
                other => Err(format!("readyReplicas {other:?}")),
            }
        },
    )
    .await;
    if let Err(e) = ready {
        panic!("{e}");
    }
}

#[tokio::test]
async fn daemonset_runs_one_ready_pod_per_fake_node_and_reports_number_ready() {
    let bed = TestBed::shared();
    let ns = bed.create_namespace("smoke-ds").await;
    let client = bed.client();
    let daemonsets: Api<DaemonSet> = Api::namespaced(client.clone(), &ns);
    let ds: DaemonSet = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "agent"},
        "spec": {"selector": {"matchLabels": labels("agent")}, "template": pod_template("agent")}
    }))
    .expect("valid DaemonSet");
    daemonsets
        .create(&PostParams::default(), &ds)
        .await
        .expect("create DaemonSet");

    let nodes = bed.node_names().len();
    assert!(
        nodes >= 2,
        "the shared test bed should have several nodes, has {nodes}"
    );
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let running = running_pods(&pods, "agent", nodes).await;
    let placed: BTreeSet<String> = running
        .iter()
        .filter_map(|p| p.spec.as_ref().and_then(|s| s.node_name.clone()))
        .collect();
    let expected: BTreeSet<String> = bed.node_names().iter().cloned().collect();
    assert_eq!(placed, expected, "exactly one agent pod on every kwok node");

    let status = wait_for(
        "DaemonSet agent to report numberReady == nodes",
        TIMEOUT,
        || async {
            let ds = daemonsets.get("agent").await.map_err(|e| e.to_string())?;
            let s = ds.status.ok_or("no status yet")?;
            if s.number_ready == nodes as i32 {
                Ok(s)
            } else {
                Err(format!("numberReady {} of {nodes}", s.number_ready))
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        status.desired_number_scheduled, nodes as i32,
        "desiredNumberScheduled should count every kwok node"
    );
}

#[tokio::test]
async fn deleting_a_deployment_garbage_collects_its_replicaset_and_pods() {
    let bed = TestBed::shared();
    let ns = bed.create_namespace("smoke-gc").await;
    let client = bed.client();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    deployments
        .create(&PostParams::default(), &deployment("doomed", 2))
        .await
        .expect("create Deployment");
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    running_pods(&pods, "doomed", 2).await;

    // Background propagation: the API deletes the Deployment at once and the
    // garbage collector (kube-controller-manager) must remove the rest.
    deployments
        .delete("doomed", &DeleteParams::background())
        .await
        .expect("delete Deployment");
    let replicasets: Api<ReplicaSet> = Api::namespaced(client.clone(), &ns);
    let gone = wait_for(
        "the garbage collector to delete the ReplicaSet and its pods",
        TIMEOUT,
        || async {
            let rs = replicasets
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?
                .items
                .len();
            let p = pods
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?
                .items
                .len();
            if rs == 0 && p == 0 {
                Ok(())
            } else {
                Err(format!("{rs} ReplicaSets and {p} pods left"))
            }
        },
    )
    .await;
    if let Err(e) = gone {
        panic!("{e}");
    }
}

#[tokio::test]
async fn a_job_completes_when_kwok_finishes_its_pod() {
    // kwok moves Job-owned pods to Succeeded; the Job controller
    // (kube-controller-manager) must then count them and complete the Job.
    let bed = TestBed::shared();
    let ns = bed.create_namespace("smoke-job").await;
    let jobs: Api<Job> = Api::namespaced(bed.client(), &ns);
    let job: Job = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "once"},
        "spec": {
            "completions": 2,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "task", "image": "registry.invalid/ferrotel/task:1"}]
                }
            }
        }
    }))
    .expect("valid Job");
    jobs.create(&PostParams::default(), &job)
        .await
        .expect("create Job");
    let done = wait_for(
        "Job once to succeed twice and complete",
        TIMEOUT,
        || async {
            let j = jobs.get("once").await.map_err(|e| e.to_string())?;
            let status = j.status.ok_or("no status yet")?;
            let complete = status
                .conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Complete" && c.status == "True");
            match (status.succeeded, complete) {
                (Some(2), true) => Ok(()),
                (succeeded, complete) => {
                    Err(format!("succeeded {succeeded:?}, Complete {complete}"))
                }
            }
        },
    )
    .await;
    if let Err(e) = done {
        panic!("{e}");
    }
}

#[tokio::test]
async fn the_restricted_user_may_read_but_is_refused_writes_the_admin_may_do() {
    let bed = TestBed::shared();
    let ns = bed.create_namespace("smoke-rbac").await;
    let cm: ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "settings"},
        "data": {"k": "v"}
    }))
    .expect("valid ConfigMap");

    let restricted: Api<ConfigMap> = Api::namespaced(bed.restricted_client().await, &ns);
    restricted
        .list(&ListParams::default())
        .await
        .expect("the restricted user is bound to `view` and may list ConfigMaps");
    match restricted.create(&PostParams::default(), &cm).await {
        Err(kube::Error::Api(status)) => assert_eq!(
            status.code, 403,
            "RBAC should forbid the restricted user to create ConfigMaps: {status:?}"
        ),
        other => panic!("the restricted user must not create ConfigMaps, got {other:?}"),
    }

    let admin: Api<ConfigMap> = Api::namespaced(bed.client(), &ns);
    admin
        .create(&PostParams::default(), &cm)
        .await
        .expect("the admin (system:masters) may create the same ConfigMap");

    let out = bed
        .kubectl()
        .env("KUBECONFIG", bed.restricted_kubeconfig())
        .args([
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ])
        .output()
        .expect("run kubectl");
    assert!(out.status.success(), "kubectl auth whoami: {out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        bed.restricted_user(),
        "the restricted kubeconfig authenticates as the restricted user"
    );
}

#[tokio::test]
async fn service_account_tokens_are_signed_and_accepted_by_the_api_server() {
    let bed = TestBed::shared();
    let ns = bed.create_namespace("smoke-sa").await;
    let out = bed
        .kubectl()
        .args(["create", "token", "default", "-n", &ns])
        .output()
        .expect("run kubectl create token");
    assert!(out.status.success(), "TokenRequest failed: {out:?}");
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    // Authenticate with the token alone: no client certificate.
    let out = std::process::Command::new(ferrotel_e2e::tool_path("kubectl"))
        .env("KUBECONFIG", "/dev/null")
        .args([
            "--server",
            bed.server(),
            "--certificate-authority",
            &bed.ca_cert().display().to_string(),
            "--token",
            &token,
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ])
        .output()
        .expect("run kubectl auth whoami");
    assert!(
        out.status.success(),
        "the API server should accept the token: {out:?}"
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("system:serviceaccount:{ns}:default"),
        "the token authenticates as the ServiceAccount"
    );
}

#[tokio::test]
async fn a_dedicated_test_bed_stops_every_process_and_removes_its_directory_on_drop() {
    let bed = TestBed::start(TestBedOptions {
        nodes: 1,
        ..TestBedOptions::default()
    })
    .await
    .unwrap_or_else(|e| panic!("dedicated test bed: {e}"));
    let out = bed
        .kubectl()
        .args(["get", "nodes", "-o", "name"])
        .output()
        .expect("run kubectl");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "node/kwok-node-0",
        "kubectl against the dedicated bed lists its one node: {out:?}"
    );
    let pids = bed.pids();
    let names: BTreeSet<&str> = pids.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        BTreeSet::from([
            "etcd",
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "kwok"
        ]),
        "every component runs as its own process"
    );
    let dir = bed.dir().to_path_buf();
    drop(bed);
    for (name, pid) in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "{name} (pid {pid}) should be gone after drop"
        );
    }
    assert!(
        !dir.exists(),
        "{} should be removed after a passing test",
        dir.display()
    );
}

#[test]
fn workspace_binary_finds_a_built_binary_and_names_the_fix_for_a_missing_one() {
    // Cargo builds this package's binaries before its integration tests.
    let found = ferrotel_e2e::workspace_binary("ferrotel-testbed")
        .unwrap_or_else(|e| panic!("ferrotel-testbed should be found: {e}"));
    assert!(found.is_file(), "{} should exist", found.display());
    let missing = ferrotel_e2e::workspace_binary("ferrotel-no-such-binary")
        .expect_err("a binary that is never built cannot be found");
    assert!(
        missing
            .to_string()
            .contains("cargo build --workspace --bins"),
        "the error should say how to fix it: {missing}"
    );
}
