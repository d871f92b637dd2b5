//! Differential test: one scripted sequence of KV requests is sent with the
//! raw gRPC clients to a fresh real etcd and to a fresh cairn; the answers are
//! normalized (header cluster_id/member_id/raft_term dropped, revisions kept;
//! errors as gRPC code + message) and must be identical, step by step.
//!
//! `differential_etcd_vs_etcd` runs the same script against two etcds: it
//! proves that the script and the normalization are deterministic.

mod common;

use std::fmt::Write as _;

use cairn_proto::etcdserverpb::{
    cluster_client::ClusterClient,
    compare::{CompareResult, CompareTarget, TargetUnion},
    kv_client::KvClient,
    maintenance_client::MaintenanceClient,
    range_request::{SortOrder, SortTarget},
    request_op, response_op, CompactionRequest, Compare, DeleteRangeRequest, MemberListRequest,
    PutRequest, RangeRequest, RequestOp, ResponseHeader, ResponseOp, StatusRequest, TxnRequest,
};
use cairn_proto::mvccpb::KeyValue;
use common::{Kind, Server};
use tonic::transport::Channel;

// ---------------------------------------------------------------------------
// Requests

#[derive(Clone)]
enum Req {
    Range(RangeRequest),
    Put(PutRequest),
    Delete(DeleteRangeRequest),
    Txn(TxnRequest),
    Compact(CompactionRequest),
    /// Maintenance.Status; only the header revision is compared.
    Status,
    /// Cluster.MemberList; only the member count, names and learner flags.
    MemberList,
}

fn b(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

/// The range end that selects every key with prefix `p`.
fn prefix_end(p: &str) -> Vec<u8> {
    let mut e = b(p);
    while let Some(last) = e.pop() {
        if last < 0xff {
            e.push(last + 1);
            return e;
        }
    }
    vec![0]
}

fn get(k: &str) -> RangeRequest {
    RangeRequest {
        key: b(k),
        ..Default::default()
    }
}

fn get_range(k: &str, end: &str) -> RangeRequest {
    RangeRequest {
        key: b(k),
        range_end: b(end),
        ..Default::default()
    }
}

fn get_prefix(p: &str) -> RangeRequest {
    RangeRequest {
        key: b(p),
        range_end: prefix_end(p),
        ..Default::default()
    }
}

fn get_all() -> RangeRequest {
    get_range("\0", "\0")
}

fn sorted(mut r: RangeRequest, target: SortTarget, order: SortOrder) -> RangeRequest {
    r.sort_target = target as i32;
    r.sort_order = order as i32;
    r
}

fn put(k: &str, v: &str) -> PutRequest {
    PutRequest {
        key: b(k),
        value: b(v),
        ..Default::default()
    }
}

fn put_prev(k: &str, v: &str) -> PutRequest {
    PutRequest {
        prev_kv: true,
        ..put(k, v)
    }
}

fn del(k: &str) -> DeleteRangeRequest {
    DeleteRangeRequest {
        key: b(k),
        ..Default::default()
    }
}

fn del_range(k: &str, end: &[u8], prev_kv: bool) -> DeleteRangeRequest {
    DeleteRangeRequest {
        key: b(k),
        range_end: end.to_vec(),
        prev_kv,
    }
}

fn cmp(key: &str, target: CompareTarget, result: CompareResult, u: TargetUnion) -> Compare {
    Compare {
        key: b(key),
        target: target as i32,
        result: result as i32,
        target_union: Some(u),
        ..Default::default()
    }
}

fn cmp_ver(key: &str, r: CompareResult, v: i64) -> Compare {
    cmp(key, CompareTarget::Version, r, TargetUnion::Version(v))
}
fn cmp_create(key: &str, r: CompareResult, v: i64) -> Compare {
    cmp(
        key,
        CompareTarget::Create,
        r,
        TargetUnion::CreateRevision(v),
    )
}
fn cmp_mod(key: &str, r: CompareResult, v: i64) -> Compare {
    cmp(key, CompareTarget::Mod, r, TargetUnion::ModRevision(v))
}
fn cmp_val(key: &str, r: CompareResult, v: &str) -> Compare {
    cmp(key, CompareTarget::Value, r, TargetUnion::Value(b(v)))
}
fn cmp_lease(key: &str, r: CompareResult, v: i64) -> Compare {
    cmp(key, CompareTarget::Lease, r, TargetUnion::Lease(v))
}

fn op_get(r: RangeRequest) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestRange(r)),
    }
}
fn op_put(r: PutRequest) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestPut(r)),
    }
}
fn op_del(r: DeleteRangeRequest) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestDeleteRange(r)),
    }
}
fn op_txn(r: TxnRequest) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestTxn(r)),
    }
}

