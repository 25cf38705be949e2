//! `http.route`: a low-cardinality name for the path of a server request.
//!
//! In order: the front-end's own route (e.g. Go 1.22 `Request.Pattern`), the
//! first configured pattern that matches, then the `unmatched` policy
//! (heuristic by default: ID-like segments become `*`). A per-service cap on
//! distinct values (`routes.maxDistinct`) keeps a misbehaving service from
//! exploding metric cardinality: past it, new routes are reported as `/**`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

// Looked up for every server span; the keys are bounded by the cap.
use foldhash::fast::FixedState;

use ferrotel_api::probe_config::{RoutesConfig, UnmatchedRoutes};
pub use ferrotel_parse::url::{RoutePattern, heuristic_route, is_id_like};

/// The route reported once a service's distinct-route cap is reached.
pub const OVERFLOW_ROUTE: &str = "/**";

/// Derives `http.route` values and enforces the per-service cap.
#[derive(Debug)]
pub struct RouteTemplater {
    patterns: Vec<RoutePattern>,
    unmatched: UnmatchedRoutes,
    max_distinct: usize,
    /// Routes seen per service. Shared strings: every request hands one
    /// out, and a clone is a count, not a copy.
    seen: HashMap<String, HashSet<Arc<str>, FixedState>, FixedState>,
    overflow: Arc<str>,
}

/// The route of one request, and whether the cap replaced it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Routed {
    pub route: Option<Arc<str>>,
    pub capped: bool,
}

impl RouteTemplater {
    pub fn new(config: &RoutesConfig) -> Self {
        Self {
            patterns: config
                .patterns
                .iter()
                .map(|p| RoutePattern::parse(p))
                .collect(),
            unmatched: config.unmatched,
            max_distinct: config.max_distinct as usize,
            seen: HashMap::default(),
            overflow: Arc::from(OVERFLOW_ROUTE),
        }
    }

    /// The `http.route` of a request of `service` to `path` (query ignored);
    /// `known` is a route the front-end already knows.
    pub fn route(&mut self, service: &str, path: &str, known: Option<&str>) -> Routed {
        let path = path.split(['?', '#']).next().unwrap_or(path);
        // Borrowed where the route is already text (the front-end's, a
        // pattern's); only a heuristic route is built per request.
        let built: ferrotel_parse::record::Text;
        let candidate: &str = match known {
            Some(route) => route,
            None => match self.patterns.iter().find(|p| p.matches(path)) {
                Some(pattern) => pattern.as_str(),
                None => match self.unmatched {
                    UnmatchedRoutes::Heuristic => {
                        built = heuristic_route(path);
                        &built
                    }
                    UnmatchedRoutes::Path if path.is_empty() => "/",
                    UnmatchedRoutes::Path => path,
                    UnmatchedRoutes::Wildcard => OVERFLOW_ROUTE,
                    UnmatchedRoutes::Unset => {
                        return Routed {
                            route: None,
                            capped: false,
                        };
                    }
                },
            },
        };
        if candidate == OVERFLOW_ROUTE {
            return Routed {
                route: Some(self.overflow.clone()),
                capped: false,
            };
        }
        // Look up before inserting: this runs once per request, and the
        // service key only needs allocating the first time.
        if !self.seen.contains_key(service) {
            self.seen.insert(service.to_owned(), HashSet::default());
        }
        let seen = self.seen.get_mut(service).expect("inserted above");
        if let Some(route) = seen.get(candidate) {
            return Routed {
                route: Some(route.clone()),
                capped: false,
            };
        }
        if seen.len() >= self.max_distinct {
            return Routed {
                route: Some(self.overflow.clone()),
                capped: true,
            };
        }
        let route: Arc<str> = Arc::from(candidate);
        seen.insert(route.clone());
        Routed {
            route: Some(route),
            capped: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn templater(
        patterns: &[&str],
        unmatched: UnmatchedRoutes,
        max_distinct: u32,
    ) -> RouteTemplater {
        RouteTemplater::new(&RoutesConfig {
            patterns: patterns.iter().map(|s| s.to_string()).collect(),
            unmatched,
            max_distinct,
        })
    }

    #[test]
    fn first_matching_pattern_names_the_route() {
        let mut t = templater(
            &[
                "/users/{id}",
                "/users/{id}/orders/{order}",
                "/static/{path...}",
            ],
            UnmatchedRoutes::Unset,
            100,
        );
        assert_eq!(
            t.route("svc", "/users/42", None).route.as_deref(),
            Some("/users/{id}")
        );
        assert_eq!(
            t.route("svc", "/users/42/orders/7", None).route.as_deref(),
            Some("/users/{id}/orders/{order}")
        );
        assert_eq!(
            t.route("svc", "/static/css/site.css", None)
                .route
                .as_deref(),
            Some("/static/{path...}")
        );
        assert_eq!(
            t.route("svc", "/users/42?x=1", None).route.as_deref(),
            Some("/users/{id}"),
            "query ignored"
        );
        assert_eq!(
            t.route("svc", "/users", None).route,
            None,
            "{{id}} needs a segment; unmatched=unset gives none"
        );
        assert_eq!(
            t.route("svc", "/users/42/extra", None).route,
            None,
            "extra segments do not match"
        );
    }

    #[test]
    fn unmatched_policies_are_applied() {
        let mut path = templater(&[], UnmatchedRoutes::Path, 100);
        assert_eq!(path.route("s", "/a/1", None).route.as_deref(), Some("/a/1"));
        let mut wild = templater(&[], UnmatchedRoutes::Wildcard, 100);
        assert_eq!(wild.route("s", "/a/1", None).route.as_deref(), Some("/**"));
        let mut heur = templater(&[], UnmatchedRoutes::Heuristic, 100);
        assert_eq!(heur.route("s", "/a/1", None).route.as_deref(), Some("/a/*"));
    }

    #[test]
    fn front_end_route_wins_over_patterns() {
        let mut t = templater(&["/users/{id}"], UnmatchedRoutes::Heuristic, 100);
        assert_eq!(
            t.route("s", "/users/1", Some("GET /users/{uid}"))
                .route
                .as_deref(),
            Some("GET /users/{uid}")
        );
    }

    #[test]
    fn distinct_routes_are_capped_per_service() {
        let mut t = templater(&[], UnmatchedRoutes::Path, 2);
        assert!(!t.route("a", "/one", None).capped);
        assert!(!t.route("a", "/two", None).capped);
        let third = t.route("a", "/three", None);
        assert_eq!(
            third,
            Routed {
                route: Some("/**".into()),
                capped: true
            },
            "third distinct route overflows"
        );
        assert_eq!(
            t.route("a", "/one", None).route.as_deref(),
            Some("/one"),
            "known routes keep their name"
        );
        assert_eq!(
            t.route("b", "/three", None).route.as_deref(),
            Some("/three"),
            "the cap is per service"
        );
    }
}
