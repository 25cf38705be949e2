use super::*;
use ferrotel_api::probe_config::{OtlpProtocol, PeerResolution, ViewsConfig};

const IMAGE: &str = "ghcr.io/ferrotel/ferrotel-probe:test";

fn fixture(yaml: &str) -> Instrumentation {
    serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("fixture does not parse: {e}\n{yaml}"))
}

const MINIMAL: &str = r#"
apiVersion: ferrotel.io/v1alpha1
kind: Instrumentation
metadata: {name: default, namespace: observability, uid: 00000000-0000-0000-0000-000000000001}
spec:
  languages: [go, python]
  exporter: {collectorRef: {name: otel}}
"#;

const FULL: &str = r#"
apiVersion: ferrotel.io/v1alpha1
kind: Instrumentation
metadata: {name: shop, namespace: team-a, uid: 00000000-0000-0000-0000-000000000002}
spec:
  languages: [python]
  exporter:
    endpoint: https://otel.example.com:4318
    protocol: http/protobuf
    tls: {secretName: otel-ca, certKey: tls.crt, keyKey: tls.key}
  selector:
    namespaceSelector: {matchLabels: {env: prod}}
    podSelector: {matchExpressions: [{key: app, operator: In, values: [web]}]}
  sampler: {type: traceidratio, ratio: "0.25"}
  propagators: [tracecontext, b3]
  propagation: {inject: true, join: true}
  resource: {attributes: {deployment.environment: prod}}
  routes: {patterns: ["/users/{id}"], unmatched: wildcard, maxDistinct: 100}
  redaction: {query: listed, sensitiveQueryKeys: [api_key]}
  python: {ringBufferBytes: 1048576, resources: {limits: {memory: 1Gi}}}
  probe:
    image: registry.local/probe:dev
    imagePullPolicy: IfNotPresent
    resources: {requests: {cpu: 10m}}
    tolerations: [{key: dedicated, operator: Equal, value: obs, effect: NoSchedule}]
    nodeSelector: {pool: apps}
    priorityClassName: system-node-critical
    logLevel: debug
    privileged: true
  profiling: {enabled: true, frequencyHz: 49, exportIntervalSeconds: 60}
  views:
    serviceGraph: {enabled: true, peers: node, maxEdges: 500}
    podResources: {enabled: true, allPods: true, intervalMillis: 30000}
    tcpHealth: {enabled: false}
"#;

fn resolved(endpoint: &str, protocol: OtlpProtocol) -> ResolvedExporter {
    ResolvedExporter {
        endpoint: endpoint.into(),
        protocol,
    }
}

/// What a ProbeClass granting whatever the fixture asks for would give.
fn granted(inst: &Instrumentation) -> Grant {
    let probe = inst.spec.probe.clone().unwrap_or_default();
    Grant {
        image: probe.image.unwrap_or_else(|| IMAGE.to_owned()),
        privileged: probe.privileged.unwrap_or(false),
    }
}

fn build_fixture(inst: &Instrumentation, exporter: &ResolvedExporter) -> Desired {
    let candidates = [inst.candidate()];
    let grant = granted(inst);
    let input = BuildInput {
        instrumentation: inst,
        exporter,
        grant: &grant,
        cluster_instrumentations: &candidates,
    };
    build(&input).expect("fixture builds")
}

fn snapshot_all(name: &str, desired: &Desired) {
    for children in &desired.languages {
        let LanguageChildren {
            language,
            service_account,
            config_map,
            daemon_set,
        } = children;
        insta::assert_yaml_snapshot!(
            format!("{name}_{language}_service_account"),
            service_account
        );
        // The probe config as text (reviewable), then the rest of the ConfigMap.
        let mut config_map = config_map.clone();
        let probe_yaml = config_map.data.take().expect("data")[PROBE_CONFIG_FILE].clone();
        insta::assert_snapshot!(format!("{name}_{language}_probe_yaml"), probe_yaml);
        insta::assert_yaml_snapshot!(format!("{name}_{language}_config_map"), config_map);
        insta::assert_yaml_snapshot!(format!("{name}_{language}_daemon_set"), daemon_set);
    }
}

