//! Taking, refreshing and releasing locks (SPEC.md §15, "Locks").
//!
//! Readers and backups take shared locks, forget an exclusive one. To take
//! a lock, a process looks for conflicting locks, stores its own, then
//! looks again: if a conflicting lock appeared meanwhile, it removes its
//! own and tries again later (or gives up), so two processes can never
//! both believe they hold conflicting locks. A held lock is rewritten
//! every [`REFRESH_INTERVAL`]; one not refreshed for [`STALE_AFTER`], or
//! held by a process of this host that no longer exists, is stale: it is
//! removed, with a notice, and does not count.

use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::{parse_name, Repository};
use crate::backend::{object_name, Backend, ObjectKind};
use crate::crypto::Sealer;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::object::lock::{Lock, MAX_LOCK_LEN};

/// How often a held lock is rewritten.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(5 * 60);
/// A lock not refreshed for this long is stale.
pub const STALE_AFTER: Duration = Duration::from_secs(30 * 60);
/// How long to wait between attempts while retrying.
const RETRY_PAUSE: Duration = Duration::from_secs(5);

/// Shared (readers and backups) or exclusive (forget).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockKind {
    /// Any number of shared locks may be held together.
    Shared,
    /// No other lock may be held.
    Exclusive,
}

/// The world a lock lives in: time, this process, and whether another
/// process of this host is alive. Tests replace it, so that lock times and
/// waiting can be tested without sleeping.
pub trait LockHost: Send + Sync {
    /// Now, in nanoseconds since the epoch.
    fn now_ns(&self) -> i64;
    /// Waits for `duration`.
    fn sleep(&self, duration: Duration);
    /// This host's name.
    fn hostname(&self) -> String;
    /// This machine and pid namespace (see [`Lock::host_id`]); empty if
    /// unknown, and then no pid of another lock is judged.
    fn host_id(&self) -> String;
    /// The user running this process.
    fn username(&self) -> String;
    /// This process's id.
    fn pid(&self) -> u32;
    /// Whether a process `pid` of this host exists.
    fn is_alive(&self, pid: u32) -> bool;
}

/// The real clock and process table.
pub struct SystemHost;

impl LockHost for SystemHost {
    fn now_ns(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
    }

    fn sleep(&self, duration: Duration) {
        std::thread::sleep(duration);
    }

    fn hostname(&self) -> String {
        crate::archiver::local_hostname()
    }

    fn username(&self) -> String {
        crate::archiver::local_username()
    }

    fn host_id(&self) -> String {
        let machine = ["/etc/machine-id", "/proc/sys/kernel/random/boot_id"]
            .iter()
            .find_map(|path| {
                let id = std::fs::read_to_string(path).ok()?;
                let id = id.trim();
                (!id.is_empty()).then(|| id.to_string())
            });
        let namespace = std::fs::read_link("/proc/self/ns/pid").ok();
        match (machine, namespace) {
            (Some(machine), Some(namespace)) => format!("{machine} {}", namespace.display()),
            _ => String::new(),
        }
    }

    fn pid(&self) -> u32 {
        std::process::id()
    }

    fn is_alive(&self, pid: u32) -> bool {
        let Ok(pid) = i32::try_from(pid) else {
            return false;
        };
        // Signal 0 checks for existence; EPERM means it exists but is
        // someone else's.
        match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
            Ok(()) => true,
            Err(errno) => errno != nix::errno::Errno::ESRCH,
        }
    }
}

/// Locks held by this process, by store and name, so that a signal
/// handler can remove them before the process ends.
static HELD: Mutex<Vec<HeldEntry>> = Mutex::new(Vec::new());

/// A held lock: its key, its store and its current name.
type HeldEntry = (usize, Arc<dyn Backend>, String);

fn held() -> std::sync::MutexGuard<'static, Vec<HeldEntry>> {
    HELD.lock().unwrap_or_else(|p| p.into_inner())
}

/// Keys of [`HELD`] entries.
static NEXT_KEY: AtomicUsize = AtomicUsize::new(0);

