//! Locks between two handles on one repository, on a fake clock and
//! process table: conflicts, waiting, staleness, refresh and unlock.

use super::*;
use crate::backend::MemoryBackend;
use crate::testing::memory_repository_on;
use std::sync::atomic::{AtomicI64, Ordering};

/// A clock that moves only when told (or when "sleeping"), on a host
/// whose live processes are listed.
struct FakeHost {
    now: AtomicI64,
    hostname: Mutex<String>,
    namespace: Mutex<String>,
    pid: u32,
    alive: Mutex<Vec<u32>>,
}

impl FakeHost {
    fn new(pid: u32) -> Arc<FakeHost> {
        Arc::new(FakeHost {
            now: AtomicI64::new(1_700_000_000_000_000_000),
            hostname: Mutex::new("here".into()),
            namespace: Mutex::new("pid:[1]".into()),
            pid,
            alive: Mutex::new(vec![1, 2, 3]),
        })
    }

    fn advance(&self, by: Duration) {
        self.now.fetch_add(duration_ns(by), Ordering::SeqCst);
    }
}

impl LockHost for FakeHost {
    fn now_ns(&self) -> i64 {
        self.now.load(Ordering::SeqCst)
    }
    fn sleep(&self, duration: Duration) {
        self.advance(duration);
    }
    fn hostname(&self) -> String {
        self.hostname.lock().unwrap().clone()
    }
    fn host_id(&self) -> String {
        format!(
            "machine-of-{} {}",
            self.hostname(),
            self.namespace.lock().unwrap()
        )
    }
    fn username(&self) -> String {
        "me".into()
    }
    fn pid(&self) -> u32 {
        self.pid
    }
    fn is_alive(&self, pid: u32) -> bool {
        self.alive.lock().unwrap().contains(&pid)
    }
}

/// Two handles on one repository, as two processes of one host.
fn two_processes() -> (
    Vec<tempfile::TempDir>,
    Repository,
    Repository,
    Arc<FakeHost>,
    Arc<FakeHost>,
) {
    let backend = MemoryBackend::default();
    let (cache_a, mut a) = memory_repository_on(&backend);
    let cache_b = tempfile::tempdir().unwrap();
    let mut b = Repository::open(Box::new(backend), b"pw", cache_b.path()).unwrap();
    let (host_a, host_b) = (FakeHost::new(1), FakeHost::new(2));
    a.set_lock_host(host_a.clone());
    b.set_lock_host(host_b.clone());
    (vec![cache_a, cache_b], a, b, host_a, host_b)
}

fn lock_count(repository: &Repository) -> usize {
    repository.backend.list(ObjectKind::Lock).unwrap().len()
}

#[test]
fn shared_locks_coexist_and_an_exclusive_one_excludes_them() {
    let (_caches, a, b, _, _) = two_processes();
    let first = a.lock(LockKind::Shared, "backup", Duration::ZERO).unwrap();
    let second = b.lock(LockKind::Shared, "restore", Duration::ZERO).unwrap();
    assert_eq!(lock_count(&a), 2);
    let refused = b.lock(LockKind::Exclusive, "forget", Duration::ZERO);
    let Err(Error::Locked { holder }) = refused else {
        panic!("expected Locked")
    };
    assert!(
        holder.contains("a shared lock held by backup (pid 1 on here, user me)")
            || holder.contains("a shared lock held by restore (pid 2 on here, user me)"),
        "{holder}"
    );
    assert_eq!(lock_count(&a), 2, "the refused lock left nothing behind");
    drop(first);
    drop(second);
    assert_eq!(lock_count(&a), 0, "released locks are deleted");
    let exclusive = b
        .lock(LockKind::Exclusive, "forget", Duration::ZERO)
        .unwrap();
    assert!(matches!(
        a.lock(LockKind::Shared, "backup", Duration::ZERO),
        Err(Error::Locked { .. })
    ));
    drop(exclusive);
    a.lock(LockKind::Shared, "backup", Duration::ZERO).unwrap();
}

