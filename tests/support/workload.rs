//! The fault-injection workload: client tasks that record a history for the
//! linearizability checker, and watch recorders that record segments for the watch checker.
//!
//! Everything takes the cluster's addresses from an [`Endpoints`] channel, so the same code
//! drives one node restarted on new ports (today) or three members (later). Each operation
//! is recorded with call and return times from one monotonic [`Clock`]; an operation that
//! gets no answer (timeout, connection error, server killed) is recorded with an unknown
//! outcome, and the client reconnects before its next operation (to a member drawn at
//! random when there are several), so at most a few operations per client are in doubt
//! per fault.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use cairn_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::request_op::Request;
use cairn_proto::etcdserverpb::response_op::Response as OpResponse;
use cairn_proto::etcdserverpb::watch_client::WatchClient;
use cairn_proto::etcdserverpb::watch_request::RequestUnion;
use cairn_proto::etcdserverpb::{
    DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest, WatchCreateRequest,
    WatchProgressRequest, WatchRequest,
};
use cairn_proto::mvccpb;
use tokio::sync::{mpsc, watch};
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

use super::linearizability::{Compare, Input, Kv, Operation, Output, Rev, Then};
use super::rng::Rng;
use super::watch_check::{Event, Response, Segment};

/// Where the cluster answers now. `generation` changes whenever the addresses change (a
/// restarted single node listens on new ports).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoints {
    pub generation: u64,
    pub urls: Vec<String>,
}

/// The monotonic clock of one run: nanoseconds since the run started.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    origin: Instant,
}

impl Clock {
    pub fn new() -> Clock {
        Clock {
            origin: Instant::now(),
        }
    }

    pub fn now(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }
}

/// What the clients do.
#[derive(Clone, Debug)]
pub struct WorkloadConfig {
    /// Keys every kind of operation hits (Get, Put, CAS by revision or value, Delete,
    /// kube update shape).
    pub hot_keys: Vec<String>,
    /// Keys used only the way kube-apiserver uses objects (create, update, delete txns and Get).
    pub kube_keys: Vec<String>,
    /// Percent of operations on hot keys (the rest on kube keys).
    pub hot_percent: u64,
    /// A request without an answer by then has an unknown outcome.
    pub op_timeout: Duration,
    /// Connecting (TCP and HTTP/2) must finish by then.
    pub connect_timeout: Duration,
}

/// What one client did.
#[derive(Debug, Default)]
pub struct ClientLog {
    pub ops: Vec<Operation>,
    /// Errors that say the request was refused (not applied), by gRPC code.
    pub refused: HashMap<String, usize>,
    /// Unavailable answers given before proposing (elections, learners): not applied,
    /// expected under faults (see [`not_proposed`]).
    pub unavailable: HashMap<String, usize>,
    /// Answers that break the protocol (missing header, undecodable value...).
    pub anomalies: Vec<String>,
}

/// Connects to one of `endpoints` (the first that answers, starting at a random one).
pub async fn connect(endpoints: &Endpoints, rng: &mut Rng, timeout: Duration) -> Option<Channel> {
    let n = endpoints.urls.len();
    let first = rng.below(n as u64) as usize;
    for k in 0..n {
        let url = &endpoints.urls[(first + k) % n];
        let Ok(ep) = Endpoint::from_shared(url.clone()) else {
            continue;
        };
        let ep = ep.connect_timeout(timeout).tcp_nodelay(true);
        // a paused server accepts TCP but never finishes the HTTP/2 handshake
        if let Ok(Ok(ch)) = tokio::time::timeout(timeout, ep.connect()).await {
            return Some(ch);
        }
    }
    None
}

/// True when a gRPC error means the request was not applied (the server refused it), so
/// the operation can be left out of the history; everything else leaves it in doubt.
pub fn refused(code: Code) -> bool {
    matches!(
        code,
        Code::InvalidArgument
            | Code::NotFound
            | Code::AlreadyExists
            | Code::PermissionDenied
            | Code::FailedPrecondition
            | Code::OutOfRange
            | Code::Unimplemented
            | Code::Unauthenticated
    )
}

