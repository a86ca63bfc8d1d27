package s3up

import (
	"regexp"
	"strings"
)

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
