//! cairn's server: etcd's v3 gRPC services over the storage engine, one Raft member.
//!
//! Startup ([`run`]): check the flags, open (bootstrap, restart or join) the Raft member
//! (`raft_engine`: the store at `<data-dir>/member/cairn`, the Raft log at
//! `<data-dir>/member/raft`), serve the peer listeners, wait until the member joined the
//! cluster, bind one listener per `--listen-client-urls` entry (and one per
//! `--listen-metrics-urls` entry for `/health` and `/metrics`, see `http_status`), log
//! `ready to serve client requests`, and serve until SIGTERM or SIGINT (or this member's
//! removal). Shutdown stops accepting, lets in-flight requests finish, stops the node.
//! Every member runs Raft, a single one too (so it can be grown with MemberAdd).
//!
//! Map: `config` (flags) → `membership` (IDs, headers) → `serve` (listeners: `listen`,
//! `incoming`, `tls`, `peer_tls`, with `authority` and `limits` smoothing over hyper/tonic
//! vs grpc-go differences) → services `kv`, `maintenance`, `cluster`, `lease`, `watch`,
//! `unimplemented` → writes through the `proposer` trait, implemented by `raft_proposer`
//! (and by `group_commit` for the embeddable single-process `engine`); `status` maps every
//! error to etcd's.
#![deny(missing_docs)]

pub mod authority;
pub mod clock;
pub mod cluster;
pub mod cluster_control;
pub mod config;
pub mod engine;
pub mod error;
pub mod group_commit;
pub mod hash_kv;
mod http_status;
mod incoming;
pub mod kv;
pub mod lease;
pub mod lease_forward;
pub mod lessor;
pub mod limits;
pub mod listen;
pub mod local_cluster;
pub mod maintenance;
pub mod members;
pub mod membership;
pub mod peer_tls;
pub mod proposer;
pub mod raft_cluster;
pub mod raft_engine;
pub mod raft_machine;
pub mod raft_proposer;
pub mod status;
pub mod tls;
pub mod unimplemented;
pub mod wal_log;
pub mod watch;

mod serve;

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::{error, info, warn};

pub use config::Config;
pub use error::ServerError;

use crate::error::ConfigError;
use crate::clock::SystemClock;
use crate::group_commit::request_id_base;
use crate::engine::EngineOptions;
use crate::lessor::LessorConfig;
use crate::listen::ClientUrl;
use crate::cluster_control::ClusterControl;
use crate::lease_forward::LeaseForwarder;
use crate::lessor::Lessor;
use crate::membership::{initial_members, Membership};
use crate::proposer::Proposer;
use crate::raft_engine::{RaftEngine, RaftSetup};
use cairn_storage::watch::WatchHub;
use cairn_storage::Store;
use crate::watch::WatchService;

