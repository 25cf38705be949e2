//! The GitOps examples in docs/gitops/ work as written: ArgoCD's Lua health
//! checks give the expected health for sample statuses, the argocd-cm patch
//! embeds exactly those scripts, the ArgoCD Applications point at sources
//! that render, and the Terraform example is `terraform fmt` clean, its Helm
//! values render the chart, and its Kubernetes manifests are objects the real
//! API server accepts (server-side dry-run with the CRDs installed).

mod packaging;

use ferrotel_e2e::TestBed;
use hcl::eval::{Context, Evaluate, FuncArgs, FuncDef, ParamType};
use packaging::*;
use serde_json::{Value, json};

const KINDS: [&str; 2] = ["TelemetryCollector", "Instrumentation"];

fn health_dir() -> std::path::PathBuf {
    repo_path("docs/gitops/argocd/health")
}

#[test]
fn argocd_health_scripts_report_the_expected_health_for_every_sample_status() {
    let mut checked = 0;
    for kind in KINDS {
        let script_path = health_dir().join(format!("ferrotel.io_{kind}.lua"));
        let script = read(&script_path);
        let tests: Value = serde_yaml::from_str(&read(
            &health_dir().join(format!("ferrotel.io_{kind}_health_test.yaml")),
        ))
        .expect("health_test.yaml parses");
        let cases = tests["tests"].as_array().expect("tests: is a list");
        assert!(
            cases.len() >= 4,
            "{kind}: expected cases for no status, healthy, progressing and degraded"
        );
        let mut statuses_seen = std::collections::BTreeSet::new();
        for case in cases {
            let input = case["inputPath"].as_str().expect("inputPath");
            let obj: Value =
                serde_yaml::from_str(&read(&health_dir().join(input))).expect("testdata parses");
            assert_eq!(obj["kind"], kind, "{input} is not a {kind}");
            let (status, message) =
                run_health_script(&script, &script_path.display().to_string(), &obj);
            assert_eq!(
                status,
                case["healthStatus"]["status"].as_str().unwrap(),
                "{kind} health of {input}"
            );
            assert_eq!(
                message,
                case["healthStatus"]["message"].as_str().unwrap(),
                "{kind} message of {input}"
            );
            statuses_seen.insert(status);
            checked += 1;
        }
        for wanted in ["Healthy", "Progressing", "Degraded"] {
            assert!(
                statuses_seen.contains(wanted),
                "{kind}: no test case yields {wanted}"
            );
        }
    }
    assert!(checked >= 8, "only {checked} health cases ran");
}

#[test]
fn argocd_cm_patch_embeds_the_lua_health_scripts_verbatim() {
    let patch: Value = serde_yaml::from_str(&read(&repo_path(
        "docs/gitops/argocd/argocd-cm-health.yaml",
    )))
    .expect("argocd-cm-health.yaml parses");
    for kind in KINDS {
        let key = format!("resource.customizations.health.ferrotel.io_{kind}");
        let embedded = patch["data"][&key]
            .as_str()
            .unwrap_or_else(|| panic!("argocd-cm patch lacks {key}"));
        let script = read(&health_dir().join(format!("ferrotel.io_{kind}.lua")));
        assert_eq!(
            embedded.trim_end(),
            script.trim_end(),
            "{key} differs from health/ferrotel.io_{kind}.lua; copy the script into the patch"
        );
    }
}

/// The ArgoCD Applications in docs/gitops/argocd.
fn argocd_applications() -> Vec<(String, Value)> {
    let dir = repo_path("docs/gitops/argocd");
    let apps: Vec<(String, Value)> = yaml_files(&dir)
        .into_iter()
        .flat_map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            yaml_docs(&read(&path))
                .into_iter()
                .map(move |doc| (name.clone(), doc))
        })
        .filter(|(_, doc)| kind_of(doc) == "Application")
        .collect();
    assert!(
        apps.len() >= 2,
        "expected an Application for the chart and one for the samples, found {}",
        apps.len()
    );
    apps
}

