//! [`Tenant`]: a storage view confined to one key prefix.
//!
//! Every key a caller passes is prefixed with the tenant's prefix, and every key in a result
//! (objects, watch events, errors) comes back without it. Ranges are the prefix's own range
//! and continue tokens name keys relative to the listed prefix (see `token.rs`), so no
//! argument can reach outside the prefix. Prefixes end with `/` and tenant ids contain no
//! `/`, so no tenant's prefix is a prefix of another's: `/tenants/1/` and `/tenants/10/` do
//! not overlap. Many tenants share the underlying storage, its one connection and its watch
//! streams.

use super::error::{Result, StorageError, UpdateError};
use super::interface::KubeStorage;
use super::types::{GetOptions, List, ListOptions, Object, Preconditions, UpdateOptions, WatchOptions, Watcher};

/// A view of `S` confined to the keys under one prefix (see the module docs).
#[derive(Clone, Debug)]
pub struct Tenant<S> {
    inner: S,
    prefix: Vec<u8>,
}

impl<S: KubeStorage> Tenant<S> {
    /// The view of `inner` under `prefix`, e.g. `/tenants/<id>/`. The prefix must end with
    /// `/` (`InvalidTenantPrefix`).
    pub fn new(inner: S, prefix: impl Into<Vec<u8>>) -> Result<Self> {
        let prefix = prefix.into();
        if prefix.last() != Some(&b'/') {
            return Err(StorageError::InvalidTenantPrefix(prefix));
        }
        Ok(Tenant { inner, prefix })
    }

    /// The prefix of this tenant's keys.
    pub fn prefix(&self) -> &[u8] {
        &self.prefix
    }

    /// The storage underneath.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    fn full(&self, key: &[u8]) -> Vec<u8> {
        [self.prefix.as_slice(), key].concat()
    }

    fn strip(&self, mut obj: Object) -> Object {
        if obj.key.starts_with(&self.prefix) {
            obj.key.drain(..self.prefix.len());
        }
        obj
    }

    fn strip_err(&self, e: StorageError) -> StorageError {
        e.strip_key_prefix(self.prefix.len())
    }
}

/// Wraps `try_update` so it sees keys without the first `n` bytes. (A named function: it
/// gives the closure the higher-ranked signature that lets callers spawn the update.)
fn relative_keys<F>(
    n: usize,
    mut try_update: F,
) -> impl FnMut(Option<&Object>) -> std::result::Result<Option<Vec<u8>>, UpdateError> + Send
where
    F: FnMut(Option<&Object>) -> std::result::Result<Option<Vec<u8>>, UpdateError> + Send,
{
    move |cur| match cur {
        None => try_update(None),
        Some(o) => {
            let rel = Object { key: o.key.get(n..).unwrap_or_default().to_vec(), ..o.clone() };
            try_update(Some(&rel))
        }
    }
}

impl<S: KubeStorage> KubeStorage for Tenant<S> {
    async fn create(&self, key: &[u8], value: Vec<u8>, lease_ttl: Option<i64>) -> Result<i64> {
        self.inner.create(&self.full(key), value, lease_ttl).await.map_err(|e| self.strip_err(e))
    }

    async fn get(&self, key: &[u8], opts: GetOptions) -> Result<Option<Object>> {
        let obj = self.inner.get(&self.full(key), opts).await.map_err(|e| self.strip_err(e))?;
        Ok(obj.map(|o| self.strip(o)))
    }

    async fn get_list(&self, prefix: &[u8], opts: ListOptions) -> Result<List> {
        let mut list = self.inner.get_list(&self.full(prefix), opts).await.map_err(|e| self.strip_err(e))?;
        list.items = list.items.into_iter().map(|o| self.strip(o)).collect();
        Ok(list)
    }

    async fn guaranteed_update<F>(&self, key: &[u8], mut opts: UpdateOptions, try_update: F) -> Result<Object>
    where
        F: FnMut(Option<&Object>) -> std::result::Result<Option<Vec<u8>>, UpdateError> + Send,
    {
        if let Some(cached) = opts.cached.as_mut() {
            cached.key = self.full(&cached.key);
        }
        let relative = relative_keys(self.prefix.len(), try_update);
        let obj = self.inner.guaranteed_update(&self.full(key), opts, relative).await.map_err(|e| self.strip_err(e))?;
        Ok(self.strip(obj))
    }

    async fn delete(&self, key: &[u8], preconditions: Preconditions) -> Result<Object> {
        let obj = self.inner.delete(&self.full(key), preconditions).await.map_err(|e| self.strip_err(e))?;
        Ok(self.strip(obj))
    }

    async fn watch(&self, key: &[u8], opts: WatchOptions) -> Result<Watcher> {
        let w = self.inner.watch(&self.full(key), opts).await.map_err(|e| self.strip_err(e))?;
        Ok(w.strip_key_prefix(self.prefix.len()))
    }

    async fn count(&self, prefix: &[u8]) -> Result<i64> {
        self.inner.count(&self.full(prefix)).await
    }

    async fn request_watch_progress(&self) -> Result<()> {
        self.inner.request_watch_progress().await
    }

    async fn current_resource_version(&self) -> Result<i64> {
        self.inner.current_resource_version().await
    }
}
