package ledger

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"pgregory.net/rapid"
)

func TestJournalKeyRoundTrip(t *testing.T) {
	for _, c := range []struct{ prefix, ds, key string }{
		{"", "tank/data", ".zfs2s3/ledger/tank%2Fdata/000000000007.json"},
		{"host1/", "tank", "host1/.zfs2s3/ledger/tank/000000000007.json"},
		{"h/", "tank/my data:x", "h/.zfs2s3/ledger/tank%2Fmy%20data:x/000000000007.json"},
	} {
		if got := JournalKey(c.prefix, c.ds, 7); got != c.key {
			t.Errorf("JournalKey(%q, %q) = %q, want %q", c.prefix, c.ds, got, c.key)
		}
		ds, seq, ok := ParseJournalKey(c.prefix, c.key)
		if !ok || ds != c.ds || seq != 7 {
			t.Errorf("ParseJournalKey(%q) = %q %d %v", c.key, ds, seq, ok)
		}
	}
	// Nested datasets never share a listing prefix: tank's journal is not
	// a prefix of tank/data's.
	if a, b := JournalKey("", "tank", 1), JournalKey("", "tank/data", 1); strings.HasPrefix(b, strings.TrimSuffix(a, "000000000001.json")) {
		t.Errorf("%s and %s share a prefix", a, b)
	}
	for _, bad := range []string{
		".zfs2s3/ledger.yaml",
		".zfs2s3/ledger/tank/7.json",                     // not 12 digits
		".zfs2s3/ledger/tank/000000000000.json",          // SEQ counts from 1
		".zfs2s3/ledger/tank/data/000000000001.json",     // an unescaped slash
		".zfs2s3/ledger/t%61nk/000000000001.json",        // not the canonical escape
		".zfs2s3/ledger/tank/000000000001.json.tmp",      // another name
		"host2/.zfs2s3/ledger/tank/000000000001.json",    // another tree
		".zfs2s3/ledger//000000000001.json",              // no dataset
		".zfs2s3/ledger/tank/00000000000x.json",          // not a number
		".zfs2s3/ledger/tank%2/000000000001.json",        // bad escape
		".zfs2s3/ledger/tank/000000000001.delta.json",    // no kind in the name
		".zfs2s3/ledger/tank/sub/000000000001.json/more", // deeper
	} {
		if ds, seq, ok := ParseJournalKey("", bad); ok {
			t.Errorf("ParseJournalKey(%q) = %q %d, want refused", bad, ds, seq)
		}
	}
}

func entryOf(kind string, seq uint64, edges []Edge, dropped ...DroppedEdge) *Entry {
	return &Entry{Kind: kind, Bucket: "b", Prefix: "", Dataset: "tank/data", Seq: seq, Edges: edges, Dropped: dropped}
}

func TestEntryRoundTrip(t *testing.T) {
	r := incr(1, 2)
	r.Removing = true
	for _, e := range []*Entry{
		entryOf(EntryFull, 1, []Edge{full(1), incr(1, 2)}),
		entryOf(EntryFull, 1, []Edge{}),
		entryOf(EntryDelta, 2, []Edge{r, incr(2, 3)}, DroppedEdge{TargetGUID: 9}, DroppedEdge{BaseGUID: 1, TargetGUID: 8}),
	} {
		data, err := MarshalEntry(e)
		if err != nil {
			t.Fatal(err)
		}
		got, err := ParseEntry(data, "b", "", JournalKey("", "tank/data", e.Seq))
		if err != nil {
			t.Fatalf("ParseEntry(%s): %v", data, err)
		}
		e.Version = entryFormat(e.Edges)
		if diff := cmp.Diff(e, got); diff != "" {
			t.Errorf("round trip (-want +got):\n%s", diff)
		}
	}
}

