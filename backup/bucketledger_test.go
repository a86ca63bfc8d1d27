package backup

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/zfs2s3/zfs2s3/internal/testbed"
	"github.com/zfs2s3/zfs2s3/ledger"
	"github.com/zfs2s3/zfs2s3/s3up"
	"github.com/zfs2s3/zfs2s3/zfs"
)

// Tests of the bucket's ledger copy shared by several machines (Backups
// with their own state dirs), against a real MinIO.

// edgeN is a full stream of snapshot guid as an upload under the empty
// prefix records it.
func edgeN(guid uint64) ledger.Edge {
	t := ledger.Snapshot{Name: fmt.Sprintf("p/d@s%d", guid), GUID: guid}
	return ledger.Edge{Target: t, Key: ledger.ObjectKey("", t, nil), StreamBytes: 10, StoredBytes: 10, SHA256: fmt.Sprintf("%064x", guid)}
}

func startMinIO(t *testing.T) *testbed.MinIO {
	m, err := testbed.StartMinIO()
	testbed.Require(t, "MinIO", err)
	t.Cleanup(m.Stop)
	if err := m.CreateBucket(context.Background(), "bkt"); err != nil {
		t.Fatal(err)
	}
	for _, kv := range [][2]string{{"AWS_ACCESS_KEY_ID", m.User}, {"AWS_SECRET_ACCESS_KEY", m.Password}, {"AWS_EC2_METADATA_DISABLED", "true"}, {"AWS_MAX_ATTEMPTS", "2"}} {
		t.Setenv(kv[0], kv[1])
	}
	return m
}

// machine is a zfs2s3 with its own state dir, talking to endpoint.
func machine(t *testing.T, endpoint string) *Backup {
	c, err := s3up.NewClient(context.Background(), s3up.Config{Bucket: "bkt", Endpoint: endpoint, Region: "us-east-1"})
	if err != nil {
		t.Fatal(err)
	}
	return New(zfs.Runner{}, c, Options{StateDir: t.TempDir()}, func(string, ...any) {})
}

func addEdge(ctx context.Context, b *Backup, guid uint64) error {
	return b.withLedger(ctx, func(l *ledger.Ledger) (bool, error) { return true, l.Add(edgeN(guid)) })
}

// bucketKeys lists the bucket copy's edges as k<guid>, in order.
func bucketKeys(t *testing.T, b *Backup) string {
	t.Helper()
	j, err := b.listJournal(context.Background())
	if err != nil {
		t.Fatalf("list the bucket's ledger: %v", err)
	}
	var keys []string
	for _, ds := range slices.Sorted(maps.Keys(j.entries)) {
		edges, _, err := b.readDataset(context.Background(), j, ds, nil, nil)
		if err != nil {
			t.Fatalf("bucket ledger of %s: %v", ds, err)
		}
		for _, e := range edges {
			keys = append(keys, fmt.Sprintf("k%d", e.Target.GUID))
		}
	}
	return strings.Join(keys, " ")
}

func TestUnreadableBucketLedgerRefusesChanges(t *testing.T) {
	m := startMinIO(t)
	proxy := testbed.StartProxy(t, m.Endpoint)
	ctx := context.Background()
	a, b := machine(t, m.Endpoint), machine(t, proxy.URL)
	if err := addEdge(ctx, a, 1); err != nil {
		t.Fatal(err)
	}
	if err := addEdge(ctx, b, 2); err != nil { // b adopts a's copy
		t.Fatal(err)
	}
	a2 := machine(t, m.Endpoint)
	if err := addEdge(ctx, a2, 3); err != nil {
		t.Fatal(err)
	}
	proxy.SetRule(func(r *http.Request) testbed.Fault {
		if testbed.IsLedger(r, http.MethodGet) || testbed.IsLedgerList(r) {
			return testbed.SlowDown
		}
		return testbed.Fault{}
	})
	if err := addEdge(ctx, b, 4); err == nil || !strings.Contains(err.Error(), "cannot read the bucket's ledger") {
		t.Errorf("a change while the bucket's ledger cannot be read: %v, want a refusal", err)
	}
	if got := bucketKeys(t, a2); got != "k1 k2 k3" {
		t.Errorf("bucket ledger = %s, want another machine's k1 k2 k3 kept", got)
	}
}

