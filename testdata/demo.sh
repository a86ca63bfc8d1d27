#!/usr/bin/env bash
# zfs2s3 demo: a file-backed zfs-fuse pool and a local MinIO bucket, then the
# main job end to end, driven by a config file: six weeks of daily snapshots
# backed up (dry-run plan first), a refused removal, retention by prune with a
# bypass edge (dry-run plan first), a kill -9 mid-backup finished by the next
# backup, restores from the bucket (also on a new machine and after losing the
# ledger copy), and a restore with nothing but curl and zfs receive.
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

step "Six weeks of daily snapshots, named by date"
for i in $(seq 0 44); do
  day=$(date -u -d "2026-01-01 + $i days" +%Y-%m-%d)
  write "$day.bin" 200K
  zfs snapshot "$ds@daily-$day"
done
zfs list -H -t snapshot -o name -r "$ds" | sed -n '1p;2p;$p' | sed '2a …'

step "A config file says what is backed up and what is kept"
export ZFS2S3_CONFIG=$work/zfs2s3.yaml
cat >"$ZFS2S3_CONFIG" <<CONFIG
bucket: backups
defaults:
  snapshots: "daily-*"            # which snapshots are backed up
  time_format: "daily-%Y-%m-%d"   # their time, read from the name
  chain: previous                 # each incremental from the one before
  full_every: 30d                 # a new full every 30 days of snapshot time
  keep: {daily: 7, monthly: 2}    # what prune keeps in the bucket
datasets:
  $ds: {}
CONFIG
show cat "$ZFS2S3_CONFIG"

step "backup --dry-run prints the plan and changes nothing"
show "$ZFS2S3" backup --dry-run | sed '4,42d;3a …'

step "backup uploads every snapshot, oldest first, each as its own edge"
show "$ZFS2S3" backup | sed '4,42d;3a …'
echo "\$ $ZFS2S3 backup    # again: nothing new"
"$ZFS2S3" backup

step "The ledger: one edge per stored stream, snapshots by GUID"
show head -c 900 "$ZFS2S3_STATE_DIR"/backups/ledger.yaml; echo " …"

step "Removing the middle of the chain by hand is refused: later incrementals need it"
expect_fail 3 "$ZFS2S3" remove "$ds@daily-2026-01-20" -i "$ds@daily-2026-01-19"

step "prune applies keep {daily: 7, monthly: 2}: the plan first, then for real"
show "$ZFS2S3" prune --dry-run | sed '5,38d;4a …'
show "$ZFS2S3" prune | sed '5,38d;4a …'
show "$ZFS2S3" status

step "A dataset whose snapshot zfs2s3 takes itself, with hooks around it, and a metrics file"
show zfs create "$pool/db"
head -c 1M /dev/urandom >"$work/mnt/db/table.bin"
cat >>"$ZFS2S3_CONFIG" <<CONFIG
  $pool/db:
    create: "zfs2s3-%Y%m%d-%H%M%S"     # taken by backup, in UTC
    snapshots: "zfs2s3-*"
    time_format: ""                    # times from the names create writes
    pre: "echo '(pre hook: stop the database)'"
    post: "echo '(post hook: start it again)'"
CONFIG
show tail -6 "$ZFS2S3_CONFIG"
show "$ZFS2S3" backup "$pool/db" --metrics-file "$work/zfs2s3.prom"
show grep -E '^zfs2s3_(backup_last_success_timestamp|backup_last_run_uploaded_bytes|stored_)' "$work/zfs2s3.prom"

step "A monitoring check: every dataset's newest restorable snapshot within 26 hours?"
echo "(the daily snapshots are named for January and February: too old, so the check fails)"
expect_fail 1 "$ZFS2S3" status --max-age 26h

step "A crash mid-backup (kill -9); the next backup finishes the upload first"
write big.bin 200M
zfs snapshot "$ds@daily-2026-02-15"
"$ZFS2S3" backup --part-size 5MiB --concurrency 1 &
pid=$!
sleep 1.5
echo "\$ kill -9 $pid   # while parts are in flight"
kill -9 "$pid" 2>/dev/null || echo "(the upload had already finished)"
wait "$pid" 2>/dev/null || true
ls "$ZFS2S3_STATE_DIR"/backups/uploads/ 2>/dev/null && echo "(the upload's saved state)"
show "$ZFS2S3" backup

step "What is stored, and is it intact?"
show "$ZFS2S3" status
show "$ZFS2S3" verify --read-data

last="$ds@daily-2026-02-15"
step "Restore the newest snapshot by the cheapest chain (the Jan 31 full, the bypass edge, the dailies)"
show "$ZFS2S3" restore "$last" --into "$pool/restored by zfs2s3" --dry-run
show "$ZFS2S3" restore "$last" --into "$pool/restored by zfs2s3"
show diff -r "$work/mnt/my data" "$work/mnt/restored by zfs2s3"
echo "restored files are identical to the source"

step "The machine is lost: a new state dir restores from the bucket's ledger copy"
export ZFS2S3_STATE_DIR=$work/new-machine
show "$ZFS2S3" restore "$last" --into "$pool/restored on a new machine"
show diff -r "$work/mnt/my data" "$work/mnt/restored on a new machine"

step "The bucket's ledger copy is lost too: rebuild it from the manifests"
listing=$(s3 "http://127.0.0.1:$port/backups?list-type=2&prefix=.zfs2s3%2F")
for key in $(grep -o '<Key>[^<]*</Key>' <<<"$listing" | sed 's/<[^>]*>//g'); do
  echo "\$ curl -X DELETE .../backups/$key"
  s3 -X DELETE "http://127.0.0.1:$port/backups/${key//%/%25}"   # a literal % in a key is %25 in its URL
done
export ZFS2S3_STATE_DIR=$work/third-machine
show "$ZFS2S3" ledger rebuild
show "$ZFS2S3" status

step "One stored stream to a file, for zfs receive elsewhere"
show "$ZFS2S3" save "$ds@daily-2026-01-31" "$work/jan31.zfs"
show zfs receive "$pool/from a file" < "$work/jan31.zfs"

step "Restore without zfs2s3: curl | zfs receive, oldest stream first"
keys=$("$ZFS2S3" restore "$last" --into "$pool/restored" --dry-run | grep -o 's3://backups/[^ ]*' | sed 's|s3://backups/||')
for key in $keys; do
  echo "\$ curl .../backups/$key | zfs receive $pool/restored"
  url=${key//%/%25}; url=${url//@/%40}   # URL-encode the key for curl
  s3 "http://127.0.0.1:$port/backups/$url" | zfs receive "$pool/restored"
done
show diff -r "$work/mnt/my data" "$work/mnt/restored"
echo "restored files are identical to the source"

step "Done; cleaning up the pool and MinIO"
