//! Command-line and environment configuration, with etcd's flag names.
//!
//! Every flag also reads etcd's environment variable (`--data-dir` ↔ `ETCD_DATA_DIR`); a flag
//! given on the command line wins over the variable, as in etcd. Booleans take all three forms
//! etcd's Go flag parser takes: `--client-cert-auth`, `--client-cert-auth=true` and
//! `--client-cert-auth=false` (and Go's spellings `1`, `t`, `TRUE`, `0`, `f`, ...). Go also
//! accepts a single dash (`-name x`); [`normalize_args`] rewrites those to two dashes.
//!
//! Every etcd 3.4/3.5 flag is accepted. Those cairn does not act on live in one table,
//! `etcd_only_flags.rs`: their help ends in [`IGNORED_MARK`] with the reason, and
//! [`Config::ignored`] lists the ones that were set so the server can say once that they
//! have no effect (a few that cannot be ignored safely make it refuse to start).

use std::ffi::OsString;
use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{ArgAction, CommandFactory, FromArgMatches, Parser};

use super::config_file;
use super::etcd_only_flags::EtcdOnlyFlags;

/// The etcd version cairn reports (`--version`, Maintenance.Status). kube-apiserver enables
/// features by this number (RequestWatchProgress needs ≥ 3.5.13).
pub const ETCD_VERSION: &str = "3.5.13";

/// How the help text of a flag that is accepted but has no effect ends. The list of
/// ignored flags ([`Config::ignored`]) is read from the flags' help, so `--help` and the
/// start-up warning come from one table and cannot disagree.
pub const IGNORED_MARK: &str = "(accepted, ignored)";

/// cairn's configuration. Field docs name the etcd flag and environment variable.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "cairn",
    about = "cairn: an etcd-compatible key-value store",
    disable_version_flag = true,
    // Go's flag package lets a flag repeat, the last value winning (etcd's e2e harness
    // passes `--client-cert-auth` twice)
    args_override_self = true
)]
pub struct Config {
    /// Print the version and exit. (Not read from ETCD_VERSION, as in etcd.)
    #[arg(long, action = ArgAction::SetTrue)]
    pub version: bool,

    /// Human-readable name for this member.
    #[arg(long, env = "ETCD_NAME", default_value = "default")]
    pub name: String,

