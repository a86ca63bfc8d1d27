#!/usr/bin/env bash
# make bench: zfs2s3 against its peers on the same file-backed zfs-fuse pool
# and local MinIO, in one run. For each size (MiB, BENCH_SIZES) it writes an
# incompressible snapshot, then times, one after another:
#   upload:  zfs2s3 upload | zfs send | aws s3 cp - | zfs send | rclone rcat
#            (16 MiB chunks, 8 streams) | zfs send | sdkupload (SDK manager.Uploader)
#   restore: zfs2s3 restore | aws s3 cp - | zfs receive
# Then (issue 10) a compressible, text-like snapshot of BENCH_TRANSFORM_MIB
# (default 1024; 0 skips it), timed one after another:
#   upload:  zfs2s3 --compress zstd | zfs send | zstd -T0 -3 | aws s3 cp -
#            | zfs send | gzip -1 | aws s3 cp - | zfs2s3 --compress zstd
#            --recipient (age on too), with the stored bytes of each
#   restore: zfs2s3 restore (zstd+age) | the printed hand script (restore
#            --dry-run | sh: aws s3 cp | age -d | zstd -d | zfs receive)
# Wall and CPU seconds and peak RSS come from GNU time and cover the whole
# pipeline, zfs send or zfs receive included. Machines here are noisy:
# compare the ratios within one run, not absolute times across runs.
set -euo pipefail
ZFS2S3=${ZFS2S3:-$PWD/zfs2s3}
SDKUPLOAD=${SDKUPLOAD:-$PWD/sdkupload}
SIZES=${BENCH_SIZES:-1024 4096}
TMIB=${BENCH_TRANSFORM_MIB:-1024}
total=$TMIB; for s in $SIZES; do total=$((total + s)); done
BED_POOL_SIZE=$(( (total * 2 + 1024) ))M
source "$(dirname "$0")/bed.sh"
bed_start >/dev/null
ep=$ZFS2S3_ENDPOINT
export RCLONE_CONFIG_M_TYPE=s3 RCLONE_CONFIG_M_PROVIDER=Minio RCLONE_CONFIG_M_ENDPOINT=$ep \
  RCLONE_CONFIG_M_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID RCLONE_CONFIG_M_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY

results=$work/results
printf '%-9s %-28s %7s %8s %9s %9s %8s\n' size tool wall_s cpu_s cpu_s/GiB rss_MiB MB/s | tee "$results"

# measure LABEL SIZE_MiB CMD...: run CMD under GNU time, print one row.
measure() {
  local label=$1 mib=$2; shift 2
  sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
  /usr/bin/time -f '%e %U %S %M' -o "$work/time" "$@" >/dev/null 2>"$work/err" || {
    echo "bench: $label failed:" >&2; cat "$work/err" >&2; exit 1; }
  read -r wall user sys rss <"$work/time"
  awk -v s="$mib" -v l="$label" -v w="$wall" -v u="$user" -v y="$sys" -v r="$rss" 'BEGIN {
    printf "%-9s %-28s %7.2f %8.2f %9.2f %9.0f %8.0f\n", s "MiB", l, w, u + y, (u + y) / (s / 1024), r / 1024, s * 1.048576 / w }' | tee -a "$results"
}

drop() { s3 -X DELETE "$ep/backups/$1" >/dev/null 2>&1 || true; }

for mib in $SIZES; do
  ds=$pool/d$mib
  zfs create "$ds"
  head -c "${mib}M" /dev/urandom >"$work/mnt/d$mib/data.bin"
  zfs snapshot "$ds@s"
  measure "zfs2s3 upload" "$mib" "$ZFS2S3" upload "$ds@s"
  measure "aws s3 cp" "$mib" bash -c "zfs send '$ds@s' | aws s3 cp - s3://backups/peer/aws-$mib --endpoint-url $ep"
  drop "peer/aws-$mib"
  if command -v rclone >/dev/null; then
    measure "rclone rcat 16M x8" "$mib" bash -c "zfs send '$ds@s' | env -u AWS_CA_BUNDLE rclone rcat m:backups/peer/rclone-$mib --s3-chunk-size 16M --s3-upload-concurrency 8"
    drop "peer/rclone-$mib"
  fi
  measure "sdk manager.Uploader 16M x8" "$mib" bash -c "zfs send '$ds@s' | '$SDKUPLOAD' backups peer/sdk-$mib"
  drop "peer/sdk-$mib"
  key=$(grep -o "\"key\":\"$pool/d$mib/[^\"]*\"" "$ZFS2S3_STATE_DIR/backups/ledger.yaml" | cut -d'"' -f4)
  measure "zfs2s3 restore" "$mib" "$ZFS2S3" restore "$ds@s" --into "$pool/r$mib-zfs2s3"
  zfs destroy -r "$pool/r$mib-zfs2s3" 2>/dev/null || { sleep 2; zfs destroy -r "$pool/r$mib-zfs2s3"; }
  measure "aws s3 cp | zfs receive" "$mib" bash -c "aws s3 cp 's3://backups/$key' - --endpoint-url $ep | zfs receive '$pool/r$mib-aws'"
  zfs destroy -r "$pool/r$mib-aws" 2>/dev/null || { sleep 2; zfs destroy -r "$pool/r$mib-aws"; }
  "$ZFS2S3" remove "$ds@s" >/dev/null
  zfs destroy -r "$ds" 2>/dev/null || { sleep 2; zfs destroy -r "$ds"; }
