package backup

import (
	"context"
	"fmt"
	"maps"
	"net/http"
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

// TestUnchangedBucketLedgerIsNotFetched: when the bucket holds the copy
// this machine wrote last, commands check its ETag and do not download it
// (at 100,000 edges it is over 30 MB); a changed copy is still read.
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
	// Another machine's change is seen: a's next change is refused.
	b := machine(t, m.Endpoint)
	if _, err := b.readLedger(ctx); err != nil { // adopts the bucket's copy
		t.Fatal(err)
	}
	if err := addEdge(ctx, b, 3); err != nil {
		t.Fatal(err)
	}
	if err := addEdge(ctx, a, 4); err == nil || gets.Load() == 0 {
		t.Errorf("a's change over b's copy: %v after %d GETs; want a refusal after reading it", err, gets.Load())
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
