//! Users, permissions and logins: who may connect, to which vhost, and touch what.
//!
//! The model is RabbitMQ's, so that operators find what they know:
//! - A user has a password (stored as an argon2id PHC string, never in clear) and tags; the
//!   `administrator` tag allows managing vhosts, users and permissions and seeing every
//!   connection. `guest` may log in from loopback only.
//! - A permission grants one user three regular expressions on one vhost: *configure*
//!   (declare and delete queues and exchanges), *write* (publish to an exchange, bind a queue
//!   or exchange as destination) and *read* (consume, get, purge a queue; bind from an
//!   exchange). An empty pattern matches nothing; patterns are unanchored searches, as
//!   RabbitMQ's. A user without a permission on a vhost cannot open it (AMQP 530).
//!
//! The engine owns the [`Directory`] and changes it only through logged records; after each
//! change it publishes a copy in the [`SharedDirectory`], which the protocol front-ends read
//! to log users in without a round trip through the engine.
//!
//! [`Authenticator::authenticate`] runs argon2 (tens of milliseconds on purpose), so callers
//! run it on a blocking thread. A successful login is remembered as a keyed BLAKE2b digest of
//! the password (the key is random per process), so that the HTTP API, which authenticates
//! every request, pays the argon2 price once per user and password, not once per request.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use argon2::password_hash::rand_core::{OsRng, RngCore};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use blake2::{Blake2b512, Digest};

/// Names of vhosts, users and tags: what AMQP's `connection.open` can carry.
pub const NAME_LEN_MAX: usize = 255;

/// A vhost, user or tag name: 1 to 255 bytes, no control characters.
pub fn check_name(what: &str, name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > NAME_LEN_MAX || name.chars().any(char::is_control) {
        return Err(format!("{what} name must be 1 to {NAME_LEN_MAX} bytes without control characters"));
    }
    Ok(())
}

/// The tag that makes a user an administrator.
pub const ADMINISTRATOR_TAG: &str = "administrator";
/// The account every new store starts with; it may log in from loopback only.
pub const DEFAULT_USER: &str = "guest";
/// The longest permission pattern accepted (they are compiled into automata).
pub const PATTERN_LEN_MAX: usize = 4096;
/// The most memory (KiB) and passes an imported password hash may ask a login to spend.
const HASH_MEMORY_KIB_MAX: u32 = 256 * 1024;
const HASH_PASSES_MAX: u32 = 16;
/// How many password checks (argon2: 19 MiB each) may run at once; a login beyond that is
/// refused at once, so a flood of wrong passwords costs bounded memory and CPU.
const VERIFICATIONS_MAX: usize = 8;
/// How many successful logins are remembered before the memory is cleared.
const LOGIN_CACHE_MAX: usize = 4096;

/// A user as logged and snapshotted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserRecord {
    pub name: String,
    /// argon2id PHC string; empty means the user cannot log in with a password.
    pub password_hash: String,
    pub tags: Vec<String>,
}

impl UserRecord {
    pub fn is_administrator(&self) -> bool {
        self.tags.iter().any(|tag| tag == ADMINISTRATOR_TAG)
    }
}

/// One user's permission on one vhost, as logged and snapshotted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PermissionRecord {
    pub user: String,
    pub vhost: String,
    pub configure: String,
    pub write: String,
    pub read: String,
}

/// The three kinds of access a permission grants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Configure,
    Write,
    Read,
}

/// A compiled pattern. `Nothing` is the empty pattern, `Everything` the common `.*`.
#[derive(Clone, Debug)]
enum Pattern {
    Nothing,
    Everything,
    Regex(regex::Regex),
}

impl Pattern {
    fn compile(pattern: &str, which: &str) -> Result<Self, String> {
        if pattern.len() > PATTERN_LEN_MAX {
            return Err(format!("{which} pattern is longer than {PATTERN_LEN_MAX} bytes"));
        }
        Ok(match pattern {
            "" => Pattern::Nothing,
            ".*" | "^.*" | "^.*$" | ".*$" => Pattern::Everything,
            _ => Pattern::Regex(
                regex::RegexBuilder::new(pattern)
                    .size_limit(1 << 20)
                    .build()
                    .map_err(|e| format!("{which} pattern '{pattern}' is not a valid regular expression: {e}"))?,
            ),
        })
    }

    fn matches(&self, name: &str) -> bool {
        match self {
            Pattern::Nothing => false,
            Pattern::Everything => true,
            Pattern::Regex(regex) => regex.is_match(name),
        }
    }
}

