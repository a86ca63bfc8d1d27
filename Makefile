# zfs2s3: build, test and demo on a fresh Debian machine (run as root:
# zfs-fuse needs /dev/fuse and starts a daemon).

MINIO_VERSION     := v0.0.0-20260212201848-7aac2a2c5b7c
VERSITYGW_VERSION := v1.8.0
RCLONE_VERSION    := v1.76.0
CEPH_PACKAGES     := radosgw ceph-mon ceph-osd ceph-common
CACHE             := $(HOME)/.cache/zfs2s3
MINIO             := $(CACHE)/bin/minio
VERSITYGW         := $(CACHE)/bin/versitygw
RCLONE            := $(CACHE)/bin/rclone
export ZFS2S3_MINIO     := $(MINIO)
export ZFS2S3_VERSITYGW := $(VERSITYGW)
export ZFS2S3_RCLONE    := $(RCLONE)

.PHONY: build test test-compat demo bench bench-scale deps compat-deps

build:
	go build -o zfs2s3 .

# Installs what the tests need when missing (zfs-fuse from Debian, MinIO and
# versitygw built with go install and cached), then runs unit and end-to-end
# tests; the scenario set of compat_e2e_test.go runs against MinIO and
# versitygw (with MD5 ETags and with --data-integrity-etag). The tests start
# zfs-fuse and the servers themselves and stop what they started.
test: deps
	go vet ./...
	CI=$${CI:-true} ZFS2S3_SERVERS=minio,versitygw,versitygw-etag go test -count=1 -timeout 30m ./...

# The same scenario set against the other S3 servers: rclone serve s3 (built
# with go install and cached) and Ceph RGW (Debian's radosgw, a one-OSD
# in-memory cluster on 127.0.0.1 that the test starts and stops).
test-compat: deps compat-deps
	CI=$${CI:-true} ZFS2S3_SERVERS=rclone,ceph go test -count=1 -timeout 30m -run TestCompatScenarios .

demo: deps build
	./testdata/demo.sh

# zfs2s3 against aws-cli, rclone and the AWS SDK's manager.Uploader; see testdata/bench.sh.
bench: deps build
	go build -o sdkupload ./internal/bench/sdkupload
	@command -v aws >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq awscli; }
	@command -v rclone >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rclone; }
	./testdata/bench.sh
	$(MAKE) bench-scale

# Issue 9's scale: a backup run over 200 datasets x 100 stored snapshots with
# nothing new (wall time, S3 requests), and the bytes of ledger bookkeeping
# written per edge; a recorded pool (internal/bench/fakezfs) and real MinIO.
bench-scale: deps
	ZFS2S3_MINIO=$(MINIO) go test -run '^$$' -bench 'BenchmarkScale' -benchtime 1x -v ./backup 2>&1 | grep -E '^(Benchmark|    scale_bench_test|ok|FAIL|---)'

deps: $(MINIO) $(VERSITYGW) $(CACHE)/bin/mc
	@command -v zfs-fuse >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq zfs-fuse; }
	@command -v age >/dev/null && command -v zstd >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq age zstd; }

compat-deps: $(RCLONE)
	@command -v radosgw >/dev/null && command -v ceph-mon >/dev/null && command -v ceph-osd >/dev/null && \
	  command -v ceph >/dev/null || { echo "installing Ceph from Debian (first run only, about a minute)"; apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(CEPH_PACKAGES); }

$(MINIO):
	@echo "building MinIO $(MINIO_VERSION) into $(CACHE) (first run only, about 5 minutes)"
	GOBIN=$(CACHE)/bin go install github.com/minio/minio@$(MINIO_VERSION)

$(VERSITYGW):
	@echo "building versitygw $(VERSITYGW_VERSION) into $(CACHE) (first run only, about 4 minutes)"
	GOBIN=$(CACHE)/bin go install github.com/versity/versitygw/cmd/versitygw@$(VERSITYGW_VERSION)

# mc, MinIO's client, creates the users with IAM policies of fleet_e2e_test.go.
$(CACHE)/bin/mc:
	@echo "building mc into $(CACHE) (first run only, about a minute)"
	GOBIN=$(CACHE)/bin go install github.com/minio/mc@v0.0.0-20250313080218-cf909e1063a9

$(RCLONE):
	@echo "building rclone $(RCLONE_VERSION) into $(CACHE) (first run only, about 6 minutes)"
	GOBIN=$(CACHE)/bin go install github.com/rclone/rclone@$(RCLONE_VERSION)
