//! Building blocks of the fault-injection suite; a whole-system test directly under
//! `tests/` includes them with `mod support;` (and `mod common;` for the server harness).
//!
//! - [`linearizability`]: a Wing–Gong / porcupine-style checker for per-key register
//!   histories (Get, Put, Delete, compare-and-set transactions, kube-apiserver shapes).
//! - [`watch_check`]: checks what a watch delivered against the committed history.
//! - [`workload`]: the client tasks and watch recorders that produce those histories,
//!   written against a list of endpoints so a three-node suite can reuse them.
//! - [`nemesis`]: kills, restarts, pauses and partitions the servers on a seeded schedule.
//! - [`verify`]: the checks after the load (watches, durability, answered operations).
//! - [`rng`]: a tiny seeded generator (no dependency, reproducible from a seed).
#![allow(dead_code)]

pub mod linearizability;
pub mod nemesis;
pub mod rng;
pub mod verify;
pub mod watch_check;
pub mod workload;
