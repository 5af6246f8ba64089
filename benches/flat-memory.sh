#!/usr/bin/env bash
# Does cairn's memory stay flat as the repository grows? Grows one
# repository to about ten million blobs and, at checkpoints along the way,
# measures the peak RSS of everyday commands against it.
#
#   benches/flat-memory.sh                 # checkpoints at 0, 1, 4 and 12 parts
#   CHECKPOINTS="1 12" benches/flat-memory.sh
#
# The repository uses the smallest chunks FastCDC allows (64 / 256 / 1024
# bytes), so that each 256 MiB part of random data adds some 870,000 blobs:
# twelve parts make about 10.4 million, the index of a 2.5 TiB repository at
# the default chunk sizes. Growing it takes about 5 minutes and 10 GB of
# disk (repository plus index cache); WORK is kept between runs, so later
# runs only add the parts that are missing.
#
# At each checkpoint, on a fresh sample tree of 2,000 small files (8 MiB):
#   backup     first backup of the sample into the large repository
#   unchanged  the same backup again (parent lookup, nothing read)
#   restore    restore of the sample from the latest snapshot
#   snapshots  snapshots --json
#   check      check (every trailer, every segment, every tree)
#   prune      forget the sample's two snapshots, then prune: marks every
#              snapshot, plans over every segment, deletes the sample's
#              packs and rewrites the index (its new segments list every
#              pack kept)
#   reopen     snapshots --json after the prune: the cache notices that
#              segments were replaced and rebuilds itself from the index
# Each cell is "peak RSS MB / seconds". Prints a Markdown table on standard
# output; progress on standard error.
set -euo pipefail
cd "$(dirname "$0")/.."

WORK=${WORK:-/tmp/cairn-flat}
CHECKPOINTS=${CHECKPOINTS:-0 1 4 12}
CAIRN=$PWD/target/release/cairn
export CAIRN_PASSWORD=${CAIRN_PASSWORD:-bench} CAIRN_CACHE_DIR=$WORK/cache
REPO=$WORK/repo

log() { printf '%s\n' "$*" >&2; }

cargo build --release -q -p cairn-cli
mkdir -p "$WORK"
if [ ! -f "$REPO/config" ]; then
    "$CAIRN" --repo "$REPO" init -q --chunk-min 64 --chunk-avg 256 --chunk-max 1024
fi

# parts: how many 256 MiB parts the repository holds.
parts() {
    "$CAIRN" --repo "$REPO" snapshots --json |
        python3 -c 'import json,sys; print(sum(1 for s in json.load(sys.stdin) if s["paths"][0].startswith("/part")))'
}

blobs() {
    "$CAIRN" --repo "$REPO" snapshots --json |
        python3 -c 'import json,sys; print(sum(s["summary"]["blobs_added"] for s in json.load(sys.stdin)))'
}

# measure CMD...: runs CMD quietly, prints "peak RSS in MB / seconds".
measure() {
    local stats
    stats=$(mktemp)
    /usr/bin/time -f '%M %e' -o "$stats" "$@" >/dev/null
    awk '{printf "%.0f / %.2f", $1 / 1024, $2}' "$stats"
    rm -f "$stats"
}

# A fresh tree of 2,000 files of 4 KiB of random bytes.
make_sample() {
    rm -rf "$1"
    mkdir -p "$1"
    python3 - "$1" <<'EOF'
import os, sys
root = sys.argv[1]
for d in range(20):
    os.mkdir(os.path.join(root, f"dir{d:02}"))
    for f in range(100):
        with open(os.path.join(root, f"dir{d:02}", f"file{f:03}"), "wb") as out:
            out.write(os.urandom(4096))
EOF
}

echo "| parts | blobs in repository | backup | unchanged backup | restore | snapshots | check | prune | reopen |"
echo "|---|---|---|---|---|---|---|---|---|"
for checkpoint in $CHECKPOINTS; do
    have=$(parts)
    while [ "$have" -lt "$checkpoint" ]; do
        log "adding part $have"
        "$CAIRN" --repo "$REPO" backup -q --stdin-from-command --stdin-filename "part$have" \
            -- head -c 268435456 /dev/urandom
        have=$((have + 1))
    done
    count=$(blobs)
    sample=$WORK/sample-$checkpoint
    make_sample "$sample"
    backup=$(measure "$CAIRN" --repo "$REPO" backup -q "$sample")
    unchanged=$(measure "$CAIRN" --repo "$REPO" backup -q "$sample")
    rm -rf "$WORK/restored"
    restore=$(measure "$CAIRN" --repo "$REPO" restore -q latest --target "$WORK/restored")
    diff -r "$sample" "$WORK/restored$sample" >&2
    listing=$(measure "$CAIRN" --repo "$REPO" snapshots --json)
    checked=$(measure "$CAIRN" --repo "$REPO" check -q)
    sample_snapshots=$("$CAIRN" --repo "$REPO" snapshots --json |
        python3 -c 'import json,sys; print(" ".join(s["id"] for s in json.load(sys.stdin) if s["paths"][0].startswith(sys.argv[1])))' "$sample")
    # shellcheck disable=SC2086
    "$CAIRN" --repo "$REPO" forget -q $sample_snapshots
    pruned=$(measure "$CAIRN" --repo "$REPO" prune -q)
    reopened=$(measure "$CAIRN" --repo "$REPO" snapshots --json)
    log "  $checkpoint parts, $count blobs: backup $backup, unchanged $unchanged, restore $restore, snapshots $listing, check $checked, prune $pruned, reopen $reopened"
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$checkpoint" "$count" \
        "$backup" "$unchanged" "$restore" "$listing" "$checked" "$pruned" "$reopened"
    rm -rf "$sample" "$WORK/restored"
done