/// Removes every lock this process holds: for a signal handler, just
/// before the process ends.
pub fn release_held_locks() {
    for (_, backend, name) in held().drain(..) {
        let _ = backend.delete(ObjectKind::Lock, &name);
    }
}

/// Locks this process released but could not remove, each named with
/// the error: a lock is released when dropped, where no error can be
/// returned, so the caller asks here before it ends.
static UNREMOVED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Takes the descriptions of released locks that stayed in storage (see
/// [`UNREMOVED`]); each goes stale and is removed by a later process.
pub fn take_unremoved_locks() -> Vec<String> {
    std::mem::take(&mut *UNREMOVED.lock().unwrap_or_else(|p| p.into_inner()))
}

/// Attempts at removing a released lock before giving up: a store that
/// failed once (busy, or a moment away) is asked again.
const RELEASE_ATTEMPTS: u32 = 3;

/// A lock this process holds; released when dropped.
pub struct RepositoryLock {
    /// Tells the refresher to stop.
    stop: Option<Sender<()>>,
    refresher: Option<JoinHandle<()>>,
    state: Arc<Mutex<Held>>,
}

/// What the refresher and the release share.
pub(crate) struct Held {
    backend: Arc<dyn Backend>,
    index_sealer: Sealer,
    host: Arc<dyn LockHost>,
    lock: Lock,
    /// The lock object's current name.
    name: String,
    /// Its key in [`HELD`].
    registry_key: usize,
}

impl Held {
    /// Stores the lock anew with the current time, then removes the old
    /// object: the lock is never absent meanwhile.
    fn refresh(&mut self) -> Result<()> {
        self.lock.time_ns = self.host.now_ns();
        let name = store(self.backend.as_ref(), &self.index_sealer, &self.lock)?;
        let old = std::mem::replace(&mut self.name, name.clone());
        for entry in held().iter_mut().filter(|e| e.0 == self.registry_key) {
            entry.2 = name.clone();
        }
        let _ = self.backend.delete(ObjectKind::Lock, &old);
        Ok(())
    }
}

impl Held {
    /// Errors with [`Error::LockLost`] unless the lock object is stored.
    fn ensure_stored(&self) -> Result<()> {
        match self.backend.size(ObjectKind::Lock, &self.name) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::LockLost {
                object: object_name(ObjectKind::Lock, &self.name),
            }),
            Err(e) => Err(Error::storage(ObjectKind::Lock, &self.name, e)),
        }
    }

    /// Removes the lock object of a released lock, trying again on a
    /// failure other than its being gone already.
    fn remove(&self) -> std::io::Result<()> {
        let mut attempt = 1;
        loop {
            match self.backend.delete(ObjectKind::Lock, &self.name) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(_) if attempt < RELEASE_ATTEMPTS => {
                    self.host.sleep(Duration::from_secs(1));
                    attempt += 1;
                }
                done => return done,
            }
        }
    }
}

impl RepositoryLock {
    /// Rewrites the lock now, as the refresher does every
    /// [`REFRESH_INTERVAL`].
    pub fn refresh(&self) -> Result<()> {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .refresh()
    }

    /// Errors with [`Error::LockLost`] unless the lock object is still
    /// stored: another process may have judged it stale and removed it,
    /// and then whatever needs the lock must stop.
    pub fn ensure_held(&self) -> Result<()> {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .ensure_stored()
    }

    /// The lock object's name, `locks/<id>`.
    pub fn object(&self) -> String {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        object_name(ObjectKind::Lock, &state.name)
    }
}

impl Drop for RepositoryLock {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(refresher) = self.refresher.take() {
            let _ = refresher.join();
        }
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        held().retain(|e| e.0 != state.registry_key);
        if let Err(e) = state.remove() {
            UNREMOVED
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(format!(
                    "{}: {e}",
                    object_name(ObjectKind::Lock, &state.name)
                ));
        }
    }
}

/// Stores `lock` and returns its name.
fn store(backend: &dyn Backend, index_sealer: &Sealer, lock: &Lock) -> Result<String> {
    let bytes = lock.seal(index_sealer);
    let name = Id::of_bytes(&bytes).to_hex();
    backend
        .put(ObjectKind::Lock, &name, &bytes)
        .map_err(|e| Error::storage(ObjectKind::Lock, &name, e))?;
    Ok(name)
}

