//! Differential: a watch that starts in the past gets its backlog grouped into responses
//! exactly as etcd groups it (`syncWatchers`: up to 1000 revisions per response, events of
//! one revision never split; `sendFragments` only for watches created with `fragment`).
//! Each test runs the same operations against cairn and against etcd in the same run and
//! compares the shape of the responses (events per response, fragment flags).

mod common;

use std::time::Duration;

use futures::StreamExt;

use cairn_proto::etcdserverpb::watch_client::WatchClient;
use cairn_proto::etcdserverpb::watch_request::RequestUnion;
use cairn_proto::etcdserverpb::{WatchCreateRequest, WatchRequest, WatchResponse};
use common::{Kind, Server};
use etcd_client::Client;
use tonic::Streaming;

const WAIT: Duration = Duration::from_secs(30);

async fn connect(s: &Server) -> Client {
    Client::connect([s.endpoint()], None).await.unwrap_or_else(|e| panic!("connect to {}: {e}", s.endpoint()))
}

/// `n` puts under `prefix`, 32 at a time; returns the last revision.
async fn puts(c: &Client, prefix: &str, n: usize, value: &[u8]) -> i64 {
    let mut last = 0;
    for chunk in (0..n).collect::<Vec<_>>().chunks(32) {
        let writes = chunk.iter().map(|i| {
            let mut kv = c.kv_client();
            let key = format!("{prefix}{}", i % 50);
            let value = value.to_vec();
            async move { kv.put(key, value, None).await.expect("put") }
        });
        for resp in futures::future::join_all(writes).await {
            last = last.max(resp.header().expect("header").revision());
        }
    }
    last
}

/// Opens a watch on the prefix `prefix` from revision 1 (the generated client: it shows
/// the `fragment` flag, which etcd-client hides) and reads its `created` answer.
async fn watch_from_1(s: &Server, prefix: &str, fragment: bool, receive_limit: usize) -> Streaming<WatchResponse> {
    let mut client = WatchClient::connect(s.endpoint()).await.expect("connect").max_decoding_message_size(receive_limit);
    let mut end = prefix.as_bytes().to_vec();
    *end.last_mut().expect("prefix") += 1;
    let create = WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: prefix.into(),
            range_end: end,
            start_revision: 1,
            fragment,
            ..Default::default()
        })),
    };
    // the request side stays open: etcd ends the call when the client closes it
    let requests = futures::stream::iter([create]).chain(futures::stream::pending());
    let mut stream = client.watch(requests).await.expect("watch").into_inner();
    let created = tokio::time::timeout(WAIT, stream.message()).await.expect("created in time").expect("created").expect("open");
    assert!(created.created);
    stream
}

/// Events per response and fragment flags until `total` events arrived; the status code
/// if the call fails first.
async fn shape(stream: &mut Streaming<WatchResponse>, total: usize) -> Result<Vec<(usize, bool)>, String> {
    let mut out = Vec::new();
    let mut seen = 0;
    while seen < total {
        match tokio::time::timeout(WAIT, stream.message()).await.unwrap_or_else(|_| panic!("timed out after {out:?}")) {
            Ok(Some(r)) => {
                seen += r.events.len();
                out.push((r.events.len(), r.fragment));
            }
            Ok(None) => return Err("stream ended".to_owned()),
            Err(status) => return Err(format!("{:?}", status.code())),
        }
    }
    Ok(out)
}

fn each_server<T: std::fmt::Debug + PartialEq>(f: impl Fn(&Server) -> T) -> T {
    let cairn = f(&Server::start(Kind::Cairn));
    let etcd = f(&Server::start(Kind::Etcd));
    assert_eq!(cairn, etcd, "cairn (left) and etcd (right) group the backlog differently");
    cairn
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

#[test]
fn a_backlog_comes_in_responses_of_1000_revisions() {
    let got = each_server(|s| {
        rt().block_on(async {
            let c = connect(s).await;
            puts(&c, "b/", 2500, b"v").await;
            let mut stream = watch_from_1(s, "b/", false, 4 << 20).await;
            shape(&mut stream, 2500).await
        })
    });
    assert_eq!(got, Ok(vec![(1000, false), (1000, false), (500, false)]));
}

/// etcd's clientv3 watch-fragment test: ten 1 MiB values.
fn big_backlog(s: &Server, fragment: bool, receive_limit: usize) -> Result<Vec<(usize, bool)>, String> {
    rt().block_on(async {
        let c = connect(s).await;
        puts(&c, "big/", 10, &vec![b'x'; 1 << 20]).await;
        let mut stream = watch_from_1(s, "big/", fragment, receive_limit).await;
        shape(&mut stream, 10).await
    })
}

#[test]
fn a_large_backlog_is_fragmented_only_when_asked() {
    let fragmented = each_server(|s| big_backlog(s, true, 64 << 20));
    let mut want: Vec<(usize, bool)> = vec![(1, true); 9];
    want.push((1, false));
    assert_eq!(fragmented, Ok(want));
    let whole = each_server(|s| big_backlog(s, false, 64 << 20));
    assert_eq!(whole, Ok(vec![(10, false)]));
    // sent whole anyway: a client with a smaller receive limit fails the call
    let refused = each_server(|s| big_backlog(s, false, 4 << 20).is_err());
    assert!(refused, "a 10 MiB response within a 4 MiB receive limit");
}
