//! `cairn snapshot status FILE` and `cairn snapshot restore FILE ...`: etcdutl's commands
//! (flags, `--write-out` formats) for the backups Maintenance.Snapshot streams.
//!
//! Neither command reads the file into memory. Both detect its format from its first
//! bytes and verify its SHA-256 trailer in a first pass, a MiB at a time; then an etcd
//! (bbolt) file is walked with its pages read as the walk reaches them
//! (`cairn_storage::bbolt::BboltFile::from_file`) and a cairn backup's stream is read
//! entry by entry. Status hashes and counts what goes by; restore hands the entries, as
//! a cairn snapshot stream (`cairn_storage::etcd_db::import_entries` for etcd's schema),
//! to a [`Seeder`] writing a new store (`cairn_storage::seed`) in a temporary folder next
//! to `--data-dir`, renamed into place only once complete: a bad file (bad SHA-256, page,
//! meta page or entry) or a failure leaves no data folder. Memory stays at a few MiB plus
//! what the new store needs when it opens (its key index). A format plugs in at
//! [`SnapshotFormat`] and [`read_entries`].
//!
//! The new member's identity and Raft log are created at its first start from the same
//! `--name`, `--initial-cluster`, `--initial-cluster-token` and
//! `--initial-advertise-peer-urls` (with `--initial-cluster-state new`), which derive the
//! member and cluster IDs restore prints (etcd's derivation, `member/identity.rs`); the
//! store starts at applied index 0, so every restored member of a cluster starts alike.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use std::io::Read;

use cairn_storage::backup::{is_backup, read_backup, read_backup_file};
use cairn_storage::bbolt::is_bbolt;
use cairn_storage::etcd_db::{export_snapshot, file_status, import_entries, open_snapshot_file};
use cairn_storage::hash::ContentHash;
use cairn_storage::seed::{Seeder, StreamMeta};
use cairn_storage::snapshot::EntryFn;
use cairn_storage::StorageEngine;
use clap::{Parser, Subcommand};

use crate::member::identity::Membership;
use crate::startup::config::Config;

/// `cairn snapshot ...`.
#[derive(Debug, Parser)]
#[command(name = "cairn snapshot", about = "Inspects, restores and converts backups (etcdutl's snapshot commands)")]
struct SnapshotCli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Prints a backup's hash, revision, total keys and total size.
    Status {
        /// The backup file (`etcdctl snapshot save`).
        file: PathBuf,
        /// Output format: simple, table or json.
        #[arg(short = 'w', long = "write-out", default_value = "simple")]
        write_out: String,
    },
    /// Converts a cairn backup into an etcd snapshot file, which `etcdctl snapshot
    /// status|restore` (etcdutl) and etcd read: the way back from cairn to etcd.
    ExportEtcd {
        /// The cairn backup (`etcdctl snapshot save` against cairn).
        file: PathBuf,
        /// The etcd snapshot file to write (must not exist).
        out: PathBuf,
    },
    /// Builds a new member's data folder from a backup.
    Restore {
        /// The backup file.
        file: PathBuf,
        /// The data folder to create (must not exist); default `<name>.etcd`.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// The member's name.
        #[arg(long, default_value = "default")]
        name: String,
        /// The initial cluster configuration.
        #[arg(long, default_value = "default=http://localhost:2380")]
        initial_cluster: String,
        /// The initial cluster token.
        #[arg(long, default_value = "etcd-cluster")]
        initial_cluster_token: String,
        /// The member's peer URLs.
        #[arg(long, default_value = "http://localhost:2380", value_delimiter = ',')]
        initial_advertise_peer_urls: Vec<String>,
        /// Do not verify the SHA-256 (accepted for etcdutl's flag set; cairn always verifies).
        #[arg(long)]
        skip_hash_check: bool,
    },
}

/// Why a snapshot command failed.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotCmdError {
    /// The file could not be read or the folder written.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a backup cairn reads.
    #[error("{0}: unknown snapshot format (neither a cairn backup nor an etcd bbolt file)")]
    UnknownFormat(PathBuf),
    /// An etcd (bbolt) snapshot that does not import.
    #[error("{path}: etcd snapshot: {source}")]
    Etcd {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: cairn_storage::etcd_db::EtcdDbError,
    },
    /// The backup does not verify, or the store could not be seeded.
    #[error("{path}: {source}")]
    Storage {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: cairn_storage::Error,
    },
    /// `export-etcd` was given an etcd snapshot.
    #[error("{0}: already an etcd (bbolt) snapshot")]
    AlreadyEtcd(PathBuf),
    /// `export-etcd`'s output exists already.
    #[error("{0:?} exists")]
    OutputExists(PathBuf),
    /// The data folder exists already.
    #[error("data-dir {0:?} exists")]
    DataDirExists(PathBuf),
    /// The membership flags do not work.
    #[error(transparent)]
    Config(#[from] crate::error::ConfigError),
    /// The membership flags do not parse.
    #[error("{0}")]
    Flags(String),
    /// An unknown `--write-out`.
    #[error("unsupported output format {0:?} (simple, table or json)")]
    WriteOut(String),
}

