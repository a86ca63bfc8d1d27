// Package ledger records which zfs send streams are stored in the bucket and
// holds the one safety rule: every stored snapshot stays restorable, that is
// reachable from a full stream through stored edges.
//
// Each stored stream is an Edge base -> target of a DAG whose vertices are
// snapshot GUIDs; a full stream is an edge from the virtual origin. Names are
// kept for people, GUIDs decide identity, so a snapshot re-created under an
// old name is a different vertex.
package ledger

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/zfs2s3/zfs2s3/transform"
)

// FormatVersion is the newest ledger format, which this code reads along
// with the older ones. Version 2 added Edge.Segments; version 3 the
// transform of a compressed or encrypted edge (transform/FORMAT.md) and
// the zfs send flags; version 4 the part digest of a plain edge (its
// SHA256 made of its parts' SHA-256s, with its PartSize). A ledger or manifest is written in the oldest
// version that holds it, so older zfs2s3 sharing the bucket keep working
// until an edge needs the newer format; then they refuse it with a message
// instead of misreading it.
const FormatVersion = 4

// Format is the oldest format version that holds the edge.
func (e Edge) Format() int {
	switch {
	case e.PartDigest():
		return 4
	case e.Transform != "" || e.SendFlags != "":
		return 3
	case len(e.Segments) > 0:
		return 2
	}
	return 1
}

// Snapshot identifies a snapshot by GUID; Name is what it was called when stored.
type Snapshot struct {
	Name string `yaml:"name" json:"name"`
	GUID uint64 `yaml:"guid" json:"guid"`
}

func (s Snapshot) String() string { return s.Name }

// Dataset is the part of the name before the '@'.
func (s Snapshot) Dataset() string { d, _, _ := strings.Cut(s.Name, "@"); return d }

// Short is the part of the name after the '@'.
func (s Snapshot) Short() string { _, short, _ := strings.Cut(s.Name, "@"); return short }

// Edge is one stored stream.
type Edge struct {
	Target      Snapshot  `yaml:"target" json:"target"`
	Base        *Snapshot `yaml:"base,omitempty" json:"base,omitzero"` // nil for a full stream
	Key         string    `yaml:"key" json:"key"`
	StreamBytes int64     `yaml:"stream_bytes" json:"stream_bytes"`
	StoredBytes int64     `yaml:"stored_bytes" json:"stored_bytes"`
	// SHA256 is the stream's digest: the hex SHA-256 of a plain edge's
	// whole stream; with PartDigest, the composite of the SHA-256s of its
	// parts of PartSize over all its objects ("hex-N",
	// transform.CompositeSHA256); for a transformed edge, see Transform.
	SHA256       string    `yaml:"sha256" json:"sha256"`
	Uploaded     time.Time `yaml:"uploaded" json:"uploaded"`
	StorageClass string    `yaml:"storage_class" json:"storage_class"`
	// Segments are the objects after Key that hold the rest of a stream
	// longer than one object can take (10,000 parts), in order; usually none.
	// StoredBytes counts all of them.
	Segments []Segment `yaml:"segments,omitempty" json:"segments,omitzero"`
	// Transform is the spec of a compressed and/or encrypted edge
	// ("zstd:3", "age", "zstd:3+age"; transform.ParseSpec), "" for a plain
	// one. Such an edge is stored as one object per segment of SegmentSize
	// plaintext bytes, described by Records in order; its SHA256 is then
	// the transform.StreamSHA256 of the records, and StoredBytes their
	// stored bytes. See transform/FORMAT.md.
	Transform   string `yaml:"transform,omitempty" json:"transform,omitzero"`
	SegmentSize int64  `yaml:"segment_size,omitempty" json:"segment_size,omitzero"`
	// PartSize is the part size the records' stored digests were made
	// with, or on a plain edge, the part size of its PartDigest.
	PartSize int64 `yaml:"part_size,omitempty" json:"part_size,omitzero"`
	// Recipients are the age public keys an encrypted edge was written to:
	// they tell which identity restores it.
	Recipients []string `yaml:"recipients,omitempty" json:"recipients,omitzero"`
	// SendFlags are the zfs send flags of the stream (zfs.SendFlags.String),
	// "" for none, on plain and transformed edges alike.
	SendFlags string             `yaml:"send_flags,omitempty" json:"send_flags,omitzero"`
	Records   []transform.Record `yaml:"objects,omitempty" json:"objects,omitzero"`
	// Removing is set before the object is deleted, so that an interrupted
	// remove is finished, not forgotten. The rule treats such an edge as gone.
	Removing bool `yaml:"removing,omitempty" json:"removing,omitzero"`
}