#[test]
fn argocd_applications_point_at_sources_that_render() {
    let mut chart_apps = 0;
    let mut kustomize_apps = 0;
    for (file, app) in argocd_applications() {
        assert_eq!(app["apiVersion"], "argoproj.io/v1alpha1", "{file}");
        let source = &app["spec"]["source"];
        let path = source["path"]
            .as_str()
            .unwrap_or_else(|| panic!("{file}: spec.source.path missing"));
        assert!(
            repo_path(path).is_dir(),
            "{file}: source path {path} does not exist in the repository"
        );
        assert!(
            app["spec"]["destination"]["server"].is_string(),
            "{file}: spec.destination.server missing"
        );
        let sync_options = app["spec"]["syncPolicy"]["syncOptions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(
            sync_options.contains(&json!("ServerSideApply=true")),
            "{file}: the CRDs and CRs need ServerSideApply=true"
        );
        if path == "charts/ferrotel" {
            chart_apps += 1;
            let values =
                serde_yaml::to_string(&source["helm"]["valuesObject"]).expect("values serialize");
            // Removed when dropped, whatever the outcome.
            let values_file = tempfile::Builder::new()
                .prefix("ferrotel-argocd-")
                .suffix(".yaml")
                .tempfile()
                .expect("create a values file");
            std::fs::write(values_file.path(), values).expect("write values");
            let file_path = values_file.path();
            let release = source["helm"]["releaseName"].as_str().unwrap_or("ferrotel");
            let namespace = app["spec"]["destination"]["namespace"]
                .as_str()
                .unwrap_or("default");
            let rendered = helm_template(release, namespace, &["-f", file_path.to_str().unwrap()])
                .unwrap_or_else(|e| {
                    panic!("{file}: the chart does not render with the Application's values: {e}")
                });
            assert!(
                yaml_docs(&rendered)
                    .iter()
                    .any(|d| kind_of(d) == "Deployment"),
                "{file}: rendered chart has no operator Deployment"
            );
        } else {
            kustomize_apps += 1;
            let mut cmd = std::process::Command::new(tool("kubectl"));
            cmd.arg("kustomize").arg(repo_path(path));
            let out = run(cmd, None)
                .unwrap_or_else(|e| panic!("{file}: kustomize build of {path} failed: {e}"));
            assert!(
                !yaml_docs(&out).is_empty(),
                "{file}: {path} builds to nothing"
            );
        }
    }
    assert_eq!(
        (chart_apps, kustomize_apps),
        (1, 1),
        "one Application for the chart, one for the samples"
    );
}

// ------------------------------------------------------------------ Terraform

fn terraform_dir() -> std::path::PathBuf {
    repo_path("docs/gitops/terraform")
}

#[test]
fn terraform_example_is_terraform_fmt_clean() {
    let mut cmd = std::process::Command::new(tool("terraform"));
    cmd.args(["fmt", "-check", "-diff", "-recursive"])
        .arg(terraform_dir());
    run(cmd, None).unwrap_or_else(|e| {
        panic!("terraform fmt -check failed; run `terraform fmt docs/gitops/terraform`: {e}")
    });
}

/// Terraform's `yamlencode`: the argument as a YAML document.
fn yamlencode(args: FuncArgs) -> Result<hcl::Value, String> {
    serde_yaml::to_string(&args[0])
        .map(hcl::Value::from)
        .map_err(|e| e.to_string())
}

/// Evaluates a block body the way Terraform sees it: attributes evaluated,
/// nested blocks as lists of objects.
fn block_value(body: &hcl::Body, ctx: &Context<'_>) -> Value {
    let mut map = serde_json::Map::new();
    for attr in body.attributes() {
        let value = attr
            .expr()
            .evaluate(ctx)
            .unwrap_or_else(|e| panic!("cannot evaluate attribute {}: {e}", attr.key()));
        map.insert(
            attr.key().to_string(),
            serde_json::to_value(value).expect("HCL value to JSON"),
        );
    }
    for block in body.blocks() {
        let entry = map
            .entry(block.identifier().to_string())
            .or_insert_with(|| json!([]));
        entry
            .as_array_mut()
            .expect("nested blocks form a list")
            .push(block_value(block.body(), ctx));
    }
    Value::Object(map)
}

