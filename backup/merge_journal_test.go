package backup

import (
	"context"
	"errors"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/zfs2s3/zfs2s3/internal/testbed"
	"github.com/zfs2s3/zfs2s3/ledger"
	"github.com/zfs2s3/zfs2s3/s3up"
	"github.com/zfs2s3/zfs2s3/zfs"
)

// Tests of the merge of another machine's journal entries (merge.go)
// against a real MinIO: a host and an admin machine share a prefix.

// inSync makes a and b both hold edges, written by a and read by b.
func inSync(t *testing.T, a, b *Backup, edges ...ledger.Edge) {
	t.Helper()
	ctx := context.Background()
	for _, e := range edges {
		if err := add(ctx, a, e); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := b.readLedger(ctx); err != nil {
		t.Fatal(err)
	}
}

func drop(ctx context.Context, b *Backup, e ledger.Edge) error {
	return b.withLedger(ctx, func(l *ledger.Ledger) (bool, error) {
		if _, ok := l.Get(e.ID()); !ok {
			return false, errors.New("not there")
		}
		l.Drop(e.ID())
		return true, nil
	})
}

// TestLostJournalRaceIsMerged: b writes the entry a was about to write;
// a's conditional write fails, a reads b's entry, merges and writes the
// next one. Both edges are in the bucket and in a's ledger.
func TestLostJournalRaceIsMerged(t *testing.T) {
	m := startMinIO(t)
	ctx := context.Background()
	a, b := machine(t, m.Endpoint), machine(t, m.Endpoint)
	inSync(t, a, b, edgeIn("p/d", 1, 0), edgeIn("p/d", 2, 1))
	err := a.withLedger(ctx, func(l *ledger.Ledger) (bool, error) {
		// b removes 1 -> 2 and adds 1 -> 4 while a is between its read
		// and its write.
		if err := drop(ctx, b, edgeIn("p/d", 2, 1)); err != nil {
			return false, err
		}
		if err := add(ctx, b, edgeIn("p/d", 4, 1)); err != nil {
			return false, err
		}
		return true, l.Add(edgeIn("p/d", 3, 1))
	})
	if err != nil {
		t.Fatalf("a's change that lost the race: %v, want it merged", err)
	}
	if got := bucketKeys(t, a); got != "k1 k4 k3" {
		t.Errorf("bucket ledger = %s, want k1 k4 k3 (b's removal and addition, a's addition)", got)
	}
	l, err := a.store.Load("bkt", "")
	if err != nil || ids(l.Edges) != "0>1 1>3 1>4" {
		t.Errorf("a's local ledger = %v, %v; want the merge", l, err)
	}
	// b picks up a's change on its next command, and both go on.
	if err := add(ctx, b, edgeIn("p/d", 5, 4)); err != nil {
		t.Fatal(err)
	}
	if err := add(ctx, a, edgeIn("p/d", 6, 3)); err != nil {
		t.Fatal(err)
	}
	if got := bucketKeys(t, machine(t, m.Endpoint)); got != "k1 k4 k3 k5 k6" {
		t.Errorf("bucket ledger = %s, want k1 k4 k3 k5 k6", got)
	}
}

// TestRaceThatStrandsAnEdgeIsRefused: b removes the base of the edge a
// records meanwhile; the merge would leave a's edge without its chain, so
// a's write is refused, naming it, and b's entry stays.
func TestRaceThatStrandsAnEdgeIsRefused(t *testing.T) {
	m := startMinIO(t)
	ctx := context.Background()
	a, b := machine(t, m.Endpoint), machine(t, m.Endpoint)
	inSync(t, a, b, edgeIn("p/d", 1, 0), edgeIn("p/d", 2, 1))
	e3 := edgeIn("p/d", 3, 2)
	err := a.withLedger(ctx, func(l *ledger.Ledger) (bool, error) {
		if err := drop(ctx, b, edgeIn("p/d", 2, 1)); err != nil {
			return false, err
		}
		return true, l.Add(e3)
	})
	if !errors.Is(err, ledger.ErrRefused) || !strings.Contains(err.Error(), e3.String()) || !strings.Contains(err.Error(), "ledger rebuild") {
		t.Errorf("a's change whose base b removed: %v, want a refusal naming %s", err, e3)
	}
	if got := bucketKeys(t, b); got != "k1" {
		t.Errorf("bucket ledger = %s, want b's k1", got)
	}
}

// TestMergeAtLoadKeepsPendingUploadsBase: another machine removed the
// base of an upload this machine has started: the next change here is
// refused, naming the upload; a removal nothing here needs is taken.
func TestMergeAtLoadKeepsPendingUploadsBase(t *testing.T) {
	m := startMinIO(t)
	ctx := context.Background()
	a, b := machine(t, m.Endpoint), machine(t, m.Endpoint)
	inSync(t, a, b, edgeIn("p/d", 1, 0), edgeIn("p/d", 2, 1), edgeIn("p/d", 3, 1))
	if err := drop(ctx, b, edgeIn("p/d", 3, 1)); err != nil {
		t.Fatal(err)
	}
	if err := add(ctx, a, edgeIn("p/e", 9, 0)); err != nil {
		t.Fatalf("a's change after b removed an edge a does not need: %v", err)
	}
	if l, err := a.store.Load("bkt", ""); err != nil || ids(l.Edges) != "0>1 0>9 1>2" {
		t.Errorf("a's ledger = %v, %v; want b's removal of 1 -> 3 taken", l, err)
	}
	if err := a.store.CheckDirs(); err != nil {
		t.Fatal(err)
	}
	up := edgeIn("p/d", 4, 2)
	p := &pending{Version: pendingVersion, Edge: up, Upload: s3up.Upload{Key: up.Key}, path: a.pendingPath(up.Key)}
	if err := os.MkdirAll(a.store.UploadsDir(), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := p.save(); err != nil {
		t.Fatal(err)
	}
	if err := drop(ctx, b, edgeIn("p/d", 2, 1)); err != nil {
		t.Fatal(err)
	}
	err := add(ctx, a, edgeIn("p/e", 10, 9))
	if !errors.Is(err, ledger.ErrRefused) || !strings.Contains(err.Error(), "pending upload "+up.String()) {
		t.Errorf("a's change after b removed its pending upload's base: %v, want a refusal naming the upload", err)
	}
	if l, err := a.store.Load("bkt", ""); err != nil || ids(l.Edges) != "0>1 0>9 1>2" {
		t.Errorf("a's ledger after the refusal = %v, %v; want it unchanged", l, err)
	}
}

// TestFullEntryOverThisMachinesEntry: another machine's full entry
// superseded (and deleted) the entry this machine's ledger matches. Its
// edges are taken where every edge of this machine's it lacks was removed
// (its object is gone); one whose object is still in the bucket refuses
// the change, naming it.
func TestFullEntryOverThisMachinesEntry(t *testing.T) {
	m := startMinIO(t)
	ctx := context.Background()
	a, b := machine(t, m.Endpoint), machine(t, m.Endpoint)
	e2 := edgeIn("p/d", 2, 1)
	inSync(t, a, b, edgeIn("p/d", 1, 0), e2)
	if _, err := a.S3.PutIf(ctx, e2.Key, []byte("stream"), nil, ""); err != nil {
		t.Fatal(err)
	}
	first, err := a.S3.List(ctx, ledger.JournalKey("", "p/d", 2))
	if err != nil || len(first) != 1 {
		t.Fatalf("a's entry 2: %v, %v", first, err)
	}
	// b drops 1 -> 2 without deleting its object (as a machine that found
	// the journal damaged and replaced it would), then changes enough
	// for a full entry that deletes a's.
	if err := drop(ctx, b, e2); err != nil {
		t.Fatal(err)
	}
	for g := uint64(10); g < 40; g++ {
		if err := add(ctx, b, edgeIn("p/d", g, 1)); err != nil {
			t.Fatal(err)
		}
	}
	if objs, _ := a.S3.List(ctx, ledger.JournalKey("", "p/d", 2)); len(objs) != 0 {
		t.Fatalf("a's entry 2 is still there: the test needs b to have superseded it")
	}
	err = add(ctx, a, edgeIn("p/d", 3, 2))
	if err == nil || !strings.Contains(err.Error(), "without "+e2.String()+", whose objects are still in the bucket") {
		t.Errorf("a's change over b's full entry without a's stored edge: %v, want a refusal naming it", err)
	}
	// Once its object is gone it was removed: a takes b's full entry.
	if err := a.S3.Delete(ctx, e2.Key); err != nil {
		t.Fatal(err)
	}
	if err := add(ctx, a, edgeIn("p/d", 40, 1)); err != nil {
		t.Fatalf("a's change over b's full entry of removed edges: %v", err)
	}
	l, err := a.store.Load("bkt", "")
	if err != nil || len(l.Edges) != 32 {
		t.Errorf("a's ledger has %d edges (%v), want 1, b's 30 and a's new one", len(l.Edges), err)
	}
	if got := bucketKeys(t, machine(t, m.Endpoint)); !strings.HasSuffix(got, "k39 k40") || strings.Contains(got, "k2 ") {
		t.Errorf("bucket ledger = %s", got)
	}
}

// TestKillAfterARebaseLeavesAUsableStateDir: a machine killed right after
// it merged another machine's entry into its local ledger (before writing
// its own entry) finds, on its next command, a state dir whose journal
// record matches that ledger: the change is written, not refused as
// "changed by another machine".
func TestKillAfterARebaseLeavesAUsableStateDir(t *testing.T) {
	m := startMinIO(t)
	proxy := testbed.StartProxy(t, m.Endpoint)
	ctx := context.Background()
	a, b := machine(t, proxy.URL), machine(t, m.Endpoint)
	inSync(t, a, b, edgeIn("p/d", 1, 0), edgeIn("p/d", 2, 1))
	killed := t.TempDir() // a's state dir at the moment of the kill
	var puts atomic.Int64
	err := a.withLedger(ctx, func(l *ledger.Ledger) (bool, error) {
		if err := add(ctx, b, edgeIn("p/d", 4, 1)); err != nil {
			return false, err
		}
		proxy.SetRule(func(r *http.Request) testbed.Fault {
			if !testbed.IsLedger(r, http.MethodPut) || !strings.Contains(r.URL.Path, ".zfs2s3/ledger/") {
				return testbed.Fault{}
			}
			if puts.Add(1) == 2 { // the write after the merge: kill -9 here
				if err := os.CopyFS(killed, os.DirFS(a.Opt.StateDir)); err != nil {
					t.Error(err)
				}
			}
			if puts.Load() >= 2 {
				return testbed.Fault{Reset: true}
			}
			return testbed.Fault{}
		})
		return true, l.Add(edgeIn("p/d", 3, 1))
	})
	proxy.SetRule(func(*http.Request) testbed.Fault { return testbed.Fault{} })
	if puts.Load() < 2 {
		t.Fatalf("a's change: %v after %d entry writes, want a merge and a second write", err, puts.Load())
	}
	c, err := s3up.NewClient(ctx, s3up.Config{Bucket: "bkt", Endpoint: m.Endpoint, Region: "us-east-1"})
	if err != nil {
		t.Fatal(err)
	}
	a2 := New(zfs.Runner{}, c, Options{StateDir: killed}, func(string, ...any) {})
	if err := add(ctx, a2, edgeIn("p/d", 5, 3)); err != nil {
		t.Fatalf("the next change after a kill between the merge's save and its entry: %v, want it written", err)
	}
	if got := bucketKeys(t, machine(t, m.Endpoint)); got != "k1 k2 k4 k3 k5" {
		t.Errorf("bucket ledger = %s, want k1 k2 k4 k3 k5", got)
	}
}