/// The snapshot formats restore and status know, told apart by their first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotFormat {
    /// A cairn backup (`cairn_storage::backup`).
    Cairn,
    /// An etcd bbolt file (`cairn_storage::bbolt::is_bbolt`).
    Bbolt,
}

impl SnapshotFormat {
    /// The format of a file starting with `data`.
    pub fn detect(data: &[u8]) -> Option<SnapshotFormat> {
        if is_backup(data) {
            return Some(SnapshotFormat::Cairn);
        }
        is_bbolt(data).then_some(SnapshotFormat::Bbolt)
    }
}

/// The format of the file at `path`, from its first bytes.
fn detect_file(path: &Path) -> Result<Option<SnapshotFormat>, SnapshotCmdError> {
    let io = |source| SnapshotCmdError::Io { path: path.to_owned(), source };
    let mut head = Vec::with_capacity(64);
    std::fs::File::open(path).map_err(io)?.take(64).read_to_end(&mut head).map_err(io)?;
    Ok(SnapshotFormat::detect(&head))
}

/// Verifies `path` and hands the entries of its cairn snapshot stream to `visit` one at
/// a time (module docs); returns the file's size. Entries handed out before an error
/// must be dropped by the caller.
fn read_entries(path: &Path, visit: &mut EntryFn<'_>) -> Result<u64, SnapshotCmdError> {
    let storage = |source| SnapshotCmdError::Storage { path: path.to_owned(), source };
    let etcd = |source| SnapshotCmdError::Etcd { path: path.to_owned(), source };
    match detect_file(path)? {
        Some(SnapshotFormat::Cairn) => read_backup_file(path, visit).map_err(storage),
        Some(SnapshotFormat::Bbolt) => {
            // etcd's snapshot (or `member/snap/db`): its keys, revisions, leases and
            // compaction, as a cairn snapshot stream (`cairn_storage::etcd_db`)
            let (db, _) = open_snapshot_file(path).map_err(etcd)?;
            import_entries(&db, visit).map_err(etcd)?;
            std::fs::metadata(path).map(|m| m.len()).map_err(|source| SnapshotCmdError::Io { path: path.to_owned(), source })
        }
        None => Err(SnapshotCmdError::UnknownFormat(path.to_owned())),
    }
}

/// What `snapshot status` reports (etcdutl's fields).
#[derive(Debug, PartialEq, Eq)]
pub struct Status {
    /// CRC-32 (IEEE) over every entry's bucket number, key and value, in stream order
    /// (`cairn_storage::hash`; etcd hashes its bbolt buckets' names, keys and values alike).
    pub hash: u32,
    /// The store revision.
    pub revision: i64,
    /// Entries in every bucket.
    pub total_key: usize,
    /// File size in bytes.
    pub total_size: u64,
}

/// `snapshot status FILE`: for an etcd (bbolt) file, what etcdctl computes
/// (`cairn_storage::etcd_db::file_status`) once its SHA-256 trailer verified; for a cairn
/// backup, its own hash over the entries.
fn status(path: &Path) -> Result<Status, SnapshotCmdError> {
    if detect_file(path)? == Some(SnapshotFormat::Bbolt) {
        let etcd = |source| SnapshotCmdError::Etcd { path: path.to_owned(), source };
        let (db, _) = open_snapshot_file(path).map_err(etcd)?;
        let s = file_status(&db).map_err(etcd)?;
        return Ok(Status { hash: s.hash, revision: s.revision, total_key: s.total_key as usize, total_size: s.total_size });
    }
    let (mut hash, mut meta, mut total_key) = (ContentHash::default(), StreamMeta::default(), 0usize);
    let size = read_entries(path, &mut |bucket, k, v| {
        hash.entry(bucket, k, v);
        meta.note(bucket, k, v)?;
        total_key += 1;
        Ok(())
    })?;
    Ok(Status { hash: hash.finish(), revision: meta.revision, total_key, total_size: size })
}

/// Go's `humanize.Bytes`, which etcdutl prints sizes with ("2.1 MB").
pub fn humanize_bytes(s: u64) -> String {
    const SIZES: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    if s < 10 {
        return format!("{s} B");
    }
    let e = ((s as f64).ln() / 1000f64.ln()).floor();
    let val = ((s as f64) / 1000f64.powf(e) * 10.0 + 0.5).floor() / 10.0;
    let suffix = SIZES[e as usize];
    if val < 10.0 {
        format!("{val:.1} {suffix}")
    } else {
        format!("{val:.0} {suffix}")
    }
}

