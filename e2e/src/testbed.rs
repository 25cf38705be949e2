//! A real Kubernetes control plane on loopback: etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler and kwok (fake nodes whose pods
//! become Running and Ready), all as local processes in one directory.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Node, ServiceAccount};
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use kube::api::{Api, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::pki::{self, ADMIN_USER, PkiFiles, RESTRICTED_USER};
use crate::process::{self, Process};
use crate::tools::try_tool_path;
use crate::{Error, FATAL, Result, free_port, wait_for};

/// Annotation kwok is told to manage nodes by.
pub const KWOK_NODE_ANNOTATION: (&str, &str) = ("kwok.x-k8s.io/node", "fake");
/// Label every fake node carries (`type=kwok`), for node selectors.
pub const KWOK_NODE_LABEL: (&str, &str) = ("type", "kwok");

/// How long the control plane may take to come up on a busy 2-core machine.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// Options for [`TestBed::start`].
#[derive(Debug, Clone)]
pub struct TestBedOptions {
    /// Number of kwok fake nodes (named `kwok-node-0`, `kwok-node-1`, ...).
    pub nodes: usize,
    /// Use this directory instead of a fresh temporary one. It is never
    /// deleted by the test bed (used by `ferrotel-testbed up`).
    pub dir: Option<PathBuf>,
    /// Also run a real node ([`crate::node`]): containerd, kubelet,
    /// kube-proxy and CoreDNS. Needs root. The kwok nodes are then tainted
    /// `ferrotel.io/kwok=fake:NoSchedule`, so ordinary workloads land on the
    /// real node (DaemonSets that tolerate everything still cover them).
    pub real_node: bool,
    /// More kube-apiserver flags, appended to the test bed's own (e.g. an
    /// audit policy and log, to count one client's requests by verb).
    pub apiserver_args: Vec<String>,
}

impl Default for TestBedOptions {
    fn default() -> Self {
        TestBedOptions {
            nodes: 3,
            dir: None,
            real_node: false,
            apiserver_args: Vec::new(),
        }
    }
}

impl TestBedOptions {
    /// Makes the API server write an audit log of `user`'s requests
    /// (metadata level: verb, resource, name, stages, timestamps; nothing
    /// else is logged) into `dir`, and returns the log's path. Counting one
    /// client's requests from outside is how the operator's quietness is
    /// measured (no polling, no writes on restart).
    pub fn audit_user(&mut self, user: &str, dir: &Path) -> std::io::Result<PathBuf> {
        let log = dir.join("audit.log");
        let policy = dir.join("audit-policy.yaml");
        std::fs::write(
            &policy,
            format!(
                "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n\
                 - level: Metadata\n  users: [\"{user}\"]\n- level: None\n"
            ),
        )?;
        self.apiserver_args.extend([
            format!("--audit-policy-file={}", policy.display()),
            format!("--audit-log-path={}", log.display()),
            "--audit-log-maxsize=0".into(),
        ]);
        Ok(log)
    }
}

/// Taint of the kwok nodes of a test bed that also has a real node.
pub const KWOK_TAINT: (&str, &str) = ("ferrotel.io/kwok", "fake");
/// The `kubernetes` Service IP (first of the service range).
const KUBERNETES_SERVICE_IP: &str = "10.96.0.1";

/// One running control plane. Dropping it kills every component; its
/// directory is deleted unless a test panicked (then the path of the logs is
/// printed). See the crate docs for the shared instance.
#[derive(Debug)]
pub struct TestBed {
    dir: PathBuf,
    /// Delete `dir` on drop (false for caller-provided dirs and the shared bed).
    owns_dir: bool,
    processes: Mutex<Vec<Process>>,
    kubeconfig: PathBuf,
    restricted_kubeconfig: PathBuf,
    config: kube::Config,
    server: String,
    nodes: Vec<String>,
    panics_at_start: usize,
    startup: Duration,
    /// The real node, when asked for (stopped before the control plane).
    node: Mutex<Option<crate::node::RealNode>>,
    /// Its network, from before the API server starts: torn down by `stop`
    /// if the node never started.
    network: Mutex<Option<crate::node::NodeNetwork>>,
    /// The API server's program and arguments, to start it again with the
    /// same flags ([`TestBed::restart_apiserver`]).
    apiserver_command: Mutex<Option<(PathBuf, Vec<String>)>>,
}

impl TestBed {
    /// The test bed shared by all tests of this process, started on first
    /// use (3 nodes). Tests isolate themselves with [`TestBed::create_namespace`].
    /// Its processes die with the test process; its directory is deleted at
    /// exit unless a test failed. Panics if it cannot start.
    pub fn shared() -> &'static TestBed {
        // A failed start is remembered: every later test of the process fails
        // at once with the same reason instead of waiting out its own start.
        static SHARED: OnceLock<std::result::Result<TestBed, String>> = OnceLock::new();
        let shared = SHARED.get_or_init(|| {
            // Started on a thread with its own runtime: this works from sync
            // code and from any test runtime, and nothing of the shared bed is
            // tied to a runtime that dies with one test.
            let started = std::thread::spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("tokio runtime for the shared test bed")
                    .block_on(TestBed::start(TestBedOptions::default()))
            })
            .join()
            .map_err(|_| "its start thread panicked".to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
            started.map(|mut bed| {
                if bed.owns_dir {
                    bed.owns_dir = false;
                    process::remove_at_exit(bed.dir.clone());
                }
                bed
            })
        });
        match shared {
            Ok(bed) => bed,
            Err(e) => panic!("the shared test bed failed to start: {e}"),
        }
    }

    /// Starts a dedicated control plane (own ports, own directory) and waits
    /// until the API is ready, the controllers run and every fake node is Ready.
    /// Retries a few times if a component lost a race for its port.
    pub async fn start(opts: TestBedOptions) -> Result<TestBed> {
        ensure_crypto_provider();
        // A missing tool is a setup problem: say so before creating anything.
        for tool in [
            "etcd",
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "kwok",
        ] {
            try_tool_path(tool)?;
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            match Self::start_once(&opts).await {
                Ok(bed) => return Ok(bed),
                Err((err, dir)) => {
                    let port_race = dir.as_deref().is_some_and(logs_mention_port_in_use);
                    if port_race && attempt < 3 {
                        tracing::warn!(attempt, error = %err, "Test bed lost a port race; retrying");
                        if opts.dir.is_none()
                            && let Some(dir) = dir
                        {
                            let _ = std::fs::remove_dir_all(dir);
                        }
                        continue;
                    }
                    if let Some(dir) = dir {
                        if opts.dir.is_none() {
                            let _ = std::fs::remove_dir_all(dir.join("etcd"));
                        }
                        eprintln!(
                            "ferrotel-e2e: test bed failed to start; logs kept in {}",
                            dir.join("logs").display()
                        );
                    }
                    return Err(err);
                }
            }
        }
    }

    async fn start_once(
        opts: &TestBedOptions,
    ) -> std::result::Result<TestBed, (Error, Option<PathBuf>)> {
        let began = Instant::now();
        let panics_at_start = process::panics_observed();
        let (dir, owns_dir) = match &opts.dir {
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(|source| {
                    (
                        Error::Io {
                            path: dir.clone(),
                            source,
                        },
                        None,
                    )
                })?;
                (
                    std::path::absolute(dir).unwrap_or_else(|_| dir.clone()),
                    false,
                )
            }
            None => {
                let tmp = tempfile::Builder::new()
                    .prefix("ferrotel-testbed-")
                    .tempdir()
                    .map_err(|source| {
                        (
                            Error::Io {
                                path: std::env::temp_dir(),
                                source,
                            },
                            None,
                        )
                    })?;
                (tmp.keep(), true)
            }
        };
        let mut bed = TestBed {
            kubeconfig: dir.join("kubeconfig"),
            restricted_kubeconfig: dir.join("restricted.kubeconfig"),
            dir: dir.clone(),
            owns_dir,
            processes: Mutex::new(Vec::new()),
            config: kube::Config::new("https://127.0.0.1:1".parse().expect("static uri")),
            server: String::new(),
            nodes: Vec::new(),
            panics_at_start,
            startup: Duration::ZERO,
            node: Mutex::new(None),
            network: Mutex::new(None),
            apiserver_command: Mutex::new(None),
        };
        match bed.boot(opts).await {
            Ok(()) => {
                bed.startup = began.elapsed();
                tracing::info!(dir = %dir.display(), startup_ms = bed.startup.as_millis() as u64, "Test bed ready");
                Ok(bed)
            }
            Err(e) => {
                bed.stop();
                // Keep the directory for the logs; `start` decides.
                bed.owns_dir = false;
                Err((e, Some(dir)))
            }
        }
    }

    async fn boot(&mut self, opts: &TestBedOptions) -> Result<()> {
        let logs = self.logs_dir();
        for sub in [&logs, &self.dir.join("etcd")] {
            // 0700: etcd refuses nothing but warns about anything wider.
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(sub)
                .map_err(|source| Error::Io {
                    path: sub.clone(),
                    source,
                })?;
        }
        // A real node reaches the API server on the host end of its veth:
        // the address (and the node's network) must exist first.
        let network = if opts.real_node {
            Some(crate::node::NodeNetwork::create(
                &self.dir.join("node"),
                &logs,
            )?)
        } else {
            None
        };
        *self.network.lock().unwrap_or_else(|e| e.into_inner()) = network.clone();
        let bind_ip = network
            .as_ref()
            .map_or("127.0.0.1".to_owned(), |n| n.host_ip().to_string());
        let extra_sans: Vec<String> = network
            .as_ref()
            .map(|n| vec![n.host_ip().to_string(), KUBERNETES_SERVICE_IP.to_owned()])
            .unwrap_or_default();
        let pki = pki::generate(&self.dir.join("pki"), &extra_sans)?;

        let etcd_client = free_port();
        let etcd_peer = free_port();
        let api_port = free_port();
        self.server = format!("https://{bind_ip}:{api_port}");
        write_kubeconfig(
            &self.kubeconfig,
            &self.server,
            &pki.ca_cert,
            &pki.admin_cert,
            &pki.admin_key,
            ADMIN_USER,
        )?;
        write_kubeconfig(
            &self.restricted_kubeconfig,
            &self.server,
            &pki.ca_cert,
            &pki.restricted_cert,
            &pki.restricted_key,
            RESTRICTED_USER,
        )?;

        // etcd and the API server start together: the API server retries
        // etcd until it answers, which saves a round of waiting.
        let mut etcd = Command::new(try_tool_path("etcd")?);
        let peer = format!("http://127.0.0.1:{etcd_peer}");
        let client_url = format!("http://127.0.0.1:{etcd_client}");
        etcd.args([
            "--name=testbed".to_string(),
            format!("--data-dir={}", self.dir.join("etcd").display()),
            format!("--listen-client-urls={client_url}"),
            format!("--advertise-client-urls={client_url}"),
            format!("--listen-peer-urls={peer}"),
            format!("--initial-advertise-peer-urls={peer}"),
            format!("--initial-cluster=testbed={peer}"),
            // Test data is disposable: don't pay for fsync on a shared disk.
            "--unsafe-no-fsync".to_string(),
            "--log-level=warn".to_string(),
        ]);
        self.spawn("etcd", etcd)?;

        let apiserver_program = try_tool_path("kube-apiserver")?;
        let mut args = apiserver_args(
            &pki,
            &self.dir,
            etcd_client,
            api_port,
            network.is_some().then_some(bind_ip.as_str()),
        );
        args.extend(opts.apiserver_args.iter().cloned());
        let mut apiserver = Command::new(&apiserver_program);
        apiserver.args(&args);
        *self
            .apiserver_command
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some((apiserver_program, args));
        self.spawn("kube-apiserver", apiserver)?;

        self.config = load_config(&self.kubeconfig).await?;
        self.wait_apiserver_ready("kube-apiserver /readyz").await?;
        let client = self.client();

        // Controllers, scheduler and kwok use the admin identity: RBAC for
        // the components themselves is not what Ferrotel's tests exercise.
        let kcm_kubeconfig = self.kubeconfig.display().to_string();
        let mut kcm = Command::new(try_tool_path("kube-controller-manager")?);
        kcm.args([
            format!("--kubeconfig={kcm_kubeconfig}"),
            // No health/metrics server: nothing scrapes it, and one port
            // fewer to race for.
            "--secure-port=0".to_string(),
            "--leader-elect=false".to_string(),
            "--controllers=*".to_string(),
            "--use-service-account-credentials=false".to_string(),
            format!(
                "--service-account-private-key-file={}",
                pki.sa_key.display()
            ),
            format!("--root-ca-file={}", pki.ca_cert.display()),
            "--kube-api-qps=200".to_string(),
            "--kube-api-burst=400".to_string(),
        ]);
        self.spawn("kube-controller-manager", kcm)?;

        let mut scheduler = Command::new(try_tool_path("kube-scheduler")?);
        scheduler.args([
            format!("--kubeconfig={kcm_kubeconfig}"),
            // No health/metrics server: nothing scrapes it, and one port
            // fewer to race for.
            "--secure-port=0".to_string(),
            "--leader-elect=false".to_string(),
        ]);
        self.spawn("kube-scheduler", scheduler)?;

        let mut kwok = Command::new(try_tool_path("kwok")?);
        kwok.args([
            format!("--kubeconfig={kcm_kubeconfig}"),
            "--manage-all-nodes=false".to_string(),
            format!(
                "--manage-nodes-with-annotation-selector={}={}",
                KWOK_NODE_ANNOTATION.0, KWOK_NODE_ANNOTATION.1
            ),
            // Pod IPs; node IPs are set per node in `fake_node`.
            "--cidr=10.244.0.1/16".to_string(),
            format!("--server-address=127.0.0.1:{}", free_port()),
        ]);
        // kwok reads ~/.kwok otherwise; keep instances independent.
        kwok.env("KWOK_WORKDIR", self.dir.join("kwok"));
        self.spawn("kwok", kwok)?;

        let crbs: Api<ClusterRoleBinding> = Api::all(client.clone());
        let binding: ClusterRoleBinding = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "ferrotel-restricted-view"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": RESTRICTED_USER}]
        }))
        .expect("static ClusterRoleBinding");
        create_or_exists(
            &crbs,
            &binding,
            "ClusterRoleBinding ferrotel-restricted-view",
        )
        .await?;

        let nodes: Api<Node> = Api::all(client.clone());
        for i in 0..opts.nodes {
            let name = format!("kwok-node-{i}");
            create_or_exists(
                &nodes,
                &fake_node(&name, i, network.is_some()),
                &format!("Node {name}"),
            )
            .await?;
            self.nodes.push(name);
        }

        let this = &*self;
        let want = self.nodes.clone();
        wait_for("every kwok node to be Ready", START_TIMEOUT, || {
            let nodes = nodes.clone();
            let want = want.clone();
            async move {
                this.check_processes().map_err(|e| format!("{FATAL}{e}"))?;
                let list = nodes
                    .list(&ListParams::default())
                    .await
                    .map_err(|e| e.to_string())?;
                let not_ready: Vec<&String> =
                    want.iter()
                        .filter(|n| {
                            !list.items.iter().any(|node| {
                                node.metadata.name.as_ref() == Some(*n) && node_ready(node)
                            })
                        })
                        .collect();
                if not_ready.is_empty() {
                    Ok(())
                } else {
                    Err(format!("not Ready yet: {not_ready:?}"))
                }
            }
        })
        .await
        .map_err(|e| self.fatal_or(e))?;

        // The ServiceAccount controller (kube-controller-manager) creates
        // `default` in every namespace; pods can't be created before it.
        self.wait_for_default_service_account("default").await?;
        if let Some(network) = network {
            self.start_real_node(network, &pki).await?;
        }
        Ok(())
    }

    async fn start_real_node(
        &mut self,
        network: crate::node::NodeNetwork,
        pki: &PkiFiles,
    ) -> Result<()> {
        use crate::images::catalog;
        let (pause, coredns) = tokio::task::spawn_blocking(|| -> Result<_> {
            Ok((catalog::pause()?, catalog::coredns()?))
        })
        .await
        .map_err(|e| Error::Node(format!("building the node images panicked: {e}")))??;
        let credentials = crate::node::NodeCredentials {
            ca_cert: pki.ca_cert.clone(),
            kubelet: crate::node::ClientCert {
                cert: pki.kubelet_cert.clone(),
                key: pki.kubelet_key.clone(),
            },
            proxy: crate::node::ClientCert {
                cert: pki.proxy_cert.clone(),
                key: pki.proxy_key.clone(),
            },
        };
        self.wait_for_default_service_account("kube-system").await?;
        let client = self.client();
        let node = crate::node::RealNode::start(
            network,
            &self.dir.join("node"),
            &self.logs_dir(),
            &self.server,
            &credentials,
            &[pause, coredns.clone()],
            &client,
        )
        .await?;
        let started = node.start_dns(&self.kubeconfig, &client, &coredns).await;
        *self.node.lock().unwrap_or_else(|e| e.into_inner()) = Some(node);
        started
    }

    /// Stops the API server (`SIGTERM`, then `SIGKILL` after 10 s), waits
    /// `down`, and starts it again with the same flags on the same port and
    /// etcd; returns once `/readyz` answers. Every client (the operator,
    /// probes, kubelet, controllers) sees its connections drop and must
    /// reconnect: what the fault tests check.
    pub async fn restart_apiserver(&self, down: Duration) -> Result<()> {
        let (program, args) = self
            .apiserver_command
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| Error::Node("the API server was never started".into()))?;
        {
            let mut procs = self.processes.lock().unwrap_or_else(|e| e.into_inner());
            let apiserver = procs
                .iter_mut()
                .find(|p| p.name() == "kube-apiserver")
                .ok_or_else(|| Error::Node("no kube-apiserver process to restart".into()))?;
            apiserver.terminate(Duration::from_secs(10));
        }
        tokio::time::sleep(down).await;
        let mut cmd = Command::new(&program);
        cmd.args(&args);
        let log = self.logs_dir().join("kube-apiserver.log");
        let started = Process::spawn("kube-apiserver", cmd, &log)?;
        {
            // Same place in the list: components stop in reverse start order.
            let mut procs = self.processes.lock().unwrap_or_else(|e| e.into_inner());
            let slot = procs
                .iter_mut()
                .find(|p| p.name() == "kube-apiserver")
                .expect("found above");
            // The old one is reaped: its drop would only signal its
            // process group id again, which the kernel may have reused.
            std::mem::forget(std::mem::replace(slot, started));
        }
        self.wait_apiserver_ready("the restarted kube-apiserver /readyz")
            .await
    }

    /// Waits for the API server's `/readyz`, failing at once if one of the
    /// bed's processes died meanwhile.
    async fn wait_apiserver_ready(&self, what: &str) -> Result<()> {
        let client = self.client();
        let readyz = http_get_request("/readyz");
        wait_for(what, START_TIMEOUT, || {
            let (client, req) = (client.clone(), readyz.clone());
            async move {
                self.check_processes().map_err(|e| format!("{FATAL}{e}"))?;
                client
                    .request_text(req)
                    .await
                    .map_err(|e| format!("not ready: {e}"))
            }
        })
        .await
        .map_err(|e| self.fatal_or(e))?;
        Ok(())
    }

    /// Whether this bed has a real node.
    pub fn has_real_node(&self) -> bool {
        self.node
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// Runs `f` with the real node; panics if the bed has none (a test
    /// setup error: start it with `TestBedOptions { real_node: true, .. }`).
    pub fn with_real_node<T>(&self, f: impl FnOnce(&mut crate::node::RealNode) -> T) -> T {
        let mut guard = self.node.lock().unwrap_or_else(|e| e.into_inner());
        let node = guard.as_mut().expect(
            "this test bed has no real node: start it with TestBedOptions { real_node: true, .. }",
        );
        f(node)
    }

    /// Loads locally built images into the real node's containerd.
    pub fn import_images(&self, images: &[crate::images::LocalImage]) -> Result<()> {
        self.with_real_node(|node| images.iter().try_for_each(|i| node.import(i)))
    }

    fn spawn(&self, name: &str, cmd: Command) -> Result<()> {
        let log = self.logs_dir().join(format!("{name}.log"));
        let p = Process::spawn(name, cmd, &log)?;
        self.processes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(p);
        Ok(())
    }

    /// Fails if any component has exited.
    pub fn check_processes(&self) -> Result<()> {
        if let Some(node) = self.node.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            node.check_processes()?;
        }
        let mut procs = self.processes.lock().unwrap_or_else(|e| e.into_inner());
        for p in procs.iter_mut() {
            p.check_running()?;
        }
        Ok(())
    }

    /// A timeout caused by a dead component is reported as that component's death.
    fn fatal_or(&self, e: Error) -> Error {
        match self.check_processes() {
            Err(fatal) => fatal,
            Ok(()) => e,
        }
    }

    /// Kills every component (reverse start order), the real node first.
    fn stop(&self) {
        // Taken, so that a second `stop` never tears down an index that
        // another process may have claimed meanwhile.
        let node = self.node.lock().unwrap_or_else(|e| e.into_inner()).take();
        let network = self
            .network
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(mut node) = node {
            node.stop();
        } else if let Some(network) = network {
            // Its network was set up, the node never started (or failed).
            crate::node::teardown(network.index(), &self.dir.join("node"), &self.logs_dir());
        }
        let mut procs = self.processes.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(mut p) = procs.pop() {
            p.kill();
        }
    }

    /// A new admin client (`system:masters`). Create one per test: a client
    /// is tied to the tokio runtime it was created in.
    pub fn client(&self) -> kube::Client {
        ensure_crypto_provider();
        kube::Client::try_from(self.config.clone()).expect("kube client from the test bed config")
    }

    /// The admin client configuration, e.g. to build a client yourself.
    pub fn kube_config(&self) -> &kube::Config {
        &self.config
    }

    /// Admin kubeconfig (client certificate in group `system:masters`).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// Kubeconfig of [`TestBed::restricted_user`], who may only read
    /// (ClusterRole `view`). Bind more roles to that user name if a test needs.
    pub fn restricted_kubeconfig(&self) -> &Path {
        &self.restricted_kubeconfig
    }

    /// A client authenticated as [`TestBed::restricted_user`].
    pub async fn restricted_client(&self) -> kube::Client {
        ensure_crypto_provider();
        let config = load_config(&self.restricted_kubeconfig)
            .await
            .expect("restricted kubeconfig");
        kube::Client::try_from(config).expect("restricted kube client")
    }

    /// User name of the restricted user (`ferrotel-restricted`, group
    /// `ferrotel:restricted`).
    pub fn restricted_user(&self) -> &'static str {
        RESTRICTED_USER
    }

    /// The CA certificate (PEM) that signed the API server's serving
    /// certificate and every client certificate.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("pki").join("ca.crt")
    }

    /// The API server URL (`https://127.0.0.1:<port>`).
    pub fn server(&self) -> &str {
        &self.server
    }

    /// `kubectl` (ours, from `make tools`) with `KUBECONFIG` set to the admin kubeconfig.
    pub fn kubectl(&self) -> Command {
        let mut cmd = Command::new(crate::tool_path("kubectl"));
        cmd.env("KUBECONFIG", &self.kubeconfig);
        cmd
    }

    /// Names of the kwok fake nodes (all Ready, labelled `type=kwok`, no taints).
    pub fn node_names(&self) -> &[String] {
        &self.nodes
    }

    /// The instance directory (pki/, etcd/, logs/, kubeconfigs).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Component logs: `etcd.log`, `kube-apiserver.log`,
    /// `kube-controller-manager.log`, `kube-scheduler.log`, `kwok.log`.
    pub fn logs_dir(&self) -> PathBuf {
        self.dir.join("logs")
    }

    /// How long [`TestBed::start`] took.
    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    /// `(component, pid)` of every running component.
    pub fn pids(&self) -> Vec<(String, u32)> {
        self.processes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|p| (p.name().to_string(), p.pid()))
            .collect()
    }

    /// Creates a namespace named `<prefix>-<unique suffix>` and waits until
    /// its `default` ServiceAccount exists (so pods can be created at once).
    /// Returns the name. Panics on failure (it is test setup).
    pub async fn create_namespace(&self, prefix: &str) -> String {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let mut clean: String = prefix
            .to_ascii_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        clean.truncate(40);
        let clean = clean.trim_matches('-');
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!(
            "{}-{}-{:04x}",
            if clean.is_empty() { "test" } else { clean },
            COUNTER.fetch_add(1, Ordering::SeqCst),
            (nanos ^ std::process::id()) & 0xffff
        );
        let api: Api<Namespace> = Api::all(self.client());
        let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": name}}))
            .expect("static Namespace");
        api.create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("failed to create namespace {name}: {e}"));
        self.wait_for_default_service_account(&name)
            .await
            .unwrap_or_else(|e| panic!("namespace {name} never got its ServiceAccount: {e}"));
        name
    }

    async fn wait_for_default_service_account(&self, namespace: &str) -> Result<()> {
        let sas: Api<ServiceAccount> = Api::namespaced(self.client(), namespace);
        let what = format!("ServiceAccount {namespace}/default (kube-controller-manager)");
        wait_for(&what, START_TIMEOUT, || {
            let sas = sas.clone();
            async move {
                self.check_processes().map_err(|e| format!("{FATAL}{e}"))?;
                match sas.get_opt("default").await {
                    Ok(Some(_)) => Ok(()),
                    Ok(None) => Err("absent".into()),
                    Err(e) => Err(e.to_string()),
                }
            }
        })
        .await
        .map_err(|e| self.fatal_or(e))
    }

    /// Keep the directory on drop even if no test failed (for debugging).
    pub fn keep_dir(&mut self) {
        self.owns_dir = false;
    }
}