#[test]
fn minimal_instrumentation_renders_one_probe_set_per_language() {
    let inst = fixture(MINIMAL);
    let exporter = resolved(
        "http://otel-collector.observability.svc:4317",
        OtlpProtocol::Grpc,
    );
    let desired = build_fixture(&inst, &exporter);
    let names: Vec<String> = desired
        .languages
        .iter()
        .map(|c| c.daemon_set.name_any())
        .collect();
    assert_eq!(names, ["default-probe-go", "default-probe-python"]);
    assert_eq!(
        desired.probe_image, IMAGE,
        "the granted image is the one rendered"
    );
    snapshot_all("minimal", &desired);
}

#[test]
fn full_instrumentation_renders_every_knob() {
    let inst = fixture(FULL);
    let exporter = resolved("https://otel.example.com:4318", OtlpProtocol::HttpProtobuf);
    let desired = build_fixture(&inst, &exporter);
    assert_eq!(desired.languages.len(), 1, "only python is listed");
    assert_eq!(desired.probe_image, "registry.local/probe:dev");
    snapshot_all("full", &desired);
}

fn container(ds: &DaemonSet) -> &Container {
    &ds.spec
        .as_ref()
        .expect("spec")
        .template
        .spec
        .as_ref()
        .expect("pod spec")
        .containers[0]
}

#[test]
fn probes_get_capabilities_not_privileged_by_default() {
    let desired = build_fixture(
        &fixture(MINIMAL),
        &resolved("http://x:4317", OtlpProtocol::Grpc),
    );
    for children in &desired.languages {
        let sc = container(&children.daemon_set)
            .security_context
            .clone()
            .expect("security context");
        assert_eq!(
            sc.privileged,
            Some(false),
            "{}: not privileged by default",
            children.language
        );
        let caps = sc.capabilities.expect("capabilities");
        assert_eq!(
            caps.drop,
            Some(vec!["ALL".to_owned()]),
            "drops everything else"
        );
        assert_eq!(
            caps.add.expect("adds"),
            vec![
                "SYS_ADMIN".to_owned(),
                "SYS_PTRACE".to_owned(),
                "DAC_READ_SEARCH".to_owned()
            ],
            "{}: exactly the capabilities e2e/tests/least_privilege.rs and (DAC_READ_SEARCH) e2e/tests/views.rs prove necessary",
            children.language
        );
        assert_eq!(
            sc.seccomp_profile.map(|p| p.type_).as_deref(),
            Some("RuntimeDefault"),
            "the runtime's default seccomp profile suffices"
        );
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        let pod = children
            .daemon_set
            .spec
            .as_ref()
            .expect("spec")
            .template
            .spec
            .clone()
            .expect("pod");
        assert_eq!(
            pod.host_pid,
            Some(true),
            "needs the host PID namespace to find processes"
        );
        assert!(
            pod.volumes.iter().flatten().all(|v| v.host_path.is_none()),
            "no host path is mounted: {:?}",
            pod.volumes
        );
        assert_eq!(
            pod.tolerations.expect("tolerations")[0].operator.as_deref(),
            Some("Exists"),
            "tolerates every taint by default"
        );
    }
}

fn pod_spec(ds: &DaemonSet) -> PodSpec {
    ds.spec
        .as_ref()
        .and_then(|s| s.template.spec.clone())
        .expect("pod spec")
}