    /// Path to the data directory [default: ${name}.etcd].
    #[arg(long, env = "ETCD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// URLs to listen on for client traffic (comma-separated; http:// or https://).
    #[arg(
        long,
        env = "ETCD_LISTEN_CLIENT_URLS",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:2379"
    )]
    pub listen_client_urls: Vec<String>,

    /// Client URLs of this member advertised to the cluster (MemberList).
    #[arg(
        long,
        env = "ETCD_ADVERTISE_CLIENT_URLS",
        value_delimiter = ',',
        default_value = "http://localhost:2379"
    )]
    pub advertise_client_urls: Vec<String>,

    /// URLs to listen on for peer traffic (http:// or https://).
    #[arg(
        long,
        env = "ETCD_LISTEN_PEER_URLS",
        value_delimiter = ',',
        default_value = "http://localhost:2380"
    )]
    pub listen_peer_urls: Vec<String>,

    /// Peer URLs of this member advertised to the cluster; they determine the member ID.
    #[arg(
        long,
        env = "ETCD_INITIAL_ADVERTISE_PEER_URLS",
        value_delimiter = ',',
        default_value = "http://localhost:2380"
    )]
    pub initial_advertise_peer_urls: Vec<String>,

    /// Initial cluster configuration, `name=peer-url,...` [default: ${name}=<initial-advertise-peer-urls>].
    #[arg(long, env = "ETCD_INITIAL_CLUSTER")]
    pub initial_cluster: Option<String>,

    /// `new` (bootstrap a cluster) or `existing` (join one, after MemberAdd).
    #[arg(long, env = "ETCD_INITIAL_CLUSTER_STATE", default_value = "new",
          value_parser = ["new", "existing"])]
    pub initial_cluster_state: String,

    /// Initial cluster token; it determines the member and cluster IDs.
    #[arg(
        long,
        env = "ETCD_INITIAL_CLUSTER_TOKEN",
        default_value = "etcd-cluster"
    )]
    pub initial_cluster_token: String,

    /// Applied entries between snapshots (the Raft log is compacted behind them).
    #[arg(long, env = "ETCD_SNAPSHOT_COUNT", default_value_t = 100_000)]
    pub snapshot_count: u64,

    /// Raise the NOSPACE alarm when the backend would exceed this many bytes (0 = default, 2 GiB; negative = no quota)
    #[arg(long, env = "ETCD_QUOTA_BACKEND_BYTES", default_value_t = 0, allow_negative_numbers = true)]
    pub quota_backend_bytes: i64,

    /// cairn's storage engine: `pagestore` (cairn's own, the default for a new data folder)
    /// or `sled`. Unset, an existing folder opens with the engine that wrote it; naming the
    /// other one is an error.
    #[arg(long, env = "ETCD_STORAGE_ENGINE", value_parser = ["pagestore", "sled"])]
    pub storage_engine: Option<String>,

    /// Largest request (encoded) the server accepts, in bytes.
    #[arg(long, env = "ETCD_MAX_REQUEST_BYTES", default_value_t = 1_572_864)]
    pub max_request_bytes: u32,

    /// Largest number of operations in one transaction.
    #[arg(long, env = "ETCD_MAX_TXN_OPS", default_value_t = 128)]
    pub max_txn_ops: u32,

    /// Log level: debug, info, warn, error, dpanic, panic, fatal.
    #[arg(long, env = "ETCD_LOG_LEVEL", default_value = "info",
          value_parser = ["debug", "info", "warn", "error", "dpanic", "panic", "fatal"])]
    pub log_level: String,

    /// Logger: `zap` writes etcd's JSON lines (level, ts, caller, msg, fields); `capnslog`
    /// (etcd 3.4's) writes plain text lines.
    #[arg(long, env = "ETCD_LOGGER", default_value = "zap", value_parser = ["zap", "capnslog"])]
    pub logger: String,

    /// Where logs go, comma-separated: `default` or `stderr`, `stdout`, or file paths
    /// (appended to).
    #[arg(long, env = "ETCD_LOG_OUTPUTS", value_delimiter = ',', default_value = "default")]
    pub log_outputs: Vec<String>,

    /// Warn ("apply request took too long") when applying one entry takes longer (Go duration).
    #[arg(long, env = "ETCD_EXPERIMENTAL_WARNING_APPLY_DURATION", default_value = "100ms",
          value_parser = parse_go_duration)]
    pub experimental_warning_apply_duration: std::time::Duration,

    /// Before a restarting member serves, compare its HashKV with every peer's at its
    /// revision; refuse to start when one differs at the same compacted revision.
    #[arg(long, env = "ETCD_EXPERIMENTAL_INITIAL_CORRUPT_CHECK", num_args = 0..=1,
          require_equals = true, default_value = "false", default_missing_value = "true",
          value_parser = parse_go_bool, action = ArgAction::Set)]
    pub experimental_initial_corrupt_check: bool,

    /// How often the leader compares its HashKV with every member's and raises the
    /// CORRUPT alarm on a mismatch (Go duration; 0 = never).
    #[arg(long, env = "ETCD_EXPERIMENTAL_CORRUPT_CHECK_TIME", default_value = "0s",
          value_parser = parse_go_duration)]
    pub experimental_corrupt_check_time: std::time::Duration,

    /// Dedicated folder for the Raft log [default: ${data-dir}/member/raft].
    #[arg(long, env = "ETCD_WAL_DIR")]
    pub wal_dir: Option<PathBuf>,

    /// Most concurrent gRPC streams per client connection.
    #[arg(long, env = "ETCD_MAX_CONCURRENT_STREAMS", default_value_t = u32::MAX)]
    pub max_concurrent_streams: u32,

    /// Idle time after which the server pings a client connection (Go duration).
    #[arg(long, env = "ETCD_GRPC_KEEPALIVE_INTERVAL", default_value = "2h",
          value_parser = parse_go_duration)]
    pub grpc_keepalive_interval: std::time::Duration,

    /// How long the server waits for a ping's answer before closing the connection.
    #[arg(long, env = "ETCD_GRPC_KEEPALIVE_TIMEOUT", default_value = "20s",
          value_parser = parse_go_duration)]
    pub grpc_keepalive_timeout: std::time::Duration,

    /// Least time between a client's pings while it has a stream open (2 h without one);
    /// more than two pings sooner than that get GOAWAY too_many_pings, as from etcd, on
    /// plain-text client URLs (etcd holds https clients to nothing) (Go duration; 0:
    /// grpc-go's 5m).
    #[arg(long, env = "ETCD_GRPC_KEEPALIVE_MIN_TIME", default_value = "5s",
          value_parser = parse_go_duration)]
    pub grpc_keepalive_min_time: std::time::Duration,

    /// A YAML file holding the configuration (etcd's keys); when set, the file is the whole
    /// configuration and other flags are ignored, as in etcd.
    #[arg(long, env = "ETCD_CONFIG_FILE")]
    pub config_file: Option<PathBuf>,

    /// Raft heartbeat interval in ms (one Raft tick).
    #[arg(long, env = "ETCD_HEARTBEAT_INTERVAL", default_value_t = 100)]
    pub heartbeat_interval: u64,

    /// Raft election timeout in ms.
    #[arg(long, env = "ETCD_ELECTION_TIMEOUT", default_value_t = 1000)]
    pub election_timeout: u64,

    /// URLs for /metrics, /health, /livez and /readyz (http:// only).
    #[arg(long, env = "ETCD_LISTEN_METRICS_URLS", value_delimiter = ',')]
    pub listen_metrics_urls: Vec<String>,

    /// Interprets --auto-compaction-retention: `periodic` (a duration; a bare number is
    /// hours) or `revision` (a number of revisions).
    #[arg(long, env = "ETCD_AUTO_COMPACTION_MODE", default_value = "periodic")]
    pub auto_compaction_mode: String,

    /// History the leader keeps when it compacts by itself; 0 (the default) turns
    /// auto-compaction off.
    #[arg(long, env = "ETCD_AUTO_COMPACTION_RETENTION", default_value = "0")]
    pub auto_compaction_retention: String,

    /// Detail of exported metrics: `extensive` adds the gRPC handling-time histogram
    /// (`grpc_server_handling_seconds`) to the `basic` set.
    #[arg(long, env = "ETCD_METRICS", default_value = "basic")]
    pub metrics: String,

    /// Interval of periodic watch progress notifications (Go duration, e.g. `5s`), etcd
    /// 3.4/3.5's name; see [`Config::watch_progress_notify_interval`].
    #[arg(long, env = "ETCD_EXPERIMENTAL_WATCH_PROGRESS_NOTIFY_INTERVAL",
          value_parser = parse_go_duration)]
    pub experimental_watch_progress_notify_interval: Option<std::time::Duration>,

    /// Interval of periodic watch progress notifications (Go duration), etcd 3.6's name.
    #[arg(long = "watch-progress-notify-interval", env = "ETCD_WATCH_PROGRESS_NOTIFY_INTERVAL",
          value_parser = parse_go_duration)]
    pub watch_progress_notify_interval_flag: Option<std::time::Duration>,

    /// Client server TLS certificate (PEM).
    #[arg(long, env = "ETCD_CERT_FILE")]
    pub cert_file: Option<PathBuf>,

    /// Client server TLS key (PEM).
    #[arg(long, env = "ETCD_KEY_FILE")]
    pub key_file: Option<PathBuf>,

    /// Require and verify client certificates (needs --trusted-ca-file).
    #[arg(long, env = "ETCD_CLIENT_CERT_AUTH", num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true",
          value_parser = parse_go_bool, action = ArgAction::Set)]
    pub client_cert_auth: bool,

    /// Token kind: `simple` (random tokens kept by each member) or
    /// `jwt,pub-key=PATH,priv-key=PATH,sign-method=RS256|ES256|…,ttl=5m` (signed tokens).
    #[arg(long, env = "ETCD_AUTH_TOKEN", default_value = "simple")]
    pub auth_token: String,

    /// Seconds a simple token lives after its last use.
    #[arg(long, env = "ETCD_AUTH_TOKEN_TTL", default_value_t = 300)]
    pub auth_token_ttl: u64,

    /// bcrypt cost of stored passwords (4 to 31; etcd's default 10).
    #[arg(long, env = "ETCD_BCRYPT_COST", default_value_t = 10)]
    pub bcrypt_cost: u32,

    /// CA that signs client certificates (PEM).
    #[arg(long, env = "ETCD_TRUSTED_CA_FILE")]
    pub trusted_ca_file: Option<PathBuf>,

    /// Serve client TLS with a self-signed certificate generated at startup.
    #[arg(long, env = "ETCD_AUTO_TLS", num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true",
          value_parser = parse_go_bool, action = ArgAction::Set)]
    pub auto_tls: bool,

    /// Peer TLS certificate (PEM), presented as server and as client.
    #[arg(long, env = "ETCD_PEER_CERT_FILE")]
    pub peer_cert_file: Option<PathBuf>,

    /// Peer TLS key (PEM).
    #[arg(long, env = "ETCD_PEER_KEY_FILE")]
    pub peer_key_file: Option<PathBuf>,

    /// Require and verify peer certificates (needs --peer-trusted-ca-file).
    #[arg(long, env = "ETCD_PEER_CLIENT_CERT_AUTH", num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true",
          value_parser = parse_go_bool, action = ArgAction::Set)]
    pub peer_client_cert_auth: bool,

    /// CA that signs peer certificates (PEM).
    #[arg(long, env = "ETCD_PEER_TRUSTED_CA_FILE")]
    pub peer_trusted_ca_file: Option<PathBuf>,

    /// Peer TLS with a self-signed certificate (needs --peer-trusted-ca-file naming its CA).
    #[arg(long, env = "ETCD_PEER_AUTO_TLS", num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true",
          value_parser = parse_go_bool, action = ArgAction::Set)]
    pub peer_auto_tls: bool,

    /// TLS cipher suites (Go's names, comma-separated) for client and peer TLS 1.2;
    /// [default: rustls's secure set].
    #[arg(long, env = "ETCD_CIPHER_SUITES", value_delimiter = ',')]
    pub cipher_suites: Vec<String>,

    /// Minimum TLS version: TLS1.2 or TLS1.3 (TLS1.0 and TLS1.1 are refused, as rustls has
    /// neither).
    #[arg(long, env = "ETCD_TLS_MIN_VERSION", default_value = "TLS1.2")]
    pub tls_min_version: String,

    /// Maximum TLS version: TLS1.2 or TLS1.3 [default: TLS1.3].
    #[arg(long, env = "ETCD_TLS_MAX_VERSION")]
    pub tls_max_version: Option<String>,

    /// Certificate revocation list (PEM) checked against client certificates.
    #[arg(long, env = "ETCD_CLIENT_CRL_FILE")]
    pub client_crl_file: Option<PathBuf>,

    /// Certificate revocation list (PEM) checked against peer certificates.
    #[arg(long, env = "ETCD_PEER_CRL_FILE")]
    pub peer_crl_file: Option<PathBuf>,

    /// Do not check that a peer's client certificate names the address the peer connects
    /// from (its IP SANs, or DNS SANs resolving to it); etcd 3.5's flag.
    #[arg(long, env = "ETCD_EXPERIMENTAL_PEER_SKIP_CLIENT_SAN_VERIFICATION", num_args = 0..=1,
          require_equals = true, default_value = "false", default_missing_value = "true",
          value_parser = parse_go_bool, action = ArgAction::Set)]
    pub experimental_peer_skip_client_san_verification: bool,

    /// etcd flags cairn accepts without acting on them (see `etcd_only_flags.rs`).
    #[command(flatten)]
    pub etcd_only: EtcdOnlyFlags,

    /// Ignored flags (help ending in [`IGNORED_MARK`]) that were set on the command line or
    /// in the environment.
    #[arg(skip)]
    pub ignored: Vec<String>,

    /// Keys of `--config-file` that no flag has.
    #[arg(skip)]
    pub unknown_file_keys: Vec<String>,
}

