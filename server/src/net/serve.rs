//! Serving: one tonic server per client listener, all sharing the same service instances,
//! and graceful shutdown on SIGTERM/SIGINT.

use std::sync::Arc;
use std::time::Duration;

use cairn_proto::etcdserverpb::auth_server::AuthServer;
use cairn_proto::etcdserverpb::cluster_server::ClusterServer;
use cairn_proto::etcdserverpb::kv_server::KvServer;
use cairn_proto::etcdserverpb::lease_server::LeaseServer;
use cairn_proto::etcdserverpb::maintenance_server::MaintenanceServer;
use cairn_proto::etcdserverpb::watch_server::WatchServer;
use cairn_storage::Store;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tokio::task::JoinSet;
use cairn_raft_node::LeaderInfo;
use crate::net::peer_san::PeerSanCheck;
use crate::net::tls_reload::ServerTls;
use tonic::service::Routes;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::{HealthReporter, HealthService};
use tonic_health::ServingStatus;
use tonic::transport::Server;
use tracing::{error, info, warn};

use crate::api::cluster::ClusterService;
use crate::error::ServerError;
use crate::member::control::ClusterControl;
use crate::member::MemberStop;
use crate::member::proposer::Proposer;
use crate::api::lease::LeaseService;
use crate::member::leader_forward::LeaderForwarder;
use crate::member::lessor::Lessor;
use crate::member::role::Role;
use crate::metrics::grpc::GrpcMetricsLayer;
use crate::metrics::Metrics;
use crate::net::http::StatusSource;
use crate::net::{client_http, incoming};
use crate::api::kv::KvService;
use crate::net::limits::LimitStatusLayer;
use crate::net::ping_policy::PingPolicy;
use crate::net::listen::ClientUrl;
use crate::api::maintenance::MaintenanceService;
use crate::member::identity::Membership;
use crate::api::auth::AuthService;
use crate::auth::{AuthGate, Authenticator};
use crate::api::watch::{WatchService, WatchShutdown};

/// etcd allows this much gRPC framing on top of `--max-request-bytes`.
pub(crate) const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;
/// Responses are limited only by gRPC's own maximum (etcd: math.MaxInt32).
const MAX_ENCODING_BYTES: usize = i32::MAX as usize;
/// How long shutdown waits for in-flight requests before closing connections anyway.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// HTTP/2 receive window of each client stream (what a client may send on one call before
/// the server reads it): grpc-go's 64 KiB default window, doubled.
///
/// # Why the windows are sized as they are: h2's small DATA frame budget
///
/// `h2` (under hyper and tonic) charges every received DATA frame smaller than 256 bytes
/// `256 - payload` bytes of a per-connection *budget* until the application reads that
/// frame, and closes the whole connection with GOAWAY `ENHANCE_YOUR_CALM`
/// "too_many_data_frames" when the budget runs out. The budget is half the connection
/// window (hyper exposes no other knob). Go's gRPC sends every message of a stream in its
/// own DATA frame, and watch creations or lease keep-alives are 15-30 bytes each: a client
/// that pipelines them fills a window of `W` bytes with `W / 20` frames charged
/// `236 * W / 20 ≈ 12 W` — twelve times more than the budget `W / 2` when the connection
/// and stream windows are equal, as they are by default (1 MiB each: the connection died
/// after ~2,200 unread creations). Reading promptly (the Watch and LeaseKeepAlive services
/// drain their requests into bounded queues) keeps h2's buffer short, but a server that
/// is slower than its client must stop reading at some point so that flow control slows
/// the client, and then h2 holds one full stream window of frames.
///
/// So the connection window is much larger than a stream window, as in grpc-go (whose
/// connection-level window is returned as soon as data arrives; only stream windows
/// hold a client back): with 128 KiB per stream and a 128 MiB connection window (a 64 MiB
/// budget), a stream window full of the smallest gRPC messages (5 bytes: 26,214 frames,
/// 6.6 MB charged) fits ten times over, a window of watch creations forty times. The
/// budget still closes a connection that makes the server hold tens of megabytes of tiny
/// frames on many streams at once, which is what it is for.
pub(crate) const STREAM_WINDOW_BYTES: u32 = 128 * 1024;
/// HTTP/2 receive window of a client connection: see [`STREAM_WINDOW_BYTES`].
pub(crate) const CONNECTION_WINDOW_BYTES: u32 = 128 * 1024 * 1024;