/// A permission with its patterns compiled.
#[derive(Clone, Debug)]
pub struct Permission {
    pub record: PermissionRecord,
    configure: Pattern,
    write: Pattern,
    read: Pattern,
}

impl Permission {
    /// Compile `record`'s patterns; the error names the pattern that does not compile.
    pub fn compile(record: PermissionRecord) -> Result<Self, String> {
        Ok(Self {
            configure: Pattern::compile(&record.configure, "configure")?,
            write: Pattern::compile(&record.write, "write")?,
            read: Pattern::compile(&record.read, "read")?,
            record,
        })
    }

    /// May this permission's holder have `access` to the resource called `name`?
    pub fn allows(&self, access: Access, name: &str) -> bool {
        match access {
            Access::Configure => self.configure.matches(name),
            Access::Write => self.write.matches(name),
            Access::Read => self.read.matches(name),
        }
    }
}

/// Every user and permission. Cheap to clone: permissions are shared.
#[derive(Clone, Debug, Default)]
pub struct Directory {
    users: BTreeMap<String, UserRecord>,
    /// (user, vhost) → permission.
    permissions: BTreeMap<(String, String), Arc<Permission>>,
}

impl Directory {
    pub fn user(&self, name: &str) -> Option<&UserRecord> {
        self.users.get(name)
    }

    pub fn users(&self) -> impl Iterator<Item = &UserRecord> {
        self.users.values()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    pub fn is_administrator(&self, user: &str) -> bool {
        self.users.get(user).is_some_and(UserRecord::is_administrator)
    }

    pub fn permission(&self, user: &str, vhost: &str) -> Option<&Arc<Permission>> {
        self.permissions.get(&(user.to_string(), vhost.to_string()))
    }

    pub fn permissions(&self) -> impl Iterator<Item = &PermissionRecord> {
        self.permissions.values().map(|p| &p.record)
    }

    /// Would the directory still have an administrator if `user` were replaced by
    /// `replacement` (None: deleted)?
    pub fn keeps_an_administrator(&self, user: &str, replacement: Option<&UserRecord>) -> bool {
        let can_administer = |u: &UserRecord| u.is_administrator() && !u.password_hash.is_empty();
        replacement.is_some_and(can_administer)
            || self.users.values().any(|other| other.name != user && can_administer(other))
    }

    pub(crate) fn put_user(&mut self, user: UserRecord) {
        self.users.insert(user.name.clone(), user);
    }

    /// Remove a user and every permission it holds.
    pub(crate) fn delete_user(&mut self, name: &str) {
        self.users.remove(name);
        self.permissions.retain(|(user, _), _| user != name);
    }

    pub(crate) fn put_permission(&mut self, permission: Permission) {
        let key = (permission.record.user.clone(), permission.record.vhost.clone());
        self.permissions.insert(key, Arc::new(permission));
    }

    pub(crate) fn delete_permission(&mut self, user: &str, vhost: &str) {
        self.permissions.remove(&(user.to_string(), vhost.to_string()));
    }

    /// Forget every permission on a deleted vhost.
    pub(crate) fn delete_vhost(&mut self, name: &str) {
        self.permissions.retain(|(_, vhost), _| vhost != name);
    }
}

/// The engine's latest directory, readable from any thread.
#[derive(Clone, Debug, Default)]
pub struct SharedDirectory(Arc<RwLock<Arc<Directory>>>);

impl SharedDirectory {
    pub fn load(&self) -> Arc<Directory> {
        Arc::clone(&self.0.read().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    pub(crate) fn store(&self, directory: Arc<Directory>) {
        *self.0.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = directory;
    }
}

/// Hash a password for storage: argon2id with the crate's defaults (19 MiB, 2 passes, as
/// OWASP recommends) and a random salt. Slow on purpose.
pub fn hash_password(password: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default().hash_password(password.as_bytes(), &salt).expect("argon2 with default parameters").to_string()
}

/// Check a password hash given from outside (a user imported with its hash): an argon2 PHC
/// string whose costs stay within what a login may spend (checking it runs no hash).
pub fn check_password_hash(hash: &str) -> Result<(), String> {
    let parsed = PasswordHash::new(hash).map_err(|e| format!("password_hash is not a PHC string: {e}"))?;
    if !matches!(parsed.algorithm.as_str(), "argon2id" | "argon2i" | "argon2d") {
        return Err(format!("password_hash uses '{}'; only argon2 hashes are accepted", parsed.algorithm));
    }
    let params = argon2::Params::try_from(&parsed).map_err(|e| format!("password_hash parameters: {e}"))?;
    if params.m_cost() > HASH_MEMORY_KIB_MAX || params.t_cost() > HASH_PASSES_MAX || params.p_cost() > 16 {
        return Err(format!(
            "password_hash costs too much to check: at most m={HASH_MEMORY_KIB_MAX}, t={HASH_PASSES_MAX}, p=16"
        ));
    }
    if parsed.salt.is_none() || parsed.hash.is_none() {
        return Err("password_hash has no salt or no hash".into());
    }
    Ok(())
}

/// Who logged in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Login {
    pub user: String,
    pub administrator: bool,
}

/// Checks user names and passwords against the shared directory.
pub struct Authenticator {
    directory: SharedDirectory,
    /// user → (the password hash it was checked against, keyed digest of the password).
    verified: Mutex<HashMap<String, (String, [u8; 64])>>,
    key: [u8; 32],
    /// Password checks running now (at most `VERIFICATIONS_MAX`).
    verifying: AtomicUsize,
    /// Password checks run so far.
    checks_run: AtomicUsize,
    /// Checked instead when the user does not exist, so that the answer takes as long as
    /// for a real user and does not tell which names exist.
    decoy_hash: String,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator").finish_non_exhaustive()
    }
}

impl Authenticator {
    pub fn new(directory: SharedDirectory) -> Self {
        let mut key = [0u8; 32];
        OsRng.fill_bytes(&mut key);
        let decoy_hash = hash_password(&format!("{:x?}", &key[..8]));
        Self {
            directory,
            verified: Mutex::new(HashMap::new()),
            key,
            verifying: AtomicUsize::new(0),
            checks_run: AtomicUsize::new(0),
            decoy_hash,
        }
    }

