package backup

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/zfs2s3/zfs2s3/ledger"
	"github.com/zfs2s3/zfs2s3/s3up"
	"github.com/zfs2s3/zfs2s3/transform"
)

func TestGoneObject(t *testing.T) {
	full, inc := edgeIn("p/d", 1, 0), edgeIn("p/d", 2, 1)
	split := edgeIn("p/d", 3, 2)
	split.Segments = []ledger.Segment{{Key: ledger.SegmentKey(split.Key, 1), Bytes: 4}}
	removing := edgeIn("p/d", 4, 1)
	removing.Removing = true
	sealed := edgeIn("p/d", 5, 1)
	sealed.Transform, sealed.Records = "zstd", []transform.Record{{StoredBytes: 5}, {StoredBytes: 5}}
	have := func(keys ...string) map[string]bool {
		m := map[string]bool{}
		for _, k := range keys {
			m[k] = true
		}
		return m
	}
	mf := s3up.ManifestKey
	tests := []struct {
		name  string
		edges []ledger.Edge
		have  map[string]bool
		gone  string // "" for none, else the key named
	}{
		{"all there", []ledger.Edge{full, inc}, have(full.Key, mf(full.Key), inc.Key, mf(inc.Key)), ""},
		{"an incremental gone", []ledger.Edge{full, inc}, have(full.Key, mf(full.Key), mf(inc.Key)), inc.Key},
		{"a manifest gone: a removal began", []ledger.Edge{full, inc}, have(full.Key, mf(full.Key), inc.Key), mf(inc.Key)},
		{"a further object gone", []ledger.Edge{split}, have(split.Key, mf(split.Key)), ledger.SegmentKey(split.Key, 1)},
		{"a transformed edge's second record gone", []ledger.Edge{sealed}, have(sealed.Key, mf(sealed.Key)), ledger.SegmentKey(sealed.Key, 1)},
		{"being removed: its objects go anyway", []ledger.Edge{full, removing}, have(full.Key, mf(full.Key)), ""},
		{"no edges", nil, have(), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := goneObject(tt.edges, tt.have)
			if (got == "") != (tt.gone == "") || !strings.Contains(got, tt.gone) {
				t.Errorf("goneObject = %q, want one naming %q", got, tt.gone)
			}
		})
	}
}

func TestUnusableFor(t *testing.T) {
	x, y := errors.New("journal of p/x is damaged"), errors.New("journal of p/y is damaged")
	un := map[string]error{"p/x": x, "p/y": y}
	if err := unusableFor(un, "p/z"); err != nil {
		t.Errorf("a command reading p/z fails with %v", err)
	}
	if err := unusableFor(un, "p/y"); err != y {
		t.Errorf("a command reading p/y fails with %v, want p/y's error", err)
	}
	if err := unusableFor(un, ""); !errors.Is(err, x) || !strings.Contains(err.Error(), "p/y") {
		t.Errorf("a command reading everything fails with %v, want p/x's error naming p/y too", err)
	}
	if err := unusableFor(nil, ""); err != nil {
		t.Errorf("no unusable journal: %v", err)
	}
}

// TestDatasetKeyPrefix: the prefix derived for a dataset is the one its
// edges' keys have, escaped names and nested datasets included.
func TestDatasetKeyPrefix(t *testing.T) {
	for _, ds := range []string{"p/d", "p/my data", "p/d/child", "p/ü"} {
		want := datasetKeyPrefix(ledger.ObjectKey("host1/", ledger.Snapshot{Name: ds + "@x"}, nil))
		e := edgeIn(ds, 2, 1)
		e.Key = ledger.ObjectKey("host1/", e.Target, e.Base)
		if !strings.HasPrefix(e.Key, want) || strings.Contains(strings.TrimPrefix(e.Key, want), "/") {
			t.Errorf("%s: key %s, prefix %s", ds, e.Key, want)
		}
	}
}

func TestCheckBlocked(t *testing.T) {
	x1, x2, y1 := edgeIn("p/x", 1, 0), edgeIn("p/x", 2, 1), edgeIn("p/y", 1, 0)
	refused := errors.New("refused")
	b := &Backup{j: &journal{blocked: map[string]blockedJournal{"p/x": {digest: ledger.Digest([]ledger.Edge{x1, x2}), err: refused}}}}
	l := ledger.New("bkt", "")
	l.Edges = []ledger.Edge{x1, x2, y1}
	if err := b.checkBlocked(l); err != nil {
		t.Errorf("a change of p/y only: %v", err)
	}
	l.Edges = []ledger.Edge{x1, y1}
	if err := b.checkBlocked(l); err != refused {
		t.Errorf("a change of p/x: %v, want the refusal", err)
	}
	b.rebuilding = true
	if err := b.checkBlocked(l); err != nil {
		t.Errorf("a rebuild: %v", err)
	}
}

