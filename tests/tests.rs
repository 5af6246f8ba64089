//! Black-box tests: each runs the `cairn` binary the way a user does, in a
//! fresh temporary directory, with every `CAIRN_*` variable of the calling
//! environment removed.

mod garage;
mod util;

mod browse;
mod browser;
mod check;
mod cli;
mod compat;
mod copy;
mod damage;
mod databases;
mod excludes;
mod explore;
mod failures;
mod fidelity;
mod forget;
mod integrity;
mod keys;
mod kill;
mod locks;
mod operate;
mod overwrite;
mod prune;
mod remote;
mod repair;
mod rotate;
mod safety;
mod schedule;
mod sources;
mod writeonly;