#[test]
fn propagation_adds_the_nodes_bpffs_and_nothing_else_and_only_when_on() {
    let exporter = resolved("http://x:4317", OtlpProtocol::Grpc);
    let off = build_fixture(&fixture(MINIMAL), &exporter);
    for (halves, inject, join) in [
        ("{inject: true}", true, false),
        ("{join: true}", false, true),
        ("{inject: true, join: true}", true, true),
    ] {
        let mut inst = fixture(MINIMAL);
        inst.spec.propagation = Some(serde_yaml::from_str(halves).expect("parses"));
        let on = build_fixture(&inst, &exporter);
        for (off, on) in off.languages.iter().zip(&on.languages) {
            let config = ProbeConfig::from_yaml(
                &on.config_map.data.as_ref().expect("data")[PROBE_CONFIG_FILE],
            )
            .expect("the probe parses its config");
            assert_eq!(
                (
                    config.propagation.inject,
                    config.propagation.join,
                    config.propagation.pin_dir
                ),
                (inject, join, None),
                "{halves}: the halves asked for, pinned under the probe's default directory on the mounted bpffs"
            );
            assert!(
                ferrotel_api::probe_config::PropagationConfig::DEFAULT_PIN_DIR
                    .starts_with(&format!("{BPFFS_DIR}/")),
                "the default pin directory is on the mounted bpffs"
            );
            let mut pod = pod_spec(&on.daemon_set);
            let volumes = pod.volumes.as_mut().expect("volumes");
            let bpffs = volumes.pop().expect("a volume more than off");
            assert_eq!(
                bpffs.host_path.map(|h| (h.path, h.type_)),
                Some((BPFFS_DIR.to_owned(), Some("Directory".to_owned()))),
                "{halves}: the node's /sys/fs/bpf"
            );
            let mounts = pod.containers[0].volume_mounts.as_mut().expect("mounts");
            let mount = mounts.pop().expect("a mount more than off");
            assert_eq!(
                (
                    mount.name.as_str(),
                    mount.mount_path.as_str(),
                    mount.read_only
                ),
                ("bpffs", BPFFS_DIR, None),
                "{halves}: read-write (pins are created), at the same path"
            );
            assert_eq!(
                pod,
                pod_spec(&off.daemon_set),
                "{halves}: nothing else differs (capabilities, host namespaces, other volumes)"
            );
        }
    }
    for children in &off.languages {
        assert!(
            !children.config_map.data.as_ref().expect("data")[PROBE_CONFIG_FILE]
                .contains("propagation:"),
            "off, the probe config does not mention propagation (its hash, and so the running probes, stay as they were)"
        );
        assert!(
            pod_spec(&children.daemon_set)
                .volumes
                .iter()
                .flatten()
                .all(|v| v.host_path.is_none()),
            "off, no host path"
        );
    }
    let mut explicit_off = fixture(MINIMAL);
    explicit_off.spec.propagation =
        Some(serde_yaml::from_str("{inject: false, join: false}").expect("parses"));
    let explicit_off = build_fixture(&explicit_off, &exporter);
    for (a, b) in off.languages.iter().zip(&explicit_off.languages) {
        assert_eq!(
            a.daemon_set, b.daemon_set,
            "spelled-out off renders as unset"
        );
        assert_eq!(a.config_map, b.config_map);
    }
}

fn config_hash_of(ds: &DaemonSet) -> String {
    ds.spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.annotations.as_ref())
        .and_then(|a| a.get(CONFIG_HASH_ANNOTATION))
        .cloned()
        .expect("the pod template carries the config hash")
}

fn rendered_config(children: &LanguageChildren) -> ProbeConfig {
    ProbeConfig::from_yaml(&children.config_map.data.as_ref().expect("data")[PROBE_CONFIG_FILE])
        .expect("the probe parses its config")
}

fn with_views(views: &str) -> Instrumentation {
    let mut inst = fixture(MINIMAL);
    inst.spec.views =
        Some(serde_yaml::from_str(views).unwrap_or_else(|e| panic!("{views} parses: {e}")));
    inst
}