impl Drop for TestBed {
    fn drop(&mut self) {
        self.stop();
        let failed = std::thread::panicking() || process::panics_observed() > self.panics_at_start;
        if failed {
            if self.owns_dir {
                // Keep the logs, not etcd's preallocated WAL (~120 MB).
                let _ = std::fs::remove_dir_all(self.dir.join("etcd"));
            }
            eprintln!(
                "ferrotel-e2e: test failed; test bed logs kept in {}",
                self.logs_dir().display()
            );
        } else if self.owns_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Selects rustls' `ring` provider for the process unless one is set. A
/// workspace-wide build unifies features (kube brings `ring`, the probe's
/// exporter `aws-lc-rs`) and rustls then refuses to choose, so the first
/// client would panic in every test that uses the test bed.
fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// `node_ip`: the host address a real node reaches the API server on; the
/// API server then listens there (not on loopback), publishes it as the
/// `kubernetes` Service endpoint and talks to the kubelet with a client
/// certificate.
fn apiserver_args(
    pki: &PkiFiles,
    dir: &Path,
    etcd_port: u16,
    port: u16,
    node_ip: Option<&str>,
) -> Vec<String> {
    let issuer = "https://kubernetes.default.svc.cluster.local";
    let address = node_ip.unwrap_or("127.0.0.1");
    let mut args = vec![
        format!("--etcd-servers=http://127.0.0.1:{etcd_port}"),
        format!("--bind-address={address}"),
        format!("--advertise-address={address}"),
        format!("--secure-port={port}"),
        format!("--tls-cert-file={}", pki.apiserver_cert.display()),
        format!("--tls-private-key-file={}", pki.apiserver_key.display()),
        format!("--client-ca-file={}", pki.ca_cert.display()),
        format!("--service-account-issuer={issuer}"),
        format!("--api-audiences={issuer}"),
        format!("--service-account-key-file={}", pki.sa_pub.display()),
        format!(
            "--service-account-signing-key-file={}",
            pki.sa_key.display()
        ),
        "--authorization-mode=Node,RBAC".into(),
        "--service-cluster-ip-range=10.96.0.0/16".into(),
        "--allow-privileged=true".into(),
        "--profiling=false".into(),
        format!("--cert-dir={}", dir.join("apiserver-certs").display()),
    ];
    if node_ip.is_some() {
        args.extend([
            format!(
                "--kubelet-client-certificate={}",
                pki.apiserver_kubelet_cert.display()
            ),
            format!(
                "--kubelet-client-key={}",
                pki.apiserver_kubelet_key.display()
            ),
            "--kubelet-preferred-address-types=InternalIP".into(),
        ]);
    } else {
        // No kubelets to reach and loopback can't be an Endpoints address.
        args.push("--endpoint-reconciler-type=none".into());
    }
    args
}

fn write_kubeconfig(
    path: &Path,
    server: &str,
    ca: &Path,
    cert: &Path,
    key: &Path,
    user: &str,
) -> Result<()> {
    let text = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: ferrotel-testbed
  cluster:
    server: {server}
    certificate-authority: {ca}
users:
- name: {user}
  user:
    client-certificate: {cert}
    client-key: {key}
contexts:
- name: ferrotel-testbed
  context:
    cluster: ferrotel-testbed
    user: {user}
    namespace: default
current-context: ferrotel-testbed
",
        ca = ca.display(),
        cert = cert.display(),
        key = key.display(),
    );
    std::fs::write(path, text).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

async fn load_config(kubeconfig: &Path) -> Result<kube::Config> {
    let kc = Kubeconfig::read_from(kubeconfig).map_err(|e| Error::Kube {
        context: format!("read kubeconfig {}", kubeconfig.display()),
        source: kube::Error::InferKubeconfig(e),
    })?;
    kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|e| Error::Kube {
            context: format!("load kubeconfig {}", kubeconfig.display()),
            source: kube::Error::InferKubeconfig(e),
        })
}

fn http_get_request(path: &str) -> http::Request<Vec<u8>> {
    http::Request::get(path)
        .body(Vec::new())
        .expect("static request")
}

async fn create_or_exists<K>(api: &Api<K>, obj: &K, what: &str) -> Result<()>
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.create(&PostParams::default(), obj).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(source) => Err(Error::Kube {
            context: format!("create {what}"),
            source,
        }),
    }
}