// PartDigest reports whether e is a plain edge whose SHA256 is made of
// its parts' digests (format 4): uploads hash each part once, and that one
// hash is also the request's payload hash and S3's checksum.
func (e Edge) PartDigest() bool { return e.Transform == "" && e.PartSize > 0 }

// Segment is one object of a stream stored in several.
type Segment struct {
	Key   string `yaml:"key" json:"key"`
	Bytes int64  `yaml:"bytes" json:"bytes"`
}

// SegmentKey names object i (from 0) of a stream stored under key: the key
// itself, then KEY.2, KEY.3 and so on. The ledger holds edges to this rule,
// so a damaged file cannot make remove delete another edge's object.
func SegmentKey(key string, i int) string {
	if i == 0 {
		return key
	}
	return key + "." + strconv.Itoa(i+1)
}

// Transformed reports whether the edge is stored in transform's format.
func (e Edge) Transformed() bool { return e.Transform != "" }

// Objects lists the objects that hold the edge's stream, in order.
func (e Edge) Objects() []Segment {
	if e.Transformed() {
		objs := make([]Segment, len(e.Records))
		for i, r := range e.Records {
			objs[i] = Segment{Key: SegmentKey(e.Key, i), Bytes: r.StoredBytes}
		}
		return objs
	}
	first := Segment{Key: e.Key, Bytes: e.StoredBytes}
	for _, s := range e.Segments {
		first.Bytes -= s.Bytes
	}
	return append([]Segment{first}, e.Segments...)
}

// Keys lists the keys of the edge's objects, in order.
func (e Edge) Keys() []string {
	if e.Transformed() {
		keys := make([]string, max(len(e.Records), 1))
		for i := range keys {
			keys[i] = SegmentKey(e.Key, i)
		}
		return keys
	}
	keys := []string{e.Key}
	for _, s := range e.Segments {
		keys = append(keys, s.Key)
	}
	return keys
}

// ID identifies an edge by the GUIDs of its ends; BaseGUID is 0 for a full stream.
type ID struct{ BaseGUID, TargetGUID uint64 }

// ID returns the edge's identity.
func (e Edge) ID() ID {
	if e.Base == nil {
		return ID{TargetGUID: e.Target.GUID}
	}
	return ID{BaseGUID: e.Base.GUID, TargetGUID: e.Target.GUID}
}

// BaseName is the base's name, "" for a full stream (as zfs send -i wants it).
func (e Edge) BaseName() string {
	if e.Base == nil {
		return ""
	}
	return e.Base.Name
}

// IsFull reports whether the edge is a full stream.
func (e Edge) IsFull() bool { return e.Base == nil }

// String names the edge the way users type it.
func (e Edge) String() string {
	if e.Base == nil {
		return e.Target.Name + " (full)"
	}
	return e.Base.Name + " -> " + e.Target.Name
}

// Ledger is the set of stored edges for one bucket and prefix.
type Ledger struct {
	Version int    `yaml:"version" json:"version"`
	Bucket  string `yaml:"bucket" json:"bucket"`
	Prefix  string `yaml:"prefix" json:"prefix"`
	// Generation counts saves; the bucket's copy carries it too, so a
	// machine can tell that another one changed the ledger since.
	Generation uint64 `yaml:"generation" json:"generation"`
	Edges      []Edge `yaml:"edges" json:"edges"`
}

