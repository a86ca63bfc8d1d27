package ledger

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/zfs2s3/zfs2s3/transform"
	"github.com/zfs2s3/zfs2s3/zfs"
)

// Limits a stored edge must respect. They are S3's and zfs's own, so an
// edge outside them can only come from a damaged or tampered file.
const (
	// MaxObjectBytes is the most one S3 object holds (5 TiB).
	MaxObjectBytes = 5 << 40
	// MaxSegments bounds an edge's further objects: 10,000 objects of
	// 5 TiB hold more than any pool sends.
	MaxSegments = 10_000
	// maxNameLen is ZFS's limit on a snapshot's full name.
	maxNameLen = 255
)

// Check reports what makes e unusable as a stored edge of a ledger for
// prefix. Everything zfs2s3 reads back, from the local ledger file, the
// bucket's copy or a manifest, is held to it before anything is read,
// restored from or deleted: names are snapshot names, the keys are exactly
// the ones ObjectKey derives under prefix (so a tampered file can never
// point at an object outside the prefix, at another host's backups or at
// another edge's object), sizes and the digest are plausible.
func (e Edge) Check(prefix string) error {
	if err := e.CheckKeys(prefix); err != nil {
		return err
	}
	if e.StreamBytes <= 0 || e.StoredBytes <= 0 {
		return fmt.Errorf("sizes %d/%d bytes: a stored stream is never empty", e.StreamBytes, e.StoredBytes)
	}
	if e.SendFlags != "" {
		f, err := zfs.ParseSendFlags(e.SendFlags)
		if err != nil || f.String() != e.SendFlags {
			return fmt.Errorf("send_flags %q: not a list zfs2s3 writes", e.SendFlags)
		}
	}
	if e.Transformed() {
		return e.checkTransform()
	}
	if e.SegmentSize != 0 || e.PartSize < 0 || len(e.Recipients) > 0 || len(e.Records) > 0 {
		return errors.New("segment_size, recipients or objects on an edge without a transform")
	}
	first := e.StoredBytes // e.Objects() without its allocation: this runs per edge on every load
	for i, o := range e.Segments {
		first -= o.Bytes
		if o.Bytes <= 0 || o.Bytes > MaxObjectBytes {
			return fmt.Errorf("object %s of %d bytes: S3 objects hold 1 byte to 5 TiB", o.Key, o.Bytes)
		}
		if e.PartSize > 0 && i < len(e.Segments)-1 && o.Bytes%e.PartSize != 0 {
			return fmt.Errorf("object %s of %d bytes is not whole parts of %d bytes, though another object follows it", o.Key, o.Bytes, e.PartSize)
		}
	}
	if first <= 0 || first > MaxObjectBytes {
		return fmt.Errorf("object %s of %d bytes: S3 objects hold 1 byte to 5 TiB", e.Key, first)
	}
	if !e.PartDigest() {
		if !isSHA256(e.SHA256) {
			return fmt.Errorf("sha256 %q is not 64 hex digits", e.SHA256)
		}
		return nil
	}
	if e.PartSize > MaxPartSize {
		return fmt.Errorf("part size %d: S3 parts hold 1 byte to 5 GiB", e.PartSize)
	}
	if len(e.Segments) > 0 && first%e.PartSize != 0 {
		return fmt.Errorf("object %s of %d bytes is not whole parts of %d bytes, though another object follows it", e.Key, first, e.PartSize)
	}
	if !isPartDigest(e.SHA256, e.StoredBytes, e.PartSize) {
		return fmt.Errorf("sha256 %q is not a digest of the %d parts of %d bytes the stream was uploaded in (64 hex digits, '-', the part count)", e.SHA256, (e.StoredBytes+e.PartSize-1)/e.PartSize, e.PartSize)
	}
	return nil
}

// isPartDigest reports whether s has the form of the composite digest of
// bytes uploaded in parts of partSize: 64 hex digits, '-', the number of
// parts (transform.CompositeSHA256).
func isPartDigest(s string, bytes, partSize int64) bool {
	sum, count, ok := strings.Cut(s, "-")
	want := max((bytes+partSize-1)/partSize, 1)
	return ok && isSHA256(sum) && count == strconv.FormatInt(want, 10)
}