impl Config {
    /// Parses `args` (the first is the program name), applying etcd's environment variables.
    /// On error (or `--help`), the returned clap error knows its exit code (2 for misuse).
    pub fn try_parse_args<I, T>(args: I) -> Result<Config, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString>,
    {
        let mut args = normalize_args(args.into_iter().map(Into::into));
        let mut command = Config::command();
        let mut unknown_file_keys = Vec::new();
        let file = config_file_arg(&args).or_else(|| std::env::var_os("ETCD_CONFIG_FILE").filter(|v| !v.is_empty()).map(PathBuf::from));
        if let Some(path) = &file {
            // the file is the whole configuration: other flags and ETCD_* variables are ignored
            let known: Vec<String> = command.get_arguments().filter_map(|a| a.get_long().map(str::to_owned)).collect();
            let from_file = config_file::read(path, &known)
                .map_err(|e| command.error(clap::error::ErrorKind::ValueValidation, e))?;
            let program = args.first().cloned().unwrap_or_else(|| OsString::from("cairn"));
            args = std::iter::once(program).chain(from_file.args).collect();
            unknown_file_keys = from_file.unknown;
            command = command.mut_args(|a| a.env(None));
        }
        let ignored: Vec<String> = ignored_flag_ids(&command);
        let matches = command.try_get_matches_from(args)?;
        let mut config = Config::from_arg_matches(&matches)?;
        config.config_file = file;
        config.unknown_file_keys = unknown_file_keys;
        config.ignored = ignored
            .iter()
            .filter(|id| {
                matches!(
                    matches.value_source(id),
                    Some(ValueSource::CommandLine | ValueSource::EnvVariable)
                )
            })
            .map(|id| format!("--{}", id.replace('_', "-")))
            .collect();
        Ok(config)
    }