/// A lock found in `locks/`.
struct Found {
    name: String,
    lock: Lock,
}

/// How a lock looks to one wanting to lock.
fn describe(found: &Found) -> String {
    let lock = &found.lock;
    let since = chrono::DateTime::from_timestamp_nanos(lock.time_ns)
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    format!(
        "{} lock held by {} (pid {} on {}, user {}), refreshed {since} ({})",
        if lock.exclusive {
            "an exclusive"
        } else {
            "a shared"
        },
        lock.command,
        lock.pid,
        lock.hostname,
        lock.username,
        object_name(ObjectKind::Lock, &found.name),
    )
}

impl Repository {
    /// Replaces the clock and process table locks use: for tests.
    pub fn set_lock_host(&mut self, host: Arc<dyn LockHost>) {
        self.lock_host = host;
    }

    /// Errors with [`Error::LockLost`] if a lock this process holds on
    /// the repository is gone: another process judged it stale, and may be
    /// pruning. A writer checks this before it stores a snapshot, which
    /// may name blobs such a prune deletes.
    pub(crate) fn ensure_locks_held(&self) -> Result<()> {
        let mut held = self.held_locks.lock().unwrap_or_else(|p| p.into_inner());
        held.retain(|weak| weak.strong_count() > 0);
        for state in held.iter().filter_map(std::sync::Weak::upgrade) {
            state
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .ensure_stored()?;
        }
        Ok(())
    }

    /// Takes a lock of `kind` for `command`, waiting up to `retry_for`
    /// for conflicting locks to go. Errors with [`Error::Locked`], naming
    /// the holder, if they do not.
    pub fn lock(
        &self,
        kind: LockKind,
        command: &str,
        retry_for: Duration,
    ) -> Result<RepositoryLock> {
        let host = Arc::clone(&self.lock_host);
        let deadline = host.now_ns().saturating_add(duration_ns(retry_for));
        let mut lock = Lock {
            time_ns: host.now_ns(),
            exclusive: kind == LockKind::Exclusive,
            hostname: host.hostname(),
            host_id: host.host_id(),
            username: host.username(),
            pid: host.pid(),
            command: command.to_string(),
        };
        loop {
            let conflict = match self.conflicting(kind, None)? {
                Some(conflict) => Some(conflict),
                None => {
                    lock.time_ns = host.now_ns();
                    let name = store(self.backend.as_ref(), &self.index_sealer, &lock)?;
                    // Registered at once, so that a signal during the check
                    // below still removes it.
                    let registry_key = NEXT_KEY.fetch_add(1, AtomicOrdering::Relaxed);
                    held().push((registry_key, Arc::clone(&self.backend), name.clone()));
                    let give_back = |name: &str| {
                        held().retain(|e| e.0 != registry_key);
                        let _ = self.backend.delete(ObjectKind::Lock, name);
                    };
                    match self.conflicting(kind, Some(&name)) {
                        Ok(None) => return Ok(self.hold(lock, name, registry_key)),
                        Ok(Some(conflict)) => {
                            give_back(&name);
                            Some(conflict)
                        }
                        Err(e) => {
                            give_back(&name);
                            return Err(e);
                        }
                    }
                }
            };
            let holder = conflict.expect("a conflict when not locked");
            let now = host.now_ns();
            if now >= deadline {
                return Err(Error::Locked { holder });
            }
            let left = Duration::from_nanos(u64::try_from(deadline - now).unwrap_or(0));
            host.sleep(left.min(RETRY_PAUSE));
        }
    }

