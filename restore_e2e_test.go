package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/zfs2s3/zfs2s3/backup"
	"github.com/zfs2s3/zfs2s3/internal/testbed"
)

// bypassChain stores A (full), A->B, B->C, C->D and the bypass A->D, where
// B adds a large file that C deletes, so the bypass is much the cheaper way
// to D.
func bypassChain(t *testing.T, e *env) map[string]string {
	s := map[string]string{"A": e.snap("A", 2), "B": e.snap("B", 8)}
	mnt, _ := testbed.Mountpoint(e.ds)
	os.Remove(filepath.Join(mnt, "B.bin"))
	e.zfs("snapshot", e.ds+"@C")
	s["C"] = e.ds + "@C"
	s["D"] = e.snap("D", 1)
	e.ok("upload", s["A"])
	for _, p := range [][2]string{{"A", "B"}, {"B", "C"}, {"C", "D"}, {"A", "D"}} {
		e.ok("upload", s[p[1]], "-i", s[p[0]])
	}
	return s
}

func sameTree(t *testing.T, a, b string) {
	t.Helper()
	entries, _ := os.ReadDir(a)
	other, _ := os.ReadDir(b)
	if len(entries) != len(other) || len(entries) == 0 {
		t.Errorf("%s has %d entries, %s has %d", a, len(entries), b, len(other))
	}
	for _, de := range entries {
		sameFile(t, filepath.Join(a, de.Name()), filepath.Join(b, de.Name()))
	}
}

func TestRestoreTakesTheCheapestChain(t *testing.T) {
	e := newEnv(t, "restore")
	s := bypassChain(t, e)
	into := pool + "/" + filepath.Base(e.ds) + " restored"
	dry := e.ok("restore", s["D"], "--into", into, "--dry-run")
	if ok, _ := testbedExists(into); ok {
		t.Fatal("--dry-run received something")
	}
	if !strings.Contains(dry.stdout, "zfs receive") || strings.Count(dry.stdout, "\n") != 2 {
		t.Errorf("dry run = %q, want two lines with the commands", dry.stdout)
	}
	r := e.ok("restore", s["D"], "--into", into)
	want := []string{"received " + s["A"] + " (full)", "received " + s["A"] + " -> " + s["D"]}
	for _, w := range want {
		if !strings.Contains(r.stdout, w) {
			t.Errorf("restore stdout lacks %q:\n%s", w, r.stdout)
		}
	}
	if strings.Contains(r.stdout, "@B") {
		t.Errorf("restore went through B, not the bypass:\n%s", r.stdout)
	}
	src, _ := testbed.Mountpoint(e.ds)
	dst, _ := testbed.Mountpoint(into)
	sameTree(t, src, dst)
}

func testbedExists(ds string) (bool, error) {
	_, err := testbed.Run("zfs", "list", "-H", "-o", "name", ds)
	return err == nil, err
}

func TestRestoreOntoOlderSnapshotReceivesOnlyWhatIsMissing(t *testing.T) {
	e := newEnv(t, "restore onto")
	s := bypassChain(t, e)
	into := pool + "/" + filepath.Base(e.ds) + " target"
	e.ok("restore", s["B"], "--into", into)
	r := e.ok("restore", s["D"], "--into", into)
	if got := strings.Count(r.stdout, "received "); got != 2 || !strings.Contains(r.stdout, s["B"]+" -> "+s["C"]) {
		t.Errorf("restore from B received %d streams, want B->C and C->D:\n%s", got, r.stdout)
	}
	src, _ := testbed.Mountpoint(e.ds)
	dst, _ := testbed.Mountpoint(into)
	sameTree(t, src, dst)
	r = e.ok("restore", s["D"], "--into", into)
	if !strings.Contains(r.stdout, "nothing to restore") {
		t.Errorf("second restore of D = %q", r.stdout)
	}
}

// corrupt flips one byte of a stored object in place, keeping its size and
// metadata, as bit rot in the store would.
func (e *env) corrupt(key string) {
	e.t.Helper()
	data := e.object(key)
	data[len(data)/2] ^= 0x40
	head, err := bed.minio.Client().HeadObject(context.Background(), &s3.HeadObjectInput{Bucket: &e.bucket, Key: &key})
	if err != nil {
		e.t.Fatal(err)
	}
	_, err = bed.minio.Client().PutObject(context.Background(), &s3.PutObjectInput{Bucket: &e.bucket, Key: &key,
		Body: bytes.NewReader(data), Metadata: head.Metadata})
	if err != nil {
		e.t.Fatal(err)
	}
}

func TestCorruptObjectIsFoundAndNeverRestored(t *testing.T) {
	e := newEnv(t, "corrupt")
	a := e.snap("a", 3)
	b := e.snap("b", 3)
	e.ok("upload", a)
	e.ok("upload", b, "-i", a)
	e.ok("verify", "--read-data")
	bad := e.edgeKey(b, a)
	e.corrupt(bad)
	e.ok("verify") // metadata alone cannot see it
	r := e.fails(1, "verify found 1 problem", "verify", "--read-data")
	if !strings.Contains(r.stdout, "BAD  "+a+" -> "+b+": object "+bad+" has sha256") {
		t.Errorf("verify --read-data stdout does not name the edge:\n%s", r.stdout)
	}
	into := pool + "/" + filepath.Base(e.ds) + " restored"
	rr := e.fails(1, "restore stopped at "+a+" -> "+b, "restore", b, "--into", into)
	t.Logf("verify --read-data:\n%s%s\nrestore:\n%s", r.stdout, r.stderr, rr.stderr)
	if ok, _ := testbedExists(into); ok {
		t.Errorf("a failed restore left %s behind", into)
	}
	// Onto a dataset that has a: only what this run received is undone.
	e.ok("restore", a, "--into", into)
	e.fails(1, "restore stopped", "restore", b, "--into", into)
	snaps, _ := testbed.Run("zfs", "list", "-H", "-t", "snapshot", "-o", "name", "-r", into)
	if strings.TrimSpace(snaps) != into+"@a" {
		t.Errorf("after a failed incremental restore %s has %q, want only @a", into, snaps)
	}
	e.fails(1, "incomplete", "save", b, "-i", a, "-")
}