// New returns an empty ledger for bucket and prefix.
func New(bucket, prefix string) *Ledger {
	return &Ledger{Version: FormatVersion, Bucket: bucket, Prefix: prefix, Edges: []Edge{}}
}

// Get returns the edge with id.
func (l *Ledger) Get(id ID) (Edge, bool) {
	for _, e := range l.Edges {
		if e.ID() == id {
			return e, true
		}
	}
	return Edge{}, false
}

// Stored reports whether e is recorded, under the same key: true when a
// run that crashed before cleaning up had recorded it already.
func (l *Ledger) Stored(e Edge) bool {
	old, ok := l.Get(e.ID())
	return ok && old.Key == e.Key
}

// Find returns the edge to target from base (empty base: the full stream),
// matched by name. GUIDs, when non-zero, narrow the match; an ambiguous
// match is an error that lists the candidates' GUIDs.
func (l *Ledger) Find(target, base string, targetGUID, baseGUID uint64) (Edge, error) {
	var found []Edge
	for _, e := range l.Edges {
		if e.Target.Name != target || (targetGUID != 0 && e.Target.GUID != targetGUID) {
			continue
		}
		switch {
		case base == "" && e.Base == nil:
		case base != "" && e.Base != nil && e.Base.Name == base && (baseGUID == 0 || e.Base.GUID == baseGUID):
		default:
			continue
		}
		found = append(found, e)
	}
	want := target + " (full)"
	if base != "" {
		want = base + " -> " + target
	}
	switch len(found) {
	case 0:
		return Edge{}, &NotFoundError{Edge: want, Stored: l.edgesTo(target)}
	case 1:
		return found[0], nil
	}
	msg := fmt.Sprintf("%d stored edges match %s (snapshots re-created under the same name); pick one with --guid/--base-guid:", len(found), want)
	for _, e := range found {
		msg += fmt.Sprintf(" [%s guid %d", e.Target.Name, e.Target.GUID)
		if e.Base != nil {
			msg += fmt.Sprintf(" from guid %d", e.Base.GUID)
		}
		msg += "]"
	}
	return Edge{}, fmt.Errorf("%s", msg)
}

// edgesTo lists the stored edges into snapshots named target, for hints.
func (l *Ledger) edgesTo(target string) []string {
	var s []string
	for _, e := range l.Edges {
		if e.Target.Name == target {
			s = append(s, e.String())
		}
	}
	return s
}

// NotFoundError says an edge is not in the ledger and what is stored instead.
type NotFoundError struct {
	Edge   string
	Stored []string
}

func (e *NotFoundError) Error() string {
	msg := e.Edge + " is not in the ledger"
	if len(e.Stored) > 0 {
		msg += fmt.Sprintf("; stored edges to that snapshot: %v", e.Stored)
	}
	return msg
}

// Add records a stored edge after checking it against the rule.
func (l *Ledger) Add(e Edge) error {
	if err := l.CheckAdd(e); err != nil {
		return err
	}
	l.Edges = append(l.Edges, e)
	return nil
}

// MarkRemoving flags an edge whose object is about to be deleted.
func (l *Ledger) MarkRemoving(id ID) {
	for i := range l.Edges {
		if l.Edges[i].ID() == id {
			l.Edges[i].Removing = true
		}
	}
}

// Drop deletes an edge from the ledger.
func (l *Ledger) Drop(id ID) {
	kept := l.Edges[:0]
	for _, e := range l.Edges {
		if e.ID() != id {
			kept = append(kept, e)
		}
	}
	l.Edges = kept
}

// Removing lists edges whose removal was started and must be finished.
func (l *Ledger) Removing() []Edge {
	var r []Edge
	for _, e := range l.Edges {
		if e.Removing {
			r = append(r, e)
		}
	}
	return r
}
