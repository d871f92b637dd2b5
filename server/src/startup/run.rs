//! Start-up of the `cairn` binary: parse the flags, set up logging and the runtime, open
//! the Raft member, serve its listeners until a signal (or the member stops), shut down.
//!
//! [`run`]: check the flags, open (bootstrap, restart or join) the member
//! (`crate::member`), serve the peer listeners, wait until the member joined the cluster,
//! bind one listener per `--listen-client-urls` entry (and one per `--listen-metrics-urls`
//! entry for `/health` and `/metrics`, see `net/http.rs`), log `ready to serve client
//! requests`, and serve until SIGTERM or SIGINT (or this member's removal). Shutdown stops
//! accepting, lets in-flight requests finish, stops the node.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use cairn_storage::watch::WatchHub;
use cairn_storage::{StorageEngine, Store};
use tracing::{error, info, warn};

use super::config::Config;
use super::{local_cluster, logging};
use crate::api::watch::WatchService;
use crate::error::{ConfigError, ServerError};
use crate::member::auto_compact::Retention;
use crate::member::control::ClusterControl;
use crate::member::identity::{initial_members, Membership};
use crate::member::leader_forward::LeaderForwarder;
use crate::member::lessor::Lessor;
use crate::member::raft_proposer::RaftProposer;
use crate::member::role::Role;
use crate::auth::{Authenticator, SimpleTokens};
use crate::member::{Member, MemberOptions, MemberSetup};
use crate::net::listen::ClientUrl;
use crate::net::peer_san::PeerSanCheck;
use crate::net::{http, peer_tls, serve, tls};

/// Parses the command line, sets up logging and the runtime, and runs the server.
/// Exit codes: 0 after a clean shutdown (or `--help`, `--version`), 2 for a usage error,
/// 1 when the server fails.
pub fn main_entry() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("cluster") {
        return local_cluster::main(&args[2..]);
    }
    if args.get(1).map(String::as_str) == Some("snapshot") {
        return super::snapshot_cmd::main(&args[2..]);
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
    if let Err(e) = logging::init(&config.logger, &config.log_outputs, &config.log_level) {
        eprintln!("cairn: {e}");
        return ExitCode::FAILURE;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("cairn-worker")
        .thread_stack_size(THREAD_STACK_BYTES)
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

/// The stack of every thread that walks a client's Txn: the runtime's workers and
/// blocking pool (decode, checks, auth, the read-only path, encoding) and the Raft thread
/// (decode and apply of committed entries). Each walk recurses once per nesting level, up
/// to `cairn_proto::nested::MAX_TXN_DEPTH` (512) levels, and the deepest Txn needs between
/// 256 and 384 KiB on the worst of them (release build; `tests/abuse/nesting.rs` at 512
/// levels failed with `RUST_MIN_STACK=262144` and passed with 393216 before this was
/// set): 8 MiB is over 20 times that, set here rather than left to std's 2 MiB default,
/// which `RUST_MIN_STACK` changes. Only the pages a thread touches are resident.
pub const THREAD_STACK_BYTES: usize = 8 << 20;

/// Runs one member until SIGTERM/SIGINT, then shuts down gracefully.
pub async fn run(config: Config) -> Result<(), ServerError> {
    if !config.ignored.is_empty() {
        warn!(flags = %config.ignored.join(" "), "accepted but ignored by this version");
    }
    if !config.unknown_file_keys.is_empty() {
        warn!(keys = %config.unknown_file_keys.join(" "), "--config-file keys no flag has; ignored");
    }
    if let Some((flag, why)) = config.etcd_only.refused() {
        return Err(ConfigError::Refused { flag, why }.into());
    }
    if config.max_request_bytes == 0 {
        return Err(ConfigError::Zero("max-request-bytes").into());
    }
    if config.max_txn_ops == 0 {
        return Err(ConfigError::Zero("max-txn-ops").into());
    }
    let jwt = crate::auth::JwtTokens::from_flag(&config.auth_token)
        .map_err(|e| ConfigError::AuthToken(e.to_string()))?
        .map(Arc::new);
    // etcd checks --initial-cluster against this member's flags before anything else
    Membership::from_config(&config)?;
    let initial = initial_members(&config)?;
    let urls = config
        .listen_client_urls
        .iter()
        .map(|u| ClientUrl::parse(u))
        .collect::<Result<Vec<_>, _>>()?;

    let metrics_urls = http::parse_urls(&config.listen_metrics_urls)?;

    let has_certificate =
        config.cert_file.is_some() || config.key_file.is_some() || config.auto_tls;
    if let Some(url) = urls.iter().find(|u| u.tls && !has_certificate) {
        return Err(ConfigError::HttpsWithoutCert(url.url.clone()).into());
    }

    let data_dir = config.data_dir();
    create_private_dir(&data_dir)?;
    let hosts: Vec<String> = urls.iter().map(|u| u.host.clone()).collect();
    let tls = tls::client_tls(&config, &data_dir, &hosts)?;

    let options = MemberOptions {
        max_txn_ops: config.max_txn_ops as usize,
        max_request_bytes: config.max_request_bytes as usize,
        // responses of a `fragment` watch are split at --max-request-bytes plus gRPC's
        // allowance, as etcd does
        max_watch_response_bytes: (config.max_request_bytes as usize).saturating_add(serve::GRPC_OVERHEAD_BYTES),
        // etcd's minimum lease TTL: ⌈1.5 × election timeout⌉ seconds
        min_lease_ttl: i64::try_from((config.election_timeout * 3).div_ceil(2000)).unwrap_or(i64::MAX),
        storage_engine: config.storage_engine.as_deref().and_then(StorageEngine::from_name),
        token_ttl_secs: config.auth_token_ttl,
        warn_apply_duration: config.experimental_warning_apply_duration,
        quota_backend_bytes: config.quota_backend_bytes,
        strict_reconfig_check: config.etcd_only.strict_reconfig_check,
        initial_corrupt_check: config.experimental_initial_corrupt_check,
        corrupt_check_interval: config.experimental_corrupt_check_time,
        auto_compaction: Retention::parse(&config.auto_compaction_mode, &config.auto_compaction_retention)?,
        ..MemberOptions::default()
    };
    if config.metrics == "extensive" {
        options.metrics.enable_extensive();
    }
    let peer_urls = config
        .listen_peer_urls
        .iter()
        .map(|u| ClientUrl::parse(u))
        .collect::<Result<Vec<_>, _>>()?;
    let (peer_server_tls, peer_client_tls) = peer_tls::peer_tls(&config, &data_dir, &peer_urls)?;
    let setup = MemberSetup {
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
        wal_dir: config.wal_dir.clone(),
        force_new_cluster: config.etcd_only.force_new_cluster,
        options,
    };
    let engine = Member::open(setup).await?;
    super::memory::release_startup_memory();
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
        san_check: (!config.experimental_peer_skip_client_san_verification).then(PeerSanCheck::default),
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
            role: engine.role.clone(),
            membership,
            control: engine.control.clone(),
            health: engine.health(),
            leader_forward: Some(engine.leader_forward.clone()),
            tokens: engine.tokens.clone(),
            metrics: engine.metrics.clone(),
            leader: engine.leader_watch(),
            jwt,
        },
        Some(peers),
    )
    .await;
    engine.shutdown().await;
    served?;
    info!("cairn stopped");
    Ok(())
}