// TestParseEntryRefusesTampering: an entry is refused whole when anything
// in it is not what its name and tree say: another bucket, prefix, dataset
// or SEQ, an edge of another dataset or failing the checks, or twice.
func TestParseEntryRefusesTampering(t *testing.T) {
	key := JournalKey("", "tank/data", 2)
	other := stored(Edge{Target: Snapshot{Name: "tank/other@s1", GUID: 1}})
	outside := full(3)
	outside.Key = ObjectKey("host2/", outside.Target, nil)
	noDigest := full(4)
	noDigest.SHA256 = ""
	for name, c := range map[string]struct {
		e   *Entry
		bkt string
	}{
		"another bucket":          {entryOf(EntryFull, 2, nil), "x"},
		"another prefix":          {&Entry{Kind: EntryFull, Bucket: "b", Prefix: "host2/", Dataset: "tank/data", Seq: 2}, "b"},
		"another dataset's entry": {&Entry{Kind: EntryFull, Bucket: "b", Dataset: "tank/other", Seq: 2}, "b"},
		"another SEQ":             {entryOf(EntryFull, 3, nil), "b"},
		"an edge of another ds":   {entryOf(EntryFull, 2, []Edge{full(1), other}), "b"},
		"a key outside the tree":  {entryOf(EntryDelta, 2, []Edge{outside}), "b"},
		"an edge without digest":  {entryOf(EntryDelta, 2, []Edge{noDigest}), "b"},
		"an edge twice":           {entryOf(EntryFull, 2, []Edge{full(1), full(1)}), "b"},
		"drops what it adds":      {entryOf(EntryDelta, 2, []Edge{full(1)}, DroppedEdge{TargetGUID: 1}), "b"},
		"a full that drops":       {entryOf(EntryFull, 2, nil, DroppedEdge{TargetGUID: 1}), "b"},
		"an unknown kind":         {entryOf("partial", 2, nil), "b"},
	} {
		data, err := MarshalEntry(c.e)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ParseEntry(data, c.bkt, "", key); !errors.Is(err, ErrDamaged) || errors.Is(err, ErrNewerFormat) {
			t.Errorf("%s: ParseEntry = %v, want ErrDamaged", name, err)
		}
	}
	for name, data := range map[string]string{
		"not JSON":      "edges: []",
		"unknown field": `{"version":3,"kind":"full","bucket":"b","prefix":"","dataset":"tank/data","seq":2,"edges":[],"extra":1}`,
		"version 2":     `{"version":2,"kind":"full","bucket":"b","prefix":"","dataset":"tank/data","seq":2,"edges":[]}`,
	} {
		if _, err := ParseEntry([]byte(data), "b", "", key); !errors.Is(err, ErrDamaged) || errors.Is(err, ErrNewerFormat) {
			t.Errorf("%s: ParseEntry = %v, want ErrDamaged", name, err)
		}
	}
	newer := `{"version":5,"kind":"snapshot","bucket":"b","prefix":"","dataset":"tank/data","seq":2,"what":"ever"}`
	if _, err := ParseEntry([]byte(newer), "b", "", key); !errors.Is(err, ErrNewerFormat) {
		t.Errorf("a newer format: ParseEntry = %v, want ErrNewerFormat", err)
	}
}

// TestDeltaApplyProperty: the delta between two states of a dataset,
// applied to the first, gives the second, with the edges kept in place.
func TestDeltaApplyProperty(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		gen := rapid.SliceOfNDistinct(rapid.Uint64Range(1, 30), 0, 20, func(g uint64) uint64 { return g })
		edges := func(label string) []Edge {
			var es []Edge
			for _, g := range gen.Draw(t, label) {
				e := full(g)
				if g%3 == 0 {
					e = incr(g-1, g)
				}
				e.Removing = rapid.Bool().Draw(t, "removing")
				es = append(es, e)
			}
			return es
		}
		before := edges("before")
		// after: some of before (kept in order, some changed) plus new ones
		var after []Edge
		for _, e := range before {
			if rapid.Bool().Draw(t, "keep") {
				e.Removing = rapid.Bool().Draw(t, "mark")
				after = append(after, e)
			}
		}
		have := map[ID]bool{}
		for _, e := range before {
			have[e.ID()] = true
		}
		for _, e := range edges("added") {
			if !have[e.ID()] {
				after = append(after, e)
			}
		}
		put, dropped, changed := Delta(before, after)
		got := entryOf(EntryDelta, 2, put, dropped...).Apply(before)
		if len(got) == 0 {
			got = nil
		}
		if diff := cmp.Diff(after, got); diff != "" {
			t.Fatalf("apply(delta) (-want +got):\n%s", diff)
		}
		if changed != (Digest(before) != Digest(after)) {
			t.Fatalf("changed = %v, digests %s %s", changed, Digest(before), Digest(after))
		}
	})
}