/// Parses the command line, sets up logging and the runtime, and runs the server.
/// Exit codes: 0 after a clean shutdown (or `--help`, `--version`), 2 for a usage error,
/// 1 when the server fails.
pub fn main_entry() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("cluster") {
        return local_cluster::main(&args[2..]);
    }
    let config = match Config::try_parse_args(std::env::args_os()) {
        Ok(config) => config,
        Err(e) => {
            let code = e.exit_code();
            // Nothing better to do if stderr itself is gone.
            if e.print().is_err() {
                return ExitCode::from(2);
            }
            return ExitCode::from(u8::try_from(code).unwrap_or(2));
        }
    };
    if config.version {
        print!("{}", Config::version_text());
        return ExitCode::SUCCESS;
    }
    init_logging(&config.log_level);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("cairn-worker")
        .build()
        .map_err(ServerError::Runtime);
    let result = runtime.and_then(|rt| rt.block_on(run(config)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!(error = %e, "cairn stopped with an error");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr at `--log-level` (etcd's names; `dpanic`, `panic` and `fatal` log errors
/// only). `RUST_LOG`, when set, overrides it. Dependencies log warnings and errors only.
fn init_logging(level: &str) {
    let level = match level {
        "debug" | "info" | "warn" | "error" => level,
        _ => "error",
    };
    let deps = if level == "error" { "error" } else { "warn" };
    let directives = std::env::var("RUST_LOG").unwrap_or_else(|_| {
        format!("{level},h2={deps},hyper={deps},hyper_util={deps},tower={deps},rustls={deps},sled={deps}")
    });
    let filter = tracing_subscriber::EnvFilter::try_new(&directives)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    // A second initialisation (tests calling main_entry twice) keeps the first subscriber.
    if tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(filter)
        .try_init()
        .is_err()
    {
        warn!("logging was already initialised");
    }
}

/// Runs one member until SIGTERM/SIGINT, then shuts down gracefully.
pub async fn run(config: Config) -> Result<(), ServerError> {
    if !config.ignored.is_empty() {
        warn!(flags = %config.ignored.join(" "), "accepted but ignored by this version");
    }
    if config.max_request_bytes == 0 {
        return Err(ConfigError::Zero("max-request-bytes").into());
    }
    if config.max_txn_ops == 0 {
        return Err(ConfigError::Zero("max-txn-ops").into());
    }
    let membership = Arc::new(Membership::from_config(&config)?);
    let initial = initial_members(&config)?;
    let urls = config
        .listen_client_urls
        .iter()
        .map(|u| ClientUrl::parse(u))
        .collect::<Result<Vec<_>, _>>()?;

    let metrics_urls = http_status::parse_urls(&config.listen_metrics_urls)?;

    let has_certificate =
        config.cert_file.is_some() || config.key_file.is_some() || config.auto_tls;
    if let Some(url) = urls.iter().find(|u| u.tls && !has_certificate) {
        return Err(ConfigError::HttpsWithoutCert(url.url.clone()).into());
    }

    let data_dir = config.data_dir();
    create_private_dir(&data_dir)?;
    let hosts: Vec<String> = urls.iter().map(|u| u.host.clone()).collect();
    let tls = tls::client_tls(&config, &data_dir, &hosts)?;

    let unix_millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let options = EngineOptions {
        max_txn_ops: config.max_txn_ops as usize,
        max_request_bytes: config.max_request_bytes as usize,
        // responses of a `fragment` watch are split at --max-request-bytes plus gRPC's
        // allowance, as etcd does
        max_watch_response_bytes: (config.max_request_bytes as usize).saturating_add(serve::GRPC_OVERHEAD_BYTES),
        // etcd's minimum lease TTL: ⌈1.5 × election timeout⌉ seconds
        min_lease_ttl: i64::try_from((config.election_timeout * 3).div_ceil(2000)).unwrap_or(i64::MAX),
        first_request_id: request_id_base(membership.member_id, unix_millis),
        // lease IDs: like request IDs, unique per member and start
        first_lease_id: request_id_base(membership.member_id, unix_millis.wrapping_add(1 << 30)),
        clock: Arc::new(SystemClock::default()),
        lessor: LessorConfig::default(),
    };
    let peer_urls = config
        .listen_peer_urls
        .iter()
        .map(|u| ClientUrl::parse(u))
        .collect::<Result<Vec<_>, _>>()?;
    let (peer_server_tls, peer_client_tls) = peer_tls::peer_tls(&config, &data_dir, &peer_urls)?;
    let setup = RaftSetup {
        data_dir: data_dir.clone(),
        name: config.name.clone(),
        client_urls: config.advertise_client_urls.clone(),
        peer_urls: config.initial_advertise_peer_urls.clone(),
        initial,
        token: config.initial_cluster_token.clone(),
        join_existing: config.initial_cluster_state == "existing",
        heartbeat_ms: config.heartbeat_interval,
        election_ms: config.election_timeout,
        snapshot_count: config.snapshot_count,
        peer_tls: peer_client_tls,
        engine: options,
    };
    let engine = RaftEngine::open(setup).await?;
    let store = engine.store.clone();
    let membership = engine.membership.clone();
    info!(
        name = %membership.name,
        member_id = %format!("{:016x}", membership.member_id),
        cluster_id = %format!("{:016x}", membership.cluster_id),
        data_dir = %data_dir.display(),
        revision = store.revision(),
        applied_index = store.applied_index(),
        "store opened (raft member)"
    );
    let peers = serve::PeerListeners {
        urls: peer_urls,
        tls: peer_server_tls,
        routes: engine.peer_routes.clone(),
        stop: engine.stop.clone(),
        ready: Some(Box::pin(engine.joined())),
    };
    let served = serve_services(
        &config,
        &urls,
        &metrics_urls,
        tls,
        Served {
            store,
            hub: engine.hub.clone(),
            proposer: engine.proposer.clone(),
            lessor: engine.lessor.clone(),
            membership,
            control: engine.control.clone(),
            health: engine.health(),
            lease_forward: Some(engine.lease_forward.clone()),
        },
        Some(peers),
    )
    .await;
    engine.shutdown().await;
    served?;
    info!("cairn stopped");
    Ok(())
}

/// What one member serves to clients, whichever engine runs it.
struct Served<P> {
    store: Arc<Store>,
    hub: WatchHub,
    proposer: Arc<P>,
    lessor: Arc<Lessor<P>>,
    membership: Arc<Membership>,
    control: Arc<dyn ClusterControl>,
    health: Arc<dyn Fn() -> Option<Arc<str>> + Send + Sync>,
    lease_forward: Option<Arc<LeaseForwarder>>,
}

/// Serves the client (and peer) listeners and the metrics listeners until a signal.
async fn serve_services<P: Proposer>(
    config: &Config,
    urls: &[ClientUrl],
    metrics_urls: &[ClientUrl],
    tls: Option<tokio_rustls::TlsAcceptor>,
    s: Served<P>,
    peers: Option<serve::PeerListeners>,
) -> Result<(), ServerError> {
    // Bound before "ready to serve client requests", so a probe never sees a refused port.
    let metrics_listeners = http_status::bind(metrics_urls).await?;
    let (stop_metrics, metrics_stopped) = tokio::sync::watch::channel(false);
    let metrics = tokio::spawn(http_status::serve(
        metrics_listeners,
        http_status::StatusSource { store: s.store.clone(), health: s.health },
        metrics_stopped,
    ));
    let services = serve::Services::new(
        s.store,
        s.proposer,
        s.lessor,
        WatchService::new(s.hub, s.membership.clone(), config.watch_progress_notify_interval()),
        s.membership,
        s.control,
        s.lease_forward,
        config.max_txn_ops as usize,
        config.max_request_bytes as usize,
    );
    let served = serve::serve(urls, tls, services, peers).await;
    // The gRPC listeners stopped (signal or failure): stop the metrics listeners too.
    if stop_metrics.send(true).is_err() && !metrics_urls.is_empty() {
        warn!("the metrics listeners had already stopped");
    }
    if let Err(e) = metrics.await {
        error!(error = %e, "the metrics server task failed");
    }
    served
}

/// Creates the data directory with etcd's permissions (owner only).
fn create_private_dir(dir: &Path) -> Result<(), ServerError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|source| ServerError::DataDir {
        path: dir.to_owned(),
        source,
    })
}