/// What one member serves to clients.
struct Served {
    store: Arc<Store>,
    hub: WatchHub,
    proposer: Arc<RaftProposer>,
    lessor: Arc<Lessor<RaftProposer>>,
    role: Role,
    membership: Arc<Membership>,
    control: Arc<dyn ClusterControl>,
    health: Arc<dyn Fn() -> http::MemberHealth + Send + Sync>,
    leader_forward: Option<Arc<LeaderForwarder>>,
    tokens: Arc<SimpleTokens>,
    metrics: Arc<crate::metrics::Metrics>,
    leader: tokio::sync::watch::Receiver<cairn_raft_node::LeaderInfo>,
    /// `--auth-token jwt,…`.
    jwt: Option<Arc<crate::auth::JwtTokens>>,
}

/// Serves the client (and peer) listeners and the metrics listeners until a signal.
async fn serve_services(
    config: &Config,
    urls: &[ClientUrl],
    metrics_urls: &[ClientUrl],
    tls: Option<crate::net::tls_reload::ServerTls>,
    s: Served,
    peers: Option<serve::PeerListeners>,
) -> Result<(), ServerError> {
    // Bound before "ready to serve client requests", so a probe never sees a refused port.
    let metrics_listeners = http::bind(metrics_urls).await?;
    let (stop_metrics, metrics_stopped) = tokio::sync::watch::channel(false);
    let status = http::StatusSource { store: s.store.clone(), hub: s.hub.clone(), health: s.health, metrics: s.metrics.clone() };
    let metrics = tokio::spawn(http::serve(metrics_listeners, status.clone(), metrics_stopped));
    let auth = Arc::new(
        Authenticator::new(s.store.clone(), s.tokens, config.bcrypt_cost, config.client_cert_auth).with_jwt(s.jwt),
    );
    let services = serve::Services::new(
        s.store,
        auth,
        s.proposer,
        s.lessor,
        WatchService::new(s.hub, s.membership.clone(), config.watch_progress_notify_interval()).with_role(s.role.clone()),
        s.membership,
        s.control,
        s.leader_forward,
        Some(s.role),
        config.max_txn_ops as usize,
        config.max_request_bytes as usize,
        s.metrics,
    )
    .with_status(status)
    .with_leader(s.leader)
    .with_http2(serve::Http2Settings {
        max_concurrent_streams: config.max_concurrent_streams,
        keepalive_interval: config.grpc_keepalive_interval,
        keepalive_timeout: config.grpc_keepalive_timeout,
        keepalive_min_time: crate::net::ping_policy::PingPolicy::new(config.grpc_keepalive_min_time),
    });
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