fn txn(compare: Vec<Compare>, success: Vec<RequestOp>, failure: Vec<RequestOp>) -> TxnRequest {
    TxnRequest {
        compare,
        success,
        failure,
    }
}

// ---------------------------------------------------------------------------
// Descriptions (for failure messages)

fn esc(v: &[u8]) -> String {
    format!("\"{}\"", v.escape_ascii())
}

fn describe_range(r: &RangeRequest) -> String {
    let mut s = format!("range {}", esc(&r.key));
    if !r.range_end.is_empty() {
        write!(s, "..{}", esc(&r.range_end)).unwrap();
    }
    let opts: [(&str, i64); 7] = [
        ("limit", r.limit),
        ("rev", r.revision),
        ("sort_target", r.sort_target as i64),
        ("sort_order", r.sort_order as i64),
        ("min_mod", r.min_mod_revision),
        ("max_mod", r.max_mod_revision),
        ("min_create", r.min_create_revision),
    ];
    for (name, v) in opts {
        if v != 0 {
            write!(s, " {name}={v}").unwrap();
        }
    }
    if r.max_create_revision != 0 {
        write!(s, " max_create={}", r.max_create_revision).unwrap();
    }
    for (name, on) in [
        ("serializable", r.serializable),
        ("keys_only", r.keys_only),
        ("count_only", r.count_only),
    ] {
        if on {
            write!(s, " {name}").unwrap();
        }
    }
    s
}

fn describe_put(r: &PutRequest) -> String {
    let mut s = format!("put {}={}", esc(&r.key), esc(&r.value));
    if r.value.len() > 64 {
        s = format!("put {}=<{} bytes>", esc(&r.key), r.value.len());
    }
    if r.lease != 0 {
        write!(s, " lease={}", r.lease).unwrap();
    }
    for (name, on) in [
        ("prev_kv", r.prev_kv),
        ("ignore_value", r.ignore_value),
        ("ignore_lease", r.ignore_lease),
    ] {
        if on {
            write!(s, " {name}").unwrap();
        }
    }
    s
}

fn describe_delete(r: &DeleteRangeRequest) -> String {
    let mut s = format!("delete {}", esc(&r.key));
    if !r.range_end.is_empty() {
        write!(s, "..{}", esc(&r.range_end)).unwrap();
    }
    if r.prev_kv {
        s.push_str(" prev_kv");
    }
    s
}

fn describe_compare(c: &Compare) -> String {
    let target = CompareTarget::try_from(c.target)
        .map(|t| t.as_str_name())
        .unwrap_or("?");
    let result = match CompareResult::try_from(c.result) {
        Ok(CompareResult::Equal) => "=",
        Ok(CompareResult::NotEqual) => "!=",
        Ok(CompareResult::Less) => "<",
        Ok(CompareResult::Greater) => ">",
        Err(_) => "?",
    };
    let v = match &c.target_union {
        Some(TargetUnion::Version(v))
        | Some(TargetUnion::CreateRevision(v))
        | Some(TargetUnion::ModRevision(v))
        | Some(TargetUnion::Lease(v)) => v.to_string(),
        Some(TargetUnion::Value(v)) => esc(v),
        None => "<none>".into(),
    };
    let mut k = esc(&c.key);
    if !c.range_end.is_empty() {
        write!(k, "..{}", esc(&c.range_end)).unwrap();
    }
    format!("{target}({k}) {result} {v}")
}

