package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/zfs2s3/zfs2s3/internal/testbed"
	"github.com/zfs2s3/zfs2s3/ledger"
)

// TestDisasterRestoreFromTheBucketAlone loses the machine: state dir gone,
// source pool destroyed. A new machine restores from the bucket's ledger
// copy, and, once that is deleted too, from a ledger rebuilt from manifests.
func TestDisasterRestoreFromTheBucketAlone(t *testing.T) {
	e := newEnv(t, "disaster")
	srcPool := fmt.Sprintf("%ssrc%d", pool, bed.n.Add(1))
	if err := bed.zfs.Pool(srcPool, 512<<20); err != nil {
		t.Fatal(err)
	}
	e.ds = srcPool + "/data"
	e.zfs("create", e.ds)
	s := bypassChain(t, e)
	mnt, _ := testbed.Mountpoint(e.ds)
	want := map[string][]byte{}
	for _, f := range []string{"A.bin", "D.bin"} {
		want[f], _ = os.ReadFile(filepath.Join(mnt, f))
	}
	if err := testbed.DestroyPool(srcPool); err != nil {
		t.Fatal(err)
	}
	os.RemoveAll(e.stateDir)

	check := func(into string) {
		t.Helper()
		dst, _ := testbed.Mountpoint(into)
		for f, data := range want {
			got, err := os.ReadFile(filepath.Join(dst, f))
			if err != nil || string(got) != string(data) {
				t.Errorf("%s/%s differs from the lost source (%v)", into, f, err)
			}
		}
	}
	e.stateDir = t.TempDir() // the new machine
	into := pool + "/" + filepath.Base(t.Name()) + "-1"
	e.ok("restore", s["D"], "--into", into)
	check(into)

	// Without the bucket's ledger copy the tool says what to do...
	e.delLedger("")
	e.stateDir = t.TempDir()
	e.fails(2, "not in the ledger", "restore", s["D"], "--into", into+"x")
	// ...and the manifests alone rebuild it.
	r := e.ok("ledger", "rebuild")
	if !strings.Contains(r.stdout, "rebuilt the ledger from the bucket: 5 edges") {
		t.Errorf("ledger rebuild stdout = %q", r.stdout)
	}
	e.stateDir = t.TempDir() // and it reached the bucket again
	into2 := pool + "/" + filepath.Base(t.Name()) + "-2"
	e.ok("restore", s["D"], "--into", into2)
	check(into2)
	e.ok("verify", "--read-data")
}

// TestStaleMachineMergesNewerBucketLedger has two machines share a
// bucket: the one whose ledger is older merges the other's change into
// its own before it changes anything (README "When the machine is gone").
func TestStaleMachineMergesNewerBucketLedger(t *testing.T) {
	e := newEnv(t, "two machines")
	a := e.snap("a", 1)
	b := e.snap("b", 1)
	c := e.snap("c", 1)
	e.ok("upload", a)
	first := e.stateDir
	second := t.TempDir() // the second machine starts from the bucket's copy
	e.stateDir = second
	e.ok("upload", b, "-i", a)
	e.stateDir = first
	if r := e.ok("restore", b, "--into", pool+"/"+filepath.Base(t.Name()), "--dry-run"); !strings.Contains(r.stdout, a+" -> "+b) {
		t.Errorf("the stale machine does not see the newer edge: %q", r.stdout)
	}
	// A change here merges the second machine's edge first: c builds on it.
	e.ok("upload", c, "-i", b)
	if got := e.edges(); len(got) != 3 {
		t.Errorf("the first machine's ledger = %v, want a, a -> b (the other's), b -> c", got)
	}
	// And the second machine picks up the first one's edge: it may
	// remove it, and the first one then drops it from its own ledger.
	e.stateDir = second
	e.ok("remove", c, "-i", b)
	e.stateDir = first
	e.ok("remove", b, "-i", a)
	if got := e.edges(); !slices.Equal(got, []string{a + " (full)"}) {
		t.Errorf("after both removals the first machine has %v, want only a (full)", got)
	}
	e.ok("verify")
}

