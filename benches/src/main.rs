//! cairn-bench: a load generator for etcd v3 gRPC endpoints (cairn or etcd),
//! modelled on etcd's `benchmark` tool.

mod cli;
mod conn;
mod keys;
mod ops;
mod report;
mod runner;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use cairn_proto::etcdserverpb::{kv_client::KvClient, PutRequest};
use clap::Parser;

use cli::{Cli, Command, Consistency, Format};
use keys::{random_value, KeyGen, Rng};
use ops::{OpKind, Workload};
use runner::RunConfig;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = cli.validate() {
        eprintln!("cairn-bench: {e}");
        return ExitCode::from(2);
    }
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cairn-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode, String> {
    let keys = KeyGen::new(cli.key_size, cli.key_space, cli.sequential_keys)?;
    let channels = conn::connect_all(&cli.endpoints, cli.conns).await?;
    let timeout = (cli.timeout > 0).then(|| Duration::from_secs(cli.timeout));

    let kind = match &cli.cmd {
        Command::Put => OpKind::Put,
        Command::TxnPut => OpKind::TxnPut,
        Command::Update => OpKind::Update,
        Command::Range { key, end, prepopulate } => {
            if *prepopulate {
                let mut kv = KvClient::new(channels[0].clone());
                let value = random_value(cli.val_size, &mut Rng::from_entropy());
                let req = PutRequest {
                    key: key.as_bytes().to_vec(),
                    value,
                    ..Default::default()
                };
                kv.put(req).await.map_err(|s| format!("prepopulate {key:?}: {}", s.message()))?;
            }
            OpKind::Range {
                key: key.as_bytes().to_vec(),
                end: end.as_deref().unwrap_or("").as_bytes().to_vec(),
                serializable: cli.consistency == Consistency::S,
            }
        }
    };

    if matches!(kind, OpKind::Update) {
        prepopulate(&cli, &channels, &keys, timeout).await?;
    }

    let work = Arc::new(Workload { kind, keys, val_size: cli.val_size });
    let cfg = RunConfig { op: cli.op_label(), clients: cli.clients, total: cli.total, timeout };
    let mut result = runner::run(&cfg, &channels, work).await;

    match cli.format {
        Format::Text => print!("{}", result.text()),
        Format::Json => println!("{}", result.json()),
    }
    let all_failed = cli.total > 0 && result.latencies_us.is_empty();
    Ok(if all_failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// Writes every key of the key space once (used by `update`, which reads then
/// conditionally rewrites existing keys).
async fn prepopulate(
    cli: &Cli,
    channels: &[tonic::transport::Channel],
    keys: &KeyGen,
    timeout: Option<Duration>,
) -> Result<(), String> {
    let n = keys.key_space();
    let work = Arc::new(Workload { kind: OpKind::Fill, keys: keys.clone(), val_size: cli.val_size });
    let clients = cli.clients.min(n as usize).max(1);
    let cfg = RunConfig { op: "prepopulate".into(), clients, total: n, timeout };
    let res = runner::run(&cfg, channels, work).await;
    eprintln!(
        "prepopulated {} keys in {:.3}s ({} errors)",
        res.latencies_us.len(),
        res.elapsed.as_secs_f64(),
        res.errors
    );
    if res.errors > 0 {
        return Err(format!("prepopulate failed for {} of {n} keys", res.errors));
    }
    Ok(())
}