fn describe_ops(ops: &[RequestOp]) -> String {
    if ops.len() > 6 {
        return format!("<{} ops>", ops.len());
    }
    ops.iter()
        .map(|o| match &o.request {
            Some(request_op::Request::RequestRange(r)) => describe_range(r),
            Some(request_op::Request::RequestPut(r)) => describe_put(r),
            Some(request_op::Request::RequestDeleteRange(r)) => describe_delete(r),
            Some(request_op::Request::RequestTxn(t)) => format!("({})", describe_txn(t)),
            None => "<empty op>".into(),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn describe_txn(t: &TxnRequest) -> String {
    let compares = if t.compare.len() > 6 {
        format!("<{} compares>", t.compare.len())
    } else {
        t.compare
            .iter()
            .map(describe_compare)
            .collect::<Vec<_>>()
            .join(" && ")
    };
    format!(
        "txn if [{compares}] then [{}] else [{}]",
        describe_ops(&t.success),
        describe_ops(&t.failure)
    )
}

fn describe(r: &Req) -> String {
    match r {
        Req::Range(r) => describe_range(r),
        Req::Put(r) => describe_put(r),
        Req::Delete(r) => describe_delete(r),
        Req::Txn(t) => describe_txn(t),
        Req::Compact(c) => format!("compact rev={} physical={}", c.revision, c.physical),
        Req::Status => "maintenance status".into(),
        Req::MemberList => "member list".into(),
    }
}

// ---------------------------------------------------------------------------
// Normalized rendering of answers

fn header(h: &Option<ResponseHeader>) -> String {
    match h {
        // cluster_id, member_id and raft_term are deliberately dropped
        Some(h) => format!("hdr(rev={})", h.revision),
        None => "hdr(none)".into(),
    }
}

fn kv(kv: &KeyValue) -> String {
    format!(
        "{{key={} value={} create={} mod={} ver={} lease={}}}",
        esc(&kv.key),
        if kv.value.len() > 64 {
            format!("<{} bytes>", kv.value.len())
        } else {
            esc(&kv.value)
        },
        kv.create_revision,
        kv.mod_revision,
        kv.version,
        kv.lease
    )
}

fn kv_list(out: &mut String, indent: &str, name: &str, kvs: &[KeyValue]) {
    writeln!(out, "{indent}  {name}: {}", kvs.len()).unwrap();
    for k in kvs {
        writeln!(out, "{indent}    {}", kv(k)).unwrap();
    }
}

fn render_response_op(out: &mut String, indent: &str, op: &ResponseOp) {
    match &op.response {
        Some(response_op::Response::ResponseRange(r)) => {
            writeln!(
                out,
                "{indent}range {} count={} more={}",
                header(&r.header),
                r.count,
                r.more
            )
            .unwrap();
            kv_list(out, indent, "kvs", &r.kvs);
        }
        Some(response_op::Response::ResponsePut(r)) => {
            let prev = r.prev_kv.as_ref().map(kv).unwrap_or_else(|| "none".into());
            writeln!(out, "{indent}put {} prev_kv={prev}", header(&r.header)).unwrap();
        }
        Some(response_op::Response::ResponseDeleteRange(r)) => {
            writeln!(
                out,
                "{indent}delete {} deleted={}",
                header(&r.header),
                r.deleted
            )
            .unwrap();
            kv_list(out, indent, "prev_kvs", &r.prev_kvs);
        }
        Some(response_op::Response::ResponseTxn(t)) => {
            writeln!(
                out,
                "{indent}txn {} succeeded={}",
                header(&t.header),
                t.succeeded
            )
            .unwrap();
            for (i, r) in t.responses.iter().enumerate() {
                writeln!(out, "{indent}  [{i}]").unwrap();
                render_response_op(out, &format!("{indent}    "), r);
            }
        }
        None => writeln!(out, "{indent}<empty response op>").unwrap(),
    }
}

fn render_error(st: &tonic::Status) -> String {
    format!("error code={:?} message={:?}\n", st.code(), st.message())
}

struct Clients {
    kv: KvClient<Channel>,
    maint: MaintenanceClient<Channel>,
    cluster: ClusterClient<Channel>,
}

impl Clients {
    async fn connect(s: &Server) -> Clients {
        let ch = tonic::transport::Endpoint::from_shared(s.endpoint())
            .unwrap()
            .connect()
            .await
            .unwrap_or_else(|e| panic!("connect {:?} at {}: {e}", s.kind(), s.endpoint()));
        Clients {
            kv: KvClient::new(ch.clone()),
            maint: MaintenanceClient::new(ch.clone()),
            cluster: ClusterClient::new(ch),
        }
    }

    async fn run(&mut self, req: &Req) -> String {
        let res: Result<String, tonic::Status> = match req.clone() {
            Req::Range(r) => self.kv.range(r).await.map(|r| {
                let r = r.into_inner();
                let mut o = format!(
                    "range {} count={} more={}\n",
                    header(&r.header),
                    r.count,
                    r.more
                );
                kv_list(&mut o, "", "kvs", &r.kvs);
                o
            }),
            Req::Put(r) => self.kv.put(r).await.map(|r| {
                let r = r.into_inner();
                let mut o = String::new();
                render_response_op(
                    &mut o,
                    "",
                    &ResponseOp {
                        response: Some(response_op::Response::ResponsePut(r)),
                    },
                );
                o
            }),
            Req::Delete(r) => self.kv.delete_range(r).await.map(|r| {
                let mut o = String::new();
                render_response_op(
                    &mut o,
                    "",
                    &ResponseOp {
                        response: Some(response_op::Response::ResponseDeleteRange(r.into_inner())),
                    },
                );
                o
            }),
            Req::Txn(t) => self.kv.txn(t).await.map(|r| {
                let mut o = String::new();
                render_response_op(
                    &mut o,
                    "",
                    &ResponseOp {
                        response: Some(response_op::Response::ResponseTxn(r.into_inner())),
                    },
                );
                o
            }),
            Req::Compact(c) => self
                .kv
                .compact(c)
                .await
                .map(|r| format!("compact {}\n", header(&r.into_inner().header))),
            Req::Status => self
                .maint
                .status(StatusRequest {})
                .await
                .map(|r| format!("status {}\n", header(&r.into_inner().header))),
            Req::MemberList => self
                .cluster
                .member_list(MemberListRequest::default())
                .await
                .map(|r| {
                    let r = r.into_inner();
                    let mut o = format!("members: {}\n", r.members.len());
                    for m in &r.members {
                        writeln!(o, "  name={:?} learner={}", m.name, m.is_learner).unwrap();
                    }
                    o
                }),
        };
        match res {
            Ok(s) => s,
            Err(st) => render_error(&st),
        }
    }
}

// ---------------------------------------------------------------------------
// The script

fn script() -> Vec<Req> {
    use CompareResult::{Equal as EQ, Greater as GT, Less as LT, NotEqual as NE};
    // --- empty store
    let mut s: Vec<Req> = vec![
        Req::Range(get("a")),
        Req::Range(get_all()),
        Req::Status,
        Req::MemberList,
    ];

    // --- puts and overwrites (revisions 2..)
    s.push(Req::Put(put("a", "1"))); // 2
    s.push(Req::Put(put_prev("b", "2"))); // 3, no prev
    s.push(Req::Put(put_prev("a", "11"))); // 4, prev a=1
    s.push(Req::Put(put("c", "3"))); // 5
    for (i, k) in ["foo/3", "foo/1", "foo/2", "foo/5", "foo/4"]
        .iter()
        .enumerate()
    {
        s.push(Req::Put(put(k, &format!("f{i}")))); // 6..10
    }
    s.push(Req::Put(put("fop", "x"))); // 11
    s.push(Req::Put(put("zz", ""))); // 12: empty value
    s.push(Req::Put(PutRequest {
        key: vec![0xff, 0x00, 0xfe],
        value: vec![0, 1, 2, 0xff],
        ..Default::default()
    })); // 13
    s.push(Req::Put(put("a", "111"))); // 14: a version 3
    s.push(Req::Put(PutRequest {
        ignore_value: true,
        prev_kv: true,
        ..put("b", "")
    })); // 15
    s.push(Req::Put(PutRequest {
        ignore_lease: true,
        ..put("c", "33")
    })); // 16
    s.push(Req::Put(PutRequest {
        lease: 0,
        ..put_prev("zz", "z")
    })); // 17

    // --- ranges with every option
    s.push(Req::Range(get("a")));
    s.push(Req::Range(get("missing")));
    s.push(Req::Range(get_range("a", "c")));
    s.push(Req::Range(get_range("c", "a"))); // end < key: nothing
    s.push(Req::Range(get_prefix("foo/")));
    s.push(Req::Range(get_range("foo/", "\0"))); // from key
    s.push(Req::Range(get_all()));
    s.push(Req::Range(RangeRequest {
        key: vec![0xff],
        range_end: vec![0],
        ..Default::default()
    }));
    s.push(Req::Range(RangeRequest {
        limit: 2,
        ..get_prefix("foo/")
    }));
    s.push(Req::Range(RangeRequest {
        limit: 5,
        ..get_prefix("foo/")
    }));
    s.push(Req::Range(RangeRequest {
        limit: 100,
        ..get_all()
    }));
    s.push(Req::Range(RangeRequest {
        revision: 3,
        ..get_all()
    }));
    s.push(Req::Range(RangeRequest {
        revision: 2,
        ..get("a")
    }));
    s.push(Req::Range(RangeRequest {
        revision: 8,
        limit: 1,
        ..get_prefix("foo/")
    }));
    s.push(Req::Range(RangeRequest {
        keys_only: true,
        ..get_prefix("foo/")
    }));
    s.push(Req::Range(RangeRequest {
        count_only: true,
        ..get_prefix("foo/")
    }));
    s.push(Req::Range(RangeRequest {
        count_only: true,
        limit: 1,
        ..get_all()
    }));
    s.push(Req::Range(RangeRequest {
        count_only: true,
        revision: 9,
        ..get_prefix("foo/")
    }));
    s.push(Req::Range(RangeRequest {
        serializable: true,
        ..get_range("a", "d")
    }));
    s.push(Req::Range(sorted(
        get_all(),
        SortTarget::Key,
        SortOrder::Descend,
    )));
    s.push(Req::Range(sorted(
        get_all(),
        SortTarget::Key,
        SortOrder::Ascend,
    )));
    s.push(Req::Range(sorted(
        get_all(),
        SortTarget::Version,
        SortOrder::Descend,
    )));
    s.push(Req::Range(sorted(
        get_all(),
        SortTarget::Create,
        SortOrder::Descend,
    )));
    s.push(Req::Range(sorted(
        get_all(),
        SortTarget::Mod,
        SortOrder::Ascend,
    )));
    s.push(Req::Range(sorted(
        get_all(),
        SortTarget::Value,
        SortOrder::Descend,
    )));
    s.push(Req::Range(sorted(
        get_all(),
        SortTarget::Value,
        SortOrder::None,
    ))); // ascending
    s.push(Req::Range(RangeRequest {
        limit: 3,
        ..sorted(get_all(), SortTarget::Mod, SortOrder::Descend)
    }));
    // order NONE with a non-key target: etcd fetches limit+1 keys, then sorts
    s.push(Req::Range(RangeRequest {
        limit: 3,
        ..sorted(get_all(), SortTarget::Mod, SortOrder::None)
    }));
    s.push(Req::Range(RangeRequest {
        keys_only: true,
        ..sorted(get_prefix("foo/"), SortTarget::Value, SortOrder::Descend)
    }));
    s.push(Req::Range(RangeRequest {
        min_mod_revision: 10,
        ..get_all()
    }));
    s.push(Req::Range(RangeRequest {
        max_mod_revision: 7,
        ..get_all()
    }));
    s.push(Req::Range(RangeRequest {
        min_create_revision: 5,
        max_create_revision: 9,
        ..get_all()
    }));
    s.push(Req::Range(RangeRequest {
        min_mod_revision: 6,
        limit: 2,
        ..get_all()
    }));
    s.push(Req::Range(RangeRequest {
        max_create_revision: 3,
        revision: 5,
        ..get_all()
    }));

    // --- deletes
    s.push(Req::Delete(del("missing"))); // no revision
    s.push(Req::Delete(DeleteRangeRequest {
        prev_kv: true,
        ..del("c")
    })); // 18
    s.push(Req::Delete(del_range("foo/1", b"foo/3", true))); // 19: foo/1, foo/2
    s.push(Req::Delete(del_range("foo/", &prefix_end("foo/"), false))); // 20: foo/3..5
    s.push(Req::Range(get_prefix("fo")));
    s.push(Req::Range(RangeRequest {
        revision: 18,
        ..get_prefix("foo/")
    }));
    s.push(Req::Put(put_prev("foo/1", "again"))); // 21: new create revision, version 1
    s.push(Req::Range(get("foo/1")));

    // --- transactions: every target with every operator
    let then_else =
        |c: Compare| Req::Txn(txn(vec![c], vec![op_get(get("a"))], vec![op_get(get("b"))]));
    // a: create 2, mod 14, version 3, value "111", lease 0
    for r in [EQ, NE, LT, GT] {
        s.push(then_else(cmp_ver("a", r, 3)));
    }
    for r in [EQ, NE, LT, GT] {
        s.push(then_else(cmp_create("a", r, 2)));
    }
    for r in [EQ, NE, LT, GT] {
        s.push(then_else(cmp_mod("a", r, 15)));
    }
    for r in [EQ, NE, LT, GT] {
        s.push(then_else(cmp_val("a", r, "12")));
    }
    for r in [EQ, NE, LT, GT] {
        s.push(then_else(cmp_lease("a", r, 0)));
    }
    // missing keys: zero version/revisions; value compares always fail
    s.push(then_else(cmp_ver("nope", EQ, 0)));
    s.push(then_else(cmp_create("nope", LT, 1)));
    s.push(then_else(cmp_val("nope", EQ, "")));
    s.push(then_else(cmp_val("nope", NE, "x")));
    // compares over a range of keys
    s.push(then_else(Compare {
        range_end: prefix_end("foo/"),
        ..cmp_ver("foo/", EQ, 1)
    }));
    s.push(then_else(Compare {
        range_end: b("\0"),
        ..cmp_mod("a", GT, 2)
    }));
    s.push(then_else(Compare {
        range_end: b("zzz"),
        ..cmp_create("nothing-here", EQ, 0)
    }));
    // several compares are ANDed
    s.push(then_else_many(vec![
        cmp_val("a", EQ, "111"),
        cmp_ver("b", EQ, 2),
        cmp_lease("zz", EQ, 0),
    ]));
    s.push(then_else_many(vec![
        cmp_val("a", EQ, "111"),
        cmp_ver("b", EQ, 3),
    ]));

    // writes in txns: one revision, reads see earlier writes of the same txn
    s.push(Req::Txn(txn(
        vec![cmp_mod("a", EQ, 14)],
        vec![
            op_put(put_prev("a", "t1")),
            op_put(put("t/new", "n")),
            op_del(DeleteRangeRequest {
                prev_kv: true,
                ..del("b")
            }),
            op_get(get_range("a", "u")),
        ],
        vec![op_put(put("a", "else"))],
    ))); // 22
    s.push(Req::Txn(txn(
        vec![cmp_val("a", EQ, "nope")],
        vec![op_put(put("a", "then"))],
        vec![
            op_put(put("a", "else")),
            op_del(del("missing")),
            op_get(get("a")),
        ],
    ))); // 23
         // read-only and empty txns keep the revision
    s.push(Req::Txn(txn(vec![], vec![op_get(get_all())], vec![])));
    s.push(Req::Txn(txn(
        vec![cmp_ver("a", EQ, 999)],
        vec![op_put(put("a", "x"))],
        vec![],
    )));
    s.push(Req::Txn(txn(vec![], vec![], vec![])));
    // a delete that deletes nothing inside a txn with no other writes
    s.push(Req::Txn(txn(vec![], vec![op_del(del("missing"))], vec![])));
    // nested txns; the same key in different branches is fine
    s.push(Req::Txn(txn(
        vec![cmp_ver("a", GT, 0)],
        vec![
            op_txn(txn(
                vec![cmp_val("a", EQ, "else")],
                vec![op_put(put("n/1", "yes")), op_get(get("n/1"))],
                vec![op_put(put("n/1", "no"))],
            )),
            op_txn(txn(
                vec![cmp_ver("a", EQ, 0)],
                vec![op_put(put("n/2", "yes"))],
                vec![op_get(get("a"))],
            )),
            op_put(put("n/3", "outer")),
        ],
        vec![op_put(put("n/3", "outer-else"))],
    ))); // 24
    s.push(Req::Txn(txn(
        vec![],
        vec![
            op_del(del_range("n/", &prefix_end("n/"), true)),
            op_del(del_range("n/1", b"n/3", false)),
        ],
        vec![],
    ))); // 25: overlapping deletes are allowed
    s.push(Req::Range(get_all()));

    // --- errors
    s.push(Req::Put(put("", "v")));
    s.push(Req::Range(get("")));
    s.push(Req::Delete(del("")));
    s.push(Req::Txn(txn(vec![cmp_ver("", EQ, 0)], vec![], vec![])));
    s.push(Req::Txn(txn(vec![], vec![op_put(put("", "v"))], vec![])));
    s.push(Req::Txn(txn(
        vec![],
        vec![op_put(put("d", "1")), op_put(put("d", "2"))],
        vec![],
    )));
    s.push(Req::Txn(txn(
        vec![],
        vec![op_put(put("d", "1")), op_del(del_range("c", b"e", false))],
        vec![],
    )));
    s.push(Req::Txn(txn(
        vec![],
        vec![
            op_put(put("d", "1")),
            op_txn(txn(vec![], vec![op_put(put("d", "2"))], vec![])),
        ],
        vec![],
    )));
    s.push(Req::Txn(txn(
        vec![],
        (0..129)
            .map(|i| op_put(put(&format!("m/{i:03}"), "v")))
            .collect(),
        vec![],
    )));
    s.push(Req::Txn(txn(
        (0..129).map(|_| cmp_ver("a", GT, 0)).collect(),
        vec![],
        vec![],
    )));
    s.push(Req::Txn(txn(
        vec![],
        (0..128)
            .map(|i| op_put(put(&format!("m/{i:03}"), "v")))
            .collect(),
        vec![],
    ))); // 26
    s.push(Req::Range(RangeRequest {
        count_only: true,
        ..get_prefix("m/")
    }));
    s.push(Req::Put(PutRequest {
        ignore_value: true,
        ..put("missing", "")
    }));
    s.push(Req::Put(PutRequest {
        ignore_value: true,
        ..put("a", "v")
    }));
    s.push(Req::Put(PutRequest {
        ignore_lease: true,
        ..put("missing", "v")
    }));
    s.push(Req::Put(PutRequest {
        ignore_lease: true,
        lease: 7,
        ..put("a", "v")
    }));
    s.push(Req::Put(PutRequest {
        lease: 0x1234,
        ..put("a", "v")
    }));
    s.push(Req::Txn(txn(
        vec![],
        vec![op_put(PutRequest {
            lease: 0x1234,
            ..put("a", "v")
        })],
        vec![],
    )));
    s.push(Req::Txn(txn(
        vec![],
        vec![op_put(PutRequest {
            ignore_value: true,
            ..put("missing", "")
        })],
        vec![],
    )));
    s.push(Req::Put(put("big", &"x".repeat(1024 * 1024 * 7 / 4))));
    s.push(Req::Range(RangeRequest {
        revision: 1000,
        ..get("a")
    }));
    s.push(Req::Txn(txn(
        vec![],
        vec![op_get(RangeRequest {
            revision: 1000,
            ..get("a")
        })],
        vec![],
    )));
    s.push(Req::Compact(CompactionRequest {
        revision: 1000,
        physical: true,
    }));

    // --- compaction
    s.push(Req::Compact(CompactionRequest {
        revision: 14,
        physical: true,
    }));
    s.push(Req::Range(RangeRequest {
        revision: 13,
        ..get("a")
    }));
    s.push(Req::Range(RangeRequest {
        revision: 14,
        ..get_all()
    }));
    s.push(Req::Range(RangeRequest {
        revision: 15,
        ..get("b")
    }));
    s.push(Req::Txn(txn(
        vec![],
        vec![op_get(RangeRequest {
            revision: 10,
            ..get("a")
        })],
        vec![],
    )));
    s.push(Req::Compact(CompactionRequest {
        revision: 14,
        physical: false,
    }));
    s.push(Req::Compact(CompactionRequest {
        revision: 5,
        physical: true,
    }));
    s.push(Req::Put(put_prev("a", "post-compact"))); // 27
    s.push(Req::Compact(CompactionRequest {
        revision: 27,
        physical: false,
    }));
    s.push(Req::Range(RangeRequest {
        revision: 26,
        ..get("a")
    }));
    s.push(Req::Range(get_all()));
    s.push(Req::Range(RangeRequest {
        count_only: true,
        ..get_all()
    }));
    s.push(Req::Delete(del_range("\0", b"\0", false))); // 28: everything
    s.push(Req::Range(get_all()));
    s.push(Req::Put(put_prev("a", "fresh"))); // 29
    s.push(Req::Range(get("a")));
    s.push(Req::Status);
    s
}

fn then_else_many(c: Vec<Compare>) -> Req {
    Req::Txn(txn(c, vec![op_get(get("a"))], vec![op_get(get("b"))]))
}

// ---------------------------------------------------------------------------
// Comparison

/// A small line diff (LCS) of two renderings.
fn line_diff(left: &str, right: &str) -> String {
    let a: Vec<&str> = left.lines().collect();
    let b: Vec<&str> = right.lines().collect();
    let (n, m) = (a.len(), b.len());
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, String::new());
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            writeln!(out, "  {}", a[i]).unwrap();
            i += 1;
            j += 1;
        } else if i < n && (j == m || lcs[i + 1][j] >= lcs[i][j + 1]) {
            writeln!(out, "- {}", a[i]).unwrap();
            i += 1;
        } else {
            writeln!(out, "+ {}", b[j]).unwrap();
            j += 1;
        }
    }
    out
}