// TestConcurrentLedgerWriteIsMerged has another machine write the
// journal entry this one is about to write while it records an upload:
// the conditional write refuses to overwrite it, and this machine merges
// the other's entry and writes its own after it.
func TestConcurrentLedgerWriteIsMerged(t *testing.T) {
	e := newEnv(t, "ledger race")
	a := e.snap("a", 1)
	b := e.snap("b", 1)
	e.ok("upload", a)
	p := testbed.StartProxy(t, bed.minio.Endpoint)
	mc := bed.minio.Client()
	var once sync.Once
	var key string
	var theirs []byte
	p.SetRule(func(r *http.Request) testbed.Fault {
		k := strings.TrimPrefix(r.URL.Path, "/"+e.bucket+"/")
		ds, seq, ok := ledger.ParseJournalKey("", k)
		if r.Method == http.MethodPut && ok {
			once.Do(func() { // the other machine's entry lands first: one that changes nothing
				key = k
				theirs, _ = ledger.MarshalEntry(&ledger.Entry{Kind: ledger.EntryDelta, Bucket: e.bucket, Dataset: ds, Seq: seq})
				mc.PutObject(context.Background(), &s3.PutObjectInput{Bucket: &e.bucket, Key: &key, Body: bytes.NewReader(theirs)})
			})
		}
		return testbed.Fault{}
	})
	e.endpoint = p.URL
	r := e.ok("upload", b, "-i", a)
	if key == "" || !bytes.Equal(e.object(key), theirs) {
		t.Fatalf("the other machine's journal entry %q was overwritten", key)
	}
	if !strings.Contains(r.stdout, "stored "+a+" -> "+b) || len(e.stateFiles()) != 0 {
		t.Errorf("after the merged bucket write: stdout %q, %d upload state files", r.stdout, len(e.stateFiles()))
	}
	e.endpoint = bed.minio.Endpoint
	c := e.snap("c", 1)
	e.ok("upload", c, "-i", b)
	e.stateDir = t.TempDir() // a new machine reads everything from the bucket
	if got := e.edges(); len(got) != 0 {
		t.Fatalf("a new state dir has edges %v", got)
	}
	e.ok("verify")
	if got := e.edges(); len(got) != 3 {
		t.Errorf("edges after the merge = %v, want a, a->b, b->c", got)
	}
}

// TestLostLedgerCopyPointsToRebuild: on a new machine whose bucket lost
// its ledger copy, status says to run ledger rebuild instead of listing
// every stream as unknown and saying nothing.
func TestLostLedgerCopyPointsToRebuild(t *testing.T) {
	e := newEnv(t, "lost copy")
	a, b := e.snap("a", 1), e.snap("b", 1)
	e.ok("upload", a)
	e.ok("upload", b, "-i", a)
	// JSON output is for people too: edges read "a -> b".
	if r := e.ok("status", "--json"); strings.Contains(r.stdout, `\u003e`) {
		t.Errorf("status --json escapes '>':\n%s", r.stdout)
	}
	if r := e.ok("verify", "--json"); !strings.Contains(r.stdout, a+" -> "+b) || strings.Contains(r.stdout, `"problems": null`) {
		t.Errorf("verify --json:\n%s", r.stdout)
	}
	// One edge with its object and manifest gone: two BAD lines, two problems.
	keyB := e.edgeKey(b, a)
	e.del(keyB)
	e.del(keyB + ".manifest.yaml")
	r := e.fails(1, "verify found 2 problem(s)", "verify")
	if n := strings.Count(r.stdout, "BAD "); n != 2 {
		t.Errorf("verify printed %d BAD lines:\n%s", n, r.stdout)
	}
	e.delLedger("")
	e.stateDir = t.TempDir()
	if r := e.ok("status"); !strings.Contains(r.stdout, "run zfs2s3 ledger rebuild") {
		t.Errorf("status on a new machine without a ledger copy:\n%s", r.stdout)
	}
}
