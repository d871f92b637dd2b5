//! etcd 3.4/3.5 flags cairn does not act on, in one table: each is accepted (with its
//! `ETCD_*` variable) so that existing manifests and harnesses start cairn unchanged, and
//! each says in its help why it has no effect — or, for the few whose silent absence could
//! hurt (a flag that would bootstrap a cluster another way, or narrow whom TLS admits),
//! cairn refuses to start when it is set ([`EtcdOnlyFlags::refused`]).
//!
//! The help of an accepted-but-ignored flag ends in [`super::config::IGNORED_MARK`]; the
//! start-up warning lists those that were set (see [`super::config::Config::ignored`]).

use clap::{ArgAction, Args};

use super::config::parse_go_bool;

/// Flags etcd has and cairn does not act on (see the module docs). Values are kept only
/// so that the refusal check can see them.
#[derive(Debug, Clone, Default, Args)]
pub struct EtcdOnlyFlags {
    /// Discovery URL used to bootstrap the cluster; cairn bootstraps from --initial-cluster only (refused when set)
    #[arg(long, env = "ETCD_DISCOVERY")]
    pub discovery: Option<String>,

    /// DNS SRV domain used to bootstrap the cluster; cairn bootstraps from --initial-cluster only (refused when set)
    #[arg(long, env = "ETCD_DISCOVERY_SRV")]
    pub discovery_srv: Option<String>,

    /// Suffix of the DNS SRV name; discovery is not used (accepted, ignored)
    #[arg(long, env = "ETCD_DISCOVERY_SRV_NAME")]
    pub discovery_srv_name: Option<String>,

    /// Behaviour when discovery fails; discovery is not used (accepted, ignored)
    #[arg(long, env = "ETCD_DISCOVERY_FALLBACK")]
    pub discovery_fallback: Option<String>,

    /// HTTP proxy for the discovery service; discovery is not used (accepted, ignored)
    #[arg(long, env = "ETCD_DISCOVERY_PROXY")]
    pub discovery_proxy: Option<String>,

    /// v2 proxy mode; only `off` is supported (refused unless `off`)
    #[arg(long, env = "ETCD_PROXY")]
    pub proxy: Option<String>,

    /// v2 proxy failure wait; cairn has no v2 proxy (accepted, ignored)
    #[arg(long, env = "ETCD_PROXY_FAILURE_WAIT")]
    pub proxy_failure_wait: Option<String>,

    /// v2 proxy refresh interval; cairn has no v2 proxy (accepted, ignored)
    #[arg(long, env = "ETCD_PROXY_REFRESH_INTERVAL")]
    pub proxy_refresh_interval: Option<String>,

    /// v2 proxy dial timeout; cairn has no v2 proxy (accepted, ignored)
    #[arg(long, env = "ETCD_PROXY_DIAL_TIMEOUT")]
    pub proxy_dial_timeout: Option<String>,

    /// v2 proxy write timeout; cairn has no v2 proxy (accepted, ignored)
    #[arg(long, env = "ETCD_PROXY_WRITE_TIMEOUT")]
    pub proxy_write_timeout: Option<String>,

    /// v2 proxy read timeout; cairn has no v2 proxy (accepted, ignored)
    #[arg(long, env = "ETCD_PROXY_READ_TIMEOUT")]
    pub proxy_read_timeout: Option<String>,

