//! Command-line interface (mirrors the flags of etcd's `benchmark` tool).

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "cairn-bench",
    about = "Load generator for cairn / etcd v3 gRPC endpoints",
    version
)]
pub struct Cli {
    /// Comma-separated gRPC endpoints (with or without http://).
    #[arg(long, global = true, default_value = "127.0.0.1:2379", value_delimiter = ',')]
    pub endpoints: Vec<String>,

    /// Number of concurrent client tasks.
    #[arg(long, global = true, default_value_t = 1)]
    pub clients: usize,

    /// Number of gRPC connections (HTTP/2); clients are spread over them round-robin.
    #[arg(long, global = true, default_value_t = 1)]
    pub conns: usize,

    /// Total number of requests across all clients.
    #[arg(long, global = true, default_value_t = 10000)]
    pub total: u64,

    /// Key size in bytes.
    #[arg(long, global = true, default_value_t = 8)]
    pub key_size: usize,

    /// Value size in bytes.
    #[arg(long, global = true, default_value_t = 8)]
    pub val_size: usize,

    /// Number of distinct keys; 1 means every request uses the same key.
    #[arg(long, global = true, default_value_t = 1)]
    pub key_space: u64,

    /// Pick keys sequentially (i % key-space) instead of at random.
    #[arg(long, global = true)]
    pub sequential_keys: bool,