func TestSaveAndVerifyJSON(t *testing.T) {
	e := newEnv(t, "save")
	a := e.snap("a", 2)
	e.ok("upload", a)
	file := filepath.Join(t.TempDir(), "a.zfs")
	e.ok("save", a, file)
	got, _ := os.ReadFile(file)
	if sha(got) != e.sendSHA(a, "") {
		t.Error("saved file differs from zfs send")
	}
	if out := e.ok("save", a, "-"); sha([]byte(out.stdout)) != e.sendSHA(a, "") {
		t.Error("save to stdout differs from zfs send")
	}
	// An object the ledger does not know makes verify fail and is named.
	_, err := bed.minio.Client().PutObject(context.Background(), &s3.PutObjectInput{Bucket: &e.bucket, Key: ptrS("stray.bin"), Body: strings.NewReader("x")})
	if err != nil {
		t.Fatal(err)
	}
	r := e.run("verify", "--json")
	var rep backup.VerifyReport
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("verify --json: %v\n%s", err, r.stdout)
	}
	if r.code != 1 || rep.OK || len(rep.Edges) != 1 || len(rep.Edges[0].Problems) != 0 || len(rep.Unknown) != 1 || rep.Unknown[0] != "stray.bin" {
		t.Errorf("verify --json exit %d, report %+v", r.code, rep)
	}
}

func ptrS(s string) *string { return &s }

func TestStatusJSONMatchesLedgerAndBucket(t *testing.T) {
	e, _ := slowEnv(t, "status", 300*time.Millisecond)
	a := e.snap("a", 1)
	b := e.snap("b", 1)
	c := e.snap("c", 20)
	e.snap("d", 1)
	e.ok("upload", a)
	e.ok("upload", b, "-i", a)
	e.killAfterParts(1, "upload", c, "-i", b, "--part-size", "5MiB", "--concurrency", "1")
	e.endpoint = bed.minio.Endpoint
	e.zfs("destroy", a) // stored, no longer local
	ctx := context.Background()
	mc := bed.minio.Client()
	orphan, err := mc.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: &e.bucket, Key: ptrS("leftover.zfs")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mc.PutObject(ctx, &s3.PutObjectInput{Bucket: &e.bucket, Key: ptrS("stray.bin"), Body: strings.NewReader("x")}); err != nil {
		t.Fatal(err)
	}
	var st backup.Status
	if err := json.Unmarshal([]byte(e.ok("status", "--json").stdout), &st); err != nil {
		t.Fatal(err)
	}
	if len(st.Datasets) != 1 || st.Datasets[0].Dataset != e.ds {
		t.Fatalf("datasets = %+v", st.Datasets)
	}
	d := st.Datasets[0]
	led := e.ledger()
	if len(d.Edges) != len(led.Edges) {
		t.Fatalf("status shows %d edges, ledger has %d", len(d.Edges), len(led.Edges))
	}
	for i, es := range d.Edges {
		le := led.Edges[i]
		if es.Key != le.Key || es.GUID != le.Target.GUID || es.StoredBytes != le.StoredBytes || !es.Restorable {
			t.Errorf("edge %d: status %+v, ledger %+v", i, es, le)
		}
		if es.StoredBytes != int64(len(e.object(es.Key))) {
			t.Errorf("edge %s: status says %d bytes, the bucket holds %d", es.Snapshot, es.StoredBytes, len(e.object(es.Key)))
		}
	}
	if d.Edges[0].Local != "missing" || d.Edges[1].Local != "present" {
		t.Errorf("local states = %q, %q; want missing, present", d.Edges[0].Local, d.Edges[1].Local)
	}
	if fmt.Sprint(d.NotStored) != fmt.Sprint([]string{c, e.ds + "@d"}) {
		t.Errorf("not stored = %v, want c and d", d.NotStored)
	}
	if len(st.Pending) != 1 || st.Pending[0].Edge != b+" -> "+c || st.Pending[0].Parts < 1 {
		t.Errorf("pending = %+v", st.Pending)
	}
	if len(st.UntrackedUploads) != 1 || st.UntrackedUploads[0].UploadID != *orphan.UploadId {
		t.Errorf("untracked uploads = %+v, want leftover.zfs", st.UntrackedUploads)
	}
	if fmt.Sprint(st.UnknownObjects) != "[stray.bin]" {
		t.Errorf("unknown objects = %v", st.UnknownObjects)
	}
	table := e.ok("status").stdout
	for _, want := range []string{"SNAPSHOT", "@b", "pending upload", "untracked multipart upload", "unknown object", "stray.bin"} {
		if !strings.Contains(table, want) {
			t.Errorf("status table lacks %q:\n%s", want, table)
		}
	}
	t.Log("\n" + table)
}