func TestLostAnswerToALedgerWriteIsRecognised(t *testing.T) {
	m := startMinIO(t)
	proxy := testbed.StartProxy(t, m.Endpoint)
	a := machine(t, proxy.URL)
	if err := addEdge(context.Background(), a, 1); err != nil {
		t.Fatal(err)
	}
	hung := false
	proxy.SetRule(func(r *http.Request) testbed.Fault {
		if testbed.IsLedger(r, http.MethodPut) && !hung {
			hung = true
			return testbed.Fault{Hang: true} // stored, but the answer never comes
		}
		return testbed.Fault{}
	})
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-proxy.Hung; cancel() }()
	if err := addEdge(ctx, a, 2); err == nil {
		t.Fatal("a ledger write whose answer was lost reported success")
	}
	if err := addEdge(context.Background(), a, 3); err != nil {
		t.Fatalf("the next change after a lost answer: %v, want it accepted", err)
	}
	if got := bucketKeys(t, a); got != "k1 k2 k3" {
		t.Errorf("bucket ledger = %s, want k1 k2 k3", got)
	}
}

func TestFirstWritesOfTwoMachinesDoNotOverwrite(t *testing.T) {
	m := startMinIO(t)
	ctx := context.Background()
	a, b := machine(t, m.Endpoint), machine(t, m.Endpoint)
	// b recorded an edge locally but its first bucket write never happened.
	l := ledger.New("bkt", "")
	l.Generation = 1
	l.Add(edgeN(9))
	if err := b.store.Save(l); err != nil {
		t.Fatal(err)
	}
	if err := addEdge(ctx, a, 1); err != nil {
		t.Fatal(err)
	}
	err := addEdge(ctx, b, 2)
	if err == nil || !strings.Contains(err.Error(), "changed by another machine") {
		t.Errorf("b's change over a's first copy: %v, want a refusal", err)
	}
	if got := bucketKeys(t, a); got != "k1" {
		t.Errorf("bucket ledger = %s, want a's k1 kept", got)
	}
}

// TestUnchangedBucketLedgerIsNotFetched: when the bucket's journals end
// with the entries this machine wrote last, commands see so in one LIST
// and download no entry; another machine's entry is still read.
func TestUnchangedBucketLedgerIsNotFetched(t *testing.T) {
	m := startMinIO(t)
	proxy := testbed.StartProxy(t, m.Endpoint)
	var gets atomic.Int32
	proxy.SetRule(func(r *http.Request) testbed.Fault {
		if testbed.IsLedger(r, http.MethodGet) {
			gets.Add(1)
		}
		return testbed.Fault{}
	})
	ctx := context.Background()
	a := machine(t, proxy.URL)
	if err := addEdge(ctx, a, 1); err != nil {
		t.Fatal(err)
	}
	gets.Store(0)
	if err := addEdge(ctx, a, 2); err != nil {
		t.Fatal(err)
	}
	if l, err := a.readLedger(ctx); err != nil || len(l.Edges) != 2 {
		t.Fatalf("readLedger = %v, %v", l, err)
	}
	if n := gets.Load(); n != 0 {
		t.Errorf("%d GETs of an unchanged bucket ledger, want 0", n)
	}
	// Another machine's change is seen: a reads it and merges it into
	// its next change.
	b := machine(t, m.Endpoint)
	if _, err := b.readLedger(ctx); err != nil { // adopts the bucket's copy
		t.Fatal(err)
	}
	if err := addEdge(ctx, b, 3); err != nil {
		t.Fatal(err)
	}
	if err := addEdge(ctx, a, 4); err != nil || gets.Load() == 0 {
		t.Errorf("a's change over b's copy: %v after %d GETs; want it merged after reading b's entry", err, gets.Load())
	}
	if got := bucketKeys(t, a); got != "k1 k2 k3 k4" {
		t.Errorf("bucket ledger = %s, want b's k3 and a's k4 on top of k1 k2", got)
	}
	if l, err := a.store.Load("bkt", ""); err != nil || len(l.Edges) != 4 {
		t.Errorf("a's local ledger = %v, %v; want b's edge merged in", l, err)
	}
}

