#!/usr/bin/env bash
# cairn and restic on object storage: a
# single-node Garage server on loopback, started by this script, each tool
# in its own prefix of one bucket.
#
#   benches/s3.sh                 # 3 interleaved rounds
#   RUNS=1 benches/s3.sh          # quicker, noisier
#   CORPUS=/some/dir benches/s3.sh
#   TOOLS="cairn cairn-old=/tmp/cairn-old restic" benches/s3.sh
#                                 # another cairn build beside this one
#   (rustic takes part when it is installed)
#
# Corpus: the Rust toolchain directory (~1.3 GB). Per tool and round: first
# backup (time, throughput, peak RSS), a second backup with nothing
# changed, a full restore, and the bytes stored in the bucket. Rounds
# interleave the tools (cairn, restic, cairn, restic, ...); medians are
# reported. Every tool uses zstd at its default level and its own local
# cache, kept between steps as a user's would be. Before every timed step
# the page cache is dropped and what the step reads is read back. Needs
# `garage` (see the README) and restic.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/common.sh

RUNS=${RUNS:-3}
WORK=${WORK:-/tmp/cairn-bench-s3}
CORPUS=${CORPUS:-$(rustc --print sysroot)}
GARAGE=${GARAGE_BIN:-$(command -v garage || echo "$HOME/.cargo/bin/garage")}
CAIRN=${CAIRN:-$PWD/target/release/cairn}
read -ra TOOLS <<<"${TOOLS:-cairn restic$(command -v rustic >/dev/null && echo ' rustic')}"
# A tool NAME=PATH is a cairn build at PATH, shown as NAME.
declare -A CAIRN_BIN
for i in "${!TOOLS[@]}"; do
    case ${TOOLS[$i]} in
        cairn*=*) CAIRN_BIN[${TOOLS[$i]%%=*}]=${TOOLS[$i]#*=}; TOOLS[$i]=${TOOLS[$i]%%=*} ;;
        cairn*) CAIRN_BIN[${TOOLS[$i]}]=$CAIRN ;;
    esac
done


cargo build --release -q -p cairn-cli
rm -rf "$WORK"
mkdir -p "$WORK/garage"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
S3_PORT=$(free_port)
RPC_PORT=$(free_port)
ADMIN_PORT=$(free_port)
cat >"$WORK/garage/garage.toml" <<EOF
metadata_dir = "$WORK/garage/meta"
data_dir = "$WORK/garage/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$RPC_PORT"
rpc_public_addr = "127.0.0.1:$RPC_PORT"
rpc_secret = "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$S3_PORT"
root_domain = ".s3.garage.localhost"
[admin]
api_bind_addr = "127.0.0.1:$ADMIN_PORT"
EOF
chmod 600 "$WORK/garage/garage.toml"
g() { "$GARAGE" -c "$WORK/garage/garage.toml" "$@"; }
g server >"$WORK/garage/server.log" 2>&1 &
GARAGE_PID=$!
RESTORED=()
cleanup() {
    kill "$GARAGE_PID" 2>/dev/null || true
    rm -rf "${RESTORED[@]}"
}
trap cleanup EXIT
until node=$(g node id -q 2>/dev/null); do sleep 0.2; done
g layout assign -z dc1 -c 10G "${node%%@*}" >/dev/null
g layout apply --version 1 >/dev/null
g bucket create bench >/dev/null
key=$(g key create bench)
g bucket allow --read --write --owner bench --key bench >/dev/null
export AWS_ACCESS_KEY_ID=$(awk '/Key ID:/ {print $3}' <<<"$key")
export AWS_SECRET_ACCESS_KEY=$(awk '/Secret key:/ {print $3}' <<<"$key")
export AWS_DEFAULT_REGION=garage AWS_REGION=garage
ENDPOINT=http://127.0.0.1:$S3_PORT
export CAIRN_PASSWORD=bench RESTIC_PASSWORD=bench RUSTIC_PASSWORD=bench

# location TOOL RUN: where the tool's repository of this round lives.
location() {
    case $1 in
        cairn*) echo "s3:$ENDPOINT/bench/$1-$2" ;;
        restic) echo "s3:$ENDPOINT/bench/restic-$2" ;;
        rustic) echo "opendal:s3" ;;
    esac
}

# tool STEP TOOL RUN [ARG]: init, backup DIR, restore TARGET.
tool() {
    local step=$1 name=$2 run=$3 arg=${4:-} repo cache
    repo=$(location "$name" "$run")
    cache=$WORK/$name-$run.cache
    local bin=CAIRN_BIN_${name//-/_}
    local cairn=${!bin:-}
    # rustic reaches S3 through OpenDAL, configured by its environment.
    local rustic_s3=(RUSTIC_REPO_OPT_ENDPOINT="$ENDPOINT" RUSTIC_REPO_OPT_BUCKET=bench
        RUSTIC_REPO_OPT_ROOT="/rustic-$run" RUSTIC_REPO_OPT_REGION=garage
        RUSTIC_REPO_OPT_ACCESS_KEY_ID="$AWS_ACCESS_KEY_ID"
        RUSTIC_REPO_OPT_SECRET_ACCESS_KEY="$AWS_SECRET_ACCESS_KEY")
    case $name/$step in
        cairn*/init) CAIRN_CACHE_DIR=$cache "$cairn" --repo "$repo" init -q ;;
        cairn*/backup) CAIRN_CACHE_DIR=$cache "$cairn" --repo "$repo" backup -q "$arg" ;;
        cairn*/restore) CAIRN_CACHE_DIR=$cache "$cairn" --repo "$repo" restore -q latest --target "$arg" ;;
        rustic/init) env "${rustic_s3[@]}" rustic --log-level error -r "$repo" --cache-dir "$cache" init >/dev/null ;;
        rustic/backup) env "${rustic_s3[@]}" rustic --log-level error -r "$repo" --cache-dir "$cache" backup "$arg" >/dev/null ;;
        rustic/restore) env "${rustic_s3[@]}" rustic --log-level error -r "$repo" --cache-dir "$cache" restore latest "$arg" >/dev/null ;;
        restic/init) restic -q init --repo "$repo" --repository-version 2 >/dev/null ;;
        restic/backup) restic -q --repo "$repo" --cache-dir "$cache" backup "$arg" >/dev/null ;;
        restic/restore) restic -q --repo "$repo" --cache-dir "$cache" restore latest --target "$arg" >/dev/null ;;
    esac
}


