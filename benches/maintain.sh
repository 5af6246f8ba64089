#!/usr/bin/env bash
# forget + prune, check and check --read-data, cairn beside restic, on one
# 20-version history: 200 files of 256 KiB of random bytes (50 MiB), each
# version rewriting 20 of them (10%). Each round builds both histories
# afresh from the same files, forgets the older half (--keep-last 10),
# prunes (both at their default of 5% unused), then checks. Page cache
# dropped before each step. Prints "round tool step seconds peak-RSS-KB"
# and the repository sizes before and after.
#
#   benches/maintain.sh            # 3 rounds
#   ROUNDS=1 benches/maintain.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
W=${WORK:-/tmp/cairn-maintain}
C=${CAIRN:-$PWD/target/release/cairn}
cargo build --release -q -p cairn-cli
export CAIRN_PASSWORD=bench RESTIC_PASSWORD=bench
prepare() { sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true; }
t() { /usr/bin/time -f "%e %M" "$@" 2>&1 >/dev/null | tail -1; }
for round in $(seq 1 "$ROUNDS"); do
    rm -rf "$W"; mkdir -p "$W/src"
    export CAIRN_REPO=$W/cairn CAIRN_CACHE_DIR=$W/cache RESTIC_CACHE_DIR=$W/restic-cache
    $C init -q
    restic init -r "$W/restic" -q >/dev/null
    for n in $(seq 0 199); do head -c 262144 /dev/urandom >"$W/src/f$n"; done
    for version in $(seq 1 20); do
        if [ "$version" -gt 1 ]; then
            for n in $(shuf -i 0-199 -n 20); do head -c 262144 /dev/urandom >"$W/src/f$n"; done
        fi
        $C backup -q "$W/src"
        restic -r "$W/restic" backup -q "$W/src" >/dev/null
    done
    [ "$round" = 1 ] && du -sm "$W/cairn" "$W/restic" | sed 's/^/before /'
    prepare; echo "$round cairn forget $(t $C forget -q --keep-last 10)"
    prepare; echo "$round restic forget $(t restic -r "$W/restic" forget -q --keep-last 10)"
    prepare; echo "$round cairn prune $(t $C prune -q)"
    prepare; echo "$round restic prune $(t restic -r "$W/restic" prune -q)"
    [ "$round" = 1 ] && du -sm "$W/cairn" "$W/restic" | sed 's/^/after /'
    prepare; echo "$round cairn check $(t $C check -q)"
    prepare; echo "$round restic check $(t restic -r "$W/restic" check -q)"
    prepare; echo "$round cairn read-data $(t $C check -q --read-data)"
    prepare; echo "$round restic read-data $(t restic -r "$W/restic" check -q --read-data)"
done