/// Unavailable answers that mean the request was refused before it entered the log (so it
/// certainly has no effect): no leader to propose to, a proposal raft dropped during a
/// leadership change, a learner that takes no writes. Both etcd and cairn answer these only
/// before proposing (a proposal that may be in the log times out instead).
pub fn not_proposed(status: &tonic::Status) -> bool {
    status.code() == Code::Unavailable
        && matches!(
            status.message(),
            "etcdserver: no leader" | "etcdserver: leader changed" | "etcdserver: rpc not supported for learner"
        )
}

/// Runs one client until `stop` turns true; returns its history.
pub async fn run_client(
    id: usize,
    seed: u64,
    cfg: WorkloadConfig,
    clock: Clock,
    mut endpoints: watch::Receiver<Endpoints>,
    stop: watch::Receiver<bool>,
) -> ClientLog {
    let mut rng = Rng::derive(seed, 1000 + id as u64);
    let mut log = ClientLog::default();
    let mut kv: Option<KvClient<Channel>> = None;
    // what this client last saw of each key, to build compares the way real clients do
    let mut seen: HashMap<String, Option<(String, Rev)>> = HashMap::new();
    let mut seq = 0u64;
    while !*stop.borrow() {
        if endpoints.has_changed().unwrap_or(false) {
            kv = None;
        }
        let Some(client) = kv.as_mut() else {
            let eps = endpoints.borrow_and_update().clone();
            match connect(&eps, &mut rng, cfg.connect_timeout).await {
                Some(ch) => kv = Some(KvClient::new(ch)),
                None => tokio::time::sleep(Duration::from_millis(rng.range(20, 60))).await,
            }
            continue;
        };
        seq += 1;
        let value = format!("c{id}-{seq}");
        let (key, input) = plan(&mut rng, &cfg, &seen, value);
        let call = clock.now();
        let result = tokio::time::timeout(cfg.op_timeout, execute(client, &key, &input)).await;
        let ret = clock.now();
        let output = match result {
            Ok(Ok(Ok(out))) => Some(out),
            Ok(Ok(Err(anomaly))) => {
                log.anomalies
                    .push(format!("client {id}: {key:?} {input:?}: {anomaly}"));
                None
            }
            Ok(Err(status)) if refused(status.code()) => {
                *log.refused
                    .entry(format!("{:?}: {}", status.code(), status.message()))
                    .or_default() += 1;
                continue;
            }
            Ok(Err(status)) if not_proposed(&status) => {
                *log.unavailable.entry(status.message().to_owned()).or_default() += 1;
                // an election is under way: back off as real clients do, elsewhere
                if endpoints.borrow().urls.len() > 1 {
                    kv = None;
                }
                tokio::time::sleep(Duration::from_millis(rng.range(20, 60))).await;
                continue;
            }
            Ok(Err(_)) => {
                // the connection is likely gone (killed server): reconnect before the next one
                kv = None;
                tokio::time::sleep(Duration::from_millis(rng.range(5, 20))).await;
                None
            }
            Err(_elapsed) => {
                // a paused or cut-off member: with several members, try another one next
                // (with one, reconnecting would only wait on the same server)
                if endpoints.borrow().urls.len() > 1 {
                    kv = None;
                }
                None
            }
        };
        match &output {
            Some(out) => note_seen(&mut seen, &key, &input, out),
            None => {
                seen.remove(&key);
            }
        }
        let (ret, output) = match output {
            Some(out) => (Some(ret), out),
            None => (None, Output::Unknown),
        };
        log.ops.push(Operation {
            client: id,
            key,
            call,
            ret,
            input,
            output,
        });
    }
    log
}

/// Picks the next operation.
fn plan(
    rng: &mut Rng,
    cfg: &WorkloadConfig,
    seen: &HashMap<String, Option<(String, Rev)>>,
    value: String,
) -> (String, Input) {
    let put = Then::Put {
        value: value.clone(),
    };
    if cfg.kube_keys.is_empty() || rng.percent(cfg.hot_percent) {
        let key = rng.pick(&cfg.hot_keys).clone();
        let last = seen.get(&key).cloned().flatten();
        let rev = last.as_ref().map_or(0, |l| l.1);
        let input = match rng.below(100) {
            0..30 => Input::Get,
            30..48 => Input::Put { value },
            48..63 => Input::Txn {
                compare: Compare::ModRevision(rev),
                then: put,
                else_get: false,
            },
            63..68 => {
                let expect = last.map_or_else(|| "never-written".to_string(), |l| l.0);
                Input::Txn {
                    compare: Compare::Value(expect),
                    then: put,
                    else_get: false,
                }
            }
            68..73 => Input::Delete,
            _ => Input::Txn {
                compare: Compare::ModRevision(rev),
                then: put,
                else_get: true,
            },
        };
        (key, input)
    } else {
        let key = rng.pick(&cfg.kube_keys).clone();
        let input = match seen.get(&key) {
            // unknown to this client: read it first
            None => Input::Get,
            Some(None) if rng.percent(80) => Input::Txn {
                compare: Compare::ModRevision(0),
                then: put,
                else_get: true,
            },
            Some(Some((_, rev))) if rng.percent(75) => {
                let then = if rng.percent(20) { Then::Delete } else { put };
                Input::Txn {
                    compare: Compare::ModRevision(*rev),
                    then,
                    else_get: true,
                }
            }
            Some(_) => Input::Get,
        };
        (key, input)
    }
}