    /// The data directory: `--data-dir`, or `${name}.etcd` as etcd does.
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("{}.etcd", self.name)))
    }

    /// The `--initial-cluster` value, or etcd's default `${name}=<initial-advertise-peer-urls>`.
    pub fn initial_cluster(&self) -> String {
        match &self.initial_cluster {
            Some(c) => c.clone(),
            None => self
                .initial_advertise_peer_urls
                .iter()
                .map(|u| format!("{}={}", self.name, u))
                .collect::<Vec<_>>()
                .join(","),
        }
    }

    /// The periodic watch progress notification interval: `--watch-progress-notify-interval`,
    /// else `--experimental-watch-progress-notify-interval`; zero (a zero or negative value,
    /// or neither flag) means etcd's default of 10 minutes, as etcd ignores such values.
    pub fn watch_progress_notify_interval(&self) -> std::time::Duration {
        self.watch_progress_notify_interval_flag
            .filter(|d| !d.is_zero())
            .or(self.experimental_watch_progress_notify_interval)
            .unwrap_or_default()
    }

    /// Text printed by `--version`: etcd's first line (tools parse it), then cairn's own.
    pub fn version_text() -> String {
        format!(
            "etcd Version: {ETCD_VERSION}\ncairn Version: {}\n",
            env!("CARGO_PKG_VERSION")
        )
    }
}

