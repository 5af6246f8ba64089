#!/usr/bin/env bash
# Side-by-side benchmark of cairn, restic and borg (and rustic when it is
# installed), run one after another on the same data on this machine.
#
#   benches/compare.sh            # everything, 3 runs of each timing
#   RUNS=1 benches/compare.sh     # quicker, noisier
#   ONLY="cairn restic" benches/compare.sh   # some tools only
#   CORPORA=1 benches/compare.sh  # only corpus 1 (or 2)
#
# Corpus 1: the Rust toolchain directory (real files, ~1.3 GB). First the
# bare pipeline (benches/bare.rs: cairn's content stages and nothing else,
# the machine's limit), then for each tool: first backup (time, throughput, peak RSS), a second backup with
# nothing changed, a full restore, and the repository size. Medians of
# RUNS interleaved rounds, each with fresh repositories. The row
# "cairn-kdf1" is cairn with a 1 MiB key derivation (init --kdf-memory 1):
# its peak RSS is the command's own, without the 64 MiB that the default
# Argon2id cost holds for a moment as the repository opens.
# Corpus 2: twenty successive releases of pip's source (sdists from PyPI),
# unpacked one after another into one evolving directory (rsync, so
# unchanged files keep their metadata) and backed up after each: total
# time and final repository size (the sum of its files' sizes), medians of
# RUNS rounds with the range of sizes beside them.
# All tools use zstd at their default level. Before every timed step the
# page cache is dropped and what the step reads is read back (prepare).
# cairn also runs a second time at a faster level (the row "cairn@1"; set
# CAIRN_FAST_LEVEL to change it), to document what speed costs in size.
# Prints a Markdown report on standard output; progress on standard error.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/common.sh

RUNS=${RUNS:-3}
WORK=${WORK:-/tmp/cairn-bench}
CORPUS=${CORPUS:-$(rustc --print sysroot)}
PIP_VERSIONS=(22.0 22.0.1 22.0.2 22.0.3 22.0.4 22.1 22.1.1 22.1.2 22.2 22.2.1
              22.2.2 22.3 22.3.1 23.0 23.0.1 23.1 23.1.1 23.1.2 23.2 23.2.1)


need() {
    local missing=()
    command -v restic >/dev/null || missing+=(restic)
    command -v borg >/dev/null || missing+=(borgbackup)
    command -v rsync >/dev/null || missing+=(rsync)
    [ -x /usr/bin/time ] || missing+=(time)
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing ${missing[*]}"
        apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
    cargo build --release -q -p cairn-cli
    cargo build --release -q -p cairn-benches --bin bare-pipeline
}

# CAIRN=path runs another build of cairn (say, the commit before a change).
CAIRN=${CAIRN:-$PWD/target/release/cairn}
BARE=$PWD/target/release/bare-pipeline
if [ -n "${ONLY:-}" ]; then
    read -r -a TOOLS <<<"$ONLY"   # e.g. ONLY="cairn restic"
else
    TOOLS=(cairn cairn-kdf1 "cairn@${CAIRN_FAST_LEVEL:-1}" restic borg)
    command -v rustic >/dev/null && TOOLS+=(rustic)
fi

export CAIRN_PASSWORD=bench RESTIC_PASSWORD=bench BORG_PASSPHRASE=bench RUSTIC_PASSWORD=bench
export BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes BORG_RELOCATED_REPO_ACCESS_IS_OK=yes

# tool_init TOOL REPO
tool_init() {
    case $1 in
        cairn) CAIRN_CACHE_DIR=$2.cache "$CAIRN" --repo "$2" init -q ;;
        cairn@*) CAIRN_CACHE_DIR=$2.cache "$CAIRN" --repo "$2" init -q --compression "${1#cairn@}" ;;
        cairn-kdf1) CAIRN_CACHE_DIR=$2.cache "$CAIRN" --repo "$2" init -q --kdf-memory 1 ;;
        restic) restic -q init --repo "$2" --repository-version 2 >/dev/null ;;
        borg) borg init -e repokey-blake2 "$2" ;;
        rustic) rustic -r "$2" init >/dev/null 2>&1 ;;
    esac
}

# tool_backup TOOL REPO DIR
tool_backup() {
    case $1 in
        cairn*) CAIRN_CACHE_DIR=$2.cache "$CAIRN" --repo "$2" backup -q "$3" ;;
        restic) restic -q --repo "$2" --cache-dir "$2.cache" backup "$3" >/dev/null ;;
        borg) BORG_CACHE_DIR=$2.cache borg create --compression zstd,3 "$2::{now:%Y-%m-%dT%H:%M:%S.%f}" "$3" ;;
        rustic) rustic -r "$2" --cache-dir "$2.cache" backup "$3" >/dev/null 2>&1 ;;
    esac
}