    /// Read consistency for range requests: l (linearizable) or s (serializable).
    #[arg(long, global = true, value_enum, default_value_t = Consistency::L)]
    pub consistency: Consistency,

    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = Format::Text)]
    pub format: Format,

    /// Per-request timeout in seconds (0 = none).
    #[arg(long, global = true, default_value_t = 30)]
    pub timeout: u64,

    /// Log in as `NAME:PASSWORD` once (Auth.Authenticate) and send the token with every
    /// KV request (measures the cost of authentication and permission checks).
    #[arg(long, global = true)]
    pub user: Option<String>,

    #[command(subcommand)]
    pub cmd: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Consistency {
    /// Linearizable.
    L,
    /// Serializable.
    S,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Put requests (keys chosen from --key-space).
    Put,
    /// Puts --total distinct keys `PREFIX` + the request number as 10 zero-padded digits
    /// (so key ranges select them in order), --val-size random bytes each: a data set
    /// whose parts `etcdctl del FROM TO` can delete.
    Fill {
        /// Prefix of every key.
        #[arg(long, default_value = "cairn-bench/fill/")]
        prefix: String,
    },
    /// Range requests for KEY, or [KEY, END) when END is given.
    Range {
        key: String,
        end: Option<String>,
        /// Put KEY (with a --val-size value) once before the run, so the range hits data.
        #[arg(long)]
        prepopulate: bool,
        /// Range every key starting with KEY (END must not be given).
        #[arg(long)]
        prefix: bool,
        /// Ask for the count only (`count_only`).
        #[arg(long)]
        count_only: bool,
        /// Ask for keys without values (`keys_only`).
        #[arg(long)]
        keys_only: bool,
        /// Return at most this many keys (0: all).
        #[arg(long, default_value_t = 0)]
        limit: i64,
    },
    /// Puts --keys keys PREFIX + 8 digits (from --start), --batch puts per Txn, --clients
    /// Txns in flight; one request = one Txn (--total is ignored).
    Load {
        prefix: String,
        #[arg(long)]
        keys: u64,
        #[arg(long, default_value_t = 0)]
        start: u64,
        /// Puts per Txn (etcd's --max-txn-ops is 128 by default).
        #[arg(long, default_value_t = 100)]
        batch: u64,
    },
    /// Range of one random key among --keys keys written by `load` under PREFIX.
    Get {
        prefix: String,
        #[arg(long)]
        keys: u64,
    },
    /// One request = a whole paginated list of PREFIX, --limit keys a page, at the first
    /// page's revision (as kube-apiserver lists); fails unless --expect keys were seen (if set).
    List {
        prefix: String,
        #[arg(long, default_value_t = 500)]
        limit: i64,
        #[arg(long, default_value_t = 0)]
        expect: u64,
    },
    /// Random single-key ranges (`get`) from --clients clients for --baseline-secs, then
    /// Compact(current revision, physical) and the same reads until it returns, then
    /// --baseline-secs more; reports the latency percentiles of the three phases and the
    /// compaction's duration.
    CompactDuring {
        prefix: String,
        #[arg(long)]
        keys: u64,
        #[arg(long, default_value_t = 5)]
        baseline_secs: u64,
    },
    /// Waits until a linearizable range is answered (connecting again every 10 ms) and
    /// prints the seconds waited; --pid adds that process's VmRSS in bytes.
    WaitReady {
        #[arg(long, default_value_t = 600)]
        max_wait: u64,
        #[arg(long)]
        pid: Option<u32>,
    },
    /// Txn requests with one compare and one put (like etcd's `txn-put`).
    TxnPut,
    /// Read-only Txn requests: one compare and one Range of a key from --key-space
    /// (answered as reads by cairn and etcd).
    TxnRange,
    /// Auth.Authenticate requests as --user (logins/s: bcrypt at --bcrypt-cost, then a
    /// Raft round).
    Authenticate,
    /// kube-apiserver update shape: Range(key, limit 1) then
    /// Txn{ MOD(key) == rev ? Put(key) : Range(key) }; one op = the pair.
    Update,
    /// Grants --leases leases with --ttl, attaches keys under --prefix, then measures the
    /// time from the last lease due until a count of the prefix reaches 0 (and
    /// revocations/sec). Ignores --total.
    LeaseExpiry {
        /// Number of leases.
        #[arg(long, default_value_t = 100_000)]
        leases: u64,
        /// TTL of every lease, seconds (must outlast the setup for leases to expire together).
        #[arg(long, default_value_t = 5)]
        ttl: i64,
        /// Keys attached to each lease.
        #[arg(long, default_value_t = 1)]
        keys_per_lease: u32,
        /// Prefix of the attached keys (must be empty at the start).
        #[arg(long, default_value = "cairn-bench/lease-expiry/")]
        prefix: String,
        /// Longest wait, in seconds, for the keys to go once the last lease is due.
        #[arg(long, default_value_t = 900)]
        max_wait: u64,
    },
    /// Opens --tenants x --resources prefix watches (`/t{i}/r{j}/`) over --conns connections
    /// (one Watch stream each, creations pipelined), reports the time to create them all and
    /// the server's RSS growth, then puts --total keys spread over the prefixes with
    /// --clients writers and reports each event's delivery latency (receive - put send).
    Watch(WatchArgs),
    /// Opens the same watches, then --total rounds of: read the current revision R, send
    /// RequestProgress on every stream, wait until every watch has observed a revision >= R
    /// (from its events or a progress response). Reports the wait's percentiles.
    WatchProgress {
        #[command(flatten)]
        watch: WatchArgs,
        /// Longest wait for one round, in milliseconds; a round past it counts as timed out.
        #[arg(long, default_value_t = 3000)]
        round_timeout_ms: u64,
        /// Ask again on a stream not done after this many milliseconds (kube-apiserver: 100).
        #[arg(long, default_value_t = 100)]
        resend_ms: u64,
        /// Start a round at most every this many milliseconds (0: back to back), so that
        /// --rate writes fall between and during rounds.
        #[arg(long, default_value_t = 0)]
        round_gap_ms: u64,
        /// Instead of waits: each round sends this many RequestProgress back to back on every
        /// stream (as many tenants asking at once) and the percentiles are of each request's
        /// time to its answer.
        #[arg(long, default_value_t = 0)]
        burst: u64,
    },
}

/// Options shared by `watch` and `watch-progress`.
#[derive(Debug, Clone, Args)]
pub struct WatchArgs {
    /// Tenants (T); watches = T x R.
    #[arg(long, default_value_t = 500)]
    pub tenants: u32,
    /// Resources per tenant (R).
    #[arg(long, default_value_t = 20)]
    pub resources: u32,
    /// Server process whose VmRSS is read before and after the creations (optional).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Connections for the writers (separate from the --conns watch connections).
    #[arg(long, default_value_t = 1)]
    pub put_conns: usize,
    /// Puts per second over all writers (0: as fast as they go). `watch-progress` writes
    /// only when this is set, in the background of the rounds.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Longest wait, in seconds, for all creations, or for all events after the last put.
    #[arg(long, default_value_t = 60)]
    pub wait: u64,
    /// `watch`: before the puts, one more connection creates this many watches over the
    /// same prefixes on one stream, then stops reading it (a stalled client); the reported
    /// latencies are the other streams' (0: none).
    #[arg(long, default_value_t = 0)]
    pub stalled: usize,
}