# stored_mb PREFIX: bytes under a prefix of the bucket, in MB.
stored_mb() {
    python3 - "$ENDPOINT" "$1" <<'EOF'
import sys, os, datetime, hashlib, hmac, urllib.request, urllib.parse, re
endpoint, prefix = sys.argv[1], sys.argv[2]
key, secret = os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"]
def sign(k, m): return hmac.new(k, m.encode(), hashlib.sha256).digest()
total, token = 0, None
while True:
    q = {"list-type": "2", "prefix": prefix + "/"}
    if token: q["continuation-token"] = token
    qs = "&".join(f"{urllib.parse.quote(k, safe='')}={urllib.parse.quote(v, safe='')}" for k, v in sorted(q.items()))
    now = datetime.datetime.now(datetime.timezone.utc)
    amz, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    host = urllib.parse.urlparse(endpoint).netloc
    empty = hashlib.sha256(b"").hexdigest()
    canonical = f"GET\n/bench\n{qs}\nhost:{host}\nx-amz-content-sha256:{empty}\nx-amz-date:{amz}\n\nhost;x-amz-content-sha256;x-amz-date\n{empty}"
    scope = f"{day}/garage/s3/aws4_request"
    to_sign = f"AWS4-HMAC-SHA256\n{amz}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    k = sign(sign(sign(sign(("AWS4" + secret).encode(), day), "garage"), "s3"), "aws4_request")
    sig = hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest()
    req = urllib.request.Request(f"{endpoint}/bench?{qs}", headers={
        "x-amz-date": amz, "x-amz-content-sha256": empty,
        "Authorization": f"AWS4-HMAC-SHA256 Credential={key}/{scope}, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature={sig}"})
    body = urllib.request.urlopen(req).read().decode()
    total += sum(int(s) for s in re.findall(r"<Size>(\d+)</Size>", body))
    m = re.search(r"<NextContinuationToken>([^<]+)</NextContinuationToken>", body)
    if not m: break
    token = m.group(1)
print(f"{total / 1e6:.0f}")
EOF
}

export ENDPOINT CAIRN WORK
export -f tool location
# Bash cannot export an associative array: the tools' builds go by name.
for name in "${!CAIRN_BIN[@]}"; do export "CAIRN_BIN_${name//-/_}=${CAIRN_BIN[$name]}"; done
corpus_mb=$(du -sb "$CORPUS" | awk '{print $1/1e6}')
log "corpus: $CORPUS ($corpus_mb MB), $RUNS interleaved rounds, Garage $("$GARAGE" --version 2>/dev/null | head -1)"
declare -A first first_rss again again_rss restore restore_rss size
for run in $(seq "$RUNS"); do
    for name in "${TOOLS[@]}"; do
        target=$WORK/$name-$run.restore
        tool init "$name" "$run"
        prepare "$CORPUS"
        timed t tool backup "$name" "$run" "$CORPUS"
        first[$name]+="${t% *} "; first_rss[$name]+="${t#* } "
        prepare "$CORPUS" "$WORK/$name-$run.cache"
        timed t tool backup "$name" "$run" "$CORPUS"
        again[$name]+="${t% *} "; again_rss[$name]+="${t#* } "
        prepare "$WORK/$name-$run.cache"
        mkdir -p "$target"
        timed t tool restore "$name" "$run" "$target"
        restore[$name]+="${t% *} "; restore_rss[$name]+="${t#* } "
        size[$name]=$(stored_mb "$name-$run")
        log "  round $run $name: first ${first[$name]##* } again ${again[$name]} restore ${restore[$name]} stored ${size[$name]} MB"
        RESTORED+=("$target")
    done
done

med() { tr ' ' '\n' <<<"$1" | grep . | median; }
echo "## $(date -u +%Y-%m-%d): S3 on a local single-node Garage, $(nproc) cores"
echo
echo "cairn $(git rev-parse --short HEAD), $(restic version | cut -d' ' -f1-2), $("$GARAGE" --version 2>/dev/null | head -1); corpus $CORPUS ($(printf '%.0f' "$corpus_mb") MB, $(find "$CORPUS" -type f | wc -l) files); medians of $RUNS interleaved rounds"
echo
echo "| tool | first backup s | MB/s | peak RSS MB | unchanged backup s | peak RSS MB | restore s | peak RSS MB | stored MB |"
echo "|---|---|---|---|---|---|---|---|---|"
for name in "${TOOLS[@]}"; do
    f=$(med "${first[$name]}")
    printf '| %s | %s | %.0f | %.0f | %s | %.0f | %s | %.0f | %s |\n' "$name" "$f" \
        "$(echo "$corpus_mb / $f" | bc -l)" "$(med "${first_rss[$name]}" | awk '{print $1/1024}')" \
        "$(med "${again[$name]}")" "$(med "${again_rss[$name]}" | awk '{print $1/1024}')" \
        "$(med "${restore[$name]}")" "$(med "${restore_rss[$name]}" | awk '{print $1/1024}')" "${size[$name]}"
done