#[test]
fn waiting_for_a_lock_gives_up_after_the_retry_time_without_sleeping() {
    let (_caches, a, b, _, host_b) = two_processes();
    let _held = a
        .lock(LockKind::Exclusive, "forget", Duration::ZERO)
        .unwrap();
    let started = host_b.now_ns();
    let refused = b.lock(LockKind::Shared, "backup", Duration::from_secs(60));
    assert!(matches!(refused, Err(Error::Locked { .. })));
    let waited = host_b.now_ns() - started;
    assert!(
        (duration_ns(Duration::from_secs(60))..duration_ns(Duration::from_secs(66)))
            .contains(&waited),
        "waited {waited} ns"
    );
}

#[test]
fn a_lock_whose_process_is_gone_or_that_was_not_refreshed_is_stale() {
    let (_caches, a, b, host_a, host_b) = two_processes();
    let held = a
        .lock(LockKind::Exclusive, "forget", Duration::ZERO)
        .unwrap();
    // Process 1 dies (the lock object stays, as after a crash).
    std::mem::forget(held);
    host_b.alive.lock().unwrap().retain(|&p| p != 1);
    let taken = b
        .lock(LockKind::Exclusive, "forget", Duration::ZERO)
        .unwrap();
    let notices = b.take_notices();
    assert!(
        notices
            .iter()
            .any(|n| n.contains("stale lock") && n.contains("process is gone")),
        "{notices:?}"
    );
    assert_eq!(lock_count(&b), 1);
    drop(taken);

    // A lock of another host is stale once not refreshed for 30 min.
    *host_a.hostname.lock().unwrap() = "there".into();
    let held = a.lock(LockKind::Shared, "backup", Duration::ZERO).unwrap();
    host_a.advance(Duration::from_secs(25 * 60));
    held.refresh().unwrap();
    host_b.advance(Duration::from_secs(50 * 60));
    assert!(
        matches!(
            b.lock(LockKind::Exclusive, "forget", Duration::ZERO),
            Err(Error::Locked { .. })
        ),
        "refreshed 25 minutes into a 50-minute wait: still live"
    );
    std::mem::forget(held);
    host_b.advance(Duration::from_secs(31 * 60));
    let _taken = b
        .lock(LockKind::Exclusive, "forget", Duration::ZERO)
        .unwrap();
    assert!(b.take_notices().iter().any(|n| n.contains("not refreshed")));
}

#[test]
fn a_container_sharing_the_host_name_never_judges_anothers_pid() {
    let (_caches, a, b, host_a, host_b) = two_processes();
    // Same host name, another pid namespace (a container, say).
    *host_a.namespace.lock().unwrap() = "pid:[2]".into();
    let _held = a
        .lock(LockKind::Exclusive, "forget", Duration::ZERO)
        .unwrap();
    // Pid 1 does not exist in b's namespace: that proves nothing.
    host_b.alive.lock().unwrap().retain(|&p| p != 1);
    assert!(matches!(
        b.lock(LockKind::Exclusive, "forget", Duration::ZERO),
        Err(Error::Locked { .. })
    ));
    assert_eq!(lock_count(&a), 1);
}

#[test]
fn refreshing_replaces_the_object_and_unlock_removes_what_it_should() {
    let (_caches, a, b, _, host_b) = two_processes();
    let held = a.lock(LockKind::Shared, "backup", Duration::ZERO).unwrap();
    let before = held.object();
    held.refresh().unwrap();
    assert_ne!(held.object(), before);
    assert_eq!(lock_count(&a), 1, "the old object is gone");
    assert_eq!(
        b.remove_locks(false).unwrap(),
        0,
        "a live lock is not stale"
    );
    host_b.advance(STALE_AFTER + Duration::from_secs(1));
    assert_eq!(b.remove_locks(false).unwrap(), 1);
    let _again = a.lock(LockKind::Shared, "backup", Duration::ZERO).unwrap();
    assert_eq!(b.remove_locks(true).unwrap(), 1);
    assert_eq!(lock_count(&a), 0);
    drop(held);
}

