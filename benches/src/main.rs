//! cairn-bench: a load generator for etcd v3 gRPC endpoints (cairn or etcd),
//! modelled on etcd's `benchmark` tool.

mod cli;
mod conn;
mod keys;
mod lease_expiry;
mod ops;
mod report;
mod runner;
mod scale;
mod watch;

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
    if let Command::WaitReady { max_wait, pid } = &cli.cmd {
        // Connects by itself, again and again, until the server answers.
        println!("{}", scale::wait_ready(&cli.endpoints, Duration::from_secs(*max_wait), *pid).await?);
        return Ok(ExitCode::SUCCESS);
    }
    let keys = KeyGen::new(cli.key_size, cli.key_space, cli.sequential_keys)?;
    let channels = conn::connect_all(&cli.endpoints, cli.conns).await?;
    let timeout = (cli.timeout > 0).then(|| Duration::from_secs(cli.timeout));

    let kind = match &cli.cmd {
        Command::LeaseExpiry { leases, ttl, keys_per_lease, prefix, max_wait } => {
            let cfg = lease_expiry::Config {
                leases: *leases,
                ttl: *ttl,
                keys_per_lease: *keys_per_lease,
                prefix: prefix.clone(),
                clients: cli.clients,
                val_size: cli.val_size,
                timeout,
                max_wait: Duration::from_secs(*max_wait),
            };
            let out = lease_expiry::run(&cfg, &channels).await?;
            match cli.format {
                Format::Text => print!("{}", out.text()),
                Format::Json => println!("{}", out.json()),
            }
            let ok = out.expiry_secs.is_some() && out.errors == 0;
            return Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE });
        }
        Command::Watch(w) | Command::WatchProgress { watch: w, .. } => {
            let cfg = watch::Config {
                tenants: w.tenants,
                resources: w.resources,
                server_pid: w.server_pid,
                clients: cli.clients,
                total: cli.total,
                val_size: cli.val_size,
                rate: w.rate,
                timeout,
                wait: Duration::from_secs(w.wait),
                stalled: w.stalled,
            };
            let put_channels = conn::connect_all(&cli.endpoints, w.put_conns).await?;
            let stalled_channel = match w.stalled {
                0 => None,
                _ => conn::connect_all(&cli.endpoints, 1).await?.pop(),
            };
            return run_watch(&cli, &cfg, &channels, &put_channels, stalled_channel).await;
        }
        Command::Put => OpKind::Put,
        Command::Fill { prefix } => OpKind::FillOrdered { prefix: prefix.clone() },
        Command::TxnPut => OpKind::TxnPut,
        Command::TxnRange => OpKind::TxnRange,
        Command::Authenticate => {
            let user = cli.user.as_deref().ok_or("authenticate needs --user NAME:PASSWORD")?;
            let (name, password) = user.split_once(':').ok_or("--user takes NAME:PASSWORD")?;
            OpKind::Authenticate { name: name.into(), password: password.into() }
        }
        Command::Update => OpKind::Update,
        Command::WaitReady { .. } => unreachable!("answered above"),
        Command::Load { prefix, keys, start, batch } => {
            OpKind::Load { prefix: prefix.clone(), start: *start, keys: *keys, batch: *batch }
        }
        Command::Get { prefix, keys } => {
            OpKind::Get { prefix: prefix.clone(), keys: *keys, serializable: cli.consistency == Consistency::S }
        }
        Command::List { prefix, limit, expect } => OpKind::List {
            prefix: prefix.as_bytes().to_vec(),
            limit: *limit,
            expect: *expect,
            serializable: cli.consistency == Consistency::S,
        },
        Command::CompactDuring { prefix, keys: n, baseline_secs } => {
            let kind = OpKind::Get { prefix: prefix.clone(), keys: *n, serializable: cli.consistency == Consistency::S };
            let work = Arc::new(Workload { kind, keys: keys.clone(), val_size: cli.val_size, token: None });
            let cfg = scale::CompactDuring { clients: cli.clients, baseline: Duration::from_secs(*baseline_secs), work };
            let admin = conn::connect_all(&cli.endpoints, 1).await?.pop().ok_or("no channel")?;
            println!("{}", scale::compact_during(&cfg, &channels, admin).await?);
            return Ok(ExitCode::SUCCESS);
        }
        Command::Range { key, end, prepopulate, prefix, count_only, keys_only, limit } => {
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
            let end = match (prefix, end) {
                (true, _) => watch::prefix_end(key.as_bytes()),
                (false, end) => end.as_deref().unwrap_or("").as_bytes().to_vec(),
            };
            OpKind::Range {
                key: key.as_bytes().to_vec(),
                end,
                serializable: cli.consistency == Consistency::S,
                shape: ops::RangeShape { limit: *limit, count_only: *count_only, keys_only: *keys_only },
            }
        }
    };

    if matches!(kind, OpKind::Update) {
        prepopulate(&cli, &channels, &keys, timeout).await?;
    }

    let token = match &cli.user {
        Some(user) => Some(login(&channels[0], user).await?),
        None => None,
    };
    let work = Arc::new(Workload { kind, keys, val_size: cli.val_size, token });
    // `load` sends one Txn per --batch keys, whatever --total says.
    let total = match &cli.cmd {
        Command::Load { keys, batch, .. } => keys.div_ceil(*batch),
        _ => cli.total,
    };
    let cfg = RunConfig { op: cli.op_label(), clients: cli.clients, total, timeout };
    let mut result = runner::run(&cfg, &channels, work).await;

    match cli.format {
        Format::Text => print!("{}", result.text()),
        Format::Json => println!("{}", result.json()),
    }
    let all_failed = cli.total > 0 && result.latencies_us.is_empty();
    Ok(if all_failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// Runs `watch` or `watch-progress` and prints the report; fails when the run did.
async fn run_watch(
    cli: &Cli,
    cfg: &watch::Config,
    watch_channels: &[tonic::transport::Channel],
    put_channels: &[tonic::transport::Channel],
    stalled_channel: Option<tonic::transport::Channel>,
) -> Result<ExitCode, String> {
    let (out, ok) = match &cli.cmd {
        Command::WatchProgress { round_timeout_ms, resend_ms, round_gap_ms, burst, .. } => {
            let rounds = watch::Rounds {
                rounds: cli.total,
                round_timeout: Duration::from_millis(*round_timeout_ms),
                resend: Duration::from_millis(*resend_ms),
                gap: Duration::from_millis(*round_gap_ms),
                burst: *burst,
            };
            let mut r = watch::run_progress(cfg, &rounds, watch_channels, put_channels).await?;
            let text = match cli.format {
                Format::Text => r.text(),
                Format::Json => r.json() + "\n",
            };
            (text, r.ok())
        }
        _ => {
            let mut d = watch::run_delivery(cfg, watch_channels, put_channels, stalled_channel).await?;
            for p in d.problems() {
                eprintln!("cairn-bench watch FAILED: {p}");
            }
            let text = match cli.format {
                Format::Text => d.text(),
                Format::Json => d.json() + "\n",
            };
            (text, d.problems().is_empty())
        }
    };
    print!("{out}");
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
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
    let work = Arc::new(Workload { kind: OpKind::Fill, keys: keys.clone(), val_size: cli.val_size, token: None });
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

/// Logs in as `NAME:PASSWORD`; the token.
async fn login(channel: &tonic::transport::Channel, user: &str) -> Result<String, String> {
    let (name, password) = user.split_once(':').ok_or("--user takes NAME:PASSWORD")?;
    let req = cairn_proto::etcdserverpb::AuthenticateRequest { name: name.into(), password: password.into() };
    let resp = cairn_proto::etcdserverpb::auth_client::AuthClient::new(channel.clone())
        .authenticate(req)
        .await
        .map_err(|e| format!("authenticate {name}: {e}"))?;
    Ok(resp.into_inner().token)
}
