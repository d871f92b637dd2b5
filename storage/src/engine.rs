//! Which storage engine a data folder uses, and opening it.
//!
//! A folder records the engine that wrote it in a marker file, [`MARKER_FILE`], holding
//! the engine's name and a newline (`pagestore` or `sled`). It is written (to a temporary
//! name, fsynced, renamed, directory fsynced) before the engine creates anything, so a
//! folder holding engine files always has one, except folders sled wrote before markers
//! existed: a folder without a marker in which sled's files (`conf`, `db`) are found is a
//! sled folder (and gets its marker). Opening a folder with the other engine fails with
//! [`Error::WrongEngine`]: each engine would take the other's folder for an empty store.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::pagestore::PageStore;
use crate::sled_backend::SledBackend;

/// The marker file in a data folder.
pub const MARKER_FILE: &str = "ENGINE";

/// A storage engine cairn can run on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum StorageEngine {
    /// cairn's own page store (`pagestore.rs`): the default.
    #[default]
    PageStore,
    /// sled, the engine cairn started on; selectable for comparison and for folders it
    /// wrote.
    Sled,
}

impl StorageEngine {
    /// The name in the marker file (and on the command line).
    pub fn name(self) -> &'static str {
        match self {
            StorageEngine::PageStore => "pagestore",
            StorageEngine::Sled => "sled",
        }
    }

    /// The engine called `name`.
    pub fn from_name(name: &str) -> Option<StorageEngine> {
        match name {
            "pagestore" => Some(StorageEngine::PageStore),
            "sled" => Some(StorageEngine::Sled),
            _ => None,
        }
    }
}

impl std::fmt::Display for StorageEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The engine that wrote `dir`, `None` for a new folder (module docs).
pub fn detect(dir: &Path) -> Result<Option<StorageEngine>> {
    match std::fs::read_to_string(dir.join(MARKER_FILE)) {
        Ok(s) => {
            let name = s.trim_end_matches('\n');
            StorageEngine::from_name(name)
                .map(Some)
                .ok_or_else(|| Error::corrupt("engine marker", format!("unknown engine {name:?} in {}", dir.display())))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if dir.join("conf").exists() || dir.join("db").exists() {
                Ok(Some(StorageEngine::Sled))
            } else if dir.join(crate::pagestore::FILE_NAME).exists() {
                Ok(Some(StorageEngine::PageStore))
            } else {
                Ok(None)
            }
        }
        Err(e) => Err(e.into()),
    }
}

fn write_marker(dir: &Path, engine: StorageEngine) -> Result<()> {
    let tmp = dir.join(format!("{MARKER_FILE}.tmp"));
    let mut f = File::create(&tmp)?;
    f.write_all(format!("{}\n", engine.name()).as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(MARKER_FILE))?;
    File::open(dir)?.sync_all()?;
    Ok(())
}

/// Opens the backend in `dir` with `engine`, creating the folder (and its marker) when
/// new; [`Error::WrongEngine`] when another engine wrote it.
pub fn open_backend(dir: &Path, engine: StorageEngine) -> Result<Arc<dyn Backend>> {
    std::fs::create_dir_all(dir)?;
    match detect(dir)? {
        Some(found) if found != engine => return Err(Error::WrongEngine { dir: dir.to_path_buf(), found, requested: engine }),
        Some(_) if dir.join(MARKER_FILE).exists() => {}
        _ => write_marker(dir, engine)?,
    }
    Ok(match engine {
        StorageEngine::PageStore => Arc::new(PageStore::open(dir)?),
        StorageEngine::Sled => Arc::new(SledBackend::open(dir)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_opens_only_with_the_engine_that_wrote_it() {
        for (engine, other) in [(StorageEngine::PageStore, StorageEngine::Sled), (StorageEngine::Sled, StorageEngine::PageStore)] {
            let dir = tempfile::tempdir().unwrap();
            drop(open_backend(dir.path(), engine).unwrap());
            assert_eq!(detect(dir.path()).unwrap(), Some(engine));
            match open_backend(dir.path(), other) {
                Err(Error::WrongEngine { found, requested, .. }) => assert_eq!((found, requested), (engine, other)),
                Err(e) => panic!("unexpected error {e}"),
                Ok(_) => panic!("{other} opened a folder {engine} wrote"),
            }
        }
    }

    #[test]
    fn a_sled_folder_without_a_marker_is_sled() {
        let dir = tempfile::tempdir().unwrap();
        drop(SledBackend::open(dir.path()).unwrap());
        assert_eq!(detect(dir.path()).unwrap(), Some(StorageEngine::Sled));
        assert!(matches!(open_backend(dir.path(), StorageEngine::PageStore), Err(Error::WrongEngine { .. })));
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(detect(empty.path()).unwrap(), None);
    }
}
