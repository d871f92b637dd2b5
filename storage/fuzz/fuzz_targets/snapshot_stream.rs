//! Snapshot decoding on arbitrary bytes, as `cairn snapshot restore/status` and a Raft
//! snapshot install meet it: cairn's snapshot stream (`snapshot::read_snapshot`), a cairn
//! backup file (`backup::read_backup`) and an etcd snapshot file
//! (`etcd_db::import_snapshot`, bbolt plus etcd's schema). Never a panic, never an
//! allocation the input does not pay for.
#![no_main]

use cairn_storage::backup::read_backup;
use cairn_storage::etcd_db::import_snapshot;
use cairn_storage::snapshot::read_snapshot;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = read_snapshot(&mut &data[..]);
    let _ = read_backup(data);
    if let Ok(imported) = import_snapshot(data.to_vec()) {
        let _ = read_snapshot(&mut imported.snapshot.as_slice());
    }
});
