# zfs2s3: build, test and demo on a fresh Debian machine (run as root:
# zfs-fuse needs /dev/fuse and starts a daemon).

MINIO_VERSION := v0.0.0-20260212201848-7aac2a2c5b7c
CACHE         := $(HOME)/.cache/zfs2s3
MINIO         := $(CACHE)/bin/minio
export ZFS2S3_MINIO := $(MINIO)

.PHONY: build test demo bench deps

build:
	go build -o zfs2s3 .

# Installs what the tests need when missing (zfs-fuse from Debian, MinIO built
# with go install and cached), then runs unit and end-to-end tests; the tests
# start zfs-fuse and MinIO themselves and stop what they started.
test: deps
	go vet ./...
	CI=$${CI:-true} go test -count=1 ./...

demo: deps build
	./testdata/demo.sh

# zfs2s3 against aws-cli, rclone and the AWS SDK's manager.Uploader; see testdata/bench.sh.
bench: deps build
	go build -o sdkupload ./internal/bench/sdkupload
	@command -v aws >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq awscli; }
	@command -v rclone >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rclone; }
	./testdata/bench.sh

deps: $(MINIO)
	@command -v zfs-fuse >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq zfs-fuse; }

$(MINIO):
	@echo "building MinIO $(MINIO_VERSION) into $(CACHE) (first run only, about 5 minutes)"
	GOBIN=$(CACHE)/bin go install github.com/minio/minio@$(MINIO_VERSION)