fn note_seen(
    seen: &mut HashMap<String, Option<(String, Rev)>>,
    key: &str,
    input: &Input,
    out: &Output,
) {
    let now = match (input, out) {
        (
            _,
            Output::Get { kv, .. }
            | Output::Txn {
                else_kv: Some(kv), ..
            },
        ) => kv.clone().map(|kv| (kv.value, kv.mod_revision)),
        (Input::Put { value }, Output::Put { revision }) => Some((value.clone(), *revision)),
        (Input::Delete, _) => None,
        (
            Input::Txn {
                then: Then::Put { value },
                ..
            },
            Output::Txn {
                succeeded: true,
                header_revision,
                ..
            },
        ) => Some((value.clone(), *header_revision)),
        (
            Input::Txn {
                then: Then::Delete, ..
            },
            Output::Txn {
                succeeded: true, ..
            },
        ) => None,
        // a failed txn without Else: the key changed, we don't know to what
        _ => {
            seen.remove(key);
            return;
        }
    };
    seen.insert(key.to_string(), now);
}

fn header_revision(h: Option<cairn_proto::etcdserverpb::ResponseHeader>) -> Result<Rev, String> {
    h.map(|h| h.revision)
        .ok_or_else(|| "response without header".to_string())
}

fn to_kv(kvs: &[mvccpb::KeyValue]) -> Result<Option<Kv>, String> {
    match kvs {
        [] => Ok(None),
        [kv] => Ok(Some(Kv {
            value: String::from_utf8(kv.value.to_vec())
                .map_err(|e| format!("value is not UTF-8: {e}"))?,
            mod_revision: kv.mod_revision,
        })),
        more => Err(format!("a single-key range returned {} keys", more.len())),
    }
}

