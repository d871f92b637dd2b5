//! Start-up of the `cairn` binary: flags and `ETCD_*` variables (`config`), running a
//! member until a signal (`run`), and `cairn cluster` (`local_cluster`).

pub mod config;
pub mod local_cluster;
pub mod run;
