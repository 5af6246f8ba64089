#!/usr/bin/env bash
# Browsing a history, cairn beside restic: 20 snapshots of a 50,000-file
# tree (25 × 10 directories of 200 files of 1 to 4 KiB text), each version
# changing 5 files. On the same contents in both repositories, times and
# peak RSS of: ls of one directory, cat of one small file (restic dump),
# diff of the last two snapshots, find of one path across all snapshots
# (anchored, and by name), and dump of one directory as tar. Page cache
# warm (browsing is interactive: the repository was just read). Prints
# "tool step median-seconds median-peak-RSS-KB" lines, medians of RUNS.
#
#   benches/browse.sh            # 5 runs of each step
#   RUNS=3 benches/browse.sh
#   REUSE=1 benches/browse.sh    # time again on the repositories left by a run
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}
W=${WORK:-/tmp/cairn-browse}
C=${CAIRN:-$PWD/target/release/cairn}
cargo build --release -q -p cairn-cli
export CAIRN_PASSWORD=bench RESTIC_PASSWORD=bench
export CAIRN_REPO=$W/cairn CAIRN_CACHE_DIR=$W/cache RESTIC_CACHE_DIR=$W/restic-cache
SRC=$W/src
if [ -z "${REUSE:-}" ]; then
rm -rf "$W"; mkdir -p "$SRC"
python3 - "$SRC" <<'PY'
import os, random, sys
root = sys.argv[1]
rng = random.Random(7)
words = [''.join(rng.choice('abcdefghijklmnopqrstuvwxyz') for _ in range(rng.randint(2, 9))) for _ in range(5000)]
for d in range(25):
    for s in range(10):
        path = os.path.join(root, f"d{d:02}", f"s{s}")
        os.makedirs(path)
        for f in range(200):
            n = rng.randint(150, 600)
            with open(os.path.join(path, f"f{f:05}"), "w") as out:
                out.write(' '.join(rng.choice(words) for _ in range(n)))
PY
$C init -q
restic init -r "$W/restic" -q >/dev/null
for version in $(seq 1 20); do
    if [ "$version" -gt 1 ]; then
        for n in $(seq 1 5); do
            f=$(printf '%s/d%02d/s%d/f%05d' "$SRC" $((RANDOM % 25)) $((RANDOM % 10)) $((RANDOM % 200)))
            echo "version $version" >>"$f"
        done
    fi
    $C backup -q "$SRC"
    restic -r "$W/restic" backup -q "$SRC" >/dev/null
done
fi
du -sm "$W/cairn" "$W/restic" >&2
mapfile -t RIDS < <(restic -r "$W/restic" snapshots --json | python3 -c 'import json,sys; print("\n".join(s["id"] for s in json.load(sys.stdin)))')
DIR=$SRC/d07/s3
FILE=$DIR/f00042
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# step NAME TOOL COMMAND...: RUNS timings, medians of seconds and KB.
step() {
    local name=$1 tool=$2; shift 2
    local times=() rss=()
    for _ in $(seq 1 "$RUNS"); do
        /usr/bin/time -o "$W/time" -f "%e %M" "$@" >/dev/null 2>"$W/stderr" ||
            { cat "$W/stderr" >&2; exit 1; }
        local out
        out=$(tail -1 "$W/time")
        times+=("${out% *}"); rss+=("${out#* }")
    done
    echo "$tool $name $(printf '%s\n' "${times[@]}" | median) $(printf '%s\n' "${rss[@]}" | median)"
}
R=(restic -r "$W/restic" --no-lock -q)
step ls cairn $C ls --no-lock "latest:$DIR"
step ls restic "${R[@]}" ls latest "$DIR"
step cat cairn $C cat --no-lock "latest:$FILE"
step cat restic "${R[@]}" dump latest "$FILE"
step diff cairn $C diff --no-lock latest~1 latest
step diff restic "${R[@]}" diff "${RIDS[18]}" "${RIDS[19]}"
step find-path cairn $C find --no-lock "$FILE"
step find-path restic "${R[@]}" find "$FILE"
step find-name cairn $C find --no-lock f00042
step find-name restic "${R[@]}" find f00042
step dump-dir cairn $C dump --no-lock "latest:$SRC/d07"
step dump-dir restic "${R[@]}" dump latest "$SRC/d07"
