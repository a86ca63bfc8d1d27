package ledger

import (
	"fmt"
	"strings"
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
//
// The rule is part of the ledger format: an edge's key must be the one
// derived here under the ledger's prefix (see Edge.Check), so that a
// tampered ledger or manifest can never point zfs2s3 at an object it did
// not write, such as another host's backups.
func ObjectKey(prefix string, target Snapshot, base *Snapshot) string {
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
