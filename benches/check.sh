#!/usr/bin/env bash
# cairn check and check --read-data against restic on corpus 1 (the Rust
# toolchain), three rounds, page cache dropped and the repository read back
# before each step. Prints "round tool step seconds peak-RSS-KB".
set -euo pipefail
CORPUS=$(rustc --print sysroot)
W=/tmp/bc; rm -rf $W; mkdir -p $W
export CAIRN_PASSWORD=bench RESTIC_PASSWORD=bench
export CAIRN_REPO=$W/cairn CAIRN_CACHE_DIR=$W/cache
C=${CAIRN:-$PWD/target/release/cairn}
$C init >/dev/null; $C backup -q "$CORPUS"
restic init -r $W/restic -q >/dev/null; restic -r $W/restic backup -q "$CORPUS" >/dev/null
prepare() { sync; echo 3 >/proc/sys/vm/drop_caches; find "$@" -type f -print0 | xargs -0 cat >/dev/null 2>&1 || true; }
t() { /usr/bin/time -f "%e %M" "$@" 2>&1 >/dev/null | tail -1; }
for round in 1 2 3; do
  prepare $W/cairn; echo "$round cairn check $(t $C check -q)"
  prepare $W/restic; echo "$round restic check $(t restic -r $W/restic check -q)"
  prepare $W/cairn; echo "$round cairn read-data $(t $C check -q --read-data)"
  prepare $W/restic; echo "$round restic read-data $(t restic -r $W/restic check -q --read-data)"
done
du -sm $W/cairn $W/restic