func TestDigestIgnoresOrder(t *testing.T) {
	a, b := []Edge{full(1), incr(1, 2)}, []Edge{incr(1, 2), full(1)}
	if Digest(a) != Digest(b) {
		t.Error("the same edges in another order digest differently")
	}
	r := incr(1, 2)
	r.Removing = true
	if Digest(a) == Digest([]Edge{full(1), r}) {
		t.Error("a removal mark does not change the digest")
	}
}

// TestStubIsRefusedByThePreviousRelease: the ledger.yaml stub is read by
// the ledger.Parse of the release before the journal as a newer format,
// which that release never overwrites nor acts on (it reads versions 1
// and 2, and refuses a higher version before anything else, so this
// Parse, which reads more versions, stands in for it as long as the stub
// is above them all); this release recognises it.
func TestStubIsRefusedByThePreviousRelease(t *testing.T) {
	stub, err := MarshalStub("b", "host1/")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Parse(stub); !errors.Is(err, ErrNewerFormat) {
		t.Errorf("Parse(stub) = %v, want ErrNewerFormat", err)
	}
	if _, err := ParseCopy(stub); !errors.Is(err, ErrStub) {
		t.Errorf("ParseCopy(stub) = %v, want ErrStub", err)
	}
	if _, err := ParseCopy(readFixture(t, "ledger-v2.yaml")); err != nil {
		t.Errorf("ParseCopy of a whole copy: %v", err)
	}
}

// TestEntryFormatFollowsItsEdges: an entry is written as version 3 until
// it holds an edge with a part digest (ledger format 4), so the release
// before reads it until then and refuses it as newer after; a version 3
// entry that holds such an edge was edited.
func TestEntryFormatFollowsItsEdges(t *testing.T) {
	l, err := Parse(readFixture(t, "ledger-v4.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	big, huge := l.Edges[4], l.Edges[9] // tank/db: whole-stream digest, part digest
	key := JournalKey("host1/", "tank/db", 7)
	for _, tc := range []struct {
		edges []Edge
		want  int
	}{{[]Edge{big}, 3}, {[]Edge{big, huge}, 4}} {
		e := &Entry{Kind: EntryFull, Bucket: "backups", Prefix: "host1/", Dataset: "tank/db", Seq: 7, Edges: tc.edges}
		data, err := MarshalEntry(e)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(data, fmt.Appendf(nil, `{"version":%d,`, tc.want)) {
			t.Errorf("%d edges written as %.20s, want version %d", len(tc.edges), data, tc.want)
		}
		got, err := ParseEntry(data, "backups", "host1/", key)
		if err != nil || got.Version != tc.want || len(got.Edges) != len(tc.edges) {
			t.Errorf("ParseEntry = %+v, %v", got, err)
		}
		if tc.want == 4 {
			v3 := bytes.Replace(data, []byte(`{"version":4,`), []byte(`{"version":3,`), 1)
			if _, err := ParseEntry(v3, "backups", "host1/", key); !errors.Is(err, ErrDamaged) || errors.Is(err, ErrNewerFormat) {
				t.Errorf("a version 3 entry with a format 4 edge: ParseEntry = %v, want ErrDamaged", err)
			}
		}
	}
}