/// The gRPC services, built once and cloned (cheaply, they hold `Arc`s) into each listener.
pub(crate) struct Services<P> {
    kv: KvServer<KvService<P>>,
    maintenance: MaintenanceServer<MaintenanceService<P>>,
    cluster: ClusterServer<ClusterService>,
    watch: WatchServer<WatchService>,
    /// Ends every watch stream at shutdown (they never end by themselves).
    watch_shutdown: WatchShutdown,
    lease: LeaseServer<LeaseService<P>>,
    auth: AuthServer<AuthService<P>>,
    /// HTTP/2 settings of client connections.
    http2: Http2Settings,
    /// What plain HTTP requests on client URLs report (`client_http.rs`).
    status: Option<StatusSource>,
    /// Counts gRPC calls (`grpc_server_*`).
    grpc_metrics: GrpcMetricsLayer,
    /// The `grpc.health.v1.Health` statuses (service "": the member).
    grpc_health: HealthReporter,
    /// The leader as the member knows it, for the health status; `None`: always SERVING.
    leader: Option<watch::Receiver<LeaderInfo>>,
}

/// HTTP/2 settings of client connections: `--max-concurrent-streams`,
/// `--grpc-keepalive-interval`, `--grpc-keepalive-timeout` and `--grpc-keepalive-min-time`
/// (etcd's defaults: unlimited streams, a ping after 2 h of silence, 20 s for its answer,
/// client pings at most every 5 s while a stream is open).
///
/// The min-time is enforced under hyper by `net::ping_guard`, on plain-text client
/// listeners only, as etcd does: its peer listener has no such flag (cairn's members ping
/// each other freely), and on https client URLs it serves gRPC through Go's net/http
/// (`grpcServer.ServeHTTP`), which runs no keepalive policy, so a client that pings often
/// over TLS works with etcd and must work with cairn (`tests/abuse/pings.rs`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Http2Settings {
    pub(crate) max_concurrent_streams: u32,
    pub(crate) keepalive_interval: std::time::Duration,
    pub(crate) keepalive_timeout: std::time::Duration,
    pub(crate) keepalive_min_time: PingPolicy,
}

impl Default for Http2Settings {
    fn default() -> Self {
        Http2Settings {
            max_concurrent_streams: u32::MAX,
            keepalive_interval: std::time::Duration::from_secs(2 * 3600),
            keepalive_timeout: std::time::Duration::from_secs(20),
            keepalive_min_time: PingPolicy::new(std::time::Duration::from_secs(5)),
        }
    }
}

impl<P> Clone for Services<P> {
    fn clone(&self) -> Self {
        Services {
            kv: self.kv.clone(),
            maintenance: self.maintenance.clone(),
            cluster: self.cluster.clone(),
            watch: self.watch.clone(),
            watch_shutdown: self.watch_shutdown.clone(),
            lease: self.lease.clone(),
            auth: self.auth.clone(),
            http2: self.http2,
            status: self.status.clone(),
            grpc_metrics: self.grpc_metrics.clone(),
            grpc_health: self.grpc_health.clone(),
            leader: self.leader.clone(),
        }
    }
}

