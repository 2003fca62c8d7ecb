//! HTTP basic authentication against `basic_auth_users`: [`Users`] (the
//! checked hashes), [`Authenticator`] (the `Authorization` header in,
//! [`AuthCheck`] out, with a cache of the passwords that verified).
//!
//! bcrypt is slow on purpose (about 70 ms at cost 10), so a request whose
//! password verified once is let in by its SHA-256 (compared in constant
//! time) and not by bcrypt again; only successes are cached, one digest a
//! user. A name that is not a user is still verified, against a decoy hash
//! of the users' highest cost, so that the time of a 401 does not tell
//! which users exist. At most [`MAX_CONCURRENT_VERIFICATIONS`] bcrypt runs
//! at once (on tokio's blocking threads, [`Authenticator::verify`]); the
//! other requests wait for their turn.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};

use base64::Engine as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

use super::{invalid, WebConfigError};

/// bcrypt verifications running at once, at most (each takes a core).
pub(crate) const MAX_CONCURRENT_VERIFICATIONS: usize = 2;

/// The salt and hash of the decoy (a bcrypt hash of a random string that
/// was then forgotten), after `$2b$NN$`: with any cost in its place it is a
/// well-formed hash no password is known to match.
const DECOY_SALT_AND_HASH: &str = "vI8aWBnW3fID.ZQ4/zo1G.q1lRps.9cGLcZEiGDMVr5yUP1KUOYTa";

/// `basic_auth_users`, checked: every hash parses as bcrypt with a cost
/// bcrypt accepts. Its `Debug` shows the names only.
#[derive(Clone, Default)]
pub(crate) struct Users {
    hashes: BTreeMap<String, Arc<str>>,
    max_cost: u32,
}

impl Users {
    /// Checks the users of the file; an error names the user, never shows
    /// the hash.
    pub(crate) fn parse(raw: BTreeMap<String, String>) -> Result<Users, WebConfigError> {
        let mut users = Users {
            hashes: BTreeMap::new(),
            max_cost: 4,
        };
        for (name, hash) in raw {
            let setting = format!("basic_auth_users: user {name:?}");
            if name.contains(':') {
                return Err(invalid(
                    &setting,
                    "a user name cannot contain ':' (Basic authentication splits at the first one)",
                ));
            }
            let parts = bcrypt::HashParts::from_str(&hash)
                .map_err(|error| invalid(&setting, format!("not a bcrypt hash ({error})")))?;
            let cost = parts.get_cost();
            if !(4..=31).contains(&cost) {
                return Err(invalid(
                    &setting,
                    format!("bcrypt cost {cost} is out of range (4 to 31)"),
                ));
            }
            users.max_cost = users.max_cost.max(cost);
            users.hashes.insert(name, hash.into());
        }
        Ok(users)
    }

    /// Whether there are no users (no authentication).
    pub(crate) fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }
}

impl fmt::Debug for Users {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.hashes.keys().map(|name| (name, Redacted)))
            .finish()
    }
}

/// Shown in place of a secret.
struct Redacted;

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The basic authentication of a [`Users`]: cheap to clone (one `Arc`),
/// one for the whole server so that its cache and its limit are shared.
#[derive(Clone)]
pub(crate) struct Authenticator {
    inner: Arc<Inner>,
}

struct Inner {
    users: HashMap<String, Arc<User>>,
    /// Verified against for a name that is not a user.
    decoy: Arc<str>,
    verifications: Arc<Semaphore>,
}

struct User {
    hash: Arc<str>,
    /// The SHA-256 of the last password that verified.
    verified: Mutex<Option<[u8; 32]>>,
}

/// What a request's `Authorization` header is worth.
#[derive(Debug)]
pub(crate) enum AuthCheck {
    /// The user and password verified before: let in, no bcrypt run.
    Allowed,
    /// No header, not `Basic`, or not base64 of UTF-8 `user:password`.
    Denied,
    /// A user and a password to verify with bcrypt (an unknown user too,
    /// against the decoy): [`Authenticator::verify`], or
    /// [`Pending::verify`] on a blocking thread.
    NeedsVerify(Pending),
}

/// A password to verify with bcrypt; its `Debug` shows neither password
/// nor hash.
pub(crate) struct Pending {
    /// `None`: not a user (the decoy is verified, and fails).
    user: Option<Arc<User>>,
    hash: Arc<str>,
    password: String,
    digest: [u8; 32],
}

impl fmt::Debug for Pending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pending")
            .field("password", &Redacted)
            .field("hash", &Redacted)
            .finish()
    }
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut users: Vec<_> = self.inner.users.keys().collect();
        users.sort();
        f.debug_struct("Authenticator")
            .field("users", &users)
            .field("hashes", &Redacted)
            .finish()
    }
}

impl Pending {
    /// Runs bcrypt (CPU heavy: on a blocking thread), and caches the
    /// password's digest when it verified; `true`: let in.
    pub(crate) fn verify(self) -> bool {
        let matched = bcrypt::verify(self.password.as_bytes(), &self.hash).unwrap_or(false);
        match self.user {
            Some(user) if matched => {
                *user.verified.lock().unwrap_or_else(PoisonError::into_inner) = Some(self.digest);
                true
            }
            _ => false,
        }
    }
}

