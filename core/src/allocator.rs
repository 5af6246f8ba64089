//! How the process hands memory back to the system.
//!
//! cairn allocates packs whole (16 MiB by default: assembled on backup,
//! fetched from object storage on restore) and frees them moments later.
//! glibc serves such large blocks by mapping them, but after the first
//! free it raises its threshold and serves later ones from its heaps,
//! where freed packs stay resident: a restore from object storage kept
//! about a third more memory than it used. A fixed threshold keeps every
//! large block mapped and returned to the system when freed.

/// Blocks at least this large are always mapped (and unmapped on free).
const MAPPED_FROM: i32 = 4 << 20;

/// Fixes the allocator's threshold for mapped blocks; call once, before
/// the work starts. Elsewhere than on glibc it does nothing.
pub fn return_large_blocks_when_freed() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes a setting of the allocator; it is
    // called before any thread is started.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MAPPED_FROM);
    }
}