// MaxPartSize is S3's largest part (5 GiB): stored digests are made of
// parts no larger.
const MaxPartSize = 5 << 30

// checkTransform checks a transformed edge's record (transform/FORMAT.md):
// a spec this version reads, a valid segment size, one record per object in
// order at the fixed offsets, every segment but the last exactly
// SegmentSize bytes, digests in their forms, and totals that add up.
func (e Edge) checkTransform() error {
	spec, err := transform.ParseSpec(e.Transform)
	if err != nil {
		return err
	}
	if !spec.Segmented() {
		return fmt.Errorf("transform %q transforms nothing: a plain edge has no transform", e.Transform)
	}
	if len(e.Segments) > 0 {
		return errors.New("a transformed edge has objects, not segments")
	}
	if err := transform.CheckSegmentSize(e.SegmentSize); err != nil {
		return err
	}
	if e.PartSize <= 0 || e.PartSize > MaxPartSize {
		return fmt.Errorf("part size %d: S3 parts hold 1 byte to 5 GiB", e.PartSize)
	}
	if spec.Encrypt != (len(e.Recipients) > 0) {
		return fmt.Errorf("transform %s with %d recipients: an encrypted edge names its recipients, another none", e.Transform, len(e.Recipients))
	}
	for _, r := range e.Recipients {
		if _, err := transform.ParseRecipient(r); err != nil {
			return fmt.Errorf("recipient %q: %v", r, err)
		}
	}
	n := len(e.Records)
	if n == 0 || n > MaxSegments {
		return fmt.Errorf("%d objects: a transformed edge has 1 to %d", n, MaxSegments)
	}
	var plain, stored int64
	for i, r := range e.Records {
		switch {
		case r.Index != i || r.PlainOffset != int64(i)*e.SegmentSize:
			return fmt.Errorf("object %d records segment %d at offset %d", i, r.Index, r.PlainOffset)
		case i < n-1 && r.PlainBytes != e.SegmentSize, r.PlainBytes <= 0 || r.PlainBytes > e.SegmentSize:
			return fmt.Errorf("object %d holds %d plaintext bytes: segments have %d, the last 1 to %d", i, r.PlainBytes, e.SegmentSize, e.SegmentSize)
		case !isSHA256(r.PlainSHA256):
			return fmt.Errorf("object %d: plain_sha256 %q is not 64 hex digits", i, r.PlainSHA256)
		case r.StoredBytes <= 0 || r.StoredBytes > MaxObjectBytes:
			return fmt.Errorf("object %d of %d bytes: S3 objects hold 1 byte to 5 TiB", i, r.StoredBytes)
		}
		sum, count, ok := strings.Cut(r.StoredSHA256, "-")
		parts, err := strconv.ParseInt(count, 10, 64)
		if want := (r.StoredBytes + e.PartSize - 1) / e.PartSize; !ok || !isSHA256(sum) || err != nil || parts != want || count != strconv.FormatInt(want, 10) {
			return fmt.Errorf("object %d: stored_sha256 %q is not a digest of %d parts (64 hex digits, '-', the part count)", i, r.StoredSHA256, want)
		}
		plain += r.PlainBytes
		stored += r.StoredBytes
	}
	if plain != e.StreamBytes || stored != e.StoredBytes {
		return fmt.Errorf("the objects hold %d plaintext and %d stored bytes, the edge records %d and %d", plain, stored, e.StreamBytes, e.StoredBytes)
	}
	if want, _ := transform.StreamSHA256(e.Records); e.SHA256 != want {
		return fmt.Errorf("sha256 %q is not the stream digest of its objects (%s)", e.SHA256, want)
	}
	return nil
}

