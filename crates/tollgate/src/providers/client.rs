//! The one upstream HTTP client: pooled, rustls, no global timeout (each
//! call carries its own), no redirects, no retries (fallback is the
//! gateway's decision, not the HTTP library's).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::server::shard::PerShard;

/// Hosts that never go through a proxy from the environment: a local
/// provider (Ollama, vLLM, the mock server) must not be sent off-machine.
const ALWAYS_DIRECT: &str = "127.0.0.1,localhost,::1";

/// Longest wait for a TCP (and TLS) connection to a provider.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Idle pooled connections are dropped after this; providers close theirs
/// after about a minute or two anyway.
const POOL_IDLE: Duration = Duration::from_secs(90);

/// The upstream client every networked provider shares: one connection
/// pool per shard ([`crate::server::shard`]), so that a request, its pooled
/// connection and the task driving it stay on one thread. Cheap to clone.
#[derive(Clone)]
pub struct Http(Arc<Clients>);

struct Clients {
    proxies: Vec<reqwest::Proxy>,
    /// Off a shard (alerts, tests).
    shared: reqwest::Client,
    shards: PerShard<OnceLock<reqwest::Client>>,
}

impl Http {
    /// This shard's client (built on first use), else the shared one.
    pub fn get(&self) -> &reqwest::Client {
        match self.0.shards.get() {
            Some(slot) => slot.get_or_init(|| build(&self.0.proxies)),
            None => &self.0.shared,
        }
    }
}

/// The shared upstream client, with proxies from the environment.
pub fn http_client() -> Http {
    client_with_env(|name| std::env::var(name).ok())
}

/// [`http_client`] with the environment read through `env`, so tests can
/// give it proxy settings without touching the process environment.
pub(crate) fn client_with_env(env: impl Fn(&str) -> Option<String>) -> Http {
    let proxies = env_proxies(env);
    Http(Arc::new(Clients {
        shared: build(&proxies),
        proxies,
        shards: PerShard::new(),
    }))
}

fn build(proxies: &[reqwest::Proxy]) -> reqwest::Client {
    let mut builder = base_builder();
    for proxy in proxies {
        builder = builder.proxy(proxy.clone());
    }
    match builder.build() {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(
                error = %super::upstream::error_chain(&e),
                "could not build the upstream HTTP client with the proxies from the environment; going direct"
            );
            base_builder()
                .build()
                .unwrap_or_else(|_| reqwest::Client::new())
        }
    }
}

fn base_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .tls_backend_rustls()
        .tcp_nodelay(true)
        .tcp_keepalive(Duration::from_secs(60))
        .pool_idle_timeout(POOL_IDLE)
        // A provider that cannot even be connected to has generated nothing:
        // failing the connect on its own (not as the request's timeout) lets
        // the gateway tell it apart from a call that may have been billed.
        .connect_timeout(CONNECT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .retry(reqwest::retry::never())
        // Proxies come only from `env_proxies`, where local hosts are exempt.
        .no_proxy()
        .user_agent(concat!("tollgate/", env!("CARGO_PKG_VERSION")))
}

/// `HTTPS_PROXY`, `HTTP_PROXY` and `ALL_PROXY` (either case) as reqwest
/// would read them, with `NO_PROXY` extended by the local hosts.
fn env_proxies(env: impl Fn(&str) -> Option<String>) -> Vec<reqwest::Proxy> {
    let var = |name: &str| {
        env(name)
            .or_else(|| env(&name.to_lowercase()))
            .filter(|v| !v.trim().is_empty())
    };
    let no_proxy = match var("NO_PROXY") {
        Some(list) => format!("{list},{ALWAYS_DIRECT}"),
        None => ALWAYS_DIRECT.to_owned(),
    };
    let mut proxies = Vec::new();
    let mut add = |name: &str, make: fn(&str) -> reqwest::Result<reqwest::Proxy>| {
        let Some(url) = var(name) else { return };
        match make(&url) {
            Ok(proxy) => proxies.push(proxy.no_proxy(reqwest::NoProxy::from_string(&no_proxy))),
            // The URL may hold proxy credentials: name the variable only.
            Err(_) => tracing::warn!("ignoring `{name}`: it is not a proxy URL"),
        }
    };
    add("HTTPS_PROXY", |u| reqwest::Proxy::https(u));
    // As reqwest does: under CGI, `HTTP_PROXY` can be set by the client (httpoxy).
    if env("REQUEST_METHOD").is_none() {
        add("HTTP_PROXY", |u| reqwest::Proxy::http(u));
    }
    add("ALL_PROXY", |u| reqwest::Proxy::all(u));
    proxies
}
