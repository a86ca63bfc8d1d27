#!/usr/bin/env bash
# zfs2s3 demo: a file-backed zfs-fuse pool and a local MinIO bucket, then the
# main job end to end: full and incremental uploads, a refused removal, a
# monthly-style consolidation with a bypass edge, a crash and resume, and a
# restore from the bucket with nothing but curl and zfs receive.
# Run through `make demo` (as root), which installs zfs-fuse and MinIO first.
set -euo pipefail

ZFS2S3=${ZFS2S3:-$PWD/zfs2s3}
source "$(dirname "$0")/bed.sh"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() { printf '$ %s\n' "$*"; "$@"; }
# expect_fail CODE CMD...: run a command that must fail with CODE.
expect_fail() {
  local want=$1 rc=0; shift
  printf '$ %s\n' "$*"; "$@" || rc=$?
  printf '(exit code %d)\n' "$rc"
  [[ $rc == "$want" ]] || { echo "demo: expected exit code $want" >&2; exit 1; }
}

step "Start zfs-fuse with a 1 GiB file-backed pool, and MinIO on 127.0.0.1:$port with the bucket 'backups'"
bed_start
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

step "What is stored, and is it intact?"
show "$ZFS2S3" status
show "$ZFS2S3" verify --read-data

step "Restore fri by the cheapest chain (mon full, then the bypass, then fri)"
show "$ZFS2S3" restore "$ds@fri" --into "$pool/restored by zfs2s3" --dry-run
show "$ZFS2S3" restore "$ds@fri" --into "$pool/restored by zfs2s3"
show diff -r "$work/mnt/my data" "$work/mnt/restored by zfs2s3"
echo "restored files are identical to the source"

step "The machine is lost: a new state dir restores from the bucket's ledger copy"
export ZFS2S3_STATE_DIR=$work/new-machine
show "$ZFS2S3" restore "$ds@fri" --into "$pool/restored on a new machine"
show diff -r "$work/mnt/my data" "$work/mnt/restored on a new machine"

step "The bucket's ledger copy is lost too: rebuild it from the manifests"
s3 -X DELETE "http://127.0.0.1:$port/backups/.zfs2s3/ledger.yaml"
export ZFS2S3_STATE_DIR=$work/third-machine
show "$ZFS2S3" ledger rebuild
show "$ZFS2S3" status

step "One stored stream to a file, for zfs receive elsewhere"
show "$ZFS2S3" save "$ds@mon" "$work/mon.zfs"
show zfs receive "$pool/from a file" < "$work/mon.zfs"

step "Restore without zfs2s3: curl | zfs receive, oldest stream first"
keys=$(grep -o '"key":"[^"]*"' "$ZFS2S3_STATE_DIR/backups/ledger.yaml" | cut -d'"' -f4)
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
