#!/usr/bin/env bash
# make bench: zfs2s3 against its peers on the same file-backed zfs-fuse pool
# and local MinIO, in one run. For each size (MiB, BENCH_SIZES) it writes an
# incompressible snapshot, then times, one after another:
#   upload:  zfs2s3 upload | zfs send | aws s3 cp - | zfs send | rclone rcat
#            (16 MiB chunks, 8 streams) | zfs send | sdkupload (SDK manager.Uploader)
#            | zfs2s3 upload --checksum crc32c (the SDK's kind of checksum)
#   restore: zfs2s3 restore | aws s3 cp - | zfs receive
# Then (issue 10) a compressible, text-like snapshot of BENCH_TRANSFORM_MIB
# (default 1024; 0 skips it), timed one after another:
#   upload:  zfs2s3 --compress zstd | zfs send | zstd -T0 -3 | aws s3 cp -
#            | zfs send | gzip -1 | aws s3 cp - | zfs2s3 --compress zstd
#            --recipient (age on too), with the stored bytes of each
#   restore: zfs2s3 restore (zstd+age) | the printed hand script (restore
#            --dry-run | sh: aws s3 cp | age -d | zstd -d | zfs receive)
# Wall and CPU seconds and peak RSS come from GNU time and cover the whole
# pipeline, zfs send or zfs receive included. Each waits for the machine to
# be idle first (settle). Machines here are noisy: each
# group of tools runs BENCH_ROUNDS times (default 3), alternating, and the
# summary at the end gives each tool's median and the ratios the issues set
# targets for. Compare ratios within one run, not absolute times across runs.
set -euo pipefail
ZFS2S3=${ZFS2S3:-$PWD/zfs2s3}
SDKUPLOAD=${SDKUPLOAD:-$PWD/sdkupload}
SIZES=${BENCH_SIZES:-1024 4096}
TMIB=${BENCH_TRANSFORM_MIB:-1024}
ROUNDS=${BENCH_ROUNDS:-3}
total=$TMIB; for s in $SIZES; do total=$((total + s)); done
BED_POOL_SIZE=$(( (total * 2 + 1024) ))M
source "$(dirname "$0")/bed.sh"
bed_start >/dev/null
ep=$ZFS2S3_ENDPOINT
export RCLONE_CONFIG_M_TYPE=s3 RCLONE_CONFIG_M_PROVIDER=Minio RCLONE_CONFIG_M_ENDPOINT=$ep \
  RCLONE_CONFIG_M_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID RCLONE_CONFIG_M_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY

results=$work/results
printf '%-9s %-28s %7s %8s %9s %9s %8s\n' size tool wall_s cpu_s cpu_s/GiB rss_MiB MB/s | tee "$results"

# settle waits (at most 20 s) until the CPUs are 90% idle for half a
# second: zfs-fuse frees a destroyed dataset and writes back a new one in
# the background, and the tool timed next would pay for it.
settle() {
  local _c u n s idle u2 n2 s2 idle2 busy
  for _ in $(seq 40); do
    read -r _c u n s idle _ </proc/stat
    sleep 0.5
    read -r _c u2 n2 s2 idle2 _ </proc/stat
    busy=$(( u2 + n2 + s2 - u - n - s ))
    (( busy * 9 <= idle2 - idle )) && return 0
  done
  echo "bench: the machine was not idle after 20 s; timing anyway" >&2
}