/// Sends one operation. `Ok(Err(_))`: the server answered something impossible.
pub async fn execute(
    kv: &mut KvClient<Channel>,
    key: &str,
    input: &Input,
) -> Result<Result<Output, String>, tonic::Status> {
    let k = key.as_bytes().to_vec();
    Ok(match input {
        Input::Get => {
            let r = kv
                .range(RangeRequest {
                    key: k,
                    ..Default::default()
                })
                .await?
                .into_inner();
            to_kv(&r.kvs).and_then(|kv| {
                Ok(Output::Get {
                    kv,
                    header_revision: header_revision(r.header)?,
                })
            })
        }
        Input::Put { value } => {
            let r = kv
                .put(PutRequest {
                    key: k,
                    value: value.clone().into_bytes(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            header_revision(r.header).map(|revision| Output::Put { revision })
        }
        Input::Delete => {
            let r = kv
                .delete_range(DeleteRangeRequest {
                    key: k,
                    ..Default::default()
                })
                .await?
                .into_inner();
            if r.deleted > 1 {
                return Ok(Err(format!("a single-key delete deleted {}", r.deleted)));
            }
            header_revision(r.header).map(|header_revision| Output::Delete {
                deleted: r.deleted == 1,
                header_revision,
            })
        }
        Input::Txn {
            compare,
            then,
            else_get,
        } => {
            let (target, union) = match compare {
                Compare::ModRevision(r) => (CompareTarget::Mod, TargetUnion::ModRevision(*r)),
                Compare::Value(v) => (
                    CompareTarget::Value,
                    TargetUnion::Value(v.clone().into_bytes()),
                ),
            };
            let cmp = cairn_proto::etcdserverpb::Compare {
                result: CompareResult::Equal as i32,
                target: target as i32,
                key: k.clone(),
                target_union: Some(union),
                ..Default::default()
            };
            let then_op = match then {
                Then::Put { value } => Request::RequestPut(PutRequest {
                    key: k.clone(),
                    value: value.clone().into_bytes(),
                    ..Default::default()
                }),
                Then::Delete => Request::RequestDeleteRange(DeleteRangeRequest {
                    key: k.clone(),
                    ..Default::default()
                }),
            };
            let mut failure = Vec::new();
            if *else_get {
                failure.push(RequestOp {
                    request: Some(Request::RequestRange(RangeRequest {
                        key: k.clone(),
                        ..Default::default()
                    })),
                });
            }
            let req = TxnRequest {
                compare: vec![cmp],
                success: vec![RequestOp {
                    request: Some(then_op),
                }],
                failure,
            };
            let r = kv.txn(req).await?.into_inner();
            let else_kv = if !r.succeeded && *else_get {
                match r.responses.first().and_then(|o| o.response.as_ref()) {
                    Some(OpResponse::ResponseRange(range)) => match to_kv(&range.kvs) {
                        Ok(kv) => Some(kv),
                        Err(e) => return Ok(Err(e)),
                    },
                    other => return Ok(Err(format!("failed txn's Else(Get) answered {other:?}"))),
                }
            } else {
                None
            };
            header_revision(r.header).map(|header_revision| Output::Txn {
                succeeded: r.succeeded,
                header_revision,
                else_kv,
            })
        }
    })
}

/// A watch to record.
#[derive(Clone, Debug)]
pub struct WatchSpec {
    pub name: String,
    pub key: Vec<u8>,
    /// Empty: the one key.
    pub range_end: Vec<u8>,
}

impl WatchSpec {
    /// A watch of one key.
    pub fn key(key: &str) -> WatchSpec {
        WatchSpec {
            name: key.to_string(),
            key: key.as_bytes().to_vec(),
            range_end: vec![],
        }
    }

    /// A watch of every key starting with `prefix` (non-empty).
    pub fn prefix(prefix: &str) -> WatchSpec {
        let mut end = prefix.as_bytes().to_vec();
        *end.last_mut().expect("a non-empty prefix") += 1;
        WatchSpec {
            name: format!("{prefix}*"),
            key: prefix.as_bytes().to_vec(),
            range_end: end,
        }
    }
}

/// What a watch recorder brings back.
#[derive(Debug)]
pub enum WatchOutcome {
    /// The server answered UNIMPLEMENTED: it has no Watch service yet.
    Unimplemented(String),
    Recorded {
        segments: Vec<Segment>,
        anomalies: Vec<String>,
    },
}

/// Records a watch from `start_revision` until it has covered the revision `until` is set
/// to. A broken stream ends a segment; the watch is created again from the revision after
/// the last one the segment covered. Asks for progress every `progress_every` (from the
/// watch's creation on) or, with `None`, never: for servers whose requested progress
/// notifications are known to overtake events (etcd before 3.4.31 / 3.5.13, #15220), where
/// the segment would claim revisions it never delivered. The watch then ends on the events
/// it waits for.
pub async fn record_watch_with(
    spec: WatchSpec,
    start_revision: Rev,
    seed: u64,
    cfg: WorkloadConfig,
    mut endpoints: watch::Receiver<Endpoints>,
    mut until: watch::Receiver<Option<Rev>>,
    progress_every: Option<Duration>,
) -> WatchOutcome {
    // FNV-1a of the key: each watch picks endpoints its own way
    let stream = spec.key.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    let mut rng = Rng::derive(seed, stream);
    let mut segments: Vec<Segment> = Vec::new();
    let mut anomalies = Vec::new();
    let mut next = start_revision;
    let done = |until: &watch::Receiver<Option<Rev>>, covered: Rev| {
        until.borrow().is_some_and(|u| covered >= u)
    };
    loop {
        if done(&until, next - 1) {
            return WatchOutcome::Recorded {
                segments,
                anomalies,
            };
        }
        let eps = endpoints.borrow_and_update().clone();
        let Some(ch) = connect(&eps, &mut rng, cfg.connect_timeout).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let mut client = WatchClient::new(ch).max_decoding_message_size(64 << 20);
        let (tx, rx) = mpsc::channel(16);
        let create = WatchCreateRequest {
            key: spec.key.clone(),
            range_end: spec.range_end.clone(),
            start_revision: next,
            progress_notify: true,
            ..Default::default()
        };
        // queued before the call: a server may hold its response headers until it answers
        tx.send(WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(create)),
        })
        .await
        .expect("queue create");
        let call = client.watch(tokio_stream_from(rx));
        let mut stream = match tokio::time::timeout(cfg.op_timeout * 3, call).await {
            Ok(Ok(s)) => s.into_inner(),
            Ok(Err(status)) if status.code() == Code::Unimplemented => {
                return WatchOutcome::Unimplemented(status.message().to_string());
            }
            Ok(Err(_)) | Err(_) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let mut seg = Segment {
            start_revision: next,
            responses: Vec::new(),
            ended_by: String::new(),
        };
        // without progress requests the ticker still checks whether `until` was reached
        let asks = progress_every.is_some();
        let mut ticker =
            tokio::time::interval(progress_every.unwrap_or(Duration::from_millis(200)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut created = false;
        seg.ended_by = loop {
            tokio::select! {
                msg = stream.message() => match msg {
                    Ok(Some(r)) => {
                        if r.created {
                            created = true;
                        }
                        if r.canceled || r.compact_revision != 0 {
                            anomalies.push(format!(
                                "watch {} from {next}: canceled={} compact_revision={} reason {:?}",
                                spec.name, r.canceled, r.compact_revision, r.cancel_reason
                            ));
                            break "canceled by the server".to_string();
                        }
                        if r.created && r.events.is_empty() {
                            continue;
                        }
                        if r.events.is_empty() {
                            match r.header {
                                Some(h) => seg.responses.push(Response::Progress { revision: h.revision }),
                                None => anomalies.push(format!("watch {}: progress notification without header", spec.name)),
                            }
                        } else {
                            let mut events = Vec::new();
                            for e in r.events {
                                match convert(&e) {
                                    Ok(ev) => events.push(ev),
                                    Err(msg) => anomalies.push(format!("watch {}: {msg}", spec.name)),
                                }
                            }
                            seg.responses.push(Response::Events { events, fragment: r.fragment });
                        }
                        if done(&until, seg.covered_to()) {
                            break "caught up".to_string();
                        }
                    }
                    Ok(None) => break "stream closed by the server".to_string(),
                    Err(status) if status.code() == Code::Unimplemented && !created && segments.is_empty() => {
                        return WatchOutcome::Unimplemented(status.message().to_string());
                    }
                    Err(status) => break format!("stream error: {:?} {}", status.code(), status.message()),
                },
                _ = ticker.tick() => {
                    if done(&until, seg.covered_to()) {
                        break "caught up".to_string();
                    }
                    if !asks {
                        continue;
                    }
                    let progress = WatchRequest { request_union: Some(RequestUnion::ProgressRequest(WatchProgressRequest {})) };
                    let _ = tx.try_send(progress);
                }
                // (a dropped sender disables these branches instead of spinning)
                Ok(()) = until.changed() => {}
                Ok(()) = endpoints.changed() => break "the cluster's addresses changed".to_string(),
            }
        };
        next = seg.covered_to() + 1;
        segments.push(seg);
    }
}

fn tokio_stream_from(
    rx: mpsc::Receiver<WatchRequest>,
) -> impl tonic::codegen::tokio_stream::Stream<Item = WatchRequest> {
    tonic::codegen::tokio_stream::wrappers::ReceiverStream::new(rx)
}

fn convert(e: &mvccpb::Event) -> Result<Event, String> {
    let kv = e.kv.as_ref().ok_or("event without kv")?;
    let key = String::from_utf8(kv.key.to_vec()).map_err(|_| "key is not UTF-8")?;
    match mvccpb::event::EventType::try_from(e.r#type) {
        Ok(mvccpb::event::EventType::Put) => {
            let value = String::from_utf8(kv.value.to_vec()).map_err(|_| "value is not UTF-8")?;
            Ok(Event::put(&key, &value, kv.mod_revision))
        }
        Ok(mvccpb::event::EventType::Delete) => Ok(Event::delete(&key, kv.mod_revision)),
        Err(_) => Err(format!("event of unknown type {}", e.r#type)),
    }
}
