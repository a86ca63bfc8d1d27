package ledger

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/go-json-experiment/json"
)

// The bucket's copy of the ledger is a journal per dataset, so that an
// upload rewrites only its own dataset's part, and a few hundred bytes of
// it, not the whole ledger of a host:
//
//	PREFIX.zfs2s3/ledger/DS/SEQ.json
//
// DS is the dataset's name percent-escaped (url.PathEscape: tank/data is
// tank%2Fdata), so that no dataset's objects share a listing prefix with a
// nested one's; SEQ counts the dataset's entries from 1, as 12 decimal
// digits so that names sort in order. An entry is a checkpoint ("full":
// every edge of the dataset) or a delta ("delta": the edges added or
// changed since SEQ-1, whole, and the IDs of the edges dropped). Every
// entry is written only where there was none (If-None-Match: *): two
// writers racing for a SEQ cannot both win, which one name per SEQ
// guarantees; a full and a delta under different names for the same SEQ
// could. Readers take the newest full and the deltas after it; entries
// older than the newest full are superseded and deleted when possible.

// JournalFormat is the newest format version of the bucket's journal
// entries. Version 3 is the first; version 4 may hold edges of ledger
// format 4 (part digests). An entry is written in the oldest version that
// holds its edges, so that the release before keeps reading a bucket
// until an edge needs the newer format, and then refuses it as newer.
const JournalFormat = 4

// entryFormat is the oldest journal format that holds edges.
func entryFormat(edges []Edge) int {
	v := 3
	for i := range edges {
		if edges[i].Format() > 3 {
			v = 4
		}
	}
	return v
}

// StubFormat is the version of the ledger.yaml stub that tells older
// zfs2s3 (which read versions 1 and 2 there, as a whole ledger) that the
// bucket holds a newer format. It is far above any whole ledger's version
// (FormatVersion), so that no ledger is ever taken for the stub nor the
// stub for a ledger; older releases refuse it as a newer format whatever
// the number, and they refuse any extra field as damage (and would then
// overwrite it), so the stub is marked by its version alone.
const StubFormat = 1000

// MaxJournalEntryBytes bounds the read of one journal entry; a full of a
// dataset is about 420 bytes per edge, so this is far above any real one.
const MaxJournalEntryBytes = 64 << 20

// JournalDir is where the tree under prefix keeps its ledger journals,
// along with the ledger.yaml stub: one LIST of it sees every entry.
func JournalDir(prefix string) string { return NormalizePrefix(prefix) + ".zfs2s3/" }

// JournalKey names entry seq of dataset's journal under prefix.
func JournalKey(prefix, dataset string, seq uint64) string {
	return JournalDir(prefix) + "ledger/" + url.PathEscape(dataset) + "/" + fmt.Sprintf("%012d", seq) + ".json"
}

// ParseJournalKey returns the dataset and SEQ a key under JournalDir
// names, and false for any key that is not exactly a JournalKey.
func ParseJournalKey(prefix, key string) (dataset string, seq uint64, ok bool) {
	rest, ok := strings.CutPrefix(key, JournalDir(prefix)+"ledger/")
	if !ok {
		return "", 0, false
	}
	esc, name, ok := strings.Cut(rest, "/")
	if !ok {
		return "", 0, false
	}
	num, ok := strings.CutSuffix(name, ".json")
	if !ok || len(num) != 12 {
		return "", 0, false
	}
	seq, err := strconv.ParseUint(num, 10, 64)
	if err != nil || seq == 0 {
		return "", 0, false
	}
	dataset, err = url.PathUnescape(esc)
	if err != nil || dataset == "" || url.PathEscape(dataset) != esc {
		return "", 0, false
	}
	return dataset, seq, true
}

// Entry kinds.
const (
	EntryFull  = "full"
	EntryDelta = "delta"
)

// DroppedEdge names an edge a delta removes from the dataset.
type DroppedEdge struct {
	BaseGUID   uint64 `json:"base_guid"`
	TargetGUID uint64 `json:"target_guid"`
}