# measure LABEL SIZE_MiB CMD...: run CMD under GNU time, print one row.
measure() {
  local label=$1 mib=$2; shift 2
  sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
  settle
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
  for round in $(seq "$ROUNDS"); do
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
    # The checksum the SDK sends is a CRC32, which MinIO checks cheaply;
    # the default SHA-256 costs it a second hash of each part.
    measure "zfs2s3 upload (crc32c)" "$mib" "$ZFS2S3" upload "$ds@s" --checksum crc32c
    "$ZFS2S3" remove "$ds@s" >/dev/null
  done
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

# stored KEYPREFIX LABEL: print and note the bytes under that prefix in the
# bucket, manifests left out.
stored() {
  local n; n=$(aws s3 ls --recursive "s3://backups/$1" --endpoint-url "$ep" | awk '$4 !~ /manifest/ { n += $3 } END { print n + 0 }')
  echo "  stored: $n bytes" | tee -a "$results"
  printf '%s\t%s\n' "$2" "$n" >>"$work/stored"
}

if (( TMIB > 0 )); then
  mib=$TMIB ds=$pool/t$TMIB
  zfs create "$ds"
  textlike "$mib" "$work/mnt/t$mib/log.txt"
  zfs snapshot "$ds@s"
  age-keygen -o "$work/key.txt" 2>/dev/null
  rcpt=$(age-keygen -y "$work/key.txt")
  for round in $(seq "$ROUNDS"); do
    measure "zfs2s3 --compress zstd" "$mib" "$ZFS2S3" upload "$ds@s" --compress zstd
    stored "$ds/" "zfs2s3 --compress zstd"
    "$ZFS2S3" remove "$ds@s" >/dev/null
    measure "zfs send | zstd -T0 -3 | aws" "$mib" bash -c "zfs send '$ds@s' | zstd -T0 -3 -q | aws s3 cp - s3://backups/peer/zstd-$mib --endpoint-url $ep"
    stored "peer/zstd-$mib" "zfs send | zstd -T0 -3 | aws"
    drop "peer/zstd-$mib"
    if (( round == 1 )); then # far behind the others: once is enough
      measure "zfs send | gzip -1 | aws" "$mib" bash -c "zfs send '$ds@s' | gzip -1 | aws s3 cp - s3://backups/peer/gzip-$mib --endpoint-url $ep"
      stored "peer/gzip-$mib" "zfs send | gzip -1 | aws"
      drop "peer/gzip-$mib"
    fi
    measure "zfs2s3 --compress zstd +age" "$mib" "$ZFS2S3" upload "$ds@s" --compress zstd --recipient "$rcpt"
    stored "$ds/" "zfs2s3 --compress zstd +age"
    measure "zfs2s3 restore zstd+age" "$mib" "$ZFS2S3" restore "$ds@s" --into "$pool/tr-zfs2s3" --identity "$work/key.txt"
    zfs destroy -r "$pool/tr-zfs2s3" 2>/dev/null || { sleep 2; zfs destroy -r "$pool/tr-zfs2s3"; }
    "$ZFS2S3" restore "$ds@s" --into "$pool/tr-hand" --identity "$work/key.txt" --dry-run >"$work/hand.sh"
    measure "hand script (aws|age|zstd)" "$mib" sh "$work/hand.sh"
    zfs destroy -r "$pool/tr-hand" 2>/dev/null || { sleep 2; zfs destroy -r "$pool/tr-hand"; }
    "$ZFS2S3" remove "$ds@s" >/dev/null
  done
  zfs destroy -r "$ds" 2>/dev/null || { sleep 2; zfs destroy -r "$ds"; }
fi
# The summary: each tool's median wall, CPU and RSS over the rounds, then
# the ratios of issue 4 (plain upload) and issue 10 (transforms).
awk -v rounds="$ROUNDS" -v storedfile="$work/stored" '
  NR == 1 { next }
  /^ / { next }
  { label = substr($0, 11, 28); sub(/ +$/, "", label); k = $1 SUBSEP label
    if (!(k in n)) order[++m] = k
    i = ++n[k]; wall[k, i] = $(NF-4); cpu[k, i] = $(NF-3); rss[k, i] = $(NF-1) }
  function med(a, k, c,   i, j, t, v) {
    for (i = 1; i <= c; i++) v[i] = a[k, i]
    for (i = 1; i <= c; i++) for (j = i + 1; j <= c; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
    return c % 2 ? v[(c + 1) / 2] : (v[c / 2] + v[c / 2 + 1]) / 2 }
  END {
    while ((getline line < storedfile) > 0) { split(line, f, "\t"); st[f[1]] = f[2] }
    printf "\nmedians of %d rounds\n%-9s %-28s %7s %8s %8s %13s\n", rounds, "size", "tool", "wall_s", "cpu_s", "rss_MiB", "stored_bytes"
    for (o = 1; o <= m; o++) { k = order[o]; split(k, f, SUBSEP)
      W[k] = med(wall, k, n[k]); C[k] = med(cpu, k, n[k])
      printf "%-9s %-28s %7.2f %8.2f %8.0f %13s\n", f[1], f[2], W[k], C[k], med(rss, k, n[k]), (f[2] in st) ? st[f[2]] : "" }
    print "\nratios (zfs2s3 / peer, medians)"
    for (o = 1; o <= m; o++) { k = order[o]; split(k, f, SUBSEP); s = f[1]; sdk = s SUBSEP "sdk manager.Uploader 16M x8"
      if (f[2] == "zfs2s3 upload" && sdk in W)
        printf "%-9s plain upload vs SDK manager.Uploader: cpu %.2fx, wall %.2fx\n", s, C[k] / C[sdk], W[k] / W[sdk]
      if (f[2] == "zfs2s3 upload (crc32c)" && sdk in W)
        printf "%-9s the same with --checksum crc32c: cpu %.2fx, wall %.2fx\n", s, C[k] / C[sdk], W[k] / W[sdk]
      if (f[2] == "zfs2s3 --compress zstd") { p = s SUBSEP "zfs send | zstd -T0 -3 | aws"
        printf "%-9s zstd upload vs zstd -T0 -3 pipe: wall %.2fx, cpu %.2fx; stored %+.1f%%\n", s, W[k] / W[p], C[k] / C[p], 100 * (st[f[2]] / st["zfs send | zstd -T0 -3 | aws"] - 1)
        a = s SUBSEP "zfs2s3 --compress zstd +age"
        printf "%-9s age on top of zstd: wall %+.1f%%\n", s, 100 * (W[a] / W[k] - 1) }
      if (f[2] == "zfs2s3 restore zstd+age")
        printf "%-9s zstd+age restore vs the printed hand script: wall %.2fx\n", s, W[k] / W[s SUBSEP "hand script (aws|age|zstd)"] }
  }' "$results" | tee -a "$results"
echo "machine: $(nproc) cores, $(free -g | awk '/Mem/ {print $2}') GiB; concurrency ${ZFS2S3_CONCURRENCY:-4}"
