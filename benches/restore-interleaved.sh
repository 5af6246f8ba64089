#!/usr/bin/env bash
# Restores alternate between tools, nothing deleted in between, so that
# ext4's recently-deleted inode scan hits no tool. Needs restic and a
# release build (cargo build --release -p cairn-cli).
set -euo pipefail
W=/tmp/restore-ab; rm -rf $W; mkdir -p $W
T=$(rustc --print sysroot)
B=$(cd "$(dirname "$0")/.." && pwd)/target/release/cairn
export CAIRN_PASSWORD=b RESTIC_PASSWORD=b BORG_PASSPHRASE=b CAIRN_CACHE_DIR=$W/cc
$B --repo $W/cairn init -q; $B --repo $W/cairn backup -q $T
restic -q init --repo $W/restic --repository-version 2 >/dev/null; restic -q --repo $W/restic --cache-dir $W/rc backup $T >/dev/null
echo "waiting 330 s so that earlier deletions are out of ext4's window" >&2; sleep 330
for i in 1 2 3; do
  /usr/bin/time -f "cairn restore %e s %M KB" $B --repo $W/cairn restore -q latest --target $W/c$i
  /usr/bin/time -f "restic restore %e s %M KB" restic -q --repo $W/restic --cache-dir $W/rc restore latest --target $W/r$i >/dev/null
done
