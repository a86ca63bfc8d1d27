#!/usr/bin/env bash
# zfs2s3 demo: a file-backed zfs-fuse pool and a local MinIO bucket, then the
# main job end to end: full and incremental uploads, a refused removal, a
# monthly-style consolidation with a bypass edge, a crash and resume, and a
# restore from the bucket with nothing but curl and zfs receive.
# Run through `make demo` (as root), which installs zfs-fuse and MinIO first.
set -euo pipefail

ZFS2S3=${ZFS2S3:-$PWD/zfs2s3}
MINIO=${ZFS2S3_MINIO:-$HOME/.cache/zfs2s3/bin/minio}
work=$(mktemp -d /var/tmp/zfs2s3-demo.XXXXXX)
pool=demo$$
port=$((20000 + $$ % 10000))
started_zfs=
minio_pid=

cleanup() {
  set +e
  [[ -n $minio_pid ]] && kill "$minio_pid" 2>/dev/null && wait "$minio_pid" 2>/dev/null
  for _ in 1 2 3 4 5; do zpool destroy -f "$pool" 2>/dev/null && break; sleep 1; done
  [[ -n $started_zfs ]] && kill "$(cat "$work/zfs-fuse.pid")" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() { printf '$ %s\n' "$*"; "$@"; }
# expect_fail CODE CMD...: run a command that must fail with CODE.
expect_fail() {
  local want=$1 rc=0; shift
  printf '$ %s\n' "$*"; "$@" || rc=$?
  printf '(exit code %d)\n' "$rc"
  [[ $rc == "$want" ]] || { echo "demo: expected exit code $want" >&2; exit 1; }
}

step "Start zfs-fuse and a 1 GiB file-backed pool"
if ! zpool list >/dev/null 2>&1; then
  zfs-fuse --pidfile "$work/zfs-fuse.pid"; started_zfs=1
  for _ in $(seq 50); do zpool list >/dev/null 2>&1 && break; sleep 0.2; done
fi
truncate -s 1G "$work/pool.img"
show zpool create -m "$work/mnt" "$pool" "$work/pool.img"

step "Start MinIO on 127.0.0.1:$port and create the bucket 'backups'"
export AWS_ACCESS_KEY_ID=demo-user AWS_SECRET_ACCESS_KEY=demo-secret-key AWS_REGION=us-east-1
MINIO_ROOT_USER=$AWS_ACCESS_KEY_ID MINIO_ROOT_PASSWORD=$AWS_SECRET_ACCESS_KEY MINIO_BROWSER=off \
  "$MINIO" server "$work/minio" --address "127.0.0.1:$port" --console-address "127.0.0.1:$((port + 1))" --quiet >"$work/minio.log" 2>&1 &
minio_pid=$!
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/minio/health/live" && break; sleep 0.2; done
s3() { curl -fsS --aws-sigv4 "aws:amz:us-east-1:s3" --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" "$@"; }
s3 -X PUT "http://127.0.0.1:$port/backups"

export ZFS2S3_BUCKET=backups ZFS2S3_ENDPOINT=http://127.0.0.1:$port ZFS2S3_STATE_DIR=$work/state
echo "ZFS2S3_BUCKET=$ZFS2S3_BUCKET ZFS2S3_ENDPOINT=$ZFS2S3_ENDPOINT ZFS2S3_STATE_DIR=$ZFS2S3_STATE_DIR"

ds="$pool/my data"
write() { head -c "$2" /dev/urandom >"$work/mnt/my data/$1"; }
show zfs create "$ds"

step "A week of daily snapshots: a full stream, then incrementals"
prev=
for day in mon tue wed thu; do
  write "$day.bin" 3M
  zfs snapshot "$ds@$day"
  if [[ -z $prev ]]; then show "$ZFS2S3" upload "$ds@$day"
  else show "$ZFS2S3" upload "$ds@$day" -i "$ds@$prev"; fi
  prev=$day
done

step "The ledger: one edge per stored stream, snapshots by GUID"
show cat "$ZFS2S3_STATE_DIR"/backups/ledger.yaml

step "Removing the middle of the chain is refused: later incrementals need it"
expect_fail 3 "$ZFS2S3" remove "$ds@tue" -i "$ds@mon"

step "Consolidate: a bypass edge mon -> thu makes the daily edges removable"
show "$ZFS2S3" upload "$ds@thu" -i "$ds@mon"
show "$ZFS2S3" remove "$ds@thu" -i "$ds@wed"
show "$ZFS2S3" remove "$ds@wed" -i "$ds@tue"
show "$ZFS2S3" remove "$ds@tue" -i "$ds@mon"

step "A crash mid-upload (kill -9), then resume_upload"
write big.bin 200M
zfs snapshot "$ds@fri"
"$ZFS2S3" upload "$ds@fri" -i "$ds@thu" --part-size 5MiB --concurrency 1 &
pid=$!
sleep 1.5
echo "\$ kill -9 $pid   # while parts are in flight"
kill -9 "$pid" 2>/dev/null || echo "(the upload had already finished)"
wait "$pid" 2>/dev/null || true
ls "$ZFS2S3_STATE_DIR"/backups/uploads/ 2>/dev/null && echo "(the upload's saved state)"
show "$ZFS2S3" resume_upload

step "Restore from the bucket alone: curl | zfs receive, oldest stream first"
keys=$(grep -o 'key: .*' "$ZFS2S3_STATE_DIR/backups/ledger.yaml" | sed 's/^key: //')
echo "$keys"
full=$(grep 'mon@.*\.full\.zfs$' <<<"$keys")
bypass=$(grep 'thu@.*\.from\.mon@' <<<"$keys")
fri=$(grep 'fri@.*\.from\.thu@' <<<"$keys")
for key in "$full" "$bypass" "$fri"; do
  echo "\$ curl .../backups/$key | zfs receive $pool/restored"
  url=${key//%/%25}; url=${url//@/%40}   # URL-encode the key for curl
  s3 "http://127.0.0.1:$port/backups/$url" | zfs receive "$pool/restored"
done
show diff -r "$work/mnt/my data" "$work/mnt/restored"
echo "restored files are identical to the source"

step "Done; cleaning up the pool and MinIO"