    /// May `name` log in with `password` from a peer that is (or is not) on loopback? Slow
    /// (argon2) the first time a user and password are seen: call from a blocking thread.
    pub fn authenticate(&self, name: &str, password: &str, from_loopback: bool) -> Option<Login> {
        if name == DEFAULT_USER && !from_loopback {
            return None;
        }
        let directory = self.directory.load();
        let user = directory.user(name).filter(|user| !user.password_hash.is_empty());
        let digest = self.digest(password);
        let remembered = user.is_some_and(|user| {
            self.lock().get(name).is_some_and(|(hash, known)| *hash == user.password_hash && *known == digest)
        });
        if !remembered {
            let stored = user.map_or(self.decoy_hash.as_str(), |user| user.password_hash.as_str());
            let right = self.verify_limited(stored, password);
            let user = user.filter(|_| right)?;
            let mut verified = self.lock();
            if verified.len() >= LOGIN_CACHE_MAX {
                verified.clear();
            }
            verified.insert(name.to_string(), (user.password_hash.clone(), digest));
        }
        let user = user?;
        Some(Login { user: name.to_string(), administrator: user.is_administrator() })
    }

    /// Run one argon2 check, unless `VERIFICATIONS_MAX` already run (then: refused).
    fn verify_limited(&self, stored: &str, password: &str) -> bool {
        if self.verifying.fetch_add(1, Ordering::AcqRel) >= VERIFICATIONS_MAX {
            self.verifying.fetch_sub(1, Ordering::AcqRel);
            tracing::warn!("login refused: {VERIFICATIONS_MAX} password checks are already running");
            return false;
        }
        self.checks_run.fetch_add(1, Ordering::AcqRel);
        let right = PasswordHash::new(stored)
            .is_ok_and(|hash| Argon2::default().verify_password(password.as_bytes(), &hash).is_ok());
        self.verifying.fetch_sub(1, Ordering::AcqRel);
        right
    }

