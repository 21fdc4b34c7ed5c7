//! Basic authentication against the bcrypt hashes of `basic_auth_users`.
//!
//! bcrypt is slow on purpose (about 70 ms at cost 10), so a verified password is
//! remembered: per user, a salted SHA-256 digest of the password last verified, compared
//! in constant time. A scrape with the same credentials then costs one hash, not a bcrypt.
//! Everything else goes through bcrypt, one at a time on a blocking thread (wrong
//! passwords cannot take more than one core, and never an async worker), and an unknown
//! user is checked against a decoy hash of the same cost, so timing does not tell which
//! users exist.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, PoisonError};

use base64::Engine as _;
use http::HeaderValue;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use crate::web_config::PasswordHash;

/// Why a request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Denied {
    /// No `Authorization` header, or not a `Basic` one.
    Missing,
    /// Credentials that do not verify (unknown user, wrong password, malformed).
    Wrong,
}

/// The users and what was verified.
pub(crate) struct BasicAuth {
    users: HashMap<String, String>,
    excluded_paths: Vec<String>,
    /// A bcrypt hash of a random password, of the users' highest cost.
    decoy: String,
    salt: [u8; 32],
    /// Per user, the digest of the password last verified.
    verified: Mutex<HashMap<String, [u8; 32]>>,
    /// One bcrypt at a time.
    bcrypt_turn: tokio::sync::Semaphore,
}

impl std::fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicAuth")
            .field("users", &self.users.len())
            .field("excluded_paths", &self.excluded_paths)
            .finish_non_exhaustive()
    }
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    // The kernel's generator; a failure leaves a weaker salt, never a refused start.
    if let Err(e) = getrandom::fill(&mut bytes) {
        log::warn!("cannot read random bytes for the credential cache: {e}");
    }
    bytes
}

/// The cost field of a checked bcrypt hash (`$2y$10$...` gives 10).
fn cost(hash: &str) -> u32 {
    hash.get(4..6)
        .and_then(|c| c.parse().ok())
        .unwrap_or(bcrypt::DEFAULT_COST)
}

impl BasicAuth {
    /// Users from the web configuration (hashes already checked for shape). Computes the
    /// decoy hash: one bcrypt at the users' highest cost.
    pub(crate) fn new(users: &BTreeMap<String, PasswordHash>, excluded_paths: &[String]) -> Self {
        let top_cost = users.values().map(|h| cost(&h.0)).max().unwrap_or(4);
        let password: [u8; 16] = random_bytes();
        let decoy = bcrypt::hash(password, top_cost).unwrap_or_default();
        Self {
            users: users
                .iter()
                .map(|(u, h)| (u.clone(), h.0.clone()))
                .collect(),
            excluded_paths: excluded_paths.to_vec(),
            decoy,
            salt: random_bytes(),
            verified: Mutex::new(HashMap::new()),
            bcrypt_turn: tokio::sync::Semaphore::new(1),
        }
    }

    /// Whether `path` is served without credentials (`basic_auth_excluded_paths`).
    pub(crate) fn excluded(&self, path: &str) -> bool {
        self.excluded_paths.iter().any(|p| p == path)
    }

    fn digest(&self, user: &str, password: &[u8]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.salt);
        h.update((user.len() as u64).to_le_bytes());
        h.update(user.as_bytes());
        h.update(password);
        h.finalize().into()
    }

    /// Checks an `Authorization` header.
    pub(crate) async fn check(&self, authorization: Option<&HeaderValue>) -> Result<(), Denied> {
        let (user, password) = parse(authorization)?;
        let digest = self.digest(&user, &password);
        let cached = self
            .verified
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&user)
            .copied();
        if cached.is_some_and(|c| bool::from(c.ct_eq(&digest))) {
            return Ok(());
        }
        let known = self.users.get(&user);
        let hash = known.unwrap_or(&self.decoy).clone();
        let ok = {
            let _turn = self
                .bcrypt_turn
                .acquire()
                .await
                .map_err(|_| Denied::Wrong)?;
            tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash).unwrap_or(false))
                .await
                .unwrap_or(false)
        };
        if ok && known.is_some() {
            self.verified
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(user, digest);
            Ok(())
        } else {
            Err(Denied::Wrong)
        }
    }
}

/// `Basic base64(user:password)`: the user (UTF-8) and the password (bytes).
fn parse(authorization: Option<&HeaderValue>) -> Result<(String, Vec<u8>), Denied> {
    let value = authorization.ok_or(Denied::Missing)?.as_bytes();
    let (scheme, rest) = value
        .iter()
        .position(|&b| b == b' ')
        .map(|i| value.split_at(i))
        .ok_or(Denied::Missing)?;
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return Err(Denied::Missing);
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim_ascii())
        .map_err(|_| Denied::Wrong)?;
    let colon = decoded
        .iter()
        .position(|&b| b == b':')
        .ok_or(Denied::Wrong)?;
    let user = String::from_utf8(decoded[..colon].to_vec()).map_err(|_| Denied::Wrong)?;
    Ok((user, decoded[colon + 1..].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(user: &str, password: &str) -> HeaderValue {
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        HeaderValue::from_str(&format!("Basic {encoded}")).unwrap()
    }

    #[tokio::test]
    async fn verifies_caches_and_refuses() {
        let users = BTreeMap::from([(
            "alice".to_owned(),
            PasswordHash(bcrypt::hash("s3cret:with colon", 4).unwrap()),
        )]);
        let auth = BasicAuth::new(&users, &["/health".to_owned()]);
        assert!(auth.excluded("/health"));
        assert!(!auth.excluded("/metrics"));
        assert_eq!(auth.check(None).await, Err(Denied::Missing));
        let bearer = HeaderValue::from_static("Bearer abc");
        assert_eq!(auth.check(Some(&bearer)).await, Err(Denied::Missing));
        let garbage = HeaderValue::from_static("Basic !!!");
        assert_eq!(auth.check(Some(&garbage)).await, Err(Denied::Wrong));
        let right = header("alice", "s3cret:with colon");
        assert_eq!(auth.check(Some(&right)).await, Ok(()));
        assert!(auth.verified.lock().unwrap().contains_key("alice"));
        // From the cache, and still refusing other passwords and users.
        assert_eq!(auth.check(Some(&right)).await, Ok(()));
        let lower =
            HeaderValue::from_str(&right.to_str().unwrap().replace("Basic", "basic")).unwrap();
        assert_eq!(auth.check(Some(&lower)).await, Ok(()));
        let wrong = header("alice", "s3cret");
        assert_eq!(auth.check(Some(&wrong)).await, Err(Denied::Wrong));
        let stranger = header("mallory", "s3cret:with colon");
        assert_eq!(auth.check(Some(&stranger)).await, Err(Denied::Wrong));
        assert_eq!(auth.check(Some(&right)).await, Ok(()));
    }

    #[tokio::test]
    async fn accepts_the_2y_hashes_htpasswd_writes() {
        // `htpasswd -nbBC 4 "" hunter2`, the exporter toolkit's documented tool.
        let hash = "$2y$04$mejWAnmrk8DD1tizBcYcBOGx2YuP8AvZ.zo6F3YGaredAzU0LKU7m";
        let users = BTreeMap::from([("bob".to_owned(), PasswordHash(hash.to_owned()))]);
        let auth = BasicAuth::new(&users, &[]);
        assert_eq!(auth.check(Some(&header("bob", "hunter2"))).await, Ok(()));
        assert_eq!(
            auth.check(Some(&header("bob", "hunter3"))).await,
            Err(Denied::Wrong)
        );
    }
}
