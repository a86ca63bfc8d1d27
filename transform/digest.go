package transform

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
)

// The digest of a segment's stored bytes is made from the SHA-256 of each
// of its parts, so that the uploader hashes each part once and uses that
// one hash three times: as the request's payload hash (SigV4), as the
// checksum S3 verifies (x-amz-checksum-sha256), and here. It is
//
//	hex(SHA-256(sha256(part 1) || sha256(part 2) || ... )) "-" N
//
// over the binary part digests, every part PartSize bytes but the last (an
// empty object is one empty part), which is also what S3 reports as the
// COMPOSITE SHA-256 checksum of such a multipart object (there in base64).
// Anyone with the object and the part size recomputes it; FORMAT.md shows
// how by hand.

// CompositeSHA256 combines part digests, in part order, as above.
func CompositeSHA256(parts [][sha256.Size]byte) string {
	h := sha256.New()
	for _, p := range parts {
		h.Write(p[:])
	}
	n := max(len(parts), 1)
	if len(parts) == 0 {
		e := sha256.Sum256(nil)
		h.Write(e[:])
	}
	return fmt.Sprintf("%s-%d", hex.EncodeToString(h.Sum(nil)), n)
}

// StoredHash computes CompositeSHA256 of bytes written to it, cutting them
// into parts of a fixed size. It is for readers of stored objects (verify,
// restore) and for tests; an uploader combines the part digests it already
// has with CompositeSHA256 instead.
type StoredHash struct {
	partSize int64
	cur      hash.Hash
	curN     int64
	parts    [][sha256.Size]byte
}

// NewStoredHash returns a StoredHash for parts of partSize bytes.
func NewStoredHash(partSize int64) *StoredHash {
	if partSize <= 0 {
		panic("transform: NewStoredHash: part size must be positive")
	}
	return &StoredHash{partSize: partSize, cur: sha256.New()}
}

// Write never fails.
func (s *StoredHash) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		take := min(int64(len(p)), s.partSize-s.curN)
		s.cur.Write(p[:take])
		s.curN += take
		p = p[take:]
		if s.curN == s.partSize {
			s.endPart()
		}
	}
	return n, nil
}

func (s *StoredHash) endPart() {
	var d [sha256.Size]byte
	s.cur.Sum(d[:0])
	s.parts = append(s.parts, d)
	s.cur.Reset()
	s.curN = 0
}

// Sum is the digest of what was written so far; writing may go on.
func (s *StoredHash) Sum() string {
	parts := s.parts
	if s.curN > 0 || len(parts) == 0 {
		var d [sha256.Size]byte
		s.cur.Sum(d[:0])
		parts = append(parts[:len(parts):len(parts)], d)
	}
	return CompositeSHA256(parts)
}

// StreamSHA256 is the digest of a whole segmented stream's plaintext:
// hex(SHA-256 of the concatenated binary SHA-256s of its segments'
// plaintexts, in order). Hashing the plaintext once, per segment, gives
// both the segments' digests and this.
func StreamSHA256(segments []Record) (string, error) {
	h := sha256.New()
	for _, r := range segments {
		b, err := hex.DecodeString(r.PlainSHA256)
		if err != nil || len(b) != sha256.Size {
			return "", fmt.Errorf("segment %d: plaintext digest %q is not a hex SHA-256", r.Index, r.PlainSHA256)
		}
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
