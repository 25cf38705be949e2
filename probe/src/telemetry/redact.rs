//! Removing secrets from telemetry before it leaves the node.
//!
//! Query strings carry tokens, signatures and personal data (`?token=…`,
//! pre-signed URLs, `?email=…`), and `url.query` and `url.full` would export
//! them to every backend and everyone who can read it. The OpenTelemetry
//! semantic conventions ask instrumentations to replace sensitive query
//! values with `REDACTED` and name the keys of the common signed-URL
//! schemes; by default the probe redacts *every* value, because it cannot
//! know which names a workload uses for its secrets. Keys stay, so the
//! shape of a request is still visible (`?token=REDACTED&page=REDACTED`).
//! `redaction.query` chooses: `all` (default), `listed` (the semantic
//! conventions' keys plus `sensitiveQueryKeys`), `none`.

use std::borrow::Cow;

use ferrotel_api::probe_config::{QueryRedaction, RedactionConfig};
use ferrotel_parse::url;
pub use ferrotel_parse::url::REDACTED;

use super::record::{Protocol, RequestRecord};

/// Query keys the semantic conventions (`url.query`) say to redact.
pub const SEMCONV_SENSITIVE_KEYS: [&str; 4] =
    ["AWSAccessKeyId", "Signature", "sig", "X-Goog-Signature"];

/// The compiled redaction policy.
#[derive(Clone, Debug)]
pub struct Redactor {
    mode: QueryRedaction,
    keys: Vec<String>,
}

impl Default for Redactor {
    fn default() -> Self {
        Self::new(&RedactionConfig::default())
    }
}

impl Redactor {
    pub fn new(config: &RedactionConfig) -> Self {
        let keys = SEMCONV_SENSITIVE_KEYS
            .iter()
            .map(|k| (*k).to_owned())
            .chain(config.sensitive_query_keys.iter().cloned())
            .collect();
        Self {
            mode: config.query,
            keys,
        }
    }

    /// The query with the values the policy names replaced by `REDACTED`.
    pub fn query<'a>(&self, query: &'a str) -> Cow<'a, str> {
        if self.mode == QueryRedaction::None {
            return Cow::Borrowed(query);
        }
        url::redact_query_values(query, |key| self.redacts(key))
    }

    fn redacts(&self, key: &str) -> bool {
        match self.mode {
            QueryRedaction::All => true,
            QueryRedaction::None => false,
            QueryRedaction::Listed => {
                let decoded = url::percent_decode(key);
                self.keys.iter().any(|k| *k == key || *k == decoded)
            }
        }
    }

    /// The record with its query redacted; borrowed when nothing changes
    /// (no query, or nothing to redact), so most records are not copied.
    pub fn record<'a>(&self, record: &'a RequestRecord) -> Cow<'a, RequestRecord> {
        let Protocol::Http(http) = &record.protocol else {
            return Cow::Borrowed(record);
        };
        let Some(query) = http.query.as_deref() else {
            return Cow::Borrowed(record);
        };
        match self.query(query) {
            Cow::Borrowed(_) => Cow::Borrowed(record),
            Cow::Owned(redacted) => {
                let mut copy = record.clone();
                if let Protocol::Http(http) = &mut copy.protocol {
                    http.query = Some(redacted.into());
                }
                Cow::Owned(copy)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redactor(query: QueryRedaction, keys: &[&str]) -> Redactor {
        Redactor::new(&RedactionConfig {
            query,
            sensitive_query_keys: keys.iter().map(|k| (*k).to_owned()).collect(),
        })
    }

    #[test]
    fn by_default_every_query_value_is_redacted_and_keys_stay() {
        let r = Redactor::default();
        assert_eq!(
            r.query("token=s3cr3t&page=2&flag&empty="),
            "token=REDACTED&page=REDACTED&flag&empty="
        );
        assert!(
            matches!(r.query("flag&x="), Cow::Borrowed(_)),
            "nothing to redact: no copy"
        );
    }

    #[test]
    fn listed_mode_redacts_the_semconv_keys_and_the_configured_ones_only() {
        let r = redactor(QueryRedaction::Listed, &["api_key"]);
        assert_eq!(
            r.query("X-Goog-Signature=abc&sig=1&api_key=k&page=2&Signature=z"),
            "X-Goog-Signature=REDACTED&sig=REDACTED&api_key=REDACTED&page=2&Signature=REDACTED"
        );
        assert_eq!(
            r.query("api%5Fkey=k&SIG=1"),
            "api%5Fkey=REDACTED&SIG=1",
            "keys compare after percent-decoding, case-sensitively"
        );
    }

    #[test]
    fn none_exports_the_query_as_sent() {
        let r = redactor(QueryRedaction::None, &[]);
        assert_eq!(r.query("token=s3cr3t"), "token=s3cr3t");
    }
}
