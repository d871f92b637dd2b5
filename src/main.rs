//! The `cairn` binary: an etcd-compatible key-value store. All the work is in `cairn-server`.

use std::process::ExitCode;

fn main() -> ExitCode {
    cairn_server::main_entry()
}