    /// Starts refreshing a lock just stored and registered for release.
    fn hold(&self, lock: Lock, name: String, registry_key: usize) -> RepositoryLock {
        let state = Arc::new(Mutex::new(Held {
            backend: Arc::clone(&self.backend),
            index_sealer: self.index_sealer.clone(),
            host: Arc::clone(&self.lock_host),
            lock,
            name,
            registry_key,
        }));
        self.held_locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Arc::downgrade(&state));
        let (stop, stopped) = mpsc::channel::<()>();
        let refreshed = Arc::clone(&state);
        let refresher = std::thread::spawn(move || loop {
            match stopped.recv_timeout(REFRESH_INTERVAL) {
                Err(RecvTimeoutError::Timeout) => {
                    // A failed refresh is tried again at the next interval;
                    // the lock only goes stale after several.
                    let _ = refreshed
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .refresh();
                }
                Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
            }
        });
        RepositoryLock {
            stop: Some(stop),
            refresher: Some(refresher),
            state,
        }
    }

    /// The locks in `locks/` that open, and how many stale ones were
    /// removed (each with a notice). Locks that do not open are left in
    /// place, with a notice, and do not count.
    fn live_locks(&self) -> Result<(Vec<Found>, usize)> {
        let names = self
            .backend
            .list(ObjectKind::Lock)
            .map_err(|e| Error::storage(ObjectKind::Lock, "", e))?;
        let mut live = Vec::new();
        let mut removed = 0;
        for name in names.into_iter().filter(|n| parse_name(n).is_some()) {
            let lock = match self.read_lock(&name) {
                Ok(lock) => lock,
                // Released meanwhile.
                Err(Error::MissingObject { .. }) => continue,
                Err(e @ (Error::Corrupted { .. } | Error::Unauthenticated { .. })) => {
                    self.notice(format!(
                        "{e}: this lock is not honoured; `cairn unlock --remove-all` removes it"
                    ));
                    continue;
                }
                Err(e) => return Err(e),
            };
            let found = Found { name, lock };
            if let Some(why) = self.staleness(&found.lock) {
                if self.backend.delete(ObjectKind::Lock, &found.name).is_ok() {
                    removed += 1;
                    self.notice(format!(
                        "removed a stale lock: {} ({why})",
                        describe(&found)
                    ));
                }
                continue;
            }
            live.push(found);
        }
        Ok((live, removed))
    }

    fn notice(&self, line: String) {
        self.notices_lock().push(line);
    }

    /// Why `lock` is stale, if it is.
    fn staleness(&self, lock: &Lock) -> Option<&'static str> {
        let host = &self.lock_host;
        if host.now_ns().saturating_sub(lock.time_ns) > duration_ns(STALE_AFTER) {
            return Some("not refreshed for 30 minutes");
        }
        let same_namespace = !lock.host_id.is_empty()
            && lock.host_id == host.host_id()
            && lock.hostname == host.hostname();
        if same_namespace && lock.pid != host.pid() && !host.is_alive(lock.pid) {
            return Some("its process is gone");
        }
        None
    }

    /// The first live lock that conflicts with taking one of `kind`,
    /// described; `own` is this process's own new lock, which does not.
    fn conflicting(&self, kind: LockKind, own: Option<&str>) -> Result<Option<String>> {
        Ok(self
            .live_locks()?
            .0
            .iter()
            .filter(|found| Some(found.name.as_str()) != own)
            .find(|found| kind == LockKind::Exclusive || found.lock.exclusive)
            .map(describe))
    }

    fn read_lock(&self, name: &str) -> Result<Lock> {
        let bytes = self.get_verified(ObjectKind::Lock, name, MAX_LOCK_LEN)?;
        Lock::open(&bytes, &self.index_sealer)
            .map_err(|e| super::open_error(object_name(ObjectKind::Lock, name), e))
    }

    /// Removes stale locks (those [`Repository::lock`] would also
    /// remove), or with `all`, every lock. Returns how many were removed.
    pub fn remove_locks(&self, all: bool) -> Result<usize> {
        if !all {
            return Ok(self.live_locks()?.1);
        }
        let names = self
            .backend
            .list(ObjectKind::Lock)
            .map_err(|e| Error::storage(ObjectKind::Lock, "", e))?;
        let mut removed = 0;
        for name in names {
            match self.backend.delete(ObjectKind::Lock, &name) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::storage(ObjectKind::Lock, &name, e)),
            }
        }
        Ok(removed)
    }
}

fn duration_ns(duration: Duration) -> i64 {
    i64::try_from(duration.as_nanos()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests;