// TestFailedBucketWriteIsRepairedByTheNextCommand: when writing the
// bucket's copy fails after a change, the next command, even a read-only
// one, brings the copy up to date, so a new machine does not restore from
// a ledger that lacks the last edge.
func TestFailedBucketWriteIsRepairedByTheNextCommand(t *testing.T) {
	m := startMinIO(t)
	proxy := testbed.StartProxy(t, m.Endpoint)
	var failPuts atomic.Bool
	proxy.SetRule(func(r *http.Request) testbed.Fault {
		if failPuts.Load() && testbed.IsLedger(r, http.MethodPut) {
			return testbed.Fault{Status: http.StatusInternalServerError}
		}
		return testbed.Fault{}
	})
	ctx := context.Background()
	a := machine(t, proxy.URL)
	if err := addEdge(ctx, a, 1); err != nil {
		t.Fatal(err)
	}
	failPuts.Store(true)
	if err := addEdge(ctx, a, 2); err == nil || !strings.Contains(err.Error(), "ledger saved locally but not to the bucket") {
		t.Fatalf("change with the bucket write failing = %v", err)
	}
	if got := bucketKeys(t, a); got != "k1" {
		t.Fatalf("bucket copy after the failed write: %q", got)
	}
	failPuts.Store(false)
	if _, err := a.readLedger(ctx); err != nil {
		t.Fatal(err)
	}
	if got := bucketKeys(t, a); got != "k1 k2" {
		t.Errorf("bucket copy after the next command: %q, want k1 k2", got)
	}
	// The repaired copy is this machine's: its next change goes through.
	if err := addEdge(ctx, a, 3); err != nil {
		t.Fatal(err)
	}
	if got := bucketKeys(t, machine(t, m.Endpoint)); got != "k1 k2 k3" {
		t.Errorf("bucket copy: %q", got)
	}
}

// edgeIn is an edge of dataset ds into snapshot guid, from base (0: a full).
func edgeIn(ds string, guid, base uint64) ledger.Edge {
	t := ledger.Snapshot{Name: fmt.Sprintf("%s@s%d", ds, guid), GUID: guid}
	e := ledger.Edge{Target: t, StreamBytes: 10, StoredBytes: 10, SHA256: fmt.Sprintf("%064x", guid), StorageClass: "STANDARD"}
	if base != 0 {
		b := ledger.Snapshot{Name: fmt.Sprintf("%s@s%d", ds, base), GUID: base}
		e.Base = &b
	}
	e.Key = ledger.ObjectKey("", e.Target, e.Base)
	return e
}

func add(ctx context.Context, b *Backup, e ledger.Edge) error {
	return b.withLedger(ctx, func(l *ledger.Ledger) (bool, error) { return true, l.Add(e) })
}