done
# textlike MIB FILE: about 3:1 under zstd -3, like logs: a timestamp, words
# drawn unevenly from a vocabulary of 2,000, and a number per line.
textlike() {
  awk -v bytes=$(( $1 << 20 )) 'BEGIN {
    srand(1)
    for (i = 0; i < 2000; i++) { w = ""; n = 2 + int(rand() * 9); for (j = 0; j < n; j++) w = w sprintf("%c", 97 + int(rand() * 26)); word[i] = w }
    while (total < bytes) {
      line = (1700000000 + NR++ * 3) ""
      k = 4 + int(rand() * 12)
      for (j = 0; j < k; j++) { r = rand(); line = line " " word[int(2000 * r * r * r)] }
      line = line " " int(rand() * 100000)
      print line; total += length(line) + 1
    }
  }' | head -c "$(( $1 << 20 ))" >"$2"
}

# stored KEYPREFIX: bytes under that prefix in the bucket.
stored() { aws s3 ls --recursive "s3://backups/$1" --endpoint-url "$ep" | awk '$4 !~ /manifest/ { n += $3 } END { print n + 0 }'; }

if (( TMIB > 0 )); then
  mib=$TMIB ds=$pool/t$TMIB
  zfs create "$ds"
  textlike "$mib" "$work/mnt/t$mib/log.txt"
  zfs snapshot "$ds@s"
  age-keygen -o "$work/key.txt" 2>/dev/null
  rcpt=$(age-keygen -y "$work/key.txt")
  measure "zfs2s3 --compress zstd" "$mib" "$ZFS2S3" upload "$ds@s" --compress zstd
  echo "  stored: $(stored "$ds/") bytes" | tee -a "$results"
  "$ZFS2S3" remove "$ds@s" >/dev/null
  measure "zfs send | zstd -T0 -3 | aws" "$mib" bash -c "zfs send '$ds@s' | zstd -T0 -3 -q | aws s3 cp - s3://backups/peer/zstd-$mib --endpoint-url $ep"
  echo "  stored: $(stored "peer/zstd-$mib") bytes" | tee -a "$results"
  drop "peer/zstd-$mib"
  measure "zfs send | gzip -1 | aws" "$mib" bash -c "zfs send '$ds@s' | gzip -1 | aws s3 cp - s3://backups/peer/gzip-$mib --endpoint-url $ep"
  echo "  stored: $(stored "peer/gzip-$mib") bytes" | tee -a "$results"
  drop "peer/gzip-$mib"
  measure "zfs2s3 --compress zstd +age" "$mib" "$ZFS2S3" upload "$ds@s" --compress zstd --recipient "$rcpt"
  echo "  stored: $(stored "$ds/") bytes" | tee -a "$results"
  measure "zfs2s3 restore zstd+age" "$mib" "$ZFS2S3" restore "$ds@s" --into "$pool/tr-zfs2s3" --identity "$work/key.txt"
  zfs destroy -r "$pool/tr-zfs2s3" 2>/dev/null || { sleep 2; zfs destroy -r "$pool/tr-zfs2s3"; }
  "$ZFS2S3" restore "$ds@s" --into "$pool/tr-hand" --identity "$work/key.txt" --dry-run >"$work/hand.sh"
  measure "hand script (aws|age|zstd)" "$mib" sh "$work/hand.sh"
  zfs destroy -r "$pool/tr-hand" 2>/dev/null || { sleep 2; zfs destroy -r "$pool/tr-hand"; }
  "$ZFS2S3" remove "$ds@s" >/dev/null
  zfs destroy -r "$ds" 2>/dev/null || { sleep 2; zfs destroy -r "$ds"; }
fi
echo "machine: $(nproc) cores, $(free -g | awk '/Mem/ {print $2}') GiB; concurrency ${ZFS2S3_CONCURRENCY:-4}"
