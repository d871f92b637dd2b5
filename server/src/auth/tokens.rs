//! Simple tokens (etcd's `--auth-token simple`): random strings naming a user, kept in
//! memory by each member, expiring `--auth-token-ttl` seconds after their last use.
//!
//! A token is `<16 random letters>.<log index>`: the member that checked the password
//! chose the letters and proposed the login through Raft (`AuthenticateCommand`); every
//! member adds the token when it applies the entry (`member/machine.rs`), so a token works
//! on every member, as etcd's do. Tokens are not persisted: after a restart a client logs
//! in again (etcd behaves the same). Applied user deletions and password changes drop the
//! user's tokens, disabling auth drops them all.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::clock::Clock;

/// The token table of one member (module docs).
pub struct SimpleTokens {
    ttl_ms: u64,
    clock: Arc<dyn Clock>,
    /// Token → (user, expiry in clock ms). Leaf lock: held only for one lookup or change.
    table: Mutex<HashMap<String, (String, u64)>>,
}

impl SimpleTokens {
    /// An empty table whose tokens live `ttl_secs` after their last use.
    pub fn new(ttl_secs: u64, clock: Arc<dyn Clock>) -> SimpleTokens {
        SimpleTokens { ttl_ms: ttl_secs.saturating_mul(1000), clock, table: Mutex::new(HashMap::new()) }
    }

    /// Adds `token` for `user` (an applied login). Expired tokens are swept here, so the
    /// table holds at most the tokens of one TTL.
    pub fn assign(&self, token: String, user: String) {
        let now = self.clock.now_ms();
        let mut table = self.table.lock();
        table.retain(|_, (_, expiry)| *expiry > now);
        table.insert(token, (user, now.saturating_add(self.ttl_ms)));
    }

    /// The user `token` names, refreshing its TTL; `None` if unknown or expired.
    pub fn user(&self, token: &str) -> Option<String> {
        let now = self.clock.now_ms();
        let mut table = self.table.lock();
        let (user, expiry) = table.get_mut(token)?;
        if *expiry <= now {
            table.remove(token);
            return None;
        }
        *expiry = now.saturating_add(self.ttl_ms);
        Some(user.clone())
    }

    /// Drops every token of `user` (deleted, or its password changed).
    pub fn invalidate_user(&self, user: &str) {
        self.table.lock().retain(|_, (u, _)| u != user);
    }

    /// Drops every token (auth disabled).
    pub fn clear(&self) {
        self.table.lock().clear();
    }
}

/// 16 random ASCII letters, the random part of a token (etcd's `genTokenPrefix`).
pub fn token_prefix() -> Result<String, getrandom::Error> {
    const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)?;
    // 256 % 52 != 0: a slight bias, harmless for 16 letters (~91 bits)
    Ok(bytes.iter().map(|b| LETTERS[*b as usize % LETTERS.len()] as char).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn tokens_expire_unless_used_and_are_dropped_with_their_user() {
        let clock = Arc::new(ManualClock::default());
        let t = SimpleTokens::new(10, clock.clone());
        t.assign("a.1".into(), "alice".into());
        t.assign("b.2".into(), "bob".into());
        clock.advance(9_000);
        assert_eq!(t.user("a.1").as_deref(), Some("alice"), "use refreshes the TTL");
        clock.advance(9_000);
        assert_eq!(t.user("a.1").as_deref(), Some("alice"));
        assert_eq!(t.user("b.2"), None, "unused for 18 s of a 10 s TTL");
        assert_eq!(t.user("nope"), None);
        t.invalidate_user("alice");
        assert_eq!(t.user("a.1"), None);
        t.assign("c.3".into(), "carol".into());
        t.clear();
        assert_eq!(t.user("c.3"), None);
    }

    #[test]
    fn prefixes_are_letters_and_differ() {
        let (a, b) = (token_prefix().unwrap(), token_prefix().unwrap());
        assert_eq!(a.len(), 16);
        assert!(a.chars().all(|c| c.is_ascii_alphabetic()));
        assert_ne!(a, b);
    }
}
