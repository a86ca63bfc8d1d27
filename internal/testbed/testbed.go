// Package testbed starts the real components the end-to-end tests run
// against: zfs-fuse with file-backed pools, and S3 servers on 127.0.0.1
// (MinIO, versitygw, rclone serve s3, Ceph RGW) behind one Server interface.
// It also has a small HTTP proxy that slows, fails or hangs S3 requests.
package testbed

import (
	"os"
	"testing"
)

// Require reports that a component the test needs is unavailable. Under
// CI=true that is a failure, never a skip: a skipped end-to-end suite would
// be a hidden red build.
func Require(tb testing.TB, what string, err error) {
	tb.Helper()
	if err == nil {
		return
	}
	if os.Getenv("CI") == "true" {
		tb.Fatalf("%s is required under CI=true and unavailable: %v (make test installs it, or make test-compat for rclone and Ceph)", what, err)
	}
	tb.Skipf("%s unavailable: %v (make test installs it, or make test-compat for rclone and Ceph)", what, err)
}
