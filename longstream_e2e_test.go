package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/zfs2s3/zfs2s3/backup"
	"github.com/zfs2s3/zfs2s3/internal/testbed"
	"github.com/zfs2s3/zfs2s3/ledger"
)

// longArgs makes S3's 10,000-part limit 2 parts of 5 MiB, so that a 24 MiB
// stream needs three objects, as a 160 GiB one does at 16 MiB parts.
var longArgs = []string{"--part-size", "5MiB", "--parts-per-object", "2", "--concurrency", "2"}

// fullObjects counts the objects an upload completed before its current one.
func fullObjects(st map[string]any) int {
	up, _ := st["upload"].(map[string]any)
	full, _ := up["full"].([]any)
	n := 0
	for _, f := range full {
		if m, _ := f.(map[string]any); m["upload_id"] == nil {
			n++
		}
	}
	return n
}

// pendingKey is the object key of the one pending upload.
func (e *env) pendingKey() string {
	e.t.Helper()
	st := e.stateFiles()
	if len(st) != 1 {
		e.t.Fatalf("%d pending uploads, want 1", len(st))
	}
	up, _ := st[0]["upload"].(map[string]any)
	key, _ := up["key"].(string)
	return key
}

// streamSHA hashes an edge's objects in order, as a user without zfs2s3
// would read them (cat KEY KEY.2 KEY.3 | zfs receive).
func (e *env) streamSHA(target, base string) (string, int) {
	e.t.Helper()
	ed, err := e.ledger().Find(target, base, 0, 0)
	if err != nil {
		e.t.Fatal(err)
	}
	h := sha256.New()
	for i := 0; i <= len(ed.Segments); i++ {
		h.Write(e.object(ledger.SegmentKey(ed.Key, i)))
	}
	return hex.EncodeToString(h.Sum(nil)), len(ed.Segments) + 1
}

