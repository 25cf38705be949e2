//! Recent profiles kept on the probe, for `/debug/profile` (what the flame
//! command fetches): the finished windows of the last few minutes, bounded
//! in count, merged per query.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::flame;
use super::model::Profile;
use super::pprof;

/// Which processes a query is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selector {
    All,
    Pid(u32),
    /// `namespace/name` of a Kubernetes pod.
    Pod {
        namespace: String,
        name: String,
    },
    /// `service.name`.
    Service(String),
}

impl Selector {
    fn matches(&self, profile: &Profile) -> bool {
        let attr = |k: &str| profile.resource.attributes.get(k).map(String::as_str);
        match self {
            Selector::All => true,
            Selector::Pid(pid) => profile.pid == *pid,
            Selector::Pod { namespace, name } => {
                attr("k8s.namespace.name") == Some(namespace) && attr("k8s.pod.name") == Some(name)
            }
            Selector::Service(s) => profile.resource.service_name() == s,
        }
    }
}

/// Finished profile windows, newest last.
#[derive(Clone, Debug)]
pub struct ProfileStore {
    inner: Arc<Mutex<VecDeque<Arc<Profile>>>>,
    retain_ns: u64,
    max_profiles: usize,
}

impl ProfileStore {
    pub fn new(retain: std::time::Duration, max_profiles: usize) -> Self {
        Self {
            inner: Arc::default(),
            retain_ns: retain.as_nanos() as u64,
            max_profiles,
        }
    }

    pub fn push(&self, profile: Arc<Profile>) {
        let mut inner = self.inner.lock().expect("profile store lock");
        let horizon = profile.end_unix_ns.saturating_sub(self.retain_ns);
        inner.push_back(profile);
        while inner.len() > self.max_profiles
            || inner.front().is_some_and(|p| p.end_unix_ns < horizon)
        {
            inner.pop_front();
        }
    }

    /// The windows of the matching processes that ended after `since_unix_ns`,
    /// merged per process.
    pub fn query(&self, selector: &Selector, since_unix_ns: u64) -> Vec<Profile> {
        let inner = self.inner.lock().expect("profile store lock");
        let mut merged: HashMap<u32, Profile> = HashMap::new();
        for p in inner
            .iter()
            .filter(|p| p.end_unix_ns >= since_unix_ns && selector.matches(p))
        {
            match merged.get_mut(&p.pid) {
                Some(m) => m.merge(p),
                None => {
                    merged.insert(p.pid, (**p).clone());
                }
            }
        }
        let mut out: Vec<Profile> = merged.into_values().collect();
        out.sort_by_key(|p| p.pid);
        out
    }

    /// Everything matching, merged into one profile (several processes of
    /// one pod become one flame graph).
    pub fn query_merged(&self, selector: &Selector, since_unix_ns: u64) -> Option<Profile> {
        let mut all = self.query(selector, since_unix_ns).into_iter();
        let mut first = all.next()?;
        for p in all {
            first.merge(&p);
        }
        Some(first)
    }

    pub fn len(&self) -> usize {
        self.inner.lock().expect("profile store lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `GET /debug/profile` parameters.
#[derive(Debug, Default, serde::Deserialize)]
pub struct ProfileQuery {
    pub pid: Option<u32>,
    /// `namespace/name`.
    pub pod: Option<String>,
    pub service: Option<String>,
    /// How far back, in seconds (default 60).
    pub seconds: Option<u64>,
    /// `pprof` (default), `folded` or `svg`.
    pub format: Option<String>,
}

impl ProfileQuery {
    pub fn selector(&self) -> Result<Selector, String> {
        match (&self.pid, &self.pod, &self.service) {
            (Some(pid), None, None) => Ok(Selector::Pid(*pid)),
            (None, Some(pod), None) => match pod.split_once('/') {
                Some((ns, name)) if !ns.is_empty() && !name.is_empty() => Ok(Selector::Pod {
                    namespace: ns.to_owned(),
                    name: name.to_owned(),
                }),
                _ => Err(format!("pod {pod:?} must be namespace/name")),
            },
            (None, None, Some(s)) => Ok(Selector::Service(s.clone())),
            (None, None, None) => Ok(Selector::All),
            _ => Err("give at most one of pid, pod and service".to_owned()),
        }
    }
}

/// The `/debug/profile` handler.
pub async fn serve_profile(
    State(store): State<ProfileStore>,
    Query(query): Query<ProfileQuery>,
) -> Response {
    let selector = match query.selector() {
        Ok(s) => s,
        Err(e) => return (StatusCode::BAD_REQUEST, e).into_response(),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let since = now.saturating_sub(query.seconds.unwrap_or(60).saturating_mul(1_000_000_000));
    let Some(profile) = store.query_merged(&selector, since) else {
        return (
            StatusCode::NOT_FOUND,
            format!("no profile for {selector:?} in the last {} s; is the process traced and profiling.enabled set?", query.seconds.unwrap_or(60)),
        )
            .into_response();
    };
    match query.format.as_deref().unwrap_or("pprof") {
        "pprof" => (
            [(header::CONTENT_TYPE, "application/octet-stream")],
            pprof::encode(&profile),
        )
            .into_response(),
        "folded" => (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            profile.folded(),
        )
            .into_response(),
        "svg" => match flame::render(&profile, &format!("{selector:?}")) {
            Ok(f) => ([(header::CONTENT_TYPE, "image/svg+xml")], f.svg).into_response(),
            Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        },
        other => (
            StatusCode::BAD_REQUEST,
            format!("format {other:?}: use pprof, folded or svg"),
        )
            .into_response(),
    }
}

/// The routes the probe's HTTP endpoint adds when profiling is on.
pub fn router(store: ProfileStore) -> axum::Router {
    axum::Router::new()
        .route("/debug/profile", axum::routing::get(serve_profile))
        .with_state(store)
}