// Entry is one object of a dataset's journal.
type Entry struct {
	Version int    `json:"version"`
	Kind    string `json:"kind"`
	Bucket  string `json:"bucket"`
	Prefix  string `json:"prefix"`
	Dataset string `json:"dataset"`
	Seq     uint64 `json:"seq"`
	// Edges are all of the dataset's edges (full), or those added or
	// changed (delta), whole.
	Edges   []Edge        `json:"edges"`
	Dropped []DroppedEdge `json:"dropped,omitzero"`
}

// MarshalEntry encodes an entry: JSON, one edge per line.
func MarshalEntry(e *Entry) ([]byte, error) {
	head := struct {
		Version int    `json:"version"`
		Kind    string `json:"kind"`
		Bucket  string `json:"bucket"`
		Prefix  string `json:"prefix"`
		Dataset string `json:"dataset"`
		Seq     uint64 `json:"seq"`
	}{entryFormat(e.Edges), e.Kind, e.Bucket, e.Prefix, e.Dataset, e.Seq}
	h, err := json.Marshal(head)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	buf.Write(h[:len(h)-1])
	buf.WriteString(",\n \"edges\": [")
	for i := range e.Edges {
		if i > 0 {
			buf.WriteByte(',')
		}
		buf.WriteString("\n  ")
		if err := json.MarshalWrite(&buf, &e.Edges[i]); err != nil {
			return nil, fmt.Errorf("edge %s: %w", e.Edges[i], err)
		}
	}
	buf.WriteString("]")
	if len(e.Dropped) > 0 {
		d, err := json.Marshal(e.Dropped)
		if err != nil {
			return nil, err
		}
		buf.WriteString(",\n \"dropped\": ")
		buf.Write(d)
	}
	buf.WriteString("}\n")
	return buf.Bytes(), nil
}

// ParseEntry decodes the journal entry stored under key and holds it to
// everything the key and the tree say it must be: written for this bucket,
// prefix, dataset and SEQ, every edge of that dataset and passing
// Edge.Check, no edge twice. An entry that fails is refused whole
// (ErrDamaged); one in a newer format is ErrNewerFormat.
func ParseEntry(data []byte, bucket, prefix, key string) (*Entry, error) {
	dataset, seq, ok := ParseJournalKey(prefix, key)
	if !ok {
		return nil, fmt.Errorf("%w: %s is not a journal entry's name", ErrDamaged, key)
	}
	var v struct {
		Version int `json:"version"`
	}
	if err := json.Unmarshal(data, &v); err != nil {
		return nil, fmt.Errorf("%w: journal entry %s: %v", ErrDamaged, key, err)
	}
	if v.Version > JournalFormat {
		return nil, newerFormat(fmt.Sprintf("journal entry %s has format version %d, this zfs2s3 reads %d; upgrade zfs2s3", key, v.Version, JournalFormat))
	}
	var e Entry
	if err := json.Unmarshal(data, &e, json.RejectUnknownMembers(true)); err != nil {
		return nil, fmt.Errorf("%w: journal entry %s: %v", ErrDamaged, key, err)
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: journal entry %s: %s; it was edited or tampered with", ErrDamaged, key, fmt.Sprintf(format, args...))
	}
	switch {
	case e.Version < 3 || e.Version > JournalFormat:
		return nil, bad("format version %d", e.Version)
	case e.Bucket != bucket || e.Prefix != prefix:
		return nil, bad("it is for bucket %q prefix %q", e.Bucket, e.Prefix)
	case e.Dataset != dataset || e.Seq != seq:
		return nil, bad("it is entry %d of dataset %q", e.Seq, e.Dataset)
	case e.Kind != EntryFull && e.Kind != EntryDelta:
		return nil, bad("kind %q", e.Kind)
	case e.Kind == EntryFull && len(e.Dropped) > 0:
		return nil, bad("a full entry drops edges")
	}
	seen := make(map[ID]bool, len(e.Edges)+len(e.Dropped))
	for i, ed := range e.Edges {
		if err := ed.Check(prefix); err != nil {
			return nil, bad("edge %d (%s): %v", i+1, ed, err)
		}
		if ed.Format() > 3 && e.Version < 4 {
			return nil, bad("edge %d (%s) needs format %d, the entry is version %d", i+1, ed, ed.Format(), e.Version)
		}
		if ed.Target.Dataset() != dataset {
			return nil, bad("edge %s is of another dataset", ed)
		}
		if seen[ed.ID()] {
			return nil, bad("edge %s appears twice", ed)
		}
		seen[ed.ID()] = true
	}
	for _, d := range e.Dropped {
		id := ID{BaseGUID: d.BaseGUID, TargetGUID: d.TargetGUID}
		if seen[id] || d.TargetGUID == 0 {
			return nil, bad("it drops edge %d -> %d twice, or one it adds, or one without a target", d.BaseGUID, d.TargetGUID)
		}
		seen[id] = true
	}
	if e.Edges == nil {
		e.Edges = []Edge{}
	}
	return &e, nil
}