# tool_restore TOOL REPO TARGET
tool_restore() {
    mkdir -p "$3"
    case $1 in
        cairn*) CAIRN_CACHE_DIR=$2.cache "$CAIRN" --repo "$2" restore -q latest --target "$3" ;;
        restic) restic -q --repo "$2" --cache-dir "$2.cache" restore latest --target "$3" >/dev/null ;;
        borg) (cd "$3" && BORG_CACHE_DIR=$2.cache borg extract "$2::$(BORG_CACHE_DIR=$2.cache borg list --last 1 --short "$2")") ;;
        rustic) rustic -r "$2" --cache-dir "$2.cache" restore latest "$3" >/dev/null 2>&1 ;;
    esac
}

corpus_one() {
    local corpus_mb
    corpus_mb=$(du -sb "$CORPUS" | awk '{print $1/1e6}')
    log "corpus 1: $CORPUS ($corpus_mb MB), $RUNS interleaved rounds"
    echo "### Corpus 1: $CORPUS ($(printf '%.0f' "$corpus_mb") MB, $(find "$CORPUS" -type f | wc -l) files)"
    echo
    # Rounds are interleaved: each round runs the bare pipeline (cairn's
    # content stages alone over the same files, benches/bare.rs: the
    # machine's limit) and then every tool once, so a slow stretch of the
    # machine costs every tool alike instead of whichever ran then.
    # Results per tool are space-separated lists, one value per round.
    local bare="" copies="" run tool t
    declare -A first first_rss again again_rss restore restore_rss size
    for run in $(seq "$RUNS"); do
        prepare "$CORPUS"
        t=$("$BARE" "$CORPUS" | awk '{print $4}')
        bare+=" $t"
        log "  round $run: bare pipeline $t s"
        for tool in "${TOOLS[@]}"; do
            local repo=$WORK/$tool-$run target=$WORK/$tool-$run.restore
            rm -rf "$repo" "$repo.cache"
            tool_init "$tool" "$repo"
            prepare "$CORPUS"
            timed t tool_backup "$tool" "$repo" "$CORPUS"
            first[$tool]+=" ${t% *}"; first_rss[$tool]+=" ${t#* }"
            prepare "$CORPUS" "$repo" "$repo.cache"
            timed t tool_backup "$tool" "$repo" "$CORPUS"
            again[$tool]+=" ${t% *}"; again_rss[$tool]+=" ${t#* }"
            prepare "$repo" "$repo.cache"
            timed t tool_restore "$tool" "$repo" "$target"
            restore[$tool]+=" ${t% *}"; restore_rss[$tool]+=" ${t#* }"
            size[$tool]+=" $(stored_bytes "$repo")"
            log "  round $run: $tool first ${first[$tool]##* } s, again ${again[$tool]##* } s, restore ${restore[$tool]##* } s, repo ${size[$tool]##* } bytes"
            # Restored trees are deleted only at the end: right after tens of
            # thousands of files are deleted, ext4's inode allocator
            # (recently_deleted) makes the next restore's creates crawl,
            # which would penalise whichever tool came next.
            rm -rf "$repo" "$repo.cache"
            RESTORED+=("$target")
        done
        # The floor for any restore: the file system's own cost of creating
        # this tree, with no reading, decryption or decompression at all.
        local target=$WORK/cp-$run
        prepare "$CORPUS"
        timed t cp -a "$CORPUS" "$target"
        copies+=" ${t% *}"
        RESTORED+=("$target")
    done
    local bare_s shares="" fastest_peer="" rounds=""
    bare_s=$(list_median "$bare")
    echo "| tool | first backup s | MB/s | peak RSS MB | unchanged backup s | peak RSS MB | restore s | peak RSS MB | repo MB |"
    echo "|---|---|---|---|---|---|---|---|---|"
    printf '| bare pipeline (the limit) | %s | %.0f | | | | | | |\n' "$bare_s" "$(echo "$corpus_mb / $bare_s" | bc -l)"
    for tool in "${TOOLS[@]}"; do
        local f
        f=$(list_median "${first[$tool]}")
        printf '| %s | %s | %.0f | %.0f | %s | %.0f | %s | %.0f | %s |\n' "$tool" "$f" \
            "$(echo "$corpus_mb / $f" | bc -l)" \
            "$(list_median "${first_rss[$tool]}" | awk '{print $1/1024}')" \
            "$(list_median "${again[$tool]}")" \
            "$(list_median "${again_rss[$tool]}" | awk '{print $1/1024}')" \
            "$(list_median "${restore[$tool]}")" \
            "$(list_median "${restore_rss[$tool]}" | awk '{print $1/1024}')" \
            "$(list_median "${size[$tool]}" | awk '{printf "%.1f", $1/1e6}')"
        rounds+=" $tool${first[$tool]},"
        case $tool in
            cairn*) shares+=" $tool $(echo "100 * $bare_s / $f" | bc -l | xargs printf '%.0f')%," ;;
            *) if [ -z "$fastest_peer" ] || [ "$(echo "$f < ${fastest_peer#* }" | bc -l)" = 1 ]; then
                   fastest_peer="$tool $f"
               fi ;;
        esac
    done
    log "  bare pipeline:$bare s"
    echo
    echo "Medians of $RUNS interleaved rounds; repo MB is the sum of the repository's file sizes. First backup as a share of the bare pipeline's throughput in this run:${shares%,}."
    echo
    echo "First backups per round, in s:${rounds%,}; bare pipeline:$bare."
    if [ -n "$fastest_peer" ]; then
        local ratios="" tool_f
        for tool in "${TOOLS[@]}"; do
            case $tool in cairn*)
                tool_f=$(list_median "${first[$tool]}")
                ratios+=" $tool $(echo "${fastest_peer#* } / $tool_f" | bc -l | xargs printf '%.2f')x," ;;
            esac
        done
        echo
        echo "First-backup speed against the fastest peer (${fastest_peer% *}):${ratios%,}."
    fi
    echo
    echo "Reference: \`cp -a\` of the corpus into a fresh directory on the same file system takes $(list_median "$copies") s (median of $RUNS): the floor for any restore."
    echo
}

corpus_two() {
    local sdists=$WORK/pip-sdists
    mkdir -p "$sdists"
    log "corpus 2: ${#PIP_VERSIONS[@]} releases of pip, $RUNS interleaved rounds"
    for version in "${PIP_VERSIONS[@]}"; do
        [ -f "$sdists/pip-$version.tar.gz" ] && continue
        python3 -m pip download -q --no-deps --no-binary :all: -d "$sdists" "pip==$version" >&2
    done
    # Each round gives every tool a fresh repository, so cairn's size is
    # measured under RUNS chunker seeds: the seed moves the cut points in
    # files larger than the 64 KiB minimum chunk, and so what two releases
    # share.
    local -A totals=() bytes=() peaks=()
    local round tool
    for round in $(seq "$RUNS"); do
        for tool in "${TOOLS[@]}"; do
            local repo=$WORK/$tool-versions src=$WORK/evolving total=0 peak=0 t
            rm -rf "$repo" "$repo.cache" "$src"
            mkdir -p "$src"
            tool_init "$tool" "$repo"
            for version in "${PIP_VERSIONS[@]}"; do
                local unpacked=$WORK/unpacked
                rm -rf "$unpacked" && mkdir -p "$unpacked"
                tar -xzf "$sdists/pip-$version.tar.gz" -C "$unpacked"
                rsync -a --delete "$unpacked/pip-$version/" "$src/"
                prepare "$src" "$repo" "$repo.cache"
                timed t tool_backup "$tool" "$repo" "$src"
                total=$(echo "$total + ${t% *}" | bc -l)
                [ "${t#* }" -gt "$peak" ] && peak=${t#* }
            done
            totals[$tool]+="$total "
            bytes[$tool]+="$(stored_bytes "$repo") "
            peaks[$tool]+="$peak "
            log "  round $round, $tool: $total s"
            rm -rf "$repo" "$repo.cache" "$src" "$WORK/unpacked"
        done
    done
    echo "### Corpus 2: ${#PIP_VERSIONS[@]} successive pip releases as one evolving directory"
    echo
    echo "| tool | total s for ${#PIP_VERSIONS[@]} backups | mean s per backup | max peak RSS MB | repo bytes | range of $RUNS |"
    echo "|---|---|---|---|---|---|"
    for tool in "${TOOLS[@]}"; do
        local total
        total=$(list_median "${totals[$tool]}")
        printf '| %s | %.2f | %.2f | %.0f | %s | %s |\n' "$tool" "$total" \
            "$(echo "$total / ${#PIP_VERSIONS[@]}" | bc -l)" \
            "$(echo "$(list_median "${peaks[$tool]}") / 1024" | bc -l)" \
            "$(list_median "${bytes[$tool]}")" "$(list_range "${bytes[$tool]}")"
    done
    echo
    echo "Medians of $RUNS rounds; repo bytes are the sum of the repository's file sizes."
    echo
}

RESTORED=()
cleanup() { rm -rf "${RESTORED[@]}"; }
trap cleanup EXIT

export CAIRN
export -f tool_init tool_backup tool_restore
need
mkdir -p "$WORK"
echo "## $(date -u +%Y-%m-%d): $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB"
echo
echo "cairn $(git rev-parse --short HEAD), $(restic version | cut -d' ' -f1-2), $(borg --version)$(command -v rustic >/dev/null && echo ", $(rustic --version)")"
echo
case " ${CORPORA:-1 2} " in *" 1 "*) corpus_one ;; esac
case " ${CORPORA:-1 2} " in *" 2 "*) corpus_two ;; esac
