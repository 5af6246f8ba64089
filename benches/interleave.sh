#!/usr/bin/env bash
# Two builds of cairn timed alternately on the same corpus, so that a slow
# spell of the machine hits both: first backup, unchanged backup and
# restore, each on a fresh repository, after dropping the page cache and
# reading the step's input back (as compare.sh does). Root is needed to
# drop the cache.
#
#   OLD=/tmp/cairn-old NEW=target/release/cairn benches/interleave.sh
#   ROUNDS=5 STEPS=first benches/interleave.sh   # first backups only
#   COLD=1 benches/interleave.sh   # inputs not read back: from the disk,
#                                  # as a nightly backup meets them
#
# Prints one line per round and build: seconds and peak RSS in KB.
set -euo pipefail
OLD=${OLD:?build of the old commit}
NEW=${NEW:-target/release/cairn}
ROUNDS=${ROUNDS:-3}
STEPS=${STEPS:-all}
CORPUS=${CORPUS:-$(rustc --print sysroot)}
WORK=${WORK:-/tmp/cairn-interleave}
export CAIRN_PASSWORD=bench

prepare() {
    sync
    echo 3 >/proc/sys/vm/drop_caches
    [ -n "${COLD:-}" ] && return
    find "$@" -type f -print0 | xargs -0 cat >/dev/null 2>&1 || true
}
timed() { /usr/bin/time -f "%e %M" "$@" 2>&1 >/dev/null | tail -1; }

for round in $(seq "$ROUNDS"); do
    for build in old new; do
        if [ "$build" = old ]; then bin=$OLD; else bin=$NEW; fi
        rm -rf "$WORK" && mkdir -p "$WORK"
        export CAIRN_REPO=$WORK/repo CAIRN_CACHE_DIR=$WORK/cache
        "$bin" init >/dev/null
        prepare "$CORPUS"
        line="$round $build first=[$(timed "$bin" backup -q "$CORPUS")]"
        if [ "$STEPS" = all ]; then
            prepare "$CORPUS"
            line+=" unchanged=[$(timed "$bin" backup -q "$CORPUS")]"
            prepare "$WORK/repo"
            line+=" restore=[$(timed "$bin" restore -q latest --target "$WORK/r")]"
        fi
        echo "$line"
    done
done
rm -rf "$WORK"