fn fake_node(name: &str, index: usize, tainted: bool) -> Node {
    let taints = if tainted {
        serde_json::json!([{"key": KWOK_TAINT.0, "value": KWOK_TAINT.1, "effect": "NoSchedule"}])
    } else {
        serde_json::json!([])
    };
    // Distinct, never-routed addresses so tests can tell nodes apart.
    let ip = format!("10.255.{}.{}", index / 250, index % 250 + 1);
    serde_json::from_value(serde_json::json!({
        "metadata": {
            "name": name,
            "annotations": {
                KWOK_NODE_ANNOTATION.0: KWOK_NODE_ANNOTATION.1,
                "node.alpha.kubernetes.io/ttl": "0",
            },
            "labels": {
                KWOK_NODE_LABEL.0: KWOK_NODE_LABEL.1,
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "node-role.kubernetes.io/agent": "",
            },
        },
        "spec": {"taints": taints},
        "status": {
            "addresses": [
                {"type": "InternalIP", "address": ip},
                {"type": "Hostname", "address": name},
            ],
            "allocatable": {"cpu": "32", "memory": "256Gi", "pods": "110"},
            "capacity": {"cpu": "32", "memory": "256Gi", "pods": "110"},
            "nodeInfo": {
                "architecture": "amd64",
                "operatingSystem": "linux",
                "kubeletVersion": "fake",
                "kubeProxyVersion": "fake",
            },
        },
    }))
    .expect("static Node")
}

fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn logs_mention_port_in_use(dir: &Path) -> bool {
    std::fs::read_dir(dir.join("logs"))
        .into_iter()
        .flatten()
        .flatten()
        .any(|entry| {
            std::fs::read_to_string(entry.path())
                .is_ok_and(|text| text.contains("address already in use"))
        })
}
