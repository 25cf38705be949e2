//! Builder snapshots from small YAML fixtures (the sample CR and variants).

use super::*;
use ferrotel_api::collector::TelemetryCollector;

const DEFAULT_IMAGE: &str = "registry.example/otelcol:test";

/// The committed sample, with the metadata the API server would add.
fn sample(patch: impl FnOnce(&mut TelemetryCollector)) -> TelemetryCollector {
    let yaml = include_str!("../../../../config/samples/telemetrycollector.yaml");
    let mut tc: TelemetryCollector =
        serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("sample must parse: {e}"));
    tc.metadata.uid = Some("0c1d2e3f-0000-4000-8000-000000000001".into());
    tc.metadata.generation = Some(1);
    patch(&mut tc);
    tc
}

fn built(tc: &TelemetryCollector) -> Built {
    build(tc, DEFAULT_IMAGE).unwrap_or_else(|e| panic!("sample must build: {e}"))
}

#[test]
fn seed_sample_renders_service_account_configmap_deployment_and_service() {
    let b = built(&sample(|_| {}));
    let Children {
        service_account,
        config_map,
        workload,
        service,
    } = &b.children;
    insta::assert_yaml_snapshot!("seed_service_account", service_account);
    insta::assert_yaml_snapshot!("seed_config_map", config_map);
    let Workload::Deployment(d) = workload else {
        panic!("mode deployment must build a Deployment")
    };
    insta::assert_yaml_snapshot!("seed_deployment", d);
    insta::assert_yaml_snapshot!("seed_service", service);
    assert_eq!(
        b.image, DEFAULT_IMAGE,
        "empty spec.image resolves to the operator default"
    );
    let urls: Vec<_> = b
        .endpoints
        .iter()
        .map(|e| (e.protocol.as_str(), e.url.as_str()))
        .collect();
    assert_eq!(
        urls,
        [
            ("grpc", "http://otel-collector.otel.svc.cluster.local:4317"),
            (
                "http/protobuf",
                "http://otel-collector.otel.svc.cluster.local:4318"
            ),
        ],
        "the seed's Beyla endpoint must be served"
    );
}

#[test]
fn rendered_config_keeps_the_seed_pipeline() {
    let b = built(&sample(|_| {}));
    let rendered = &b
        .children
        .config_map
        .data
        .as_ref()
        .expect("config map has data")[CONFIG_KEY];
    insta::assert_snapshot!("seed_rendered_config", rendered);
}

#[test]
fn config_change_changes_hash_configmap_name_and_pod_template() {
    let a = built(&sample(|_| {}));
    let b = built(&sample(|tc| {
        tc.spec
            .config
            .exporters
            .get_or_insert_default()
            .insert("debug".into(), serde_json::json!({"verbosity": "basic"}));
    }));
    assert_ne!(
        a.config_hash, b.config_hash,
        "a config change must change the hash"
    );
    assert_ne!(
        a.children.config_map.metadata.name,
        b.children.config_map.metadata.name
    );
    let hash_of = |b: &Built| match &b.children.workload {
        Workload::Deployment(d) => d
            .spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.annotations.as_ref())
            .map(|a| a[CONFIG_HASH_ANNOTATION].clone()),
        Workload::DaemonSet(_) => None,
    };
    assert_eq!(
        hash_of(&b),
        Some(b.config_hash.clone()),
        "pod template carries the new hash so the workload rolls out"
    );
}

#[test]
fn unrelated_spec_change_keeps_the_hash() {
    let a = built(&sample(|_| {}));
    let b = built(&sample(|tc| tc.spec.replicas = Some(3)));
    assert_eq!(
        a.config_hash, b.config_hash,
        "only the config feeds the hash"
    );
}