/// The Terraform example's resources, evaluated: `(type, name, value)`.
fn terraform_resources() -> Vec<(String, String, Value)> {
    let text = read(&terraform_dir().join("main.tf"));
    let body: hcl::Body = hcl::parse(&text).expect("main.tf parses as HCL");
    let mut ctx = Context::new();
    ctx.declare_func(
        "yamlencode",
        FuncDef::builder().param(ParamType::Any).build(yamlencode),
    );
    // var.* from the variables' defaults.
    let mut vars = hcl::Map::new();
    for block in body.blocks().filter(|b| b.identifier() == "variable") {
        let name = block.labels()[0].as_str().to_string();
        let default = block
            .body()
            .attributes()
            .find(|a| a.key() == "default")
            .unwrap_or_else(|| {
                panic!("variable {name} needs a default so the example applies as is")
            });
        vars.insert(
            name,
            default
                .expr()
                .evaluate(&ctx)
                .expect("variable default evaluates"),
        );
    }
    ctx.declare_var("var", hcl::Value::Object(vars));
    // Namespaces first: manifests refer to their metadata.
    let mut resources = Vec::new();
    let mut namespaces = hcl::Map::new();
    for block in body.blocks().filter(|b| b.identifier() == "resource") {
        let kind = block.labels()[0].as_str();
        let name = block.labels()[1].as_str();
        if kind == "kubernetes_namespace_v1" {
            let value = block_value(block.body(), &ctx);
            namespaces.insert(
                name.to_string(),
                hcl::to_value(&value).expect("JSON to HCL value"),
            );
            resources.push((kind.to_string(), name.to_string(), value));
        }
    }
    ctx.declare_var("kubernetes_namespace_v1", hcl::Value::Object(namespaces));
    for block in body.blocks().filter(|b| b.identifier() == "resource") {
        let kind = block.labels()[0].as_str();
        let name = block.labels()[1].as_str();
        if kind != "kubernetes_namespace_v1" {
            // depends_on holds bare references; Terraform does not evaluate it.
            let mut filtered = hcl::Body::builder();
            for structure in block.body().iter() {
                match structure {
                    hcl::Structure::Attribute(a) if a.key() == "depends_on" => {}
                    other => filtered = filtered.add_structure(other.clone()),
                }
            }
            resources.push((
                kind.to_string(),
                name.to_string(),
                block_value(&filtered.build(), &ctx),
            ));
        }
    }
    resources
}

#[test]
fn terraform_argocd_application_values_render_the_chart() {
    let resources = terraform_resources();
    let (_, _, app) = resources
        .iter()
        .find(|(kind, _, _)| kind == "argocd_application")
        .expect("main.tf has an argocd_application");
    let source = &app["spec"][0]["source"][0];
    assert_eq!(
        source["path"], "charts/ferrotel",
        "the Application installs this repository's chart"
    );
    let helm = &source["helm"][0];
    let values = helm["values"]
        .as_str()
        .expect("helm.values is yamlencode(...) of the values");
    let file_path =
        std::env::temp_dir().join(format!("ferrotel-tf-values-{}.yaml", std::process::id()));
    std::fs::write(&file_path, values).expect("write values");
    let release = helm["release_name"].as_str().expect("helm.release_name");
    let namespace = app["spec"][0]["destination"][0]["namespace"]
        .as_str()
        .expect("destination.namespace");
    let rendered = helm_template(release, namespace, &["-f", file_path.to_str().unwrap()])
        .unwrap_or_else(|e| panic!("the chart rejects the Terraform example's values: {e}"));
    let docs = yaml_docs(&rendered);
    let deployment = docs
        .iter()
        .find(|d| kind_of(d) == "Deployment")
        .expect("operator Deployment rendered");
    let args = deployment["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
    assert!(
        args.contains("--default-collector-image=ghcr.io/ferrotel/otelcol:0.161.0"),
        "the collector image from the Terraform values reaches the operator's args: {args}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn terraform_kubernetes_manifests_are_accepted_by_the_api_server() {
    let resources = terraform_resources();
    let mut docs = Vec::new();
    for (kind, name, value) in &resources {
        match kind.as_str() {
            "kubernetes_manifest" => docs.push(value["manifest"].clone()),
            "kubernetes_namespace_v1" => {
                let meta = &value["metadata"][0];
                docs.push(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": meta}));
            }
            "argocd_application" => {}
            other => panic!("resource {other}.{name}: add it to this test"),
        }
    }
    let kinds: Vec<&str> = docs.iter().map(kind_of).collect();
    for wanted in ["TelemetryCollector", "Instrumentation", "Namespace"] {
        assert!(
            kinds.contains(&wanted),
            "the Terraform example has no {wanted}: {kinds:?}"
        );
    }
    // Typed check against the operator's own API types.
    for doc in &docs {
        match kind_of(doc) {
            "TelemetryCollector" => {
                serde_json::from_value::<ferrotel_api::collector::TelemetryCollector>(doc.clone())
                    .unwrap_or_else(|e| {
                        panic!("TelemetryCollector in main.tf does not match the API: {e}\n{doc}")
                    });
            }
            "Instrumentation" => {
                serde_json::from_value::<ferrotel_api::instrumentation::Instrumentation>(
                    doc.clone(),
                )
                .unwrap_or_else(|e| {
                    panic!("Instrumentation in main.tf does not match the API: {e}\n{doc}")
                });
            }
            _ => {}
        }
    }
    let bed = TestBed::shared();
    install_crds(bed).await;
    ensure_namespaces(bed, &docs);
    let yaml = to_yaml_stream(&docs);
    server_dry_run(bed, &yaml, "terraform").unwrap_or_else(|e| {
        panic!("the API server rejects the Terraform example's manifests: {e}\n{yaml}")
    });
}
