//! Start-up of the `cairn` binary: flags and `ETCD_*` variables (`config`; `config_file` for
//! `--config-file`; the etcd flags cairn does not act on in `etcd_only_flags`), logging
//! (`logging`), running a member until a signal (`run`), giving start-up memory back
//! (`memory`), `cairn cluster` (`local_cluster`) and `cairn snapshot status|restore`
//! (`snapshot_cmd`).

pub mod config;
pub mod config_file;
pub mod etcd_only_flags;
pub mod local_cluster;
pub mod logging;
mod memory;
pub mod run;
pub mod snapshot_cmd;