    /// Restart this member as a one-member cluster keeping its data (recovery after losing quorum; remove the flag afterwards)
    #[arg(long, env = "ETCD_FORCE_NEW_CLUSTER", num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true",
          value_parser = parse_go_bool, action = ArgAction::Set)]
    pub force_new_cluster: bool,

    /// Comma-separated allowed CNs of peer certificates; not checked yet (refused when set)
    #[arg(long, env = "ETCD_PEER_CERT_ALLOWED_CN")]
    pub peer_cert_allowed_cn: Option<String>,

    /// Comma-separated allowed SAN hostnames of peer certificates; not checked yet (refused when set)
    #[arg(long, env = "ETCD_PEER_CERT_ALLOWED_HOSTNAME")]
    pub peer_cert_allowed_hostname: Option<String>,

    /// Comma-separated allowed SAN hostnames of client certificates; not checked yet (refused when set)
    #[arg(long, env = "ETCD_CLIENT_CERT_ALLOWED_HOSTNAME")]
    pub client_cert_allowed_hostname: Option<String>,

    /// Refuse membership changes that would lose quorum (too few started or connected members)
    #[arg(long, env = "ETCD_STRICT_RECONFIG_CHECK", num_args = 0..=1, require_equals = true,
          default_value = "true", default_missing_value = "true",
          value_parser = parse_go_bool, action = ArgAction::Set)]
    pub strict_reconfig_check: bool,

    /// Serve the v2 API; cairn serves the v3 API only, as etcd 3.6 (accepted, ignored)
    #[arg(long, env = "ETCD_ENABLE_V2", num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true",
          value_parser = parse_go_bool, action = ArgAction::Set)]
    pub enable_v2: bool,

    /// Phase of the v2 store's deprecation; cairn has no v2 store (accepted, ignored)
    #[arg(long, env = "ETCD_V2_DEPRECATION")]
    pub v2_deprecation: Option<String>,

    /// Serve v2 requests through the v3 backend; cairn serves v3 only (accepted, ignored)
    #[arg(long, env = "ETCD_EXPERIMENTAL_ENABLE_V2V3")]
    pub experimental_enable_v2v3: Option<String>,

    /// CORS origins of the v2 HTTP API; cairn has none (accepted, ignored)
    #[arg(long, env = "ETCD_CORS")]
    pub cors: Option<String>,

    /// Accepted Host headers of the v2 HTTP API; cairn has none (accepted, ignored)
    #[arg(long, env = "ETCD_HOST_WHITELIST")]
    pub host_whitelist: Option<String>,

    /// Serve the JSON gRPC gateway; cairn serves gRPC only (accepted, ignored)
    #[arg(long, env = "ETCD_ENABLE_GRPC_GATEWAY", num_args = 0..=1, require_equals = true,
          default_value = "true", default_missing_value = "true",
          value_parser = parse_go_bool, action = ArgAction::Set)]
    pub enable_grpc_gateway: bool,

    /// HTTP-only client URLs; cairn serves HTTP endpoints on every client URL (accepted, ignored)
    #[arg(long, env = "ETCD_LISTEN_CLIENT_HTTP_URLS")]
    pub listen_client_http_urls: Option<String>,

    /// Go's pprof endpoints; cairn is not a Go program (accepted, ignored)
    #[arg(long, env = "ETCD_ENABLE_PPROF", num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true",
          value_parser = parse_go_bool, action = ArgAction::Set)]
    pub enable_pprof: bool,

    /// Explicit client certificate for peer connections; cairn presents --cert-file (accepted, ignored)
    #[arg(long, env = "ETCD_CLIENT_CERT_FILE")]
    pub client_cert_file: Option<String>,

    /// Explicit client key for peer connections; cairn presents --key-file (accepted, ignored)
    #[arg(long, env = "ETCD_CLIENT_KEY_FILE")]
    pub client_key_file: Option<String>,

    /// Explicit client certificate for peer connections; cairn presents --peer-cert-file (accepted, ignored)
    #[arg(long, env = "ETCD_PEER_CLIENT_CERT_FILE")]
    pub peer_client_cert_file: Option<String>,

    /// Explicit client key for peer connections; cairn presents --peer-key-file (accepted, ignored)
    #[arg(long, env = "ETCD_PEER_CLIENT_KEY_FILE")]
    pub peer_client_key_file: Option<String>,

    /// Years of validity of auto-TLS certificates; cairn's are valid for one year (accepted, ignored)
    #[arg(long, env = "ETCD_SELF_SIGNED_CERT_VALIDITY")]
    pub self_signed_cert_validity: Option<String>,

    /// SO_REUSEPORT on listeners; cairn binds without it (accepted, ignored)
    #[arg(long, env = "ETCD_SOCKET_REUSE_PORT", num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true",
          value_parser = parse_go_bool, action = ArgAction::Set)]
    pub socket_reuse_port: bool,

    /// SO_REUSEADDR on listeners; cairn's listeners always set it (accepted, ignored)
    #[arg(long, env = "ETCD_SOCKET_REUSE_ADDRESS", num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true",
          value_parser = parse_go_bool, action = ArgAction::Set)]
    pub socket_reuse_address: bool,

    /// Read timeout of rafthttp connections; cairn's peers speak gRPC streams (accepted, ignored)
    #[arg(long, env = "ETCD_RAFT_READ_TIMEOUT")]
    pub raft_read_timeout: Option<String>,

    /// Write timeout of rafthttp connections; cairn's peers speak gRPC streams (accepted, ignored)
    #[arg(long, env = "ETCD_RAFT_WRITE_TIMEOUT")]
    pub raft_write_timeout: Option<String>,

    /// Pre-vote election phase; cairn always runs it (accepted, ignored)
    #[arg(long, env = "ETCD_PRE_VOTE", num_args = 0..=1, require_equals = true,
          default_value = "true", default_missing_value = "true",
          value_parser = parse_go_bool, action = ArgAction::Set)]
    pub pre_vote: bool,

    /// Fast-forward election ticks at boot; cairn campaigns after one election timeout (accepted, ignored)
    #[arg(long, env = "ETCD_INITIAL_ELECTION_TICK_ADVANCE", num_args = 0..=1, require_equals = true,
          default_value = "true", default_missing_value = "true",
          value_parser = parse_go_bool, action = ArgAction::Set)]
    pub initial_election_tick_advance: bool,

    /// Snapshot files to keep; cairn keeps its store and one log (accepted, ignored)
    #[arg(long, env = "ETCD_MAX_SNAPSHOTS")]
    pub max_snapshots: Option<String>,

    /// WAL files to keep; cairn compacts its log behind the store (accepted, ignored)
    #[arg(long, env = "ETCD_MAX_WALS")]
    pub max_wals: Option<String>,

    /// Longest time before a backend commit; cairn syncs its backend every 100 ms (accepted, ignored)
    #[arg(long, env = "ETCD_BACKEND_BATCH_INTERVAL")]
    pub backend_batch_interval: Option<String>,

    /// Most operations before a backend commit; cairn syncs its backend every 100 ms (accepted, ignored)
    #[arg(long, env = "ETCD_BACKEND_BATCH_LIMIT")]
    pub backend_batch_limit: Option<String>,

    /// bbolt's freelist type; cairn's page store always uses its segregated freelist (accepted, ignored)
    #[arg(long, env = "ETCD_BACKEND_BBOLT_FREELIST_TYPE")]
    pub backend_bbolt_freelist_type: Option<String>,

    /// etcd 3.4's name of --backend-bbolt-freelist-type (accepted, ignored)
    #[arg(long, env = "ETCD_EXPERIMENTAL_BACKEND_BBOLT_FREELIST_TYPE")]
    pub experimental_backend_bbolt_freelist_type: Option<String>,

    /// Disable fsync; cairn always makes writes durable before acknowledging them (accepted, ignored)
    #[arg(long, env = "ETCD_UNSAFE_NO_FSYNC", num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true",
          value_parser = parse_go_bool, action = ArgAction::Set)]
    pub unsafe_no_fsync: bool,

    /// Leader checks followers' compaction hashes; not implemented yet (accepted, ignored)
    #[arg(long, env = "ETCD_EXPERIMENTAL_COMPACT_HASH_CHECK_ENABLED", num_args = 0..=1,
          require_equals = true, default_value = "false", default_missing_value = "true",
          value_parser = parse_go_bool, action = ArgAction::Set)]
    pub experimental_compact_hash_check_enabled: bool,

    /// Time between compaction-hash checks; not implemented yet (accepted, ignored)
    #[arg(long, env = "ETCD_EXPERIMENTAL_COMPACT_HASH_CHECK_TIME")]
    pub experimental_compact_hash_check_time: Option<String>,

    /// Lease checkpoints; cairn's lessor always checkpoints remaining TTLs (accepted, ignored)
    #[arg(long, env = "ETCD_EXPERIMENTAL_ENABLE_LEASE_CHECKPOINT", num_args = 0..=1,
          require_equals = true, default_value = "false", default_missing_value = "true",
          value_parser = parse_go_bool, action = ArgAction::Set)]
    pub experimental_enable_lease_checkpoint: bool,

    /// Persist lease checkpoints; cairn always persists them (accepted, ignored)
    #[arg(long, env = "ETCD_EXPERIMENTAL_ENABLE_LEASE_CHECKPOINT_PERSIST", num_args = 0..=1,
          require_equals = true, default_value = "false", default_missing_value = "true",
          value_parser = parse_go_bool, action = ArgAction::Set)]
    pub experimental_enable_lease_checkpoint_persist: bool,

    /// Revisions removed per compaction batch; cairn's compactor sizes its own batches (accepted, ignored)
    #[arg(long, env = "ETCD_EXPERIMENTAL_COMPACTION_BATCH_LIMIT")]
    pub experimental_compaction_batch_limit: Option<String>,

    /// Pause between compaction batches; cairn's compactor never blocks readers (accepted, ignored)
    #[arg(long, env = "ETCD_EXPERIMENTAL_COMPACTION_SLEEP_INTERVAL")]
    pub experimental_compaction_sleep_interval: Option<String>,

    /// Time between downgrade checks; cairn has no downgrade (accepted, ignored)
    #[arg(long, env = "ETCD_EXPERIMENTAL_DOWNGRADE_CHECK_TIME")]
    pub experimental_downgrade_check_time: Option<String>,

    /// mlock the backend; not supported (accepted, ignored)
    #[arg(long, env = "ETCD_EXPERIMENTAL_MEMORY_MLOCK", num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true",
          value_parser = parse_go_bool, action = ArgAction::Set)]
    pub experimental_memory_mlock: bool,

    /// Shared read buffer in write transactions; an etcd internal (accepted, ignored)
    #[arg(long, env = "ETCD_EXPERIMENTAL_TXN_MODE_WRITE_WITH_SHARED_BUFFER", num_args = 0..=1,
          require_equals = true, default_value = "true", default_missing_value = "true",
          value_parser = parse_go_bool, action = ArgAction::Set)]
    pub experimental_txn_mode_write_with_shared_buffer: bool,

    /// Defragment at start above this many free MB; use Defragment (accepted, ignored)
    #[arg(long, env = "ETCD_EXPERIMENTAL_BOOTSTRAP_DEFRAG_THRESHOLD_MEGABYTES")]
    pub experimental_bootstrap_defrag_threshold_megabytes: Option<String>,

    /// Stop serving during defragmentation; cairn defragments online (accepted, ignored)
    #[arg(long, env = "ETCD_EXPERIMENTAL_STOP_GRPC_SERVICE_ON_DEFRAG", num_args = 0..=1,
          require_equals = true, default_value = "false", default_missing_value = "true",
          value_parser = parse_go_bool, action = ArgAction::Set)]
    pub experimental_stop_grpc_service_on_defrag: bool,

    /// Entries kept for slow followers after a snapshot; cairn keeps --snapshot-count (accepted, ignored)
    #[arg(long, env = "ETCD_EXPERIMENTAL_SNAPSHOT_CATCHUP_ENTRIES")]
    pub experimental_snapshot_catchup_entries: Option<String>,

    /// OpenTelemetry tracing; not supported (accepted, ignored)
    #[arg(long, env = "ETCD_EXPERIMENTAL_ENABLE_DISTRIBUTED_TRACING", num_args = 0..=1,
          require_equals = true, default_value = "false", default_missing_value = "true",
          value_parser = parse_go_bool, action = ArgAction::Set)]
    pub experimental_enable_distributed_tracing: bool,

    /// Tracing collector address; tracing is not supported (accepted, ignored)
    #[arg(long, env = "ETCD_EXPERIMENTAL_DISTRIBUTED_TRACING_ADDRESS")]
    pub experimental_distributed_tracing_address: Option<String>,

    /// Tracing service name; tracing is not supported (accepted, ignored)
    #[arg(long, env = "ETCD_EXPERIMENTAL_DISTRIBUTED_TRACING_SERVICE_NAME")]
    pub experimental_distributed_tracing_service_name: Option<String>,

    /// Tracing instance id; tracing is not supported (accepted, ignored)
    #[arg(long, env = "ETCD_EXPERIMENTAL_DISTRIBUTED_TRACING_INSTANCE_ID")]
    pub experimental_distributed_tracing_instance_id: Option<String>,

    /// Tracing sampling rate; tracing is not supported (accepted, ignored)
    #[arg(long, env = "ETCD_EXPERIMENTAL_DISTRIBUTED_TRACING_SAMPLING_RATE")]
    pub experimental_distributed_tracing_sampling_rate: Option<String>,

    /// Rotate the log file; use the system's log rotation (accepted, ignored)
    #[arg(long, env = "ETCD_ENABLE_LOG_ROTATION", num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true",
          value_parser = parse_go_bool, action = ArgAction::Set)]
    pub enable_log_rotation: bool,

    /// Log rotation settings; use the system's log rotation (accepted, ignored)
    #[arg(long, env = "ETCD_LOG_ROTATION_CONFIG_JSON")]
    pub log_rotation_config_json: Option<String>,

    /// etcd 3.4's debug logging; use --log-level=debug (accepted, ignored)
    #[arg(long, env = "ETCD_DEBUG", num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true",
          value_parser = parse_go_bool, action = ArgAction::Set)]
    pub debug: bool,

    /// etcd 3.4's capnslog package levels; use --log-level (accepted, ignored)
    #[arg(long, env = "ETCD_LOG_PACKAGE_LEVELS")]
    pub log_package_levels: Option<String>,
}

impl EtcdOnlyFlags {
    /// The first flag that was set to a value cairn cannot honour, with why; the server
    /// refuses to start rather than run differently from what the operator asked.
    pub fn refused(&self) -> Option<(&'static str, &'static str)> {
        let set = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.is_empty());
        if set(&self.discovery) || set(&self.discovery_srv) {
            return Some(("--discovery/--discovery-srv", "discovery is not supported: list the members with --initial-cluster"));
        }
        if self.proxy.as_deref().is_some_and(|p| p != "off") {
            return Some(("--proxy", "the v2 proxy is not supported"));
        }
        if set(&self.peer_cert_allowed_cn) || set(&self.peer_cert_allowed_hostname) {
            return Some(("--peer-cert-allowed-cn/--peer-cert-allowed-hostname", "not supported yet: cairn would admit peers etcd refuses"));
        }
        if set(&self.client_cert_allowed_hostname) {
            return Some(("--client-cert-allowed-hostname", "not supported yet: cairn would admit clients etcd refuses"));
        }
        None
    }
}
