package s3up

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/zfs2s3/zfs2s3/ledger"
)

// ObjectKey names the object of one edge:
//
//	PREFIX/DATASET/SNAP@TARGETGUID.full.zfs
//	PREFIX/DATASET/SNAP@TARGETGUID.from.BASESNAP@BASEGUID.zfs
//
// GUIDs (hex) make keys unique per edge even when a snapshot is re-created
// under an old name. Dataset path components stay '/'-separated so keys read
// like the pool; snapshot names cannot hold '/' or '@', so the keys of
// different datasets never collide. Bytes outside [A-Za-z0-9._-] are
// percent-encoded, so spaces and unicode are safe for every S3 tool.
func ObjectKey(prefix string, target ledger.Snapshot, base *ledger.Snapshot) string {
	var b strings.Builder
	b.WriteString(NormalizePrefix(prefix))
	for i, part := range strings.Split(target.Dataset(), "/") {
		if i > 0 {
			b.WriteByte('/')
		}
		b.WriteString(escape(part))
	}
	fmt.Fprintf(&b, "/%s@%016x", escape(target.Short()), target.GUID)
	if base == nil {
		b.WriteString(".full.zfs")
		return b.String()
	}
	fmt.Fprintf(&b, ".from.%s@%016x.zfs", escape(base.Short()), base.GUID)
	return b.String()
}

// IsStreamKey reports whether key names a stream object: KEY.zfs, or
// KEY.zfs.2 and on for the further objects of a long stream
// (ledger.SegmentKey).
func IsStreamKey(key string) bool { return streamKey.MatchString(key) }

var streamKey = regexp.MustCompile(`\.zfs(\.[0-9]+)?$`)

// ManifestKey is the small object written after an edge's object is complete.
// It carries what is only known at the end (size, SHA-256), so the ledger
// can be rebuilt from the bucket alone.
func ManifestKey(objectKey string) string { return objectKey + manifestSuffix }

// ManifestOf returns the object key a manifest key belongs to; ok is false
// for keys that are not manifests.
func ManifestOf(key string) (objectKey string, ok bool) {
	return strings.CutSuffix(key, manifestSuffix)
}

const manifestSuffix = ".manifest.yaml"

// NormalizePrefix makes a non-empty prefix end in '/'.
func NormalizePrefix(prefix string) string {
	if prefix != "" && !strings.HasSuffix(prefix, "/") {
		return prefix + "/"
	}
	return prefix
}

func escape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("._-", c) >= 0 {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}
