//! `spool-console`: an HTTP API and a web dashboard over spool's queues,
//! jobs, dead letters and the live worker registry (docs/console.md).
//!
//! Settings: `SPOOL_REDIS_URL`, `SPOOL_REDIS_CA_FILE`, `SPOOL_CONSOLE_ADDR`
//! (default `127.0.0.1:8080`), `SPOOL_CONSOLE_TOKEN` (admin: may act) and
//! `SPOOL_CONSOLE_READ_TOKEN` (read only). Without tokens the console serves
//! loopback only: binding another address exits 2, saying why.

mod api;
mod auth;
mod error;
mod events;
mod extract;
mod gate;
mod openapi;
mod serve;
mod web;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use spool_queue::{Client, ClientOptions};

/// Largest request body: a batch of jobs, each up to the queue's 1 MiB.
pub(crate) const MAX_BODY: usize = 8 << 20;

#[derive(Parser, Debug)]
#[command(
    name = "spool-console",
    version,
    about = "HTTP API and dashboard for spool queues"
)]
struct Args {
    /// The Redis that holds the queues.
    #[arg(
        long,
        env = "SPOOL_REDIS_URL",
        default_value = "redis://127.0.0.1:6379",
        hide_env_values = true
    )]
    redis_url: String,
    /// A PEM CA bundle to trust for `rediss://`.
    #[arg(long, env = "SPOOL_REDIS_CA_FILE")]
    redis_ca_file: Option<std::path::PathBuf>,
    /// Writes (enqueue, cancel, retries, pause) are acknowledged only once
    /// this many replicas have them (Redis `WAIT`), as the workers do.
    #[arg(long, env = "SPOOL_REDIS_MIN_REPLICAS", default_value_t = 0,
          value_parser = clap::value_parser!(u32).range(0..=spool_queue::MAX_MIN_REPLICAS as i64))]
    redis_min_replicas: u32,
    /// Where to listen.
    #[arg(long, env = "SPOOL_CONSOLE_ADDR", default_value = "127.0.0.1:8080")]
    addr: String,
    /// The admin token: reads and acts (cancel, retry, purge, enqueue).
    #[arg(long, env = "SPOOL_CONSOLE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The read-only token.
    #[arg(long, env = "SPOOL_CONSOLE_READ_TOKEN", hide_env_values = true)]
    read_token: Option<String>,
}

/// What every handler shares.
#[derive(Debug)]
pub(crate) struct AppState {
    /// Set once Redis has answered: the console listens (and answers 503)
    /// before that, so a liveness probe never kills it for Redis' sake.
    pub(crate) redis: tokio::sync::OnceCell<Client>,
    pub(crate) auth: auth::Tokens,
    /// One poller per followed job, shared by its event streams.
    pub(crate) events: events::Hub,
    /// The `Host` values a console without tokens answers to.
    pub(crate) hosts: Vec<String>,
}

impl AppState {
    /// The Redis client, or 503 while the console has not reached Redis yet.
    pub(crate) fn client(&self) -> Result<&Client, api::ApiError> {
        self.redis.get().ok_or_else(|| {
            api::ApiError::new(
                503,
                "redis_unavailable",
                "the console has not reached Redis yet; retrying",
            )
        })
    }
}

fn fail(msg: String) -> ExitCode {
    eprintln!("spool-console: {msg}");
    ExitCode::from(2)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    init_logging();
    let addr: SocketAddr = match args.addr.parse() {
        Ok(a) => a,
        Err(e) => {
            return fail(format!(
                "invalid SPOOL_CONSOLE_ADDR={:?}: {e} (write host:port, e.g. 127.0.0.1:8080)",
                args.addr
            ));
        }
    };
    let tokens = match auth::Tokens::new(args.token.clone(), args.read_token.clone()) {
        Ok(t) => t,
        Err(e) => return fail(e),
    };
    if !tokens.enabled() && !addr.ip().is_loopback() {
        return fail(format!(
            "refusing to serve {addr} without a token: set SPOOL_CONSOLE_TOKEN (and \
             SPOOL_CONSOLE_READ_TOKEN for read-only users), or bind 127.0.0.1"
        ));
    }
    if let Err(e) = Client::check_url(&args.redis_url) {
        return fail(format!("invalid SPOOL_REDIS_URL: {e}"));
    }
    let mut options = ClientOptions::default().with_min_replicas(args.redis_min_replicas);
    if let Some(path) = &args.redis_ca_file {
        match options.clone().with_tls_ca_file(path) {
            Ok(o) => options = o,
            Err(why) => {
                return fail(format!(
                    "invalid SPOOL_REDIS_CA_FILE={}: {why}",
                    path.display()
                ));
            }
        }
    }
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => return fail(format!("cannot listen on {addr}: {e}")),
    };
    let bound = listener.local_addr().map_or(addr, |a| a);
    let state = Arc::new(AppState {
        redis: tokio::sync::OnceCell::new(),
        auth: tokens,
        events: events::Hub::default(),
        hosts: gate::loopback_hosts(bound),
    });
    // Redis is reached in the background: the console serves (503 from the
    // API and /healthz) until it is.
    let connecting = state.clone();
    let url = args.redis_url.clone();
    tokio::spawn(async move {
        loop {
            match Client::connect_with(&url, options.clone()).await {
                Ok(c) => {
                    let _ = connecting.redis.set(c);
                    tracing::info!("connected to Redis");
                    return;
                }
                Err(e) if e.is_transient() => {
                    tracing::warn!(error = %e, "Redis not reachable yet; retrying");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
                Err(e) => {
                    // A wrong password or URL does not fix itself: say so
                    // every so often, and keep answering 503.
                    tracing::error!(error = %e, "cannot connect to Redis");
                    tokio::time::sleep(std::time::Duration::from_secs(10)).await;
                }
            }
        }
    });
    tracing::info!(%bound, redis = %spool_queue::mask_password(&args.redis_url), auth = state.auth.enabled(), "spool-console serving");
    let app = web::router(state);
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    let stop = async {
        tokio::select! { _ = shutdown => {}, _ = term => {} }
    };
    serve::serve(listener, app, stop).await;
    ExitCode::SUCCESS
}

/// `tracing` to stderr, filtered by `RUST_LOG` (default `info`), coloured
/// only on a terminal.
fn init_logging() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}
