//! The pinned tools installed by `make tools` (`e2e/tools/install.sh`).

use std::path::PathBuf;

use crate::Error;

/// The tool directory: `$FERROTEL_BIN`, else `~/.cache/ferrotel/bin`.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("FERROTEL_BIN").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".cache/ferrotel/bin")
}

/// Path of an installed tool, or an error telling to run `make tools`.
pub fn try_tool_path(name: &str) -> Result<PathBuf, Error> {
    let path = bin_dir().join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::ToolMissing {
            name: name.to_string(),
            path,
        })
    }
}

/// Path of an installed tool (`kubectl`, `otelcol`, `telemetrygen`, `helm`,
/// `etcd`, `kube-apiserver`, ...). Panics with "run `make tools`" if missing:
/// a test cannot do anything useful without it.
pub fn tool_path(name: &str) -> PathBuf {
    try_tool_path(name).unwrap_or_else(|e| panic!("{e}"))
}

/// A program of the Python venv `make tools` creates (`python`, `gunicorn`,
/// ...): `$FERROTEL_CACHE/venv/bin/<name>`, else
/// `~/.cache/ferrotel/venv/bin/<name>`. Panics with "run `make tools`" if
/// missing.
pub fn venv_bin(name: &str) -> PathBuf {
    let cache = std::env::var_os("FERROTEL_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/ferrotel")
        });
    let path = cache.join("venv/bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: run `make tools` (e2e/tools/install.sh creates the Python venv)",
        path.display()
    );
    path
}