// Apply returns the dataset's edges after entry e, given those before it
// (ignored when e is a full). Changed edges keep their place, new ones go
// last, in the entry's order.
func (e *Entry) Apply(edges []Edge) []Edge {
	if e.Kind == EntryFull {
		return append([]Edge(nil), e.Edges...)
	}
	drop := make(map[ID]bool, len(e.Dropped))
	for _, d := range e.Dropped {
		drop[ID{BaseGUID: d.BaseGUID, TargetGUID: d.TargetGUID}] = true
	}
	put := make(map[ID]int, len(e.Edges))
	for i, ed := range e.Edges {
		put[ed.ID()] = i
	}
	out := make([]Edge, 0, len(edges)+len(e.Edges))
	for _, ed := range edges {
		if drop[ed.ID()] {
			continue
		}
		if i, ok := put[ed.ID()]; ok {
			ed = e.Edges[i]
			delete(put, ed.ID())
		}
		out = append(out, ed)
	}
	for _, ed := range e.Edges {
		if _, ok := put[ed.ID()]; ok {
			out = append(out, ed)
		}
	}
	return out
}

// Delta returns the delta entry that turns before into after (the edges of
// one dataset), and whether there is any change.
func Delta(before, after []Edge) (put []Edge, dropped []DroppedEdge, changed bool) {
	old := make(map[ID]*Edge, len(before))
	for i := range before {
		old[before[i].ID()] = &before[i]
	}
	now := make(map[ID]bool, len(after))
	for _, e := range after {
		now[e.ID()] = true
		if o, ok := old[e.ID()]; !ok || !sameEdge(*o, e) {
			put = append(put, e)
		}
	}
	for _, e := range before {
		if !now[e.ID()] {
			id := e.ID()
			dropped = append(dropped, DroppedEdge{BaseGUID: id.BaseGUID, TargetGUID: id.TargetGUID})
		}
	}
	return put, dropped, len(put) > 0 || len(dropped) > 0
}

// sameEdge reports whether a and b record the same, as their encodings
// would (times by instant, a nil slice as an empty one). It compares every
// field of Edge: a change of any of them (a transformed edge's records,
// say) is a change the journal must write. TestSameEdgeCoversEveryField
// fails when Edge gains a field this does not compare.
func sameEdge(a, b Edge) bool {
	return a.Target == b.Target && (a.Base == nil) == (b.Base == nil) && (a.Base == nil || *a.Base == *b.Base) &&
		a.Key == b.Key && a.StreamBytes == b.StreamBytes && a.StoredBytes == b.StoredBytes && a.SHA256 == b.SHA256 &&
		a.Uploaded.Equal(b.Uploaded) && a.StorageClass == b.StorageClass && slices.Equal(a.Segments, b.Segments) &&
		a.Transform == b.Transform && a.SegmentSize == b.SegmentSize && a.PartSize == b.PartSize &&
		slices.Equal(a.Recipients, b.Recipients) && a.SendFlags == b.SendFlags && slices.Equal(a.Records, b.Records) &&
		a.Removing == b.Removing
}

