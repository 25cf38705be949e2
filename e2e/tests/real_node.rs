//! The real node of the test bed (`ferrotel_e2e::node`): it registers Ready
//! beside the kwok nodes, runs pods from locally built images with cluster
//! DNS, leaves the host's kernel tunables alone, and leaves nothing behind —
//! after a normal stop, and after its owner was killed with SIGKILL (then
//! the next reaper removes it). The two tests run at the same time, so they
//! also show two nodes coexisting on one machine.
//!
//! Needs root and fails saying so.

use std::path::PathBuf;
use std::time::Duration;

use ferrotel_e2e::node::{self, NODE_NAME};
use ferrotel_e2e::{TestBed, TestBedOptions, stack, wait_for};
use k8s_openapi::api::core::v1::Node;
use kube::Api;

fn require_root() {
    assert!(
        stack::is_root(),
        "this test needs root: a real node creates a network namespace, cgroups and mounts (run make test with sudo)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_node_is_ready_beside_kwok_nodes_runs_pods_and_leaves_nothing_when_stopped() {
    require_root();
    let tunables = node::host_kernel_tunables();
    let bed = TestBed::start(TestBedOptions {
        nodes: 1,
        real_node: true,
        ..TestBedOptions::default()
    })
    .await
    .unwrap_or_else(|e| panic!("test bed with a real node: {e}"));
    let nodes: Api<Node> = Api::all(bed.client());
    let real = nodes
        .get(NODE_NAME)
        .await
        .expect("the real node is registered");
    let addresses = real
        .status
        .as_ref()
        .and_then(|s| s.addresses.clone())
        .unwrap_or_default();
    let (index, node_dir, logs_dir, node_ip) = bed.with_real_node(|n| {
        (
            n.network().index(),
            n.dir().to_path_buf(),
            n.logs_dir(),
            n.network().node_ip().to_string(),
        )
    });
    assert!(
        addresses
            .iter()
            .any(|a| a.type_ == "InternalIP" && a.address == node_ip),
        "the node reports its non-loopback InternalIP {node_ip}: {addresses:?}"
    );
    let kwok = nodes.get("kwok-node-0").await.expect("the kwok node");
    assert!(
        kwok.spec
            .and_then(|s| s.taints)
            .unwrap_or_default()
            .iter()
            .any(|t| t.key == "ferrotel.io/kwok"),
        "beside a real node, kwok nodes are tainted so real workloads land on the real node"
    );

    // CoreDNS runs as a pod of the node (from a locally built image) and
    // serves: its readiness probe is its own /ready, which needs the
    // kubernetes plugin to have synced through the `kubernetes` Service.
    let dns = stack::wait_pod_ready(&bed.client(), "kube-system", "k8s-app=kube-dns")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        dns.spec.and_then(|s| s.node_name).as_deref(),
        Some(NODE_NAME),
        "CoreDNS runs on the real node"
    );
    let logs = stack::pod_logs(
        &bed,
        "kube-system",
        dns.metadata.name.as_deref().unwrap_or_default(),
        false,
    );
    assert!(
        logs.contains("CoreDNS-"),
        "kubectl logs reaches the kubelet through the node IP: {logs}"
    );

    // The kubelet sets host-wide kernel tunables at start (panic on oops,
    // overcommit, ...) unless they already hold its values: not on a
    // machine it shares with everything else.
    assert_eq!(
        node::host_kernel_tunables(),
        tunables,
        "the host's kernel tunables are as they were before the kubelet started"
    );

    assert!(
        !node::leftovers(index, &node_dir, &logs_dir).is_empty(),
        "a running node has a network namespace, cgroups and mounts"
    );
    drop(bed);
    assert_eq!(
        node::leftovers(index, &node_dir, &logs_dir),
        Vec::<String>::new(),
        "everything of node {index} is gone after the test bed stopped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_owner_was_killed_is_torn_down_by_the_reaper() {
    require_root();
    let dir = tempfile::Builder::new()
        .prefix("ferrotel-killed-node-")
        .tempdir()
        .expect("tempdir")
        .keep();
    let testbed =
        ferrotel_e2e::workspace_binary("ferrotel-testbed").unwrap_or_else(|e| panic!("{e}"));
    // A detached daemon, as `make testbed-up` starts it.
    let mut daemon = std::process::Command::new(&testbed)
        .args(["serve", "--nodes", "0", "--dir"])
        .arg(&dir)
        .stdout(std::fs::File::create(dir.with_extension("log")).expect("log"))
        .stderr(std::fs::File::create(dir.with_extension("err")).expect("log"))
        .spawn()
        .expect("start ferrotel-testbed serve");
    let ready = dir.join("ready");
    let log = dir.with_extension("err");
    wait_for(
        "the daemon's test bed with a real node",
        Duration::from_secs(240),
        || {
            let exited = daemon.try_wait().ok().flatten();
            let ready = ready.exists();
            let log = log.clone();
            async move {
                if let Some(status) = exited {
                    return Err(format!(
                        "fatal: ferrotel-testbed serve exited ({status}): {}",
                        std::fs::read_to_string(log).unwrap_or_default()
                    ));
                }
                if ready {
                    Ok(())
                } else {
                    Err("not ready".into())
                }
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    // Its node: the claim whose owner is the daemon.
    let claim = std::fs::read_dir("/run/ferrotel-nodes")
        .expect("claims")
        .flatten()
        .find(|e| {
            std::fs::read_to_string(e.path().join("owner"))
                .is_ok_and(|o| o.starts_with(&format!("{} ", daemon.id())))
        })
        .expect("the daemon claimed a node");
    let index: u8 = claim.file_name().to_string_lossy().parse().expect("index");
    let owner = std::fs::read_to_string(claim.path().join("owner")).expect("owner");
    let mut lines = owner.lines().skip(1);
    let node_dir = PathBuf::from(lines.next().expect("node dir"));
    let logs_dir = PathBuf::from(lines.next().expect("logs dir"));

    // SIGKILL: no destructor runs. containerd, the kubelet and kube-proxy die
    // with it (PDEATHSIG); the containers, mounts, cgroups and network stay.
    daemon.kill().expect("SIGKILL the daemon");
    daemon.wait().expect("reap the daemon");
    let left = node::leftovers(index, &node_dir, &logs_dir);
    assert!(
        left.iter().any(|l| l.starts_with("network namespace"))
            && left.iter().any(|l| l.starts_with("cgroup")),
        "a killed owner leaves its node behind: {left:?}"
    );
    node::reap_stale();
    assert_eq!(
        node::leftovers(index, &node_dir, &logs_dir),
        Vec::<String>::new(),
        "the reaper removed everything of node {index}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(dir.with_extension("log"));
    let _ = std::fs::remove_file(dir.with_extension("err"));
}
