package testbed

// VersityGWVersion is what make test installs.
const VersityGWVersion = "v1.8.0"

// StartVersityGW starts versitygw's posix backend on 127.0.0.1. With
// integrityETag (--data-integrity-etag) its ETags are not MD5-based and
// part ETags are not hex, as on stores that checksum data their own way.
func StartVersityGW(integrityETag bool) (Server, error) {
	bin, err := CachedBinary("versitygw", "ZFS2S3_VERSITYGW")
	if err != nil {
		return nil, err
	}
	name, args := "versitygw", []string{"--port", "ADDR", "--access", "USER", "--secret", "PASSWORD", "posix", "DIR"}
	if integrityETag {
		name, args = "versitygw-etag", []string{"--port", "ADDR", "--access", "USER", "--secret", "PASSWORD", "posix", "--data-integrity-etag", "DIR"}
	}
	return startProcess(name, bin, nil, args...)
}