// legacyMachine is a machine whose state dir is the fixture's, written by
// the release before the journal: its ledger and bucket-ledger.etag.
func legacyMachine(t *testing.T, endpoint string) *Backup {
	b := machine(t, endpoint)
	if err := os.MkdirAll(b.store.Dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"ledger.yaml", "bucket-ledger.etag"} {
		data, err := os.ReadFile(filepath.Join("testdata", "legacy", "state", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(b.store.Dir, f), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

// TestMigrationFromTheWholeCopy starts from a bucket and state dirs as the
// release before the journal left them (testdata/legacy, written by that
// release's code): one ledger.yaml with every dataset's edges, and the
// ETag file. Reading changes nothing; the first change writes a full entry
// per dataset and replaces ledger.yaml with a stub that the previous
// release refuses as a newer format; a new machine reads the journal; a
// machine still on the old copy is refused, not overwritten.
func TestMigrationFromTheWholeCopy(t *testing.T) {
	m := startMinIO(t)
	ctx := context.Background()
	a := legacyMachine(t, m.Endpoint)
	stale := legacyMachine(t, m.Endpoint)
	old, err := os.ReadFile("testdata/legacy/bucket-ledger.yaml")
	if err != nil {
		t.Fatal(err)
	}
	etag, err := a.S3.PutIf(ctx, LedgerKey(""), old, map[string]string{"zfs2s3-generation": "4"}, s3up.AnyVersion)
	if want, _ := os.ReadFile("testdata/legacy/state/bucket-ledger.etag"); err != nil || etag != strings.TrimSpace(string(want)) {
		t.Fatalf("the fixture's copy stored with ETag %q (%v), its state dir has %q", etag, err, want)
	}
	ledgerObjects := func() []string {
		objs, err := a.S3.List(ctx, ledger.JournalDir(""))
		if err != nil {
			t.Fatal(err)
		}
		var keys []string
		for _, o := range objs {
			keys = append(keys, o.Key)
		}
		return keys
	}

	if l, err := a.readLedger(ctx); err != nil || len(l.Edges) != 4 {
		t.Fatalf("readLedger of the old copy = %v, %v", l, err)
	}
	if keys := ledgerObjects(); len(keys) != 1 {
		t.Fatalf("reading wrote to the bucket: %v", keys)
	}

	if err := add(ctx, a, edgeIn("p/e", 5, 3)); err != nil {
		t.Fatalf("the first change after the upgrade: %v", err)
	}
	want := []string{".zfs2s3/ledger.yaml", ".zfs2s3/ledger/p%2Fd%2Fchild/000000000001.json", ".zfs2s3/ledger/p%2Fd/000000000001.json", ".zfs2s3/ledger/p%2Fe/000000000001.json"}
	if keys := ledgerObjects(); !slices.Equal(keys, want) {
		t.Errorf("after the migration the bucket holds %v, want %v", keys, want)
	}
	stub, _, err := a.S3.ReadAll(ctx, LedgerKey(""), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ledger.Parse(stub); !errors.Is(err, ledger.ErrNewerFormat) {
		t.Errorf("the previous release's Parse reads the stub as %v, want a newer format it refuses", err)
	}
	if got := bucketKeys(t, a); got != "k1 k2 k4 k3 k5" {
		t.Errorf("the journal holds %s, want every edge: k1 k2 k4 k3 k5", got)
	}

	if l, err := machine(t, m.Endpoint).readLedger(ctx); err != nil || len(l.Edges) != 5 {
		t.Errorf("a new machine reads %v, %v; want 5 edges", l, err)
	}
	if err := add(ctx, stale, edgeIn("p/d", 6, 2)); err == nil || !strings.Contains(err.Error(), "changed by another machine") {
		t.Errorf("a change by a machine still on the old copy: %v, want a refusal", err)
	}
	if got := bucketKeys(t, a); got != "k1 k2 k4 k3 k5" {
		t.Errorf("after the stale machine's attempt the journal holds %s", got)
	}

	// The next change is a small delta of its dataset alone.
	if err := add(ctx, a, edgeIn("p/d", 6, 2)); err != nil {
		t.Fatal(err)
	}
	objs, _ := a.S3.List(ctx, ledger.JournalKey("", "p/d", 2))
	if len(objs) != 1 || objs[0].Size > 1024 || len(ledgerObjects()) != 5 {
		t.Errorf("the next change wrote %v; want one delta entry of p/d under 1 KB", objs)
	}
}

// TestJournalCheckpoints: a dataset's deltas are folded into a new full
// entry before there are checkpointEvery of them, the entries before the
// previous full are deleted, and a new machine reads the same edges.
func TestJournalCheckpoints(t *testing.T) {
	m := startMinIO(t)
	ctx := context.Background()
	a := machine(t, m.Endpoint)
	for g := uint64(1); g <= 2*checkpointEvery; g++ {
		base := g - 1
		if err := add(ctx, a, edgeIn("p/d", g, base)); err != nil {
			t.Fatal(err)
		}
	}
	objs, err := a.S3.List(ctx, ledger.JournalDir("")+"ledger/")
	if err != nil {
		t.Fatal(err)
	}
	// Deletion lags one checkpoint: the previous full entry and those
	// after it stay, fewer than one entry per change.
	if len(objs) == 0 || len(objs) >= 2*checkpointEvery {
		t.Errorf("the journal holds %d entries after %d changes, want fewer (superseded ones deleted)", len(objs), 2*checkpointEvery)
	}
	if l, err := machine(t, m.Endpoint).readLedger(ctx); err != nil || ledger.Digest(l.Edges) != ledger.Digest(a.j.base["p/d"]) || len(l.Edges) != 2*checkpointEvery {
		t.Errorf("a new machine reads %d edges (%v)", len(l.Edges), err)
	}
}

// TestRepairLeavesOtherMachinesJournalsAlone: a read-only command that
// repairs this machine's failed write of one dataset never writes over
// another dataset's journal that another machine changed.
func TestRepairLeavesOtherMachinesJournalsAlone(t *testing.T) {
	m := startMinIO(t)
	ctx := context.Background()
	a, b := machine(t, m.Endpoint), machine(t, m.Endpoint)
	for _, e := range []ledger.Edge{edgeIn("p/d", 1, 0), edgeIn("p/e", 3, 0)} {
		if err := add(ctx, a, e); err != nil {
			t.Fatal(err)
		}
	}
	if err := add(ctx, b, edgeIn("p/d", 2, 1)); err != nil { // b adopts the bucket's, then changes p/d
		t.Fatal(err)
	}
	// a's change of p/e reached its local ledger only.
	l, err := a.store.Load("bkt", "")
	if err != nil {
		t.Fatal(err)
	}
	l.Generation++
	if err := l.Add(edgeIn("p/e", 5, 3)); err != nil {
		t.Fatal(err)
	}
	if err := a.store.Save(l); err != nil {
		t.Fatal(err)
	}
	shown, err := a.readLedger(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(shown.Edges) != 4 {
		t.Errorf("status shows %d edges, want b's k2 and a's own k5 too", len(shown.Edges))
	}
	if got := bucketKeys(t, a); got != "k1 k2 k3 k5" {
		t.Errorf("the bucket's journals hold %s, want b's p/d (k1 k2) kept and a's p/e repaired (k3 k5)", got)
	}
	// a's next change merges b's change of p/d, which a's ledger of p/d
	// (its last entry) lacked.
	if err := add(ctx, a, edgeIn("p/e", 6, 5)); err != nil {
		t.Errorf("a's next change: %v, want b's change of p/d merged", err)
	}
	if got := bucketKeys(t, a); got != "k1 k2 k3 k5 k6" {
		t.Errorf("the bucket's journals hold %s, want k1 k2 k3 k5 k6", got)
	}
	if l, err := a.store.Load("bkt", ""); err != nil || len(l.Edges) != 5 {
		t.Errorf("a's local ledger = %v, %v; want 5 edges", l, err)
	}
}

// TestSupersededEntriesThatCannotBeDeleted: a host whose credentials
// cannot delete leaves the entries a full entry superseded; readers take
// the newest full and ignore them.
func TestSupersededEntriesThatCannotBeDeleted(t *testing.T) {
	m := startMinIO(t)
	proxy := testbed.StartProxy(t, m.Endpoint)
	proxy.SetRule(func(r *http.Request) testbed.Fault {
		if r.Method == http.MethodDelete {
			return testbed.S3Error(http.StatusForbidden, "AccessDenied", "Access Denied.")
		}
		return testbed.Fault{}
	})
	ctx := context.Background()
	a := machine(t, proxy.URL)
	n := uint64(2*checkpointEvery + 3)
	for g := uint64(1); g <= n; g++ {
		if err := add(ctx, a, edgeIn("p/d", g, g-1)); err != nil {
			t.Fatal(err)
		}
	}
	objs, err := a.S3.List(ctx, ledger.JournalDir("")+"ledger/")
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != int(n) {
		t.Errorf("the journal holds %d entries, want all %d kept", len(objs), n)
	}
	l, err := machine(t, m.Endpoint).readLedger(ctx)
	if err != nil || len(l.Edges) != int(n) || ledger.Digest(l.Edges) != ledger.Digest(a.j.base["p/d"]) {
		t.Errorf("a new machine reads %d edges (%v), want %d", len(l.Edges), err, n)
	}
}

// TestJournalDeltaBytesAddUp: a machine that reads another's new deltas
// on top of the entry it had read counts the bytes of all deltas since
// the full entry (not only the old ones), as their writer does, so that
// a new full is written once the deltas outweigh it.
func TestJournalDeltaBytesAddUp(t *testing.T) {
	m := startMinIO(t)
	ctx := context.Background()
	a, b := machine(t, m.Endpoint), machine(t, m.Endpoint)
	for g := uint64(1); g <= 2; g++ {
		if err := add(ctx, a, edgeIn("p/d", g, g-1)); err != nil {
			t.Fatal(err)
		}
	}
	if err := add(ctx, b, edgeIn("q/x", 100, 0)); err != nil {
		t.Fatal(err)
	}
	for g := uint64(3); g <= 4; g++ {
		if err := add(ctx, a, edgeIn("p/d", g, g-1)); err != nil {
			t.Fatal(err)
		}
	}
	if err := add(ctx, b, edgeIn("q/x", 101, 100)); err != nil { // merges a's new deltas of p/d
		t.Fatal(err)
	}
	want, got := a.j.state.Datasets["p/d"], b.j.state.Datasets["p/d"]
	if want.Full == want.Seq || want.Since == 0 {
		t.Fatalf("the writer's mark %+v: want deltas after the full entry", want)
	}
	if got.Seq != want.Seq || got.Since != want.Since {
		t.Errorf("the reader counts %d bytes of deltas up to entry %d, the writer %d up to %d", got.Since, got.Seq, want.Since, want.Seq)
	}
}

// TestSupersededEntriesLagOneCheckpoint: a new full entry deletes only
// the entries before the previous full, so that the numbers between the
// two are never free for a writer whose listing is a little behind.
func TestSupersededEntriesLagOneCheckpoint(t *testing.T) {
	m := startMinIO(t)
	ctx := context.Background()
	a := machine(t, m.Endpoint)
	var fulls []uint64
	for g := uint64(1); len(fulls) < 3; g++ {
		if g > 4*checkpointEvery {
			t.Fatalf("fulls %v after %d changes, want 3", fulls, g-1)
		}
		if err := add(ctx, a, edgeIn("p/d", g, g-1)); err != nil {
			t.Fatal(err)
		}
		if f := a.j.state.Datasets["p/d"].Full; len(fulls) == 0 || fulls[len(fulls)-1] != f {
			fulls = append(fulls, f)
		}
	}
	objs, err := a.S3.List(ctx, ledger.JournalDir("")+"ledger/")
	if err != nil {
		t.Fatal(err)
	}
	head := a.j.state.Datasets["p/d"].Seq
	var want, got []string
	for s := fulls[1]; s <= head; s++ {
		want = append(want, ledger.JournalKey("", "p/d", s))
	}
	for _, o := range objs {
		got = append(got, o.Key)
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("after the full entries %v the journal holds\n%v\nwant the previous full entry %d and all after it:\n%v", fulls, got, fulls[1], want)
	}
}