    fn digest(&self, password: &str) -> [u8; 64] {
        let mut hasher = Blake2b512::new();
        hasher.update(self.key);
        hasher.update(password.as_bytes());
        hasher.finalize().into()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, [u8; 64])>> {
        self.verified.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn permission(configure: &str, write: &str, read: &str) -> Permission {
        Permission::compile(PermissionRecord {
            user: "u".into(),
            vhost: "/".into(),
            configure: configure.into(),
            write: write.into(),
            read: read.into(),
        })
        .unwrap()
    }

    #[test]
    fn patterns_are_unanchored_and_empty_matches_nothing() {
        let p = permission("^app-", "orders", "");
        assert!(p.allows(Access::Configure, "app-1"));
        assert!(!p.allows(Access::Configure, "my-app-1"));
        assert!(p.allows(Access::Write, "all-orders-here"), "unanchored, as RabbitMQ");
        assert!(!p.allows(Access::Read, ""));
        assert!(!p.allows(Access::Read, "anything"));
        let all = permission(".*", ".*", ".*");
        assert!(all.allows(Access::Read, "") && all.allows(Access::Write, "amq.default"));
    }

    #[test]
    fn a_bad_pattern_is_named_in_the_error() {
        let error = Permission::compile(PermissionRecord {
            user: "u".into(),
            vhost: "/".into(),
            configure: ".*".into(),
            write: "(".into(),
            read: ".*".into(),
        })
        .unwrap_err();
        assert!(error.starts_with("write pattern '('"), "{error}");
    }

    fn directory_with(user: &str, password: &str, tags: &[&str]) -> SharedDirectory {
        let mut directory = Directory::default();
        directory.put_user(UserRecord {
            name: user.into(),
            password_hash: hash_password(password),
            tags: tags.iter().map(|t| t.to_string()).collect(),
        });
        let shared = SharedDirectory::default();
        shared.store(Arc::new(directory));
        shared
    }

    #[test]
    fn passwords_are_checked_and_remembered_only_when_right() {
        let shared = directory_with("alice", "s3cret", &["administrator"]);
        let auth = Authenticator::new(shared.clone());
        assert_eq!(
            auth.authenticate("alice", "s3cret", false),
            Some(Login { user: "alice".into(), administrator: true })
        );
        assert_eq!(auth.authenticate("alice", "s3cret", false).map(|l| l.user), Some("alice".into()), "cached");
        assert_eq!(auth.authenticate("alice", "wrong", true), None, "a cached login does not admit another password");
        assert_eq!(auth.authenticate("bob", "s3cret", true), None);
        // A changed password invalidates what was remembered.
        let mut directory = (*shared.load()).clone();
        directory.put_user(UserRecord { name: "alice".into(), password_hash: hash_password("new"), tags: vec![] });
        shared.store(Arc::new(directory));
        assert_eq!(auth.authenticate("alice", "s3cret", false), None);
        assert_eq!(auth.authenticate("alice", "new", false).map(|l| l.administrator), Some(false));
    }

    #[test]
    fn guest_is_refused_off_loopback_and_hashless_users_cannot_log_in() {
        let shared = directory_with(DEFAULT_USER, "guest", &[]);
        let auth = Authenticator::new(shared.clone());
        assert!(auth.authenticate("guest", "guest", true).is_some());
        assert!(auth.authenticate("guest", "guest", false).is_none());
        let mut directory = (*shared.load()).clone();
        directory.put_user(UserRecord { name: "svc".into(), password_hash: String::new(), tags: vec![] });
        shared.store(Arc::new(directory));
        assert!(auth.authenticate("svc", "", true).is_none());
    }

    #[test]
    fn unknown_users_cost_a_check_and_busy_checks_refuse() {
        let auth = Authenticator::new(directory_with("alice", "s3cret", &[]));
        assert!(auth.authenticate("nobody", "x", true).is_none());
        assert_eq!(auth.checks_run.load(Ordering::Acquire), 1, "an unknown name is checked against the decoy");
        assert!(auth.authenticate("alice", "x", true).is_none());
        assert_eq!(auth.checks_run.load(Ordering::Acquire), 2);
        auth.verifying.store(VERIFICATIONS_MAX, Ordering::Release);
        assert!(auth.authenticate("alice", "s3cret", true).is_none(), "too many checks running");
        auth.verifying.store(0, Ordering::Release);
        assert!(auth.authenticate("alice", "s3cret", true).is_some());
    }

    #[test]
    fn imported_hashes_must_be_argon2() {
        assert!(check_password_hash(&hash_password("x")).is_ok());
        assert!(check_password_hash("plain-text").is_err());
        assert!(check_password_hash("$5$rounds=1000$salt$hash").is_err());
    }

    #[test]
    fn an_administrator_must_remain() {
        let mut directory = Directory::default();
        let admin = UserRecord { name: "a".into(), password_hash: "h".into(), tags: vec![ADMINISTRATOR_TAG.into()] };
        directory.put_user(admin.clone());
        directory.put_user(UserRecord { name: "b".into(), password_hash: "h".into(), tags: vec![] });
        assert!(!directory.keeps_an_administrator("a", None));
        assert!(directory.keeps_an_administrator("a", Some(&admin)));
        assert!(directory.keeps_an_administrator("b", None));
        let locked_out = UserRecord { password_hash: String::new(), ..admin };
        assert!(!directory.keeps_an_administrator("a", Some(&locked_out)), "an administrator who cannot log in");
    }
}
