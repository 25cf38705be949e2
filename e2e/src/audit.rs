//! The API server's audit log, read from outside: one client's requests,
//! counted the way the quietness checks count them (a watch when it starts,
//! any other request when it completes). The test bed writes the log when
//! asked ([`crate::TestBedOptions::audit_user`]).

use std::io::{BufRead as _, Seek as _};
use std::path::PathBuf;

use anyhow::Context as _;
use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

/// One request, from the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRequest {
    /// When the API server received it.
    pub at: Timestamp,
    pub user: String,
    pub verb: String,
    /// `resource` or `resource/subresource` (the request URI when the
    /// request names no object kind).
    pub resource: String,
    /// The object's name, empty for lists and collection watches.
    pub name: String,
}

impl AuditRequest {
    /// A request that may change stored state (anything but get, list and
    /// watch).
    pub fn is_write(&self) -> bool {
        !matches!(self.verb.as_str(), "get" | "list" | "watch")
    }
}

/// An audit log read incrementally: each [`read_new`](Self::read_new)
/// returns the requests logged since the previous one.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    offset: u64,
}

impl AuditLog {
    pub fn new(path: PathBuf) -> Self {
        Self { path, offset: 0 }
    }

    /// Requests whose counted stage was logged since the last call. A log
    /// not written yet has none; a line still being written is read next
    /// time.
    pub fn read_new(&mut self) -> anyhow::Result<Vec<AuditRequest>> {
        let mut file = match std::fs::File::open(&self.path) {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => {
                return Err(error).with_context(|| format!("opening {}", self.path.display()));
            }
        };
        file.seek(std::io::SeekFrom::Start(self.offset))
            .with_context(|| format!("seeking in {}", self.path.display()))?;
        let mut reader = std::io::BufReader::new(file);
        let mut line = String::new();
        let mut requests = Vec::new();
        loop {
            line.clear();
            let n = reader
                .read_line(&mut line)
                .with_context(|| format!("reading {}", self.path.display()))?;
            if n == 0 || !line.ends_with('\n') {
                break;
            }
            self.offset += n as u64;
            let event: Value = serde_json::from_str(&line)
                .with_context(|| format!("audit log line is not JSON: {line}"))?;
            if let Some(request) = counted(&event, &line)? {
                requests.push(request);
            }
        }
        Ok(requests)
    }
}

/// The request an audit event stands for, at the stage it is counted.
fn counted(event: &Value, line: &str) -> anyhow::Result<Option<AuditRequest>> {
    let verb = event["verb"].as_str().unwrap_or_default();
    let stage = if verb == "watch" {
        "ResponseStarted"
    } else {
        "ResponseComplete"
    };
    if event["stage"] != stage {
        return Ok(None);
    }
    let at = event["requestReceivedTimestamp"]
        .as_str()
        .unwrap_or_default()
        .parse()
        .with_context(|| format!("audit event without a timestamp: {line}"))?;
    let object = &event["objectRef"];
    let mut resource = object["resource"]
        .as_str()
        .or_else(|| event["requestURI"].as_str())
        .unwrap_or("?")
        .to_owned();
    if let Some(subresource) = object["subresource"].as_str() {
        resource = format!("{resource}/{subresource}");
    }
    Ok(Some(AuditRequest {
        at,
        user: event["user"]["username"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        verb: verb.to_owned(),
        resource,
        name: object["name"].as_str().unwrap_or_default().to_owned(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(verb: &str, stage: &str) -> Value {
        serde_json::json!({
            "stage": stage, "verb": verb,
            "requestReceivedTimestamp": "2026-01-02T03:04:05.000000Z",
            "user": {"username": "op"},
            "objectRef": {"resource": "instrumentations", "subresource": "status", "name": "go"},
        })
    }

    #[test]
    fn a_watch_counts_when_it_starts_anything_else_when_it_completes() {
        assert!(
            counted(&event("watch", "ResponseStarted"), "")
                .unwrap()
                .is_some()
        );
        assert!(
            counted(&event("watch", "ResponseComplete"), "")
                .unwrap()
                .is_none()
        );
        assert!(
            counted(&event("patch", "ResponseStarted"), "")
                .unwrap()
                .is_none()
        );
        let patch = counted(&event("patch", "ResponseComplete"), "")
            .unwrap()
            .expect("counted");
        assert_eq!(patch.resource, "instrumentations/status");
        assert_eq!((patch.user.as_str(), patch.name.as_str()), ("op", "go"));
        assert!(patch.is_write());
    }
}

/// Every request of the audited user read so far, in order: what the
/// operator-restart tests count between their marks.
#[derive(Debug)]
pub struct AuditTrail {
    log: AuditLog,
    requests: Vec<AuditRequest>,
}

impl AuditTrail {
    pub fn new(log: AuditLog) -> Self {
        Self {
            log,
            requests: Vec::new(),
        }
    }

    /// Reads what is new; everything logged from now on is after the mark.
    pub fn mark(&mut self) -> usize {
        let new = self.log.read_new().expect("read the audit log");
        self.requests.extend(new);
        self.requests.len()
    }

    /// The requests logged since `mark`.
    pub fn since(&mut self, mark: usize) -> Vec<AuditRequest> {
        self.mark();
        self.requests[mark..].to_vec()
    }

    /// Waits until the user sent nothing but watches for `quiet`; panics
    /// with the last requests after `timeout`.
    pub async fn wait_quiet(
        &mut self,
        what: &str,
        quiet: std::time::Duration,
        timeout: std::time::Duration,
    ) {
        let start = tokio::time::Instant::now();
        let mut seen = self.mark();
        let mut last_change = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            let now = self.mark();
            if self.requests[seen..].iter().any(|r| r.verb != "watch") {
                last_change = tokio::time::Instant::now();
            }
            seen = now;
            if last_change.elapsed() >= quiet {
                return;
            }
            assert!(
                start.elapsed() < timeout,
                "{what}: the operator never went quiet; last requests: {:?}",
                self.requests.iter().rev().take(10).collect::<Vec<_>>()
            );
        }
    }
}

/// `verb resource name → count`, for assertion messages.
pub fn summary(requests: &[AuditRequest]) -> std::collections::BTreeMap<String, usize> {
    let mut out = std::collections::BTreeMap::new();
    for r in requests {
        *out.entry(format!("{} {} {}", r.verb, r.resource, r.name))
            .or_default() += 1;
    }
    out
}