// TestDamagedJournalOfADatasetThisMachineNeverHad: a machine whose ledger
// has no edge of p/x and no record of its journal wrote an empty full
// entry over p/x's damaged journal with its next change of p/y, dropping
// every edge of p/x for the machines reading it. Now it leaves it.
func TestDamagedJournalOfADatasetThisMachineNeverHad(t *testing.T) {
	m := startMinIO(t)
	ctx := context.Background()
	a, b := machine(t, m.Endpoint), machine(t, m.Endpoint)
	if err := add(ctx, b, edgeIn("p/y", 1, 0)); err != nil {
		t.Fatal(err)
	}
	if err := add(ctx, a, edgeIn("p/x", 11, 0)); err != nil {
		t.Fatal(err)
	}
	key := ledger.JournalKey("", "p/x", 1)
	damaged := []byte(`{"version": 1, "kind": "full", "edges": [`)
	put(t, a, key, damaged)
	if err := add(ctx, b, edgeIn("p/y", 2, 1)); err != nil {
		t.Fatalf("b's change of p/y: %v", err)
	}
	objs, err := b.S3.List(ctx, strings.TrimSuffix(key, "000000000001.json"))
	if err != nil || len(objs) != 1 || objs[0].Key != key {
		t.Fatalf("p/x's journal after b's change: %v (%v), want its damaged entry alone", objs, err)
	}
	entryLeft(t, b, key, damaged, "b's change of p/y")
	// Nor may b add to p/x: its edges would be written over the others'.
	if err := add(ctx, b, edgeIn("p/x", 12, 0)); err == nil || !strings.Contains(err.Error(), "ledger rebuild") || !strings.Contains(err.Error(), "no edge of p/x") {
		t.Errorf("b's change of p/x: %v, want a refusal naming ledger rebuild", err)
	}
	entryLeft(t, b, key, damaged, "the refused change")
}

func TestForeignEdge(t *testing.T) {
	mine, theirs, pend := edgeIn("p/d", 1, 0), edgeIn("p/d", 2, 1), edgeIn("p/d", 3, 1)
	pending := map[string]bool{pend.Key: true}
	if got := foreignEdge([]string{mine.Key, pend.Key}, []ledger.Edge{mine}, pending); got != "" {
		t.Errorf("own edge and pending upload: %q, want none", got)
	}
	if got := foreignEdge([]string{mine.Key, theirs.Key}, []ledger.Edge{mine}, pending); got != theirs.Key {
		t.Errorf("another machine's edge: %q, want %s", got, theirs.Key)
	}
	if got := foreignEdge(nil, []ledger.Edge{mine}, nil); got != "" {
		t.Errorf("no manifests: %q", got)
	}
}

// TestNewerJournalOnNewMachine: a dataset journal in a newer format is
// one a new machine cannot use: a read of another dataset goes on without
// it, a read of it fails saying to upgrade, and no local ledger is saved.
func TestNewerJournalOnNewMachine(t *testing.T) {
	m := startMinIO(t)
	ctx := context.Background()
	a := machine(t, m.Endpoint)
	if err := add(ctx, a, edgeIn("p/x", 1, 0)); err != nil {
		t.Fatal(err)
	}
	if err := add(ctx, a, edgeIn("p/y", 11, 0)); err != nil {
		t.Fatal(err)
	}
	newer := []byte(`{"version": 99, "kind": "full", "something": "new"}`)
	if _, err := a.S3.PutIf(ctx, ledger.JournalKey("", "p/x", 1), newer, nil, s3up.AnyVersion); err != nil {
		t.Fatal(err)
	}
	b := machine(t, m.Endpoint)
	b.Reading("p/y")
	l, err := b.readLedger(ctx)
	if err != nil || len(l.Edges) != 1 || l.Edges[0].Target.Dataset() != "p/y" {
		t.Fatalf("a read of p/y: %v, %v; want p/y's edge alone", l, err)
	}
	if len(b.notices) != 1 || !strings.Contains(b.notices[0], "p/x") || !strings.Contains(b.notices[0], "newer zfs2s3") {
		t.Errorf("notices %q, want one naming p/x's newer journal", b.notices)
	}
	if b.store.Exists() {
		t.Error("a local ledger without p/x was saved")
	}
	b = machine(t, m.Endpoint)
	b.Reading("p/x")
	if _, err := b.readLedger(ctx); !errors.Is(err, ledger.ErrNewerFormat) || !strings.Contains(err.Error(), "upgrade zfs2s3") {
		t.Errorf("a read of p/x: %v, want the newer format, saying to upgrade", err)
	}
	if err := add(ctx, b, edgeIn("p/y", 12, 11)); !errors.Is(err, ledger.ErrNewerFormat) || !strings.Contains(err.Error(), "p/x") {
		t.Errorf("a change on the new machine: %v, want a refusal naming p/x", err)
	}
}