/// The value of `--config-file` on the command line, if given.
fn config_file_arg(args: &[OsString]) -> Option<PathBuf> {
    let mut it = args.iter().skip(1).map(|a| a.to_str());
    while let Some(arg) = it.next() {
        match arg {
            Some("--") => return None,
            Some("--config-file") => return it.next().flatten().map(PathBuf::from),
            Some(a) => {
                if let Some(v) = a.strip_prefix("--config-file=") {
                    return Some(PathBuf::from(v));
                }
            }
            None => {}
        }
    }
    None
}

/// The ids of the flags whose help ends in [`IGNORED_MARK`].
pub fn ignored_flag_ids(command: &clap::Command) -> Vec<String> {
    command
        .get_arguments()
        .filter(|a| a.get_help().is_some_and(|h| h.to_string().trim_end().ends_with(IGNORED_MARK)))
        .map(|a| a.get_id().to_string())
        .collect()
}

/// Parses a boolean the way Go's `strconv.ParseBool` (and so etcd's flags) does.
pub(super) fn parse_go_bool(s: &str) -> Result<bool, String> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(format!("invalid boolean value {s:?}")),
    }
}

/// Parses a duration the way Go's `time.ParseDuration` (and so etcd's flags) does: `0`, or
/// a sequence of decimal numbers, each with an optional fraction and a unit (`ns`, `us`,
/// `µs`, `ms`, `s`, `m`, `h`), as in `1h30m` or `1.5s`, with an optional sign. A negative
/// duration parses as zero (etcd ignores non-positive intervals).
pub fn parse_go_duration(s: &str) -> Result<std::time::Duration, String> {
    let invalid = || format!("invalid duration {s:?}");
    let (negative, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut nanos: f64 = 0.0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(invalid)?;
        let (number, tail) = rest.split_at(number_len);
        if number.is_empty() || number == "." {
            return Err(invalid());
        }
        let value: f64 = number.parse().map_err(|_| invalid())?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let scale = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(invalid()),
        };
        nanos += value * scale;
        rest = tail;
    }
    if !nanos.is_finite() || nanos > u64::MAX as f64 {
        return Err(invalid());
    }
    if negative {
        return Ok(std::time::Duration::ZERO);
    }
    Ok(std::time::Duration::from_nanos(nanos.round() as u64))
}