impl<P: Proposer> Services<P> {
    #[allow(clippy::too_many_arguments)] // one constructor wiring every service
    pub(crate) fn new(
        store: Arc<Store>,
        auth: Arc<Authenticator>,
        proposer: Arc<P>,
        lessor: Arc<Lessor<P>>,
        watch: WatchService,
        membership: Arc<Membership>,
        control: Arc<dyn ClusterControl>,
        leader_forward: Option<Arc<LeaderForwarder>>,
        role: Option<Role>,
        max_txn_ops: usize,
        max_request_bytes: usize,
        metrics: Arc<Metrics>,
    ) -> Services<P> {
        let decode = max_request_bytes.saturating_add(GRPC_OVERHEAD_BYTES);
        let gate = AuthGate::new(auth.clone());
        let auth = AuthService::new(store.clone(), proposer.clone(), membership.clone(), auth);
        let kv = KvService::new(store.clone(), proposer.clone(), membership.clone(), max_txn_ops)
            .with_auth(gate.clone())
            .with_metrics(metrics.clone());
        let lease = LeaseService::new(store.clone(), lessor, membership.clone())
            .with_forwarder(leader_forward.clone())
            .with_role(role)
            .with_auth(gate.clone());
        let watch = watch.with_auth(gate.clone());
        Services {
            kv: KvServer::new(kv)
                .max_decoding_message_size(decode)
                .max_encoding_message_size(MAX_ENCODING_BYTES),
            maintenance: MaintenanceServer::new(MaintenanceService::new(store, proposer, membership.clone(), control.clone()).with_auth(gate.clone()))
                .max_decoding_message_size(decode)
                .max_encoding_message_size(MAX_ENCODING_BYTES),
            cluster: ClusterServer::new(ClusterService::new(membership, control).with_auth(gate).with_forwarder(leader_forward))
                .max_decoding_message_size(decode)
                .max_encoding_message_size(MAX_ENCODING_BYTES),
            watch_shutdown: watch.shutdown_handle(),
            watch: WatchServer::new(watch)
                .max_decoding_message_size(decode)
                .max_encoding_message_size(MAX_ENCODING_BYTES),
            lease: LeaseServer::new(lease)
                .max_decoding_message_size(decode)
                .max_encoding_message_size(MAX_ENCODING_BYTES),
            auth: AuthServer::new(auth)
                .max_decoding_message_size(decode)
                .max_encoding_message_size(MAX_ENCODING_BYTES),
            http2: Http2Settings::default(),
            status: None,
            grpc_metrics: metrics.grpc.layer(),
            grpc_health: HealthReporter::new(),
            leader: None,
        }
    }

    /// Answers `/health`, `/metrics`... on client URLs from `status`.
    pub(crate) fn with_status(mut self, status: StatusSource) -> Self {
        self.status = Some(status);
        self
    }

    /// Reports `grpc.health.v1` NOT_SERVING while `leader` shows no leader.
    pub(crate) fn with_leader(mut self, leader: watch::Receiver<LeaderInfo>) -> Self {
        self.leader = Some(leader);
        self
    }

    /// Serves client connections with `http2`'s settings.
    pub(crate) fn with_http2(mut self, http2: Http2Settings) -> Self {
        self.http2 = http2;
        self
    }
}

/// The peer listeners of a Raft member (`--listen-peer-urls`): the Raft transport's
/// service, and the Cluster service so a joining member can learn the cluster.
pub(crate) struct PeerListeners {
    /// Where to listen.
    pub(crate) urls: Vec<ClientUrl>,
    /// Peer TLS (`--peer-cert-file` ...), for `https://` URLs.
    pub(crate) tls: Option<ServerTls>,
    /// The check of a peer client certificate's addresses after the handshake; `None` with
    /// `--experimental-peer-skip-client-san-verification`.
    pub(crate) san_check: Option<PeerSanCheck>,
    /// The services.
    pub(crate) routes: tonic::service::Routes,
    /// Says why this member must stop (removed from the cluster, or its node failed).
    pub(crate) stop: watch::Receiver<Option<MemberStop>>,
    /// Resolves once the member joined the cluster; client listeners open after it.
    pub(crate) ready: Option<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>>,
}

