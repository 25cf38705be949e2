//! Differential test of the TelemetryCollector config validator: every
//! config under `tests/corpus/collector/` is checked by our validator
//! (`ferrotel_api::collector::validate`, what the operator runs before a
//! rollout) and by the real collector binary (`otelcol validate`, built from
//! the same distribution manifest as the default image). Each file's header
//! says what the right answer is (`# expect: valid|invalid`).
//!
//! Every disagreement is either fixed or listed in [`KNOWN_DIFFERENCES`] with
//! the reason; a listed difference that disappears fails the test too, so the
//! list cannot go stale.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Command,
};

use ferrotel_api::collector::{
    CollectorConfig,
    config::Kind,
    distribution::{ALIASES, default_distribution},
    validate::{ComponentCheck, validate},
};

/// Configs where our validator deliberately disagrees with `otelcol
/// validate`, and why.
const KNOWN_DIFFERENCES: &[(&str, &str)] = &[
    (
        "22-bad-endpoint-port.yaml",
        // `otelcol validate` does not bind listeners, so an unparsable port
        // only fails when the collector starts. We refuse it before rollout:
        // a crash-looping collector is exactly what validation must prevent.
        "we refuse an endpoint whose port does not parse; the collector only fails at start",
    ),
    (
        "23-port-collision.yaml",
        // Same: two receivers on one port validate fine and then fail with
        // "address already in use" at start.
        "we refuse two listeners on one port; the collector only fails at start",
    ),
    (
        "39-unknown-key-in-receiver.yaml",
        // The collector decodes each component's settings into its Go struct
        // and rejects unknown keys. We would need every component's schema
        // to do the same; the differential corpus keeps this gap visible. A
        // collector refusing such a config crash-loops on the new
        // ReplicaSet while the previous pods keep serving (rolling update).
        "we do not know each component's settings schema, so a misspelled key passes our check",
    ),
];

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/collector")
}

fn expectation(text: &str, file: &str) -> bool {
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("# expect: "))
        .unwrap_or_else(|| panic!("{file}: missing '# expect: valid|invalid' header"));
    match line.trim() {
        "valid" => true,
        "invalid" => false,
        other => panic!("{file}: bad expectation {other:?}"),
    }
}

/// Our verdict: `Ok` or the summary of the problems. A config that does not
/// even have the CRD's shape (e.g. no `service`) is refused by the API
/// server's schema, which counts as our refusal.
fn ours(text: &str) -> Result<(), String> {
    let config: CollectorConfig = serde_yaml::from_str(text).map_err(|e| format!("schema: {e}"))?;
    let report = validate(
        &config,
        &[],
        ComponentCheck::Distribution(default_distribution()),
    );
    if report.is_valid() {
        Ok(())
    } else {
        Err(report.summary())
    }
}

#[test]
fn validator_agrees_with_otelcol_validate_on_the_corpus() {
    let mut files: Vec<_> = std::fs::read_dir(corpus_dir())
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", corpus_dir().display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 30,
        "the corpus must hold at least 30 configs, found {}",
        files.len()
    );
    let known: BTreeMap<&str, &str> = KNOWN_DIFFERENCES.iter().copied().collect();

    let mut agree = 0;
    let mut failures = Vec::new();
    for path in &files {
        let file = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{file}: {e}"));
        let expect = expectation(&text, &file);
        let real = ferrotel_e2e::validate_config(&text);
        if let Err(e) = &real
            && (e.contains("cannot run otelcol") || e.contains("not found at"))
        {
            panic!("the real collector is needed for this test: {e}");
        }
        let mine = ours(&text);
        eprintln!(
            "{file}: ours={} otelcol={}{}",
            if mine.is_ok() { "valid" } else { "invalid" },
            if real.is_ok() { "valid" } else { "invalid" },
            mine.as_ref()
                .err()
                .map(|m| format!(" ({m})"))
                .unwrap_or_default()
        );
        // The header is the right answer; where we knowingly differ from
        // `otelcol validate` the header may side with either of us.
        if real.is_ok() != expect && !known.contains_key(file.as_str()) {
            failures.push(format!(
                "{file}: header expects {} but otelcol says {:?}; fix the corpus file",
                if expect { "valid" } else { "invalid" },
                real
            ));
        }
        let same = mine.is_ok() == real.is_ok();
        if same {
            agree += 1;
        }
        match (same, known.get(file.as_str())) {
            (true, Some(_)) => failures.push(format!(
                "{file}: listed in KNOWN_DIFFERENCES but both now agree; remove the entry"
            )),
            (false, None) => failures.push(format!(
                "{file}: ours={mine:?} but otelcol validate={real:?}; fix the validator or explain the difference in KNOWN_DIFFERENCES"
            )),
            _ => {}
        }
        // Our refusals must name the offending key (a config path).
        if let Err(msg) = &mine
            && !msg.starts_with("schema:")
        {
            assert!(
                msg.split(':').next().is_some_and(|p| !p.contains(' ')),
                "{file}: our message must start with the config path of the bad key: {msg}"
            );
        }
    }
    eprintln!(
        "corpus: our validator and otelcol validate agree on {agree}/{} configs",
        files.len()
    );
    assert!(
        failures.is_empty(),
        "corpus disagreements:\n{}",
        failures.join("\n")
    );
}

/// The component list we derive from the builder manifest must be exactly
/// what the built collector reports, or the operator would refuse valid
/// configs (or accept configs the image cannot run).
#[test]
fn distribution_component_types_match_the_built_collector() {
    let otelcol = ferrotel_e2e::tool_path("otelcol");
    let out = Command::new(&otelcol)
        .arg("components")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", otelcol.display()));
    assert!(
        out.status.success(),
        "otelcol components failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_yaml::Value = serde_yaml::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("otelcol components output is not YAML: {e}"));
    let dist = default_distribution();
    for kind in Kind::ALL {
        let reported: BTreeSet<String> = doc[kind.section()]
            .as_sequence()
            .unwrap_or_else(|| panic!("otelcol components has no {} list", kind.section()))
            .iter()
            .filter_map(|c| c["name"].as_str().map(str::to_owned))
            .collect();
        let ours = dist.types(kind);
        // `components` lists current names only; the deprecated aliases we
        // also accept (ALIASES) are checked by the corpus (otlp, otlphttp).
        let missing: Vec<_> = ours
            .difference(&reported)
            .filter(|t| !ALIASES.contains(&(kind.section(), t.as_str())))
            .collect();
        assert!(
            missing.is_empty(),
            "{}: we accept {missing:?} but otelcol does not have them (reported {reported:?})",
            kind.section()
        );
        let unknown: Vec<_> = reported.difference(ours).collect();
        assert!(
            unknown.is_empty(),
            "{}: otelcol offers {unknown:?} which we would refuse; add them to TYPE_OVERRIDES or the manifest handling",
            kind.section()
        );
    }
}
