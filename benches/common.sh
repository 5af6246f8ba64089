# Helpers the side-by-side benchmarks share (compare.sh, s3.sh): sourced,
# not run.

log() { printf '%s\n' "$*" >&2; }

# timed OUTVAR CMD... : runs CMD, sets OUTVAR to "seconds peak_kib"
timed() {
    local out=$1
    shift
    local stats
    stats=$(mktemp)
    /usr/bin/time -f '%e %M' -o "$stats" bash -c '"$@"' _ "$@"
    printf -v "$out" '%s' "$(cat "$stats")"
    rm -f "$stats"
}

# prepare PATH...: the same memory state before every timed step. The page
# cache is dropped (when allowed), then PATHs are read back into it, so each
# step starts warm on what it reads and with free memory to write into. On
# a VM, writes into never-used memory cost far more than into memory the
# guest has used before, and a growing page cache made later tools pay for
# earlier ones' restores.
prepare() {
    sync
    if [ -w /proc/sys/vm/drop_caches ]; then
        echo 3 >/proc/sys/vm/drop_caches
    fi
    local path
    for path in "$@"; do
        find "$path" -type f -print0 | xargs -0 cat >/dev/null 2>&1 || true
    done
}

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# list_median "V1 V2 ...": the median of a space-separated list.
list_median() {
    local values
    read -r -a values <<<"$1"
    printf '%s\n' "${values[@]}" | median
}

# stored_bytes DIR: the bytes a repository stores, as the sum of its files'
# sizes: what an object store holds and bills. `du -sb` would add the size
# of each directory entry (4 KiB on ext4 for each of cairn's `data/xx`
# fan-out directories), which is file system bookkeeping, not stored data.
stored_bytes() { find "$1" -type f -printf '%s\n' | awk '{s += $1} END {printf "%d", s}'; }

# list_range "V1 V2 ...": "min–max" of a space-separated list.
list_range() {
    local values
    read -r -a values <<<"$1"
    printf '%s\n' "${values[@]}" | sort -g | awk 'NR == 1 {lo = $1} {hi = $1} END {printf "%s–%s", lo, hi}'
}