#[test]
fn a_lock_that_does_not_open_is_reported_and_not_honoured() {
    let (_caches, a, b, _, _) = two_processes();
    let junk = b"not a lock";
    let name = Id::of_bytes(junk).to_hex();
    a.backend.put(ObjectKind::Lock, &name, junk).unwrap();
    let _held = b
        .lock(LockKind::Exclusive, "forget", Duration::ZERO)
        .unwrap();
    assert!(b.take_notices().iter().any(|n| n.contains(&name)));
    assert_eq!(lock_count(&a), 2, "left for unlock --remove-all");
}

/// A store whose lock deletions fail the first `failures` times.
struct FailingLockDeletes {
    inner: MemoryBackend,
    failures: AtomicI64,
}

impl Backend for FailingLockDeletes {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn get(&self, kind: ObjectKind, name: &str) -> std::io::Result<Vec<u8>> {
        self.inner.get(kind, name)
    }
    fn get_range(
        &self,
        kind: ObjectKind,
        name: &str,
        offset: u64,
        len: u64,
    ) -> std::io::Result<Vec<u8>> {
        self.inner.get_range(kind, name, offset, len)
    }
    fn size(&self, kind: ObjectKind, name: &str) -> std::io::Result<u64> {
        self.inner.size(kind, name)
    }
    fn put(&self, kind: ObjectKind, name: &str, bytes: &[u8]) -> std::io::Result<()> {
        self.inner.put(kind, name, bytes)
    }
    fn create_writer(
        &self,
        kind: ObjectKind,
    ) -> std::io::Result<Box<dyn crate::backend::ObjectWriter>> {
        self.inner.create_writer(kind)
    }
    fn list(&self, kind: ObjectKind) -> std::io::Result<Vec<String>> {
        self.inner.list(kind)
    }
    fn delete(&self, kind: ObjectKind, name: &str) -> std::io::Result<()> {
        if kind == ObjectKind::Lock && self.failures.fetch_sub(1, Ordering::SeqCst) > 0 {
            return Err(std::io::Error::other("store busy"));
        }
        self.inner.delete(kind, name)
    }
    fn create(&self) -> std::io::Result<()> {
        self.inner.create()
    }
}

/// A repository on a store whose lock deletions fail `failures` times.
fn with_failing_lock_deletes(failures: i64) -> (tempfile::TempDir, Repository, MemoryBackend) {
    let backend = MemoryBackend::default();
    let (cache, _) = memory_repository_on(&backend);
    let failing = FailingLockDeletes {
        inner: backend.clone(),
        failures: AtomicI64::new(failures),
    };
    let mut repository = Repository::open(Box::new(failing), b"pw", cache.path()).unwrap();
    repository.set_lock_host(FakeHost::new(1));
    (cache, repository, backend)
}

#[test]
fn a_release_that_fails_once_is_tried_again() {
    let (_cache, repository, backend) = with_failing_lock_deletes(1);
    let held = repository
        .lock(LockKind::Shared, "backup", Duration::ZERO)
        .unwrap();
    drop(held);
    assert!(backend.list(ObjectKind::Lock).unwrap().is_empty());
}

#[test]
fn a_lock_that_cannot_be_removed_is_named_for_the_caller() {
    let (_cache, repository, backend) = with_failing_lock_deletes(i64::MAX);
    let held = repository
        .lock(LockKind::Shared, "backup", Duration::ZERO)
        .unwrap();
    let object = held.object();
    drop(held);
    assert_eq!(backend.list(ObjectKind::Lock).unwrap().len(), 1);
    let unremoved = take_unremoved_locks();
    assert!(
        unremoved
            .iter()
            .any(|l| l.starts_with(&object) && l.contains("store busy")),
        "{unremoved:?}"
    );
}