/// `snapshot status` output in etcdutl's formats.
pub fn format_status(s: &Status, write_out: &str) -> Result<String, SnapshotCmdError> {
    let size = humanize_bytes(s.total_size);
    match write_out {
        "simple" => Ok(format!("{:x}, {}, {}, {}\n", s.hash, s.revision, s.total_key, size)),
        "json" => Ok(format!(
            "{{\"hash\":{},\"revision\":{},\"totalKey\":{},\"totalSize\":{}}}\n",
            s.hash, s.revision, s.total_key, s.total_size
        )),
        "table" => {
            let head = ["HASH", "REVISION", "TOTAL KEYS", "TOTAL SIZE"];
            let row = [format!("{:x}", s.hash), s.revision.to_string(), s.total_key.to_string(), size];
            Ok(table(&head, &row))
        }
        other => Err(SnapshotCmdError::WriteOut(other.to_owned())),
    }
}

/// A one-row table as etcdctl 3.4's tablewriter draws it (centred headers, every cell
/// right-aligned: `snapshot status -w table` sets ALIGN_RIGHT).
fn table(head: &[&str], row: &[String]) -> String {
    let widths: Vec<usize> = head.iter().zip(row).map(|(h, c)| h.len().max(c.len()) + 2).collect();
    let line: String = widths.iter().map(|w| format!("+{}", "-".repeat(*w))).collect::<String>() + "+\n";
    // tablewriter pads a header inside its cell with the smaller half of the gap on the
    // left, then adds one space on each side
    let centre = |s: &str, w: usize| {
        let gap = w - 2 - s.len();
        format!(" {}{}{} ", " ".repeat(gap / 2), s, " ".repeat(gap - gap / 2))
    };
    let heads: String = head.iter().zip(&widths).map(|(h, w)| format!("|{}", centre(h, *w))).collect::<String>() + "|\n";
    let cells: String = row
        .iter()
        .zip(&widths)
        .map(|(c, w)| format!("| {c:>width$} ", width = w - 2))
        .collect::<String>()
        + "|\n";
    format!("{line}{heads}{line}{cells}{line}")
}

/// Restores `file` into a new data folder (module docs); returns (member ID, cluster ID,
/// revision).
#[allow(clippy::too_many_arguments)] // etcdutl's flags
pub fn restore(
    file: &Path,
    data_dir: &Path,
    name: &str,
    initial_cluster: &str,
    token: &str,
    peer_urls: &[String],
) -> Result<(u64, u64, i64), SnapshotCmdError> {
    // the membership flags are checked as the server checks them at start
    let config = Config::try_parse_args([
        "cairn".to_owned(),
        format!("--name={name}"),
        format!("--initial-cluster={initial_cluster}"),
        format!("--initial-cluster-token={token}"),
        format!("--initial-advertise-peer-urls={}", peer_urls.join(",")),
    ])
    .map_err(|e| SnapshotCmdError::Flags(e.to_string()))?;
    let membership = Membership::from_config(&config)?;
    if data_dir.exists() {
        return Err(SnapshotCmdError::DataDirExists(data_dir.to_owned()));
    }
    let tmp = tmp_dir(data_dir);
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| SnapshotCmdError::Io { path, source }
    };
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
    }
    let store_dir = tmp.join("member").join("cairn");
    std::fs::create_dir_all(&store_dir).map_err(io(&store_dir))?;
    let storage = |source| SnapshotCmdError::Storage { path: file.to_owned(), source };
    let result = Seeder::create(&store_dir, StorageEngine::default())
        .map_err(storage)
        .and_then(|mut seeder| {
            read_entries(file, &mut |bucket, k, v| seeder.entry(bucket, k, v))?;
            seeder.finish().map_err(storage)
        })
        .and_then(|rev| {
            std::fs::rename(&tmp, data_dir).map_err(io(data_dir))?;
            if let Some(parent) = data_dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::File::open(parent).and_then(|d| d.sync_all()).map_err(io(parent))?;
            }
            Ok(rev)
        });
    match result {
        Ok(rev) => Ok((membership.member_id, membership.cluster_id, rev)),
        Err(e) => {
            // nothing partial stays behind
            let _ = std::fs::remove_dir_all(&tmp);
            Err(e)
        }
    }
}

fn tmp_dir(data_dir: &Path) -> PathBuf {
    let mut name = data_dir.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".restore-tmp");
    data_dir.with_file_name(name)
}

