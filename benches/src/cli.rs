//! Command-line interface (mirrors the flags of etcd's `benchmark` tool).

use clap::{Parser, Subcommand, ValueEnum};

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
    /// Range requests for KEY, or [KEY, END) when END is given.
    Range {
        key: String,
        end: Option<String>,
        /// Put KEY (with a --val-size value) once before the run, so the range hits data.
        #[arg(long)]
        prepopulate: bool,
    },
    /// Txn requests with one compare and one put (like etcd's `txn-put`).
    TxnPut,
    /// kube-apiserver update shape: Range(key, limit 1) then
    /// Txn{ MOD(key) == rev ? Put(key) : Range(key) }; one op = the pair.
    Update,
}

impl Command {
    pub fn name(&self) -> &'static str {
        match self {
            Command::Put => "put",
            Command::Range { .. } => "range",
            Command::TxnPut => "txn-put",
            Command::Update => "update",
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
            (cmd, _) => cmd.name().into(),
        }
    }
}
