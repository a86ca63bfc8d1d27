// Package transform encodes and decodes the segments of a compressed and/or
// encrypted stream: each segment is, independently, a sequence of zstd
// frames (klauspost/compress) wrapped in one age file (filippo.io/age, X25519
// recipients), either step optional. It knows nothing of S3 or zfs: it turns
// plaintext into stored bytes and back, with the counters and digests the
// ledger records. FORMAT.md beside this file is the stable description of
// what it writes.
package transform

import (
	"fmt"
	"strconv"
	"strings"
)

// Compress names a compression. The names are stored in ledgers and
// manifests: never rename one.
type Compress string

const (
	CompressNone Compress = "none"
	CompressZstd Compress = "zstd"
)

// Zstd levels accepted, as the zstd CLI numbers them. DefaultZstdLevel is
// zstd's own default: on text-like data it is within a few percent of the
// higher levels at several times their speed.
const (
	MinZstdLevel     = 1
	MaxZstdLevel     = 19
	DefaultZstdLevel = 3
)

// Spec is what a transform does to each segment. The zero Spec is no
// transform at all, which is not a segmented stream (see Segmented).
type Spec struct {
	Compress Compress
	// Level is the zstd level asked for (1..19), 0 when Compress is none.
	// klauspost/compress maps it to one of its four encoders (1-2 fastest,
	// 3-5 default, 6-9 better, 10-19 best); the level never matters to a
	// decoder, it is recorded to say what was asked.
	Level int
	// Encrypt is true when each segment is an age file to X25519 recipients.
	Encrypt bool
}

// Segmented reports whether s transforms anything. A stream with no
// transform is stored as before transforms existed (plain objects, no
// segments); anything else is stored as segments in this package's format.
func (s Spec) Segmented() bool { return s.compress() != CompressNone || s.Encrypt }

func (s Spec) compress() Compress {
	if s.Compress == "" {
		return CompressNone
	}
	return s.Compress
}

// CompressString is the --compress value that gives s's compression:
// "none" or "zstd:LEVEL".
func (s Spec) CompressString() string {
	if s.compress() == CompressZstd {
		return "zstd:" + strconv.Itoa(s.Level)
	}
	return string(CompressNone)
}

// String is the spec as the ledger stores it: "none", "zstd:3", "age" or
// "zstd:3+age". ParseSpec reads it back.
func (s Spec) String() string {
	switch {
	case s.Encrypt && s.compress() == CompressNone:
		return "age"
	case s.Encrypt:
		return s.CompressString() + "+age"
	}
	return s.CompressString()
}

// ParseCompress reads a --compress value: none, zstd (level 3) or
// zstd:LEVEL with LEVEL from 1 to 19. It returns a Spec without encryption.
func ParseCompress(v string) (Spec, error) {
	name, level, hasLevel := strings.Cut(v, ":")
	switch Compress(name) {
	case CompressNone:
		if hasLevel {
			return Spec{}, fmt.Errorf("compress %q: none takes no level; use none, zstd or zstd:LEVEL (LEVEL 1 to 19)", v)
		}
		return Spec{Compress: CompressNone}, nil
	case CompressZstd:
		if !hasLevel {
			return Spec{Compress: CompressZstd, Level: DefaultZstdLevel}, nil
		}
		n, err := strconv.Atoi(level)
		if err != nil || n < MinZstdLevel || n > MaxZstdLevel {
			return Spec{}, fmt.Errorf("compress %q: the zstd level must be a whole number from %d to %d (zstd:%d is the default)", v, MinZstdLevel, MaxZstdLevel, DefaultZstdLevel)
		}
		return Spec{Compress: CompressZstd, Level: n}, nil
	}
	return Spec{}, fmt.Errorf("compress %q: unknown compression; use none, zstd or zstd:LEVEL (LEVEL 1 to 19)", v)
}

// ParseSpec reads a Spec written by String.
func ParseSpec(v string) (Spec, error) {
	c, enc := v, false
	if rest, ok := strings.CutSuffix(v, "+age"); ok && rest != string(CompressNone) {
		c, enc = rest, true
	} else if v == "age" {
		c, enc = string(CompressNone), true
	}
	s, err := ParseCompress(c)
	if err != nil || c == string(CompressZstd) { // stored specs always carry the level
		return Spec{}, fmt.Errorf("transform %q is not one this version of zfs2s3 knows (a newer one wrote it?): want none, zstd:LEVEL, age or zstd:LEVEL+age", v)
	}
	s.Encrypt = enc
	return s, nil
}