// appendEdge appends a canonical encoding of e for Digest: every field,
// each ended by a byte no field holds. The fields of compressed and
// encrypted edges follow, after a byte 2, only when one is set, so that a
// plain edge's encoding (and the digests state dirs keep) is as it was
// before them; TestSameEdgeCoversEveryField fails when Edge gains a field
// this does not encode.
func appendEdge(b []byte, e Edge) []byte {
	sep := func(b []byte) []byte { return append(b, 0) }
	b = sep(strconv.AppendUint(sep(append(b, e.Target.Name...)), e.Target.GUID, 10))
	if e.Base != nil {
		b = sep(strconv.AppendUint(sep(append(b, e.Base.Name...)), e.Base.GUID, 10))
	} else {
		b = sep(sep(b))
	}
	b = sep(append(b, e.Key...))
	b = sep(strconv.AppendInt(b, e.StreamBytes, 10))
	b = sep(strconv.AppendInt(b, e.StoredBytes, 10))
	b = sep(append(b, e.SHA256...))
	b = sep(strconv.AppendInt(b, e.Uploaded.UnixNano(), 10))
	b = sep(append(b, e.StorageClass...))
	b = sep(strconv.AppendBool(b, e.Removing))
	for _, s := range e.Segments {
		b = sep(strconv.AppendInt(sep(append(b, s.Key...)), s.Bytes, 10))
	}
	if e.Transform != "" || e.SegmentSize != 0 || e.PartSize != 0 || len(e.Recipients) > 0 || e.SendFlags != "" || len(e.Records) > 0 {
		b = sep(append(b, 2))
		b = sep(append(b, e.Transform...))
		b = sep(strconv.AppendInt(b, e.SegmentSize, 10))
		b = sep(strconv.AppendInt(b, e.PartSize, 10))
		b = sep(append(b, e.SendFlags...))
		b = sep(strconv.AppendInt(b, int64(len(e.Recipients)), 10))
		for _, r := range e.Recipients {
			b = sep(append(b, r...))
		}
		b = sep(strconv.AppendInt(b, int64(len(e.Records)), 10))
		for _, r := range e.Records {
			b = sep(strconv.AppendInt(b, int64(r.Index), 10))
			b = sep(strconv.AppendInt(b, r.PlainOffset, 10))
			b = sep(strconv.AppendInt(b, r.PlainBytes, 10))
			b = sep(append(b, r.PlainSHA256...))
			b = sep(strconv.AppendInt(b, r.StoredBytes, 10))
			b = sep(append(b, r.StoredSHA256...))
		}
	}
	return append(b, 1)
}

// Digest is a SHA-256 of a dataset's edges in any order: equal digests,
// equal edges. The state dir keeps it for each dataset's journal, so that
// a change whose write to the bucket failed is recognised and repaired.
func Digest(edges []Edge) string {
	enc := make([][]byte, len(edges))
	for i, e := range edges {
		enc[i] = appendEdge(nil, e)
	}
	sort.Slice(enc, func(i, j int) bool { return bytes.Compare(enc[i], enc[j]) < 0 })
	h := sha256.New()
	for _, b := range enc {
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// ByDataset groups a ledger's edges by dataset, each in the ledger's order.
func ByDataset(edges []Edge) map[string][]Edge {
	m := map[string][]Edge{}
	for _, e := range edges {
		ds := e.Target.Dataset()
		m[ds] = append(m[ds], e)
	}
	return m
}

// MarshalStub encodes the ledger.yaml left at the old place of the
// bucket's copy: a ledger of version StubFormat with no edges, which
// zfs2s3 before the journal refuses as "written by a newer zfs2s3" and so
// never acts on a stale copy nor overwrites the stub.
func MarshalStub(bucket, prefix string) ([]byte, error) {
	b, err := json.Marshal(bucket)
	if err != nil {
		return nil, err
	}
	p, err := json.Marshal(prefix)
	if err != nil {
		return nil, err
	}
	return fmt.Appendf(nil, "{\"version\": %d,\n \"bucket\": %s,\n \"prefix\": %s,\n \"generation\": 0,\n \"edges\": []}\n", StubFormat, b, p), nil
}

// ErrStub is what ParseCopy returns for the stub (MarshalStub).
var ErrStub = errors.New("the ledger.yaml stub of a bucket that keeps its ledger as a journal")

// ParseCopy reads the bucket's ledger.yaml: a whole ledger as zfs2s3
// before the journal wrote it, or the stub (ErrStub).
func ParseCopy(data []byte) (*Ledger, error) {
	l, err := Parse(data)
	if !errors.Is(err, ErrNewerFormat) {
		return l, err
	}
	var v struct {
		Version int    `json:"version"`
		Edges   []Edge `json:"edges"`
	}
	if json.Unmarshal(data, &v) == nil && v.Version == StubFormat && len(v.Edges) == 0 {
		return nil, ErrStub
	}
	return nil, err
}
