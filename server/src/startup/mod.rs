//! Start-up of the `cairn` binary: flags and `ETCD_*` variables (`config`; `config_file` for `--config-file`; the etcd
//! flags cairn does not act on in `etcd_only_flags`), logging (`logging`), running a
//! member until a signal (`run`), and `cairn cluster` (`local_cluster`).

pub mod config;
pub mod config_file;
pub mod etcd_only_flags;
pub mod local_cluster;
pub mod logging;
pub mod run;