#[test]
fn daemonset_mode_builds_a_daemonset_with_the_same_pod_template() {
    let dep = built(&sample(|_| {}));
    let ds = built(&sample(|tc| tc.spec.mode = Some(CollectorMode::Daemonset)));
    let Workload::DaemonSet(d) = &ds.children.workload else {
        panic!("mode daemonset must build a DaemonSet")
    };
    let Workload::Deployment(dp) = &dep.children.workload else {
        panic!("default mode is deployment")
    };
    assert_eq!(
        d.metadata.name, dp.metadata.name,
        "same name, so a mode switch is easy to follow"
    );
    assert_eq!(
        d.spec.as_ref().map(|s| &s.template),
        dp.spec.as_ref().map(|s| &s.template),
        "both modes run the same pod"
    );
}

#[test]
fn existing_service_account_is_used_instead_of_creating_one() {
    let b = built(&sample(|tc| {
        tc.spec.service_account = Some("shared".into())
    }));
    assert!(
        b.children.service_account.is_none(),
        "no ServiceAccount is built when one is named"
    );
    let Workload::Deployment(d) = &b.children.workload else {
        panic!("deployment expected")
    };
    let sa = d
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|p| p.service_account_name.clone());
    assert_eq!(sa.as_deref(), Some("shared"));
}

#[test]
fn custom_image_is_used_and_pod_knobs_reach_the_pod() {
    let b = built(&sample(|tc| {
        tc.spec.image = Some("otel/opentelemetry-collector-contrib:0.120.0".into());
        tc.spec.node_selector = Some([("pool".to_owned(), "obs".to_owned())].into());
        tc.spec.pod_annotations = Some([("team".to_owned(), "platform".to_owned())].into());
        tc.spec.priority_class_name = Some("high".into());
    }));
    assert_eq!(b.image, "otel/opentelemetry-collector-contrib:0.120.0");
    let Workload::Deployment(d) = &b.children.workload else {
        panic!("deployment expected")
    };
    let t = &d.spec.as_ref().expect("spec").template;
    let pod = t.spec.as_ref().expect("pod spec");
    assert_eq!(
        pod.containers[0].image.as_deref(),
        Some("otel/opentelemetry-collector-contrib:0.120.0")
    );
    assert_eq!(
        pod.node_selector.as_ref().map(|m| m["pool"].as_str()),
        Some("obs")
    );
    assert_eq!(pod.priority_class_name.as_deref(), Some("high"));
    let ann = t
        .metadata
        .as_ref()
        .and_then(|m| m.annotations.as_ref())
        .expect("annotations");
    assert_eq!(ann["team"], "platform", "user pod annotations are kept");
    assert!(
        ann.contains_key(CONFIG_HASH_ANNOTATION),
        "and the hash annotation added"
    );
}

#[test]
fn config_without_listening_receivers_has_no_service() {
    let b = built(&sample(|tc| {
        tc.spec.config.receivers = Some(
            [(
                "hostmetrics".to_owned(),
                serde_json::json!({"scrapers": {"cpu": {}}}),
            )]
            .into(),
        );
    }));
    assert!(
        b.children.service.is_none(),
        "nothing listens, so no Service"
    );
    assert!(b.endpoints.is_empty());
}

/// The container's arguments in the built workload.
fn container_args(b: &Built) -> Vec<String> {
    let Workload::Deployment(d) = &b.children.workload else {
        panic!("deployment expected")
    };
    d.spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|p| p.containers[0].args.clone())
        .expect("the collector container has arguments")
}

#[test]
fn a_profiles_pipeline_starts_the_collector_with_the_profiles_feature_gate() {
    let b = built(&sample(|tc| {
        tc.spec
            .config
            .service
            .pipelines
            .get_or_insert_default()
            .insert(
                "profiles".into(),
                ferrotel_api::collector::config::Pipeline {
                    receivers: Some(vec!["otlp".into()]),
                    exporters: Some(vec!["debug".into()]),
                    ..Default::default()
                },
            );
    }));
    insta::assert_yaml_snapshot!("profiles_container_args", container_args(&b));
    assert!(
        container_args(&b).contains(&"--feature-gates=+service.profilesSupport".to_owned()),
        "the collector refuses a profiles pipeline without the gate"
    );
    assert_eq!(
        container_args(&built(&sample(|_| {}))),
        ["--config=/conf/collector.yaml"],
        "a config without profiles gets no gate (an image that does not know a gate refuses to start)"
    );
}