/// Writes the etcd snapshot file holding the cairn backup `file`'s state to `out`
/// (through a temporary file renamed when complete); returns its size.
fn export_etcd(file: &Path, out: &Path) -> Result<u64, SnapshotCmdError> {
    let data = std::fs::read(file).map_err(|source| SnapshotCmdError::Io { path: file.to_owned(), source })?;
    match SnapshotFormat::detect(&data) {
        Some(SnapshotFormat::Cairn) => {}
        Some(SnapshotFormat::Bbolt) => return Err(SnapshotCmdError::AlreadyEtcd(file.to_owned())),
        None => return Err(SnapshotCmdError::UnknownFormat(file.to_owned())),
    }
    // verified whole first (length, SHA-256, stream); the stream and its zero padding are
    // what the export reads
    read_backup(&data).map_err(|source| SnapshotCmdError::Storage { path: file.to_owned(), source })?;
    let body = &data[..data.len() - cairn_storage::backup::SHA256_LEN];
    let etcd = export_snapshot(body).map_err(|source| SnapshotCmdError::Etcd { path: file.to_owned(), source })?;
    if out.exists() {
        return Err(SnapshotCmdError::OutputExists(out.to_owned()));
    }
    let tmp = out.with_extension("export-tmp");
    let io = |source| SnapshotCmdError::Io { path: out.to_owned(), source };
    std::fs::write(&tmp, &etcd).map_err(io)?;
    std::fs::rename(&tmp, out).map_err(io)?;
    Ok(etcd.len() as u64)
}

/// Runs `cairn snapshot ARGS` (after the word `snapshot`).
pub fn main(args: &[String]) -> ExitCode {
    let cli = match SnapshotCli::try_parse_from(std::iter::once("cairn snapshot".to_owned()).chain(args.iter().cloned())) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    let result = match cli.command {
        Command::ExportEtcd { file, out } => export_etcd(&file, &out).map(|size| {
            eprintln!("exported {} to {} ({size} bytes, an etcd snapshot)", file.display(), out.display());
        }),
        Command::Status { file, write_out } => status(&file).and_then(|s| format_status(&s, &write_out)).map(|out| print!("{out}")),
        Command::Restore { file, data_dir, name, initial_cluster, initial_cluster_token, initial_advertise_peer_urls, skip_hash_check: _ } => {
            let data_dir = data_dir.unwrap_or_else(|| PathBuf::from(format!("{name}.etcd")));
            eprintln!("restoring snapshot {} to {}", file.display(), data_dir.display());
            restore(&file, &data_dir, &name, &initial_cluster, &initial_cluster_token, &initial_advertise_peer_urls).map(|(member, cluster, rev)| {
                eprintln!(
                    "restored snapshot {} to {}: member-id {member:x}, cluster-id {cluster:x}, revision {rev}",
                    file.display(),
                    data_dir.display()
                );
            })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn humanize_as_go() {
        assert_eq!(humanize_bytes(5), "5 B");
        assert_eq!(humanize_bytes(2592), "2.6 kB");
        assert_eq!(humanize_bytes(2_105_344), "2.1 MB");
        assert_eq!(humanize_bytes(20_480_000), "20 MB");
    }

    #[test]
    fn status_formats() {
        let s = Status { hash: 0xfe01cf57, revision: 10, total_key: 7, total_size: 2_105_344 };
        assert_eq!(format_status(&s, "simple").unwrap(), "fe01cf57, 10, 7, 2.1 MB\n");
        assert_eq!(format_status(&s, "json").unwrap(), "{\"hash\":4261531479,\"revision\":10,\"totalKey\":7,\"totalSize\":2105344}\n");
        let t = format_status(&s, "table").unwrap();
        assert_eq!(
            t,
            "+----------+----------+------------+------------+\n\
             |   HASH   | REVISION | TOTAL KEYS | TOTAL SIZE |\n\
             +----------+----------+------------+------------+\n\
             | fe01cf57 |       10 |          7 |     2.1 MB |\n\
             +----------+----------+------------+------------+\n"
        );
        assert!(format_status(&s, "yaml").is_err());
        // an odd gap (a 7-digit hash) leaves the extra space on the right, as tablewriter
        let s = Status { hash: 0x6223e6a, revision: 214, total_key: 270, total_size: 98_304 };
        assert_eq!(
            format_status(&s, "table").unwrap(),
            "+---------+----------+------------+------------+\n\
             |  HASH   | REVISION | TOTAL KEYS | TOTAL SIZE |\n\
             +---------+----------+------------+------------+\n\
             | 6223e6a |      214 |        270 |      98 kB |\n\
             +---------+----------+------------+------------+\n"
        );
    }

    #[test]
    fn formats_are_told_apart() {
        assert_eq!(SnapshotFormat::detect(b"CAIRNSNP\x01\0\0\0"), Some(SnapshotFormat::Cairn));
        let mut bolt = vec![0u8; 64];
        bolt[16..20].copy_from_slice(&0xED0C_DAEDu32.to_le_bytes());
        assert_eq!(SnapshotFormat::detect(&bolt), Some(SnapshotFormat::Bbolt));
        assert_eq!(SnapshotFormat::detect(b"junk"), None);
    }
}