impl Authenticator {
    /// The authenticator of `users`.
    pub(crate) fn new(users: &Users) -> Authenticator {
        let users_map = users
            .hashes
            .iter()
            .map(|(name, hash)| {
                let user = User {
                    hash: hash.clone(),
                    verified: Mutex::new(None),
                };
                (name.clone(), Arc::new(user))
            })
            .collect();
        Authenticator {
            inner: Arc::new(Inner {
                users: users_map,
                decoy: decoy_hash(users.max_cost).into(),
                verifications: Arc::new(Semaphore::new(MAX_CONCURRENT_VERIFICATIONS)),
            }),
        }
    }

    /// Checks a request's `Authorization` header (`None`: absent); cheap:
    /// no bcrypt.
    pub(crate) fn check(&self, authorization: Option<&[u8]>) -> AuthCheck {
        let Some((name, password)) = authorization.and_then(parse_basic) else {
            return AuthCheck::Denied;
        };
        let digest: [u8; 32] = Sha256::digest(password.as_bytes()).into();
        let (user, hash) = match self.inner.users.get(&name) {
            Some(user) => {
                let cached = *user.verified.lock().unwrap_or_else(PoisonError::into_inner);
                if cached.is_some_and(|cached| bool::from(cached.ct_eq(&digest))) {
                    return AuthCheck::Allowed;
                }
                (Some(user.clone()), user.hash.clone())
            }
            None => (None, self.inner.decoy.clone()),
        };
        AuthCheck::NeedsVerify(Pending {
            user,
            hash,
            password,
            digest,
        })
    }

    /// Verifies `pending` on tokio's blocking threads, at most
    /// [`MAX_CONCURRENT_VERIFICATIONS`] at once (the others wait here);
    /// `true`: let in (and cached, so the next request is
    /// [`AuthCheck::Allowed`]).
    pub(crate) async fn verify(&self, pending: Pending) -> bool {
        let Ok(permit) = self.inner.verifications.clone().acquire_owned().await else {
            return false;
        };
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            pending.verify()
        })
        .await
        .unwrap_or(false)
    }
}

/// The decoy hash at `cost`.
fn decoy_hash(cost: u32) -> String {
    format!("$2b${cost:02}${DECOY_SALT_AND_HASH}")
}

