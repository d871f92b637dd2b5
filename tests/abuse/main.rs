//! The abuse set (issue 11 item 4): clients that misbehave on purpose, each a scenario in
//! which the server must stay up, a healthy control client on its own connection keeps
//! being answered within a deadline (`support::Control`), and the server's resident memory
//! stays bounded where the scenario could grow it (read from /proc/PID/status).
//!
//! * `connections`: 10,000 idle connections; a client that dribbles its preface, headers
//!   and message one byte at a time; one that sends half a frame and goes silent; one
//!   that opens streams and never reads their responses;
//! * `limits`: a message over `--max-request-bytes`, a 5-byte prefix declaring 4 GiB, and
//!   Txns at and over the width limit (`--max-txn-ops`);
//! * `nesting`: Txns nested as deep as etcd's ops budget allows and past it, and the
//!   deepest cairn takes through Raft, apply, a watch and WAL replay on three members;
//! * `scale`: a Range over a 200,000-key store with and without a limit, and a watch on the
//!   whole keyspace while writes stream in (one reader that keeps up, one that never reads);
//! * `pings`: a client pinging faster than `--grpc-keepalive-min-time` (GOAWAY
//!   too_many_pings, as etcd) and one pinging a little slower (never disconnected);
//! * `malformed`: a proptest sending arbitrary bytes and mutated valid encodings as the
//!   request of every gRPC method.
//!
//! Every scenario runs against etcd too (`CAIRN_TEST_TARGET=etcd`), which is how the
//! expected statuses were checked; where the two differ the scenario says so.

#[path = "../common/mod.rs"]
mod common;
#[path = "../pressure/raw.rs"]
mod raw;

mod connections;
mod limits;
mod malformed;
mod nesting;
mod pings;
mod scale;
mod support;

use std::future::Future;
use std::time::Duration;

/// How long any one abuse scenario may take.
const SCENARIO_DEADLINE: Duration = Duration::from_secs(300);

/// Runs `f` on a two-thread runtime, failing the test past [`SCENARIO_DEADLINE`].
fn run<F: Future>(f: F) -> F::Output {
    raw::run_within(SCENARIO_DEADLINE, f)
}
