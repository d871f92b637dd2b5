//! Start-up of the `cairn` binary: flags and `ETCD_*` variables (`config`), running a
//! member until a signal (`run`), `cairn cluster` (`local_cluster`) and `cairn snapshot
//! status|restore` (`snapshot_cmd`).

pub mod config;
pub mod local_cluster;
pub mod run;
pub mod snapshot_cmd;