/// Rewrites Go-style single-dash long flags (`-name x`, `-data-dir=y`) to `--name x`, for the
/// flags this config knows; anything else is left for clap to judge.
pub fn normalize_args(args: impl Iterator<Item = OsString>) -> Vec<OsString> {
    let cmd = Config::command();
    let known: Vec<String> = cmd
        .get_arguments()
        .filter_map(|a| a.get_long().map(str::to_owned))
        .chain(["help".to_owned()])
        .collect();
    let mut out = Vec::new();
    let mut rest_are_values = false;
    for (i, arg) in args.enumerate() {
        if i == 0 || rest_are_values {
            out.push(arg);
            continue;
        }
        if arg == "--" {
            rest_are_values = true;
            out.push(arg);
            continue;
        }
        let rewritten = arg.to_str().and_then(|s| {
            let body = s.strip_prefix('-').filter(|b| !b.starts_with('-'))?;
            let name = body.split('=').next().unwrap_or(body);
            known
                .iter()
                .any(|k| k == name)
                .then(|| OsString::from(format!("-{s}")))
        });
        out.push(rewritten.unwrap_or(arg));
    }
    out
}

/// Parsing reads the process environment, so every test that parses a [`Config`] holds this
/// lock: one test sets `ETCD_*` variables and the others must not see them.
#[cfg(test)]
pub(crate) static TEST_ENV_LOCK: parking_lot::Mutex<()> = parking_lot::Mutex::new(());

/// Test helper: parses `cairn ARGS` under [`TEST_ENV_LOCK`] (no `ETCD_*` races).
#[cfg(test)]
pub(crate) fn parse_for_test(args: &[&str]) -> Config {
    let mut all = vec!["cairn"];
    all.extend_from_slice(args);
    let _env = TEST_ENV_LOCK.lock();
    Config::try_parse_args(all).expect("test flags parse")
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