#[test]
fn views_unset_or_spelled_out_as_the_defaults_render_the_same_probe_config() {
    // Existing Instrumentations have no `views`: they must keep the config
    // (and so the hash, and so the running probes) they had before the
    // field existed; the `minimal_*` snapshots pin that text.
    let exporter = resolved("http://x:4317", OtlpProtocol::Grpc);
    let unset = build_fixture(&fixture(MINIMAL), &exporter);
    for children in &unset.languages {
        assert_eq!(
            rendered_config(children).views,
            ViewsConfig::default(),
            "{}: unset renders the probe's defaults",
            children.language
        );
    }
    for views in [
        "{}",
        "{serviceGraph: {}, podResources: {}, tcpHealth: {}}",
        "{serviceGraph: {enabled: true, peers: cluster, maxEdges: 2000}, podResources: {enabled: true, allPods: false, intervalMillis: 10000}, tcpHealth: {enabled: true}}",
    ] {
        let set = build_fixture(&with_views(views), &exporter);
        for (a, b) in unset.languages.iter().zip(&set.languages) {
            assert_eq!(
                a.config_map, b.config_map,
                "{views}: the defaults spelled out render byte-identical"
            );
            assert_eq!(
                a.daemon_set, b.daemon_set,
                "{views}: same hash, so no rollout"
            );
        }
    }
}

#[test]
fn every_views_field_reaches_the_probe_config_of_every_language() {
    let exporter = resolved("http://x:4317", OtlpProtocol::Grpc);
    let defaults = build_fixture(&fixture(MINIMAL), &exporter);
    type Change = fn(&mut ViewsConfig);
    let cases: [(&str, Change); 7] = [
        ("{serviceGraph: {enabled: false}}", |v| {
            v.service_graph.enabled = false
        }),
        ("{serviceGraph: {peers: node}}", |v| {
            v.service_graph.peers = PeerResolution::Node
        }),
        ("{serviceGraph: {maxEdges: 500}}", |v| {
            v.service_graph.max_edges = 500
        }),
        ("{podResources: {enabled: false}}", |v| {
            v.pod_resources.enabled = false
        }),
        ("{podResources: {allPods: true}}", |v| {
            v.pod_resources.all_pods = true
        }),
        ("{podResources: {intervalMillis: 30000}}", |v| {
            v.pod_resources.interval_millis = 30_000
        }),
        ("{tcpHealth: {enabled: false}}", |v| {
            v.tcp_health.enabled = false
        }),
    ];
    for (views, change) in cases {
        let mut want = ViewsConfig::default();
        change(&mut want);
        let desired = build_fixture(&with_views(views), &exporter);
        for (children, before) in desired.languages.iter().zip(&defaults.languages) {
            assert_eq!(
                rendered_config(children).views,
                want,
                "{views}: {} probe config carries exactly this change",
                children.language
            );
            assert_ne!(
                config_hash_of(&children.daemon_set),
                config_hash_of(&before.daemon_set),
                "{views}: {} probes roll to the new config",
                children.language
            );
        }
    }
}

#[test]
fn the_granted_image_and_privilege_are_rendered_not_the_spec_s_requests() {
    // The spec asks for an image and privileged mode; build renders only
    // what the admission granted (here: neither).
    let inst = fixture(FULL);
    let candidates = [inst.candidate()];
    let grant = Grant {
        image: IMAGE.to_owned(),
        privileged: false,
    };
    let desired = build(&BuildInput {
        instrumentation: &inst,
        exporter: &resolved("http://x:4317", OtlpProtocol::Grpc),
        grant: &grant,
        cluster_instrumentations: &candidates,
    })
    .expect("builds");
    let c = container(&desired.languages[0].daemon_set);
    assert_eq!(c.image.as_deref(), Some(IMAGE));
    assert_eq!(
        c.security_context.as_ref().and_then(|s| s.privileged),
        Some(false)
    );
}