// TestLongStreamContinuesInFurtherObjects checks every command on an edge
// whose stream outgrew one object: upload killed across an object boundary
// and resumed, status, verify, save, restore, ledger rebuild, a corrupted
// further object, and remove.
func TestLongStreamContinuesInFurtherObjects(t *testing.T) {
	e := newEnv(t, "long")
	a := e.snap("a", 24)
	// Killed across an object boundary: the second object (KEY.2) is
	// completed in the bucket, and zfs2s3 dies before it hears so. (Killing
	// on a state file instead could land while the last object completes,
	// which MinIO may then neither finish nor keep.)
	p := testbed.StartProxy(t, bed.minio.Endpoint)
	p.SetRule(func(r *http.Request) testbed.Fault {
		return testbed.Fault{Hang: testbed.IsComplete(r) && strings.HasSuffix(r.URL.Path, ".zfs.2")}
	})
	e.endpoint = p.URL
	c, stderr := e.start(append([]string{"upload", a}, longArgs...)...)
	select {
	case <-p.Hung:
	case <-time.After(time.Minute):
		t.Fatalf("the second object was never completed: %s", stderr)
	}
	c.Process.Signal(syscall.SIGKILL)
	c.Wait()
	if st := e.stateFiles(); len(st) != 1 || fullObjects(st[0]) != 1 {
		t.Fatalf("state after the kill: %v, want one pending upload with one object completed as far as it knows", st)
	}
	e.endpoint = bed.minio.Endpoint
	r := e.ok("resume_upload")
	key := e.edgeKey(a, "")
	if !strings.Contains(r.stdout, "stored "+a+" (full) as s3://"+e.bucket+"/"+key+" and 2 further objects") {
		t.Errorf("resume_upload stdout = %q", r.stdout)
	}
	if got, n := e.streamSHA(a, ""); got != e.sendSHA(a, "") || n != 3 {
		t.Errorf("%d objects with sha256 %s, want 3 with zfs send's %s", n, got, e.sendSHA(a, ""))
	}
	if n := e.multipartUploads(); n != 0 || len(e.stateFiles()) != 0 {
		t.Errorf("%d multipart uploads and %d state files left", n, len(e.stateFiles()))
	}

	b := e.snap("b", 1)
	e.ok(append([]string{"upload", b, "-i", a}, longArgs...)...)
	var st backup.Status
	if err := json.Unmarshal([]byte(e.ok("status", "--json").stdout), &st); err != nil {
		t.Fatal(err)
	}
	if len(st.UnknownObjects) != 0 || len(st.Datasets) != 1 || len(st.Datasets[0].Edges) != 2 {
		t.Errorf("status: %d datasets, unknown objects %v", len(st.Datasets), st.UnknownObjects)
	}
	e.ok("verify", "--read-data")
	out := filepath.Join(t.TempDir(), "a.zfs")
	e.ok("save", a, out)
	if data, _ := os.ReadFile(out); sha(data) != e.sendSHA(a, "") {
		t.Error("saved stream differs from zfs send")
	}
	if r := e.ok("restore", b, "--into", pool+"/long-dry", "--dry-run"); !strings.Contains(r.stdout, key+" and .2 to .3") {
		t.Errorf("restore --dry-run does not list the further objects:\n%s", r.stdout)
	}
	into := pool + "/" + filepath.Base(e.ds) + " restored"
	e.ok("restore", b, "--into", into)
	src, _ := testbed.Mountpoint(e.ds)
	dst, _ := testbed.Mountpoint(into)
	for _, f := range []string{"a.bin", "b.bin"} {
		sameFile(t, filepath.Join(src, f), filepath.Join(dst, f))
	}

	// From the manifests alone, on a new machine.
	e.delLedger("")
	e.stateDir = t.TempDir()
	if r := e.ok("ledger", "rebuild"); !strings.Contains(r.stdout, "2 edges") || strings.Contains(r.stdout, "skipped") {
		t.Errorf("ledger rebuild stdout = %q", r.stdout)
	}
	if _, n := e.streamSHA(a, ""); n != 3 {
		t.Errorf("rebuilt edge has %d objects, want 3", n)
	}

	e.corrupt(ledger.SegmentKey(key, 1))
	r = e.fails(1, "verify found 2 problem", "verify", "--read-data")
	if !strings.Contains(r.stdout, "BAD  "+a+" (full)") || !strings.Contains(r.stdout, "its chain needs "+a+" (full), whose object is damaged") {
		t.Errorf("verify --read-data does not name the edge and its dependent:\n%s", r.stdout)
	}
	e.fails(1, "restore stopped at "+a, "restore", b, "--into", into+"2")

	e.ok("remove", b, "-i", a)
	e.ok("remove", a)
	if keys := e.keys(); !slices.Equal(keys, e.ledgerKeys("")) {
		t.Errorf("bucket after removing both edges: %v, want only the ledger's objects", keys)
	}
}

// TestAbortLongStreamLeavesNothing aborts an upload killed after it filled
// an object: the full object, the current multipart upload and the state go.
func TestAbortLongStreamLeavesNothing(t *testing.T) {
	e, _ := slowEnv(t, "long abort", 200*time.Millisecond)
	a := e.snap("a", 24)
	e.killWhen(func(st map[string]any) bool { return fullObjects(st) >= 1 },
		append([]string{"upload", a}, longArgs...)...)
	e.endpoint = bed.minio.Endpoint
	// Its full object has no manifest yet; rebuild must not call it junk.
	key := ledger.SegmentKey(e.pendingKey(), 0)
	if r := e.ok("ledger", "rebuild"); !strings.Contains(r.stdout, "skipped object "+key+": it belongs to the unfinished upload of "+a+" (full)") {
		t.Errorf("ledger rebuild stdout = %q", r.stdout)
	}
	e.ok("abort_upload", a)
	if keys, n := e.keys(), e.multipartUploads(); len(keys) == 0 || !slices.Equal(keys, e.ledgerKeys("")) || n != 0 || len(e.stateFiles()) != 0 {
		t.Errorf("after abort: objects %v, %d multipart uploads, %d state files", keys, n, len(e.stateFiles()))
	}
	e.ok(append([]string{"upload", a}, longArgs...)...)
	if got, n := e.streamSHA(a, ""); got != e.sendSHA(a, "") || n != 3 {
		t.Errorf("after abort and upload: %d objects, sha256 %s", n, got)
	}
}