// CheckKeys checks e's snapshot names and its objects' keys (see Check),
// for an edge whose sizes are not known yet: a pending upload's.
func (e Edge) CheckKeys(prefix string) error {
	if err := checkSnapshot(e.Target); err != nil {
		return fmt.Errorf("target: %w", err)
	}
	if e.Base != nil {
		if err := checkSnapshot(*e.Base); err != nil {
			return fmt.Errorf("base: %w", err)
		}
		if e.Base.Dataset() != e.Target.Dataset() {
			return fmt.Errorf("base %s is on another dataset than its target", e.Base.Name)
		}
		if e.Base.GUID == e.Target.GUID {
			return errors.New("base and target are the same snapshot")
		}
	}
	if want := ObjectKey(prefix, e.Target, e.Base); e.Key != want {
		return fmt.Errorf("key %q is not the key zfs2s3 derives for this edge under prefix %q (%q)", e.Key, NormalizePrefix(prefix), want)
	}
	if len(e.Segments) > MaxSegments {
		return fmt.Errorf("%d further objects: at most %d", len(e.Segments), MaxSegments)
	}
	for i, s := range e.Segments {
		if want := SegmentKey(e.Key, i+1); s.Key != want {
			return fmt.Errorf("further object %d is %q, not %q", i+2, s.Key, want)
		}
	}
	return nil
}

// checkSnapshot accepts what ZFS itself accepts as a snapshot name, as far
// as keys and zfs's argument parsing depend on it: one '@', non-empty
// dataset components that are not "." or "..", no control characters, no
// leading '-', and a GUID. It is deliberately looser than
// zfs.CheckSnapshotName, which checks what users type: a ledger must never
// be refused for a name some zfs version produced.
func checkSnapshot(s Snapshot) error {
	ds, short, ok := strings.Cut(s.Name, "@")
	switch {
	case s.GUID == origin:
		return fmt.Errorf("%q has no GUID", s.Name)
	case !ok || ds == "" || short == "" || strings.ContainsAny(short, "@/"):
		return fmt.Errorf("%q is not a snapshot name (DATASET@SNAPSHOT)", s.Name)
	case len(s.Name) > maxNameLen:
		return fmt.Errorf("snapshot name of %d bytes: ZFS allows %d", len(s.Name), maxNameLen)
	case strings.HasPrefix(s.Name, "-"):
		return fmt.Errorf("%q begins with '-'", s.Name)
	case strings.ContainsFunc(s.Name, func(r rune) bool { return r < 0x20 || r == 0x7f }):
		return fmt.Errorf("%q contains a control character", s.Name)
	}
	for _, c := range strings.Split(ds, "/") {
		if c == "" || c == "." || c == ".." {
			return fmt.Errorf("%q has an empty, '.' or '..' dataset component", s.Name)
		}
	}
	return nil
}

func isSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !(s[i] >= '0' && s[i] <= '9' || s[i] >= 'a' && s[i] <= 'f') {
			return false
		}
	}
	return true
}

// cycle returns a GUID on a cycle of edges, if any. zfs sends an
// incremental only from an older snapshot to a newer one, so stored edges
// never form a cycle; a file that does is damaged, and walking it would
// never end.
func cycle(edges []Edge) (uint64, bool) {
	next := make(map[uint64][]uint64, len(edges))
	indegree := make(map[uint64]int, len(edges))
	for _, e := range edges {
		id := e.ID()
		next[id.BaseGUID] = append(next[id.BaseGUID], id.TargetGUID)
		indegree[id.TargetGUID]++
		if _, ok := indegree[id.BaseGUID]; !ok {
			indegree[id.BaseGUID] = 0
		}
	}
	var todo []uint64
	for v, n := range indegree {
		if n == 0 {
			todo = append(todo, v)
		}
	}
	done := 0
	for len(todo) > 0 {
		v := todo[len(todo)-1]
		todo = todo[:len(todo)-1]
		done++
		for _, w := range next[v] {
			if indegree[w]--; indegree[w] == 0 {
				todo = append(todo, w)
			}
		}
	}
	if done == len(indegree) {
		return 0, false
	}
	for v, n := range indegree {
		if n > 0 {
			return v, true
		}
	}
	return 0, false
}