async fn run_script(s: &Server, steps: &[Req]) -> Vec<String> {
    let mut c = Clients::connect(s).await;
    let mut out = Vec::with_capacity(steps.len());
    for r in steps {
        out.push(c.run(r).await);
    }
    out
}

async fn differential(left: Kind, right: Kind) {
    let steps = script();
    assert!(
        steps.len() >= 60,
        "the script has only {} steps",
        steps.len()
    );
    let l = Server::start(left);
    let r = Server::start(right);
    let lo = run_script(&l, &steps).await;
    let ro = run_script(&r, &steps).await;
    let differing: Vec<String> = lo
        .iter()
        .zip(&ro)
        .enumerate()
        .filter(|(_, (a, b))| a != b)
        .map(|(i, _)| format!("#{i}"))
        .collect();
    for (i, (a, b)) in lo.iter().zip(&ro).enumerate() {
        if a != b {
            let mut ctx = String::new();
            for (j, req) in steps
                .iter()
                .enumerate()
                .take(i + 1)
                .skip(i.saturating_sub(3))
            {
                writeln!(ctx, "  #{j}: {}", describe(req)).unwrap();
            }
            panic!(
                "step #{i} differs: {}\n\nlast steps:\n{ctx}\n--- {left:?} (-)\n{a}\n--- {right:?} (+)\n{b}\n--- diff\n{}\n\
                 {} of {} steps differ (later ones may follow from earlier ones): {}",
                describe(&steps[i]),
                line_diff(a, b),
                differing.len(),
                steps.len(),
                differing.join(" "),
            );
        }
    }
    // a few sanity checks that the script exercises what it claims
    let all = lo.concat();
    for needle in [
        "etcdserver: key is not provided",
        "etcdserver: duplicate key given in txn request",
        "etcdserver: too many operations in txn request",
        "etcdserver: mvcc: required revision has been compacted",
        "etcdserver: mvcc: required revision is a future revision",
        "etcdserver: requested lease not found",
        "etcdserver: request is too large",
        "succeeded=true",
        "succeeded=false",
        "more=true",
    ] {
        assert!(all.contains(needle), "the script never produced {needle:?}");
    }
}

#[tokio::test]
async fn differential_etcd_vs_cairn() {
    differential(Kind::Etcd, Kind::Cairn).await;
}

#[tokio::test]
async fn differential_etcd_vs_etcd() {
    differential(Kind::Etcd, Kind::Etcd).await;
}

/// Prints the whole transcript of the script against cairn, or against real
/// etcd with `CAIRN_TEST_TARGET=etcd`
/// (`cargo test --release --test differential -- --ignored --nocapture`).
#[tokio::test]
#[ignore]
async fn print_transcript() {
    let steps = script();
    let s = Server::start(common::target_kind());
    for (i, (req, out)) in steps.iter().zip(run_script(&s, &steps).await).enumerate() {
        println!("#{i}: {}\n{out}", describe(req));
    }
}