// TestDamagedJournalNeverDropsAnotherMachinesEdge: b last read p/x with
// one edge; a then stored a second, in an entry now damaged. A full entry
// of b's ledger would drop a's edge for every machine: b leaves the
// journal and refuses changes of p/x, naming the edge's object.
func TestDamagedJournalNeverDropsAnotherMachinesEdge(t *testing.T) {
	m := startMinIO(t)
	ctx := context.Background()
	a, b := machine(t, m.Endpoint), machine(t, m.Endpoint)
	// x2's manifest is lost too (ledger rebuild recovers such an edge from
	// its object's metadata): its object alone names it.
	x1, x2 := edgeIn("p/x", 1, 0), edgeIn("p/x", 2, 1)
	for _, key := range []string{x1.Key, s3up.ManifestKey(x1.Key), x2.Key} {
		if _, err := a.S3.PutIf(ctx, key, []byte("x"), nil, s3up.AnyVersion); err != nil {
			t.Fatal(err)
		}
	}
	if err := add(ctx, a, x1); err != nil {
		t.Fatal(err)
	}
	if _, err := b.readLedger(ctx); err != nil {
		t.Fatal(err)
	}
	if err := add(ctx, a, x2); err != nil {
		t.Fatal(err)
	}
	key := ledger.JournalKey("", "p/x", 2)
	damaged := []byte(`{"version": 1, "kind": "add", "edges": [`)
	put(t, a, key, damaged)
	if err := add(ctx, b, edgeIn("p/y", 21, 0)); err != nil {
		t.Fatalf("b's change of p/y: %v", err)
	}
	entryLeft(t, b, key, damaged, "b's change of p/y")
	err := add(ctx, b, edgeIn("p/x", 3, 1))
	if err == nil || !strings.Contains(err.Error(), x2.Key) || !strings.Contains(err.Error(), "ledger rebuild") {
		t.Errorf("b's change of p/x: %v, want a refusal naming %s and ledger rebuild", err, x2.Key)
	}
}

// TestFinishRemovalsLeavesABlockedDataset: dropping a removing edge of a
// blocked dataset would be refused when saved, failing every command of
// every dataset; it waits for ledger rebuild, untouched.
func TestFinishRemovalsLeavesABlockedDataset(t *testing.T) {
	x := edgeIn("p/x", 1, 0)
	x.Removing = true
	b := &Backup{j: &journal{blocked: map[string]blockedJournal{"p/x": {digest: ledger.Digest([]ledger.Edge{x}), err: errors.New("refused")}}}}
	l := ledger.New("bkt", "")
	l.Edges = []ledger.Edge{x}
	if err := b.finishRemovals(context.Background(), l); err != nil { // b.S3 is nil: no request may be made
		t.Fatalf("finishRemovals: %v", err)
	}
	if len(l.Edges) != 1 || !l.Edges[0].Removing {
		t.Errorf("the blocked dataset's removing edge was dropped: %v", l.Edges)
	}
}

// put writes data at key, whatever is there.
func put(t *testing.T, b *Backup, key string, data []byte) {
	t.Helper()
	if _, err := b.S3.PutIf(context.Background(), key, data, nil, s3up.AnyVersion); err != nil {
		t.Fatal(err)
	}
}

// entryLeft fails unless the damaged journal entry at key is still there,
// as it was, after what.
func entryLeft(t *testing.T, b *Backup, key string, damaged []byte, what string) {
	t.Helper()
	if data, _, err := b.S3.ReadAll(context.Background(), key, 1<<20); err != nil || !bytes.Equal(data, damaged) {
		t.Errorf("the damaged entry %s was replaced by %s: %q (%v)", key, what, data, err)
	}
}
