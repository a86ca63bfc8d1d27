package testbed

// RcloneVersion is what make test-compat installs; Debian's rclone (1.60)
// has no serve s3.
const RcloneVersion = "v1.76.0"

// StartRclone starts rclone serve s3 on 127.0.0.1 over a local directory
// whose subdirectories are the buckets.
func StartRclone() (Server, error) {
	bin, err := CachedBinary("rclone", "ZFS2S3_RCLONE")
	if err != nil {
		return nil, err
	}
	// An empty config keeps the user's rclone.conf out of the test.
	return startProcess("rclone", bin, []string{"RCLONE_CONFIG=/dev/null"},
		"serve", "s3", "--auth-key", "USER,PASSWORD", "--addr", "ADDR", "DIR")
}
