//! Writes the CustomResourceDefinitions to `<dir>/<plural>.<group>.yaml`
//! (`make generate` runs `crdgen crds`; `make check-generated` fails when the
//! committed files differ). With no argument, prints them to stdout.
#![forbid(unsafe_code)]

use std::{io::Write, path::PathBuf};

use ferrotel_api::crds;

fn main() {
    let dir = std::env::args_os().nth(1).map(PathBuf::from);
    for crd in crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        let yaml = ferrotel_api::crd_yaml(&crd)
            .unwrap_or_else(|e| panic!("CRD {name} must serialize to YAML: {e}"));
        match &dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)
                    .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
                let path = dir.join(format!("{name}.yaml"));
                std::fs::write(&path, yaml)
                    .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
            }
            None => {
                let mut out = std::io::stdout().lock();
                out.write_all(b"---\n")
                    .and_then(|()| out.write_all(yaml.as_bytes()))
                    .expect("stdout must be writable");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// The committed `crds/` files are the API's schema snapshot: any change
    /// to the Rust types that alters a CRD fails here until `make generate`
    /// is run and the diff is reviewed and committed.
    #[test]
    fn committed_crds_match_the_rust_types() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../crds");
        for crd in ferrotel_api::crds() {
            let name = crd.metadata.name.clone().unwrap_or_default();
            let path = dir.join(format!("{name}.yaml"));
            let committed = std::fs::read_to_string(&path).unwrap_or_else(|e| {
                panic!(
                    "{} is missing ({e}); run `make generate` and commit crds/",
                    path.display()
                )
            });
            let generated = ferrotel_api::crd_yaml(&crd)
                .unwrap_or_else(|e| panic!("CRD {name} must serialize: {e}"));
            assert!(
                committed == generated,
                "{} is stale: the Rust API types changed; run `make generate`, review the diff and commit it",
                path.display()
            );
        }
    }
}
