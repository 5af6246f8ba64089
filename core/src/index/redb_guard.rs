//! Calls into redb that cannot take the process down: a damaged file can
//! make redb panic as well as fail, and the panic becomes an error the
//! repository answers by rebuilding the cache.

thread_local! {
    /// Set while this thread is inside redb, so that the panic hook keeps
    /// quiet about a panic that
    /// [`IndexCache::guarded`](super::IndexCache::guarded) turns into an
    /// error.
    static IN_REDB: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Installs (once) a panic hook that stays silent for panics inside redb
/// calls and hands every other panic to the hook that was there before.
fn quiet_redb_panics() {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !IN_REDB.with(std::cell::Cell::get) {
                previous(info);
            }
        }));
    });
}

/// Runs `op` on redb, turning a panic into `Err` with its message.
pub(crate) fn catch_redb<T>(op: impl FnOnce() -> T) -> std::result::Result<T, String> {
    quiet_redb_panics();
    let was_inside = IN_REDB.with(|inside| inside.replace(true));
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(op));
    IN_REDB.with(|inside| inside.set(was_inside));
    outcome.map_err(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        format!("the database is damaged (redb: {message})")
    })
}
