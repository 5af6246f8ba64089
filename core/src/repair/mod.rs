//! repair: rebuild what can be rebuilt from what survives (SPEC.md §24).
//!
//! `repair index` rewrites the index from the pack trailers; `repair
//! snapshots` rewrites snapshots whose data is lost so that what survives
//! stays restorable, and says which files lost what.

mod index;
mod snapshots;

pub use index::{repair_index, IndexRepair};
pub use snapshots::{
    repair_snapshots, Damage, DamagedPath, RepairedSnapshot, SnapshotRepairOptions, SnapshotsRepair,
};