/// `Basic base64(user:password)`: the scheme in any case, one or more
/// spaces, standard base64 (padded), UTF-8, split at the first `:`.
fn parse_basic(header: &[u8]) -> Option<(String, String)> {
    let space = header.iter().position(|&b| b == b' ')?;
    let (scheme, rest) = header.split_at(space);
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return None;
    }
    let token = rest.trim_ascii_start();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(token)
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (name, password) = decoded.split_once(':')?;
    Some((name.to_owned(), password.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(credentials: &str) -> Vec<u8> {
        let encoded = base64::engine::general_purpose::STANDARD.encode(credentials);
        format!("Basic {encoded}").into_bytes()
    }

    fn users(list: &[(&str, &str)]) -> Users {
        let raw = list
            .iter()
            .map(|(name, password)| {
                let hash = bcrypt::hash(password, 4).expect("bcrypt at cost 4");
                (name.to_string(), hash)
            })
            .collect();
        Users::parse(raw).expect("valid users")
    }

    fn pending(check: AuthCheck) -> Pending {
        match check {
            AuthCheck::NeedsVerify(pending) => pending,
            other => panic!("expected NeedsVerify, got {other:?}"),
        }
    }

    #[test]
    fn right_password_verifies_then_is_cached() {
        let auth = Authenticator::new(&users(&[("alice", "s3cret"), ("bob", "other")]));
        let header = basic("alice:s3cret");
        assert!(pending(auth.check(Some(&header))).verify());
        assert!(matches!(auth.check(Some(&header)), AuthCheck::Allowed));
        // another user's cache is not alice's
        assert!(matches!(
            auth.check(Some(&basic("bob:s3cret"))),
            AuthCheck::NeedsVerify(_)
        ));
    }

    #[tokio::test]
    async fn async_verify_caches_on_success() {
        let auth = Authenticator::new(&users(&[("alice", "s3cret")]));
        let header = basic("alice:s3cret");
        let check = pending(auth.check(Some(&header)));
        assert!(auth.verify(check).await);
        assert!(matches!(auth.check(Some(&header)), AuthCheck::Allowed));
        let wrong = pending(auth.check(Some(&basic("alice:nope"))));
        assert!(!auth.verify(wrong).await);
        // all permits are back
        assert_eq!(
            auth.inner.verifications.available_permits(),
            MAX_CONCURRENT_VERIFICATIONS
        );
    }

    #[test]
    fn wrong_password_is_denied_and_not_cached() {
        let auth = Authenticator::new(&users(&[("alice", "s3cret")]));
        let wrong = basic("alice:wrong");
        assert!(!pending(auth.check(Some(&wrong))).verify());
        assert!(matches!(
            auth.check(Some(&wrong)),
            AuthCheck::NeedsVerify(_)
        ));
        // a later success is cached for its own password only
        assert!(pending(auth.check(Some(&basic("alice:s3cret")))).verify());
        assert!(matches!(
            auth.check(Some(&wrong)),
            AuthCheck::NeedsVerify(_)
        ));
    }

    #[test]
    fn unknown_user_is_verified_against_the_decoy_and_denied() {
        let auth = Authenticator::new(&users(&[("alice", "s3cret")]));
        let check = pending(auth.check(Some(&basic("mallory:s3cret"))));
        assert!(check.user.is_none());
        assert_eq!(&*check.hash, decoy_hash(4));
        assert!(!check.verify());
        // still not let in afterwards
        assert!(matches!(
            auth.check(Some(&basic("mallory:s3cret"))),
            AuthCheck::NeedsVerify(_)
        ));
    }

    #[test]
    fn decoy_has_the_highest_cost_and_is_well_formed() {
        let mut raw = BTreeMap::new();
        raw.insert("a".to_owned(), bcrypt::hash("x", 4).unwrap());
        raw.insert("b".to_owned(), bcrypt::hash("x", 5).unwrap());
        let users = Users::parse(raw).unwrap();
        assert_eq!(users.max_cost, 5);
        assert_eq!(
            &*Authenticator::new(&users).inner.decoy,
            "$2b$05$".to_owned() + DECOY_SALT_AND_HASH
        );
        for cost in 4..=31 {
            let parts = bcrypt::HashParts::from_str(&decoy_hash(cost)).expect("decoy parses");
            assert_eq!(parts.get_cost(), cost);
        }
        assert_eq!(bcrypt::verify("", &decoy_hash(4)).ok(), Some(false));
    }

    #[test]
    fn malformed_headers_are_denied() {
        let auth = Authenticator::new(&users(&[("alice", "s3cret")]));
        let encoded = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
        let denied: Vec<Vec<u8>> = vec![
            Vec::new(),
            b"Basic".to_vec(),
            b"Basic ".to_vec(),
            format!("Bearer {encoded}").into_bytes(),
            format!("Basic{encoded}").into_bytes(),
            // not base64, unpadded, trailing junk
            b"Basic !!!!".to_vec(),
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD_NO_PAD.encode("alice:s3cret1")
            )
            .into_bytes(),
            format!("Basic {encoded} x").into_bytes(),
            // no colon
            basic("alices3cret"),
            // not UTF-8
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(b"alice:\xff\xfe")
            )
            .into_bytes(),
        ];
        assert!(matches!(auth.check(None), AuthCheck::Denied));
        for header in denied {
            assert!(
                matches!(auth.check(Some(&header)), AuthCheck::Denied),
                "{:?} let through",
                String::from_utf8_lossy(&header)
            );
        }
    }

    #[test]
    fn header_parsing_is_as_loose_as_the_rfc() {
        let encoded = base64::engine::general_purpose::STANDARD.encode("alice:pa:ss");
        for header in [format!("Basic {encoded}"), format!("bAsIc   {encoded}")] {
            assert_eq!(
                parse_basic(header.as_bytes()),
                Some(("alice".to_owned(), "pa:ss".to_owned()))
            );
        }
    }

    #[test]
    fn bad_hashes_are_refused_naming_the_user_only() {
        let secretish = "$2y$10$notreallyabcrypthash";
        let mut raw = BTreeMap::new();
        raw.insert("carol".to_owned(), secretish.to_owned());
        let error = Users::parse(raw).unwrap_err().to_string();
        assert!(error.contains("\"carol\""), "{error}");
        assert!(error.contains("not a bcrypt hash"), "{error}");
        assert!(!error.contains(secretish), "{error}");

        let mut raw = BTreeMap::new();
        raw.insert("a:b".to_owned(), bcrypt::hash("x", 4).unwrap());
        let error = Users::parse(raw).unwrap_err().to_string();
        assert!(error.contains("cannot contain ':'"), "{error}");
    }

    #[test]
    fn debug_shows_no_password_nor_hash() {
        let hash = bcrypt::hash("hunter2", 4).unwrap();
        let mut raw = BTreeMap::new();
        raw.insert("alice".to_owned(), hash.clone());
        let users = Users::parse(raw).unwrap();
        let auth = Authenticator::new(&users);
        let check = auth.check(Some(&basic("alice:hunter2")));
        for shown in [
            format!("{users:?}"),
            format!("{auth:?}"),
            format!("{check:?}"),
        ] {
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(!shown.contains(&hash), "{shown}");
            assert!(!shown.contains("$2"), "{shown}");
            assert!(
                shown.contains("<redacted>") || shown.contains("alice"),
                "{shown}"
            );
        }
        assert!(format!("{check:?}").contains("<redacted>"));
    }
}
