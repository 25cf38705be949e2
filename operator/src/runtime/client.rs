//! The Kubernetes client: kube's layer stack (base URI, retries of
//! transient server errors, authentication, extra headers) over a hyper
//! client whose pool of idle connections is bounded.
//!
//! kube's own builder (`Client::try_default`) keeps every idle connection:
//! its hyper client has no pool timer, so an idle connection is dropped only
//! when the server closes it, and the pool holds as many per host as were
//! ever open at once. A cold start on a large cluster reconciles many
//! objects concurrently and opens dozens of connections; each then kept its
//! TLS session and its read buffer, which hyper grows to the largest
//! response it read (bench/scale/NOTES.md).

use std::time::Duration;

use hyper_util::{
    client::legacy::{Client as HttpClient, connect::HttpConnector},
    rt::{TokioExecutor, TokioTimer},
};
use kube::{
    Client, Config,
    client::{ConfigExt, retry::RetryPolicy},
};
use tower::{BoxError, ServiceBuilder, retry::RetryLayer};

/// Idle connections kept to the API server. Watches hold their own
/// connections while they run; these serve the requests between them, a
/// few at a time once the cold start is over.
pub const MAX_IDLE_CONNECTIONS: usize = 4;

/// How long an idle connection is kept before it is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// A client for `config` with the pool bounded as described above. A
/// kubeconfig that names a proxy (`proxy-url`) gets kube's own client, which
/// knows how to tunnel through it, with kube's unbounded pool.
pub fn build(config: Config) -> Result<Client, kube::Error> {
    if config.proxy_url.is_some() {
        return Client::try_from(config);
    }
    let mut http = HttpConnector::new();
    // The TLS connector on top needs to see https:// URLs.
    http.enforce_http(false);
    http.set_connect_timeout(config.connect_timeout);
    let https = config.rustls_https_connector_with_connector(http)?;
    let http_client = HttpClient::builder(TokioExecutor::new())
        .pool_max_idle_per_host(MAX_IDLE_CONNECTIONS)
        .pool_idle_timeout(IDLE_TIMEOUT)
        // Without a timer hyper never evicts an idle connection.
        .pool_timer(TokioTimer::new())
        .build(https);
    // The same layers, in the same order, as kube's `ClientBuilder`, less its
    // per-request debug spans.
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(
            config
                .default_retry
                .then(|| RetryLayer::new(RetryPolicy::server_retry())),
        )
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_err(BoxError::from)
        .service(http_client);
    Ok(Client::new(service, config.default_namespace))
}