/// Binds every URL, logs readiness, serves until a signal or a server failure, then drains.
pub(crate) async fn serve<P: Proposer>(
    urls: &[ClientUrl],
    tls: Option<ServerTls>,
    services: Services<P>,
    mut peers: Option<PeerListeners>,
) -> Result<(), ServerError> {
    // Handlers first, so a signal that arrives right after "ready" is not lost.
    let mut sigterm = signal(SignalKind::terminate()).map_err(ServerError::Signals)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(ServerError::Signals)?;

    let http2 = services.http2;
    let grpc_metrics = services.grpc_metrics.clone();
    let client_router = || {
        let routes = Routes::new(services.kv.clone())
            .add_service(services.maintenance.clone())
            .add_service(services.cluster.clone())
            .add_service(services.watch.clone())
            .add_service(services.lease.clone())
            .add_service(services.auth.clone())
            .add_service(HealthServer::new(HealthService::from_health_reporter(services.grpc_health.clone())));
        let status = services.status.clone();
        let router = routes
            .into_axum_router()
            .fallback(move |req: axum::extract::Request| client_http::answer(status.clone(), req));
        Server::builder()
            .max_concurrent_streams(http2.max_concurrent_streams)
            .http2_keepalive_interval(Some(http2.keepalive_interval))
            .http2_keepalive_timeout(Some(http2.keepalive_timeout))
            // no adaptive (BDP) window: it makes both windows equal again
            .initial_stream_window_size(STREAM_WINDOW_BYTES)
            .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
            // plain HTTP (probes, scrapers) beside gRPC, as etcd
            .accept_http1(true)
            // outermost: it counts the code LimitStatus rewrote
            .layer(grpc_metrics.clone())
            .layer(LimitStatusLayer)
            .add_routes(Routes::from(router))
    };
    let mut peer_listeners = Vec::new();
    let mut ready_gate = None;
    if let Some(p) = peers.as_mut() {
        for url in &p.urls {
            let (bound, listener) = url.bind_reporting().await?;
            // the peer listeners' gRPC calls count too, as etcd's (it serves gRPC there)
            let router = Server::builder().layer(grpc_metrics.clone()).layer(LimitStatusLayer).add_routes(p.routes.clone());
            peer_listeners.push((url.clone(), bound, listener, router, p.tls.clone(), p.san_check.clone(), "peer"));
        }
        ready_gate = p.ready.take();
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut servers = JoinSet::new();
    // Peer listeners apart: their Raft streams stay open while the other members run, so
    // they are stopped, not drained, once the client listeners drained.
    let mut peer_servers = JoinSet::new();
    let mut bound_urls = Vec::with_capacity(urls.len());
    type Listener<R> = (ClientUrl, String, tokio::net::TcpListener, tonic::transport::server::Router<R>, Option<ServerTls>, Option<PeerSanCheck>, &'static str);
    let mut spawn = |(url, bound, listener, router, tls, san, kind): Listener<_>| -> Result<(), ServerError> {
        let mut stop = stop_rx.clone();
        let shutdown = async move {
            // An error means the sender is gone: stop as well.
            let _stopped = stop.wait_for(|stop| *stop).await;
        };
        let name = bound.clone();
        let servers = if kind == "client" { &mut servers } else { &mut peer_servers };
        if url.tls {
            let acceptor = tls.clone().ok_or_else(|| {
                ServerError::Config(crate::error::ConfigError::HttpsWithoutCert(url.url.clone()))
            })?;
            // etcd holds no https client to the min-time (see `Http2Settings`)
            let incoming = incoming::tls(listener, acceptor, san);
            servers.spawn(async move {
                (
                    name,
                    router
                        .serve_with_incoming_shutdown(incoming, shutdown)
                        .await,
                )
            });
        } else {
            let pings = (kind == "client").then_some(http2.keepalive_min_time);
            let incoming = incoming::plain(listener, pings);
            servers.spawn(async move {
                (
                    name,
                    router
                        .serve_with_incoming_shutdown(incoming, shutdown)
                        .await,
                )
            });
        }
        if kind == "client" {
            bound_urls.push(bound);
        } else {
            info!(url = %bound, "serving peer traffic");
        }
        Ok(())
    };
    for l in peer_listeners {
        spawn(l)?;
    }
    // A Raft member serves clients once it joined the cluster (as etcd: after a leader
    // exists and this member's name and client URLs are published).
    if let Some(gate) = ready_gate {
        info!("waiting to join the cluster before serving clients");
        let stopped_early = tokio::select! {
            () = gate => false,
            _ = sigterm.recv() => true,
            _ = sigint.recv() => true,
        };
        if stopped_early {
            info!("stopped before joining the cluster");
            let _ = stop_tx.send(true);
            servers.shutdown().await;
            return Ok(());
        }
    }
    for url in urls {
        let (bound, listener) = url.bind_reporting().await?;
        spawn((url.clone(), bound, listener, client_router(), tls.clone(), None, "client"))?;
    }
    drop(spawn);
    let health_task = services.leader.clone().map(|leader| tokio::spawn(follow_leader(services.grpc_health.clone(), leader)));
    info!(urls = %bound_urls.join(","), "ready to serve client requests");

    let mut failure = None;
    let mut member_stop = peers.as_ref().map(|p| p.stop.clone());
    let must_stop = async {
        if let Some(r) = member_stop.as_mut() {
            if let Ok(reason) = r.wait_for(|r| r.is_some()).await {
                if let Some(reason) = reason.clone() {
                    return reason;
                }
            }
        }
        std::future::pending::<MemberStop>().await
    };
    tokio::select! {
        reason = must_stop => match reason {
            MemberStop::Removed => warn!("the member has been permanently removed from the cluster; shutting down"),
            MemberStop::Failed(why) => {
                // as etcd exits on a failed disk: clients (and their watches) move to a
                // healthy member instead of waiting on one that no longer applies
                error!(reason = %why, "this member can no longer apply; shutting down");
                failure = Some(Err(ServerError::Raft(why.to_string())));
            }
        },
        _ = sigterm.recv() => info!(signal = "SIGTERM", "shutting down"),
        _ = sigint.recv() => info!(signal = "SIGINT", "shutting down"),
        Some(joined) = servers.join_next() => {
            failure = Some(server_exit(joined));
            error!("a client listener stopped; shutting down");
        }
        Some(joined) = peer_servers.join_next() => {
            failure = Some(server_exit(joined));
            error!("a peer listener stopped; shutting down");
        }
    }
    if stop_tx.send(true).is_err() {
        warn!("every client listener had already stopped");
    }
    // stopping: health checkers move their clients away first, as etcd's
    services.grpc_health.set_service_status("", ServingStatus::NotServing).await;
    if let Some(task) = health_task {
        task.abort();
    }
    services.watch_shutdown.shutdown();
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while let Some(joined) = servers.join_next().await {
            if let Err(e) = server_exit(joined) {
                error!(error = %e, "client listener failed during shutdown");
            }
        }
    })
    .await;
    if drained.is_err() {
        warn!(timeout = ?DRAIN_TIMEOUT, "in-flight requests did not finish in time; closing their connections");
        servers.shutdown().await;
    }
    peer_servers.shutdown().await;
    match failure {
        Some(Err(e)) => Err(e),
        _ => Ok(()),
    }
}

/// Keeps the `grpc.health.v1` status of service "" in step with leadership: SERVING while a
/// leader is known, NOT_SERVING while none is (as etcd's health notifier), so gRPC health
/// checks move clients off a member cut off from its cluster.
async fn follow_leader(health: HealthReporter, mut leader: watch::Receiver<LeaderInfo>) {
    loop {
        let status = if leader.borrow_and_update().id != 0 { ServingStatus::Serving } else { ServingStatus::NotServing };
        health.set_service_status("", status).await;
        if leader.changed().await.is_err() {
            return;
        }
    }
}

type Joined = Result<(String, Result<(), tonic::transport::Error>), tokio::task::JoinError>;

fn server_exit(joined: Joined) -> Result<(), ServerError> {
    match joined {
        Ok((_, Ok(()))) => Ok(()),
        Ok((url, Err(source))) => Err(ServerError::Serve { url, source }),
        Err(source) => Err(ServerError::Task {
            url: "unknown".to_owned(),
            source,
        }),
    }
}