impl Command {
    pub fn name(&self) -> &'static str {
        match self {
            Command::Put => "put",
            Command::Fill { .. } => "fill",
            Command::Range { .. } => "range",
            Command::Load { .. } => "load",
            Command::Get { .. } => "get",
            Command::List { .. } => "list",
            Command::CompactDuring { .. } => "compact-during",
            Command::WaitReady { .. } => "wait-ready",
            Command::TxnPut => "txn-put",
            Command::TxnRange => "txn-range",
            Command::Authenticate => "authenticate",
            Command::Update => "update",
            Command::LeaseExpiry { .. } => "lease-expiry",
            Command::Watch(_) => "watch",
            Command::WatchProgress { .. } => "watch-progress",
        }
    }
}

impl Cli {
    /// Validates option combinations; returns a message on error.
    pub fn validate(&self) -> Result<(), String> {
        if self.clients == 0 {
            return Err("--clients must be at least 1".into());
        }
        if self.conns == 0 {
            return Err("--conns must be at least 1".into());
        }
        if self.key_space == 0 {
            return Err("--key-space must be at least 1".into());
        }
        if self.key_size == 0 {
            return Err("--key-size must be at least 1".into());
        }
        if let Command::LeaseExpiry { leases, ttl, keys_per_lease, prefix, .. } = &self.cmd {
            if *leases == 0 || *keys_per_lease == 0 {
                return Err("--leases and --keys-per-lease must be at least 1".into());
            }
            if *ttl < 1 {
                return Err("--ttl must be at least 1 second".into());
            }
            if prefix.is_empty() {
                return Err("--prefix must not be empty".into());
            }
        }
        let watch = match &self.cmd {
            Command::Watch(w) | Command::WatchProgress { watch: w, .. } => Some(w),
            _ => None,
        };
        if let Some(w) = watch {
            if w.tenants == 0 || w.resources == 0 || w.put_conns == 0 {
                return Err("--tenants, --resources and --put-conns must be at least 1".into());
            }
            if (w.tenants as usize) * (w.resources as usize) < self.conns {
                return Err("need at least one watch per connection (--conns)".into());
            }
            if !(w.rate >= 0.0 && w.rate.is_finite()) {
                return Err("--rate must be a non-negative number".into());
            }
            if w.wait == 0 {
                return Err("--wait must be at least 1 second".into());
            }
        }
        if let Command::WatchProgress { round_timeout_ms, resend_ms, .. } = &self.cmd {
            if *round_timeout_ms == 0 || *resend_ms == 0 {
                return Err("--round-timeout-ms and --resend-ms must be at least 1".into());
            }
        }
        match &self.cmd {
            Command::Load { keys, batch, .. } if *keys == 0 || *batch == 0 => {
                return Err("--keys and --batch must be at least 1".into());
            }
            Command::Get { keys, .. } | Command::CompactDuring { keys, .. } if *keys == 0 => {
                return Err("--keys must be at least 1".into());
            }
            Command::List { limit, .. } if *limit < 1 => return Err("--limit must be at least 1".into()),
            Command::Range { end: Some(_), prefix: true, .. } => {
                return Err("give either END or --prefix".into());
            }
            _ => {}
        }
        if self.endpoints.iter().all(|e| e.trim().is_empty()) {
            return Err("--endpoints must name at least one endpoint".into());
        }
        Ok(())
    }

    /// Human-readable op label, e.g. `range-s`.
    pub fn op_label(&self) -> String {
        match (&self.cmd, self.consistency) {
            (Command::Range { .. }, Consistency::S) => "range-s".into(),
            (Command::Range { .. }, Consistency::L) => "range-l".into(),
            (Command::Get { .. }, Consistency::S) => "get-s".into(),
            (Command::Get { .. }, Consistency::L) => "get-l".into(),
            (cmd, _) => cmd.name().into(),
        }
    }
}