#[test]
fn the_probe_binding_lists_every_probe_service_account_once_and_sorted() {
    let minimal = fixture(MINIMAL);
    let full = fixture(FULL);
    let subjects = probe_subjects([&full, &minimal, &minimal]);
    let names: Vec<(String, String)> = subjects
        .iter()
        .map(|s| (s.namespace.clone().unwrap_or_default(), s.name.clone()))
        .collect();
    assert_eq!(
        names,
        [
            ("observability".into(), "default-probe-go".into()),
            ("observability".into(), "default-probe-python".into()),
            ("team-a".into(), "shop-probe-python".into()),
        ]
    );
    let binding = probe_binding("ferrotel-probe", "ferrotel-probe", subjects);
    insta::assert_yaml_snapshot!("probe_binding", binding);
}

#[test]
fn config_change_changes_the_pod_template_hash() {
    let inst = fixture(MINIMAL);
    let a = build_fixture(&inst, &resolved("http://a:4317", OtlpProtocol::Grpc));
    let b = build_fixture(&inst, &resolved("http://b:4317", OtlpProtocol::Grpc));
    let hash = |d: &Desired| {
        d.languages[0]
            .daemon_set
            .spec
            .as_ref()
            .expect("spec")
            .template
            .metadata
            .as_ref()
            .expect("meta")
            .annotations
            .as_ref()
            .expect("annotations")[CONFIG_HASH_ANNOTATION]
            .clone()
    };
    assert_ne!(hash(&a), hash(&b), "a new endpoint must roll the probes");
    let again = build_fixture(&inst, &resolved("http://a:4317", OtlpProtocol::Grpc));
    assert_eq!(
        hash(&a),
        hash(&again),
        "the same input renders the same hash (no spurious rollouts)"
    );
}

#[test]
fn tuning_python_does_not_roll_the_go_probes() {
    let mut inst = fixture(MINIMAL);
    let exporter = resolved("http://a:4317", OtlpProtocol::Grpc);
    let before = build_fixture(&inst, &exporter);
    inst.spec.python = Some(serde_yaml::from_str("{ringBufferBytes: 65536}").expect("parses"));
    let after = build_fixture(&inst, &exporter);
    assert_eq!(
        before.languages[0].config_map, after.languages[0].config_map,
        "go config unchanged"
    );
    assert_ne!(
        before.languages[1].config_map, after.languages[1].config_map,
        "python config changed"
    );
}

#[test]
fn rendered_config_is_what_the_probe_parses() {
    let desired = build_fixture(
        &fixture(FULL),
        &resolved("https://otel.example.com:4318", OtlpProtocol::HttpProtobuf),
    );
    let text = &desired.languages[0].config_map.data.as_ref().expect("data")[PROBE_CONFIG_FILE];
    let config =
        ProbeConfig::from_yaml(text).expect("the probe can parse what the operator renders");
    assert_eq!(config.sampler.ratio, 0.25);
    assert_eq!(config.python.ring_buffer_bytes, 1 << 20);
    assert_eq!(
        config.exporter.tls.expect("tls").cert_file.as_deref(),
        Some("/etc/ferrotel/tls/tls.crt")
    );
    assert_eq!(
        config.cluster_instrumentations.len(),
        1,
        "the probe knows the cluster's Instrumentations"
    );
}

#[test]
fn out_of_range_ratio_is_an_invalid_spec() {
    let mut inst = fixture(MINIMAL);
    inst.spec.sampler =
        Some(serde_yaml::from_str("{type: traceidratio, ratio: \"1.5\"}").expect("parses"));
    let error = validate(&inst).expect_err("1.5 is not a ratio");
    assert_eq!(error.field, "sampler.ratio");
    assert!(
        error.message.contains("\"1.5\""),
        "names the bad value: {error}"
    );
}

#[test]
fn invalid_selector_operator_is_an_invalid_spec() {
    let mut inst = fixture(MINIMAL);
    inst.spec.selector = Some(
        serde_yaml::from_str("{podSelector: {matchExpressions: [{key: a, operator: Maybe}]}}")
            .expect("parses"),
    );
    let error = validate(&inst).expect_err("Maybe is not an operator");
    assert_eq!(error.field, "selector.podSelector");
}
