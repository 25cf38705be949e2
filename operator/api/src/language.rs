//! The languages Ferrotel instruments: the one enum the CRDs, the opt-in
//! rules and the probe config all speak of. It depends on nothing else in
//! this crate, so every module can use it without pointing back up.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The language a probe DaemonSet instruments; each loads only its own eBPF
/// program set.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    Go,
    Python,
}

impl Language {
    pub const ALL: [Language; 2] = [Language::Go, Language::Python];

    pub fn as_str(self) -> &'static str {
        match self {
            Language::Go => "go",
            Language::Python => "python",
        }
    }
}

impl std::fmt::Display for Language {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Language {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "go" | "golang" => Ok(Language::Go),
            "python" | "python3" => Ok(Language::Python),
            other => Err(format!(
                "unknown language {other:?}; expected \"go\" or \"python\""
            )),
        }
    }
}
