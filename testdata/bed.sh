# Sourced by demo.sh and bench.sh: a file-backed zfs-fuse pool and a local
# MinIO with one bucket, torn down on exit. Set BED_POOL_SIZE before sourcing.
MINIO=${ZFS2S3_MINIO:-$HOME/.cache/zfs2s3/bin/minio}
work=$(mktemp -d /var/tmp/zfs2s3-bed.XXXXXX)
pool=bed$$
port=$((20000 + $$ % 10000))
started_zfs=
minio_pid=

bed_cleanup() {
  set +e
  [[ -n $minio_pid ]] && kill "$minio_pid" 2>/dev/null && wait "$minio_pid" 2>/dev/null
  for _ in 1 2 3 4 5; do zpool destroy -f "$pool" 2>/dev/null && break; sleep 1; done
  if [[ -n $started_zfs ]]; then
    local pid; pid=$(cat "$work/zfs-fuse.pid")
    kill "$pid" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  fi
  rm -rf "$work"
}
trap bed_cleanup EXIT

bed_start() {
  if ! zpool list >/dev/null 2>&1; then
    zfs-fuse --pidfile "$work/zfs-fuse.pid"; started_zfs=1
    for _ in $(seq 50); do zpool list >/dev/null 2>&1 && break; sleep 0.2; done
  fi
  truncate -s "${BED_POOL_SIZE:-1G}" "$work/pool.img"
  zpool create -m "$work/mnt" "$pool" "$work/pool.img"
  export AWS_ACCESS_KEY_ID=bed-user AWS_SECRET_ACCESS_KEY=bed-secret-key AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
  MINIO_ROOT_USER=$AWS_ACCESS_KEY_ID MINIO_ROOT_PASSWORD=$AWS_SECRET_ACCESS_KEY MINIO_BROWSER=off \
    "$MINIO" server "$work/minio" --address "127.0.0.1:$port" --console-address "127.0.0.1:$((port + 1))" --quiet >"$work/minio.log" 2>&1 &
  minio_pid=$!
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/minio/health/live" && break; sleep 0.2; done
  s3 -X PUT "http://127.0.0.1:$port/backups"
  export ZFS2S3_BUCKET=backups ZFS2S3_ENDPOINT=http://127.0.0.1:$port ZFS2S3_STATE_DIR=$work/state
}

# s3 runs curl with SigV4 against the local MinIO.
s3() { curl -fsS --aws-sigv4 "aws:amz:us-east-1:s3" --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" "$@"; }
