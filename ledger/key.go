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
	// Built by hand: every edge of a ledger is checked against its derived
	// key when the ledger is loaded, 100,000 times for a large one.
	b := make([]byte, 0, len(prefix)+2*len(target.Name)+64)
	b = append(b, NormalizePrefix(prefix)...)
	b = appendEscaped(b, target.Dataset(), true)
	b = append(b, '/')
	b = appendEscaped(b, target.Short(), false)
	b = appendGUID(b, target.GUID)
	if base == nil {
		return string(append(b, ".full.zfs"...))
	}
	b = append(b, ".from."...)
	b = appendEscaped(b, base.Short(), false)
	b = appendGUID(b, base.GUID)
	return string(append(b, ".zfs"...))
}

// appendGUID appends '@' and the GUID as 16 hex digits.
func appendGUID(b []byte, guid uint64) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '@')
	for shift := 60; shift >= 0; shift -= 4 {
		b = append(b, hex[guid>>shift&0xf])
	}
	return b
}

// appendEscaped appends s with bytes outside [A-Za-z0-9._-] (and '/' when
// keepSlash) percent-encoded.
func appendEscaped(b []byte, s string, keepSlash bool) []byte {
	const hex = "0123456789ABCDEF"
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-' || c == '/' && keepSlash {
			b = append(b, c)
		} else {
			b = append(b, '%', hex[c>>4], hex[c&0xf])
		}
	}
	return b
}

// NormalizePrefix makes a non-empty prefix end in '/'.
func NormalizePrefix(prefix string) string {
	if prefix != "" && !strings.HasSuffix(prefix, "/") {
		return prefix + "/"
	}
	return prefix
}

// CheckPrefix refuses prefixes whose keys a store may file elsewhere: a
// leading '/' (MinIO and others drop it, so "--prefix /" shares the root
// prefix's keys and ledger copy), "//", and "." or ".." segments, which
// stores, proxies and URL-cleaning clients resolve away.
func CheckPrefix(p string) error {
	if p == "" {
		return nil
	}
	why := ""
	switch {
	case strings.HasPrefix(p, "/"):
		why = "it begins with '/'"
	case strings.Contains(p, "//"):
		why = "it contains '//'"
	case strings.ContainsFunc(p, func(r rune) bool { return r < 0x20 || r == 0x7f }):
		why = "it contains a control character"
	default:
		for _, seg := range strings.Split(strings.TrimSuffix(p, "/"), "/") {
			if seg == "." || seg == ".." {
				why = fmt.Sprintf("it has a %q segment", seg)
			}
		}
	}
	if why != "" {
		return fmt.Errorf("--prefix %q: %s; want folder names separated by '/', e.g. host1 or backups/host1", p, why)
	}
	return nil
}
