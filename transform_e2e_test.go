package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/zfs2s3/zfs2s3/internal/testbed"
	"github.com/zfs2s3/zfs2s3/ledger"
)

// marker is written into datasets whose backups are encrypted: the
// bucket's bytes must never contain it.
const marker = "ZFS2S3-PLAINTEXT-MARKER-7f3a"

// ageKey writes a new age identity to a file and returns its path and
// public key.
func ageKey(t *testing.T) (path, recipient string) {
	t.Helper()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	path = filepath.Join(t.TempDir(), "key.txt")
	if err := os.WriteFile(path, []byte(id.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path, id.Recipient().String()
}

// textSnap writes mb MiB of compressible text (with the marker on every
// line) and 1 MiB of random bytes into the dataset, and snapshots it.
func (e *env) textSnap(name string, mb int) string {
	e.t.Helper()
	mnt, err := testbed.Mountpoint(e.ds)
	if err != nil {
		e.t.Fatal(err)
	}
	var buf bytes.Buffer
	for i := 0; buf.Len() < mb<<20; i++ {
		fmt.Fprintf(&buf, "%s line %d of %s: the quick brown fox jumps over the lazy dog\n", marker, i, name)
	}
	if err := os.WriteFile(filepath.Join(mnt, name+".txt"), buf.Bytes(), 0o644); err != nil {
		e.t.Fatal(err)
	}
	noise := make([]byte, 1<<20)
	rand.Read(noise)
	if err := os.WriteFile(filepath.Join(mnt, name+".bin"), noise, 0o644); err != nil {
		e.t.Fatal(err)
	}
	full := e.ds + "@" + name
	e.zfs("snapshot", full)
	return full
}

// bucketHolds reports whether any object in the bucket contains s.
func (e *env) bucketHolds(s string) bool {
	for _, k := range e.keys() {
		if bytes.Contains(e.object(k), []byte(s)) {
			return true
		}
	}
	return false
}

// datasetGone fails the test if ds exists.
func datasetGone(t *testing.T, ds string) {
	t.Helper()
	if out, err := exec.Command("zfs", "list", "-H", "-o", "name", ds).CombinedOutput(); err == nil {
		t.Errorf("%s exists after a failed restore: %s", ds, out)
	}
}

// TestTransformedBackupsRestore stores a full and an incremental with
// each transform, in segments of 1 MiB, and restores them byte for byte;
// verify --read-data passes with and without the identity.
func TestTransformedBackupsRestore(t *testing.T) {
	key, rcpt := ageKey(t)
	for _, tc := range []struct {
		name  string
		flags []string
	}{
		{"zstd", []string{"--compress", "zstd"}},
		{"age", []string{"--recipient", rcpt}},
		{"zstd+age", []string{"--compress", "zstd:9", "--recipient", rcpt}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, "tr "+strings.ReplaceAll(tc.name, "+", "-"))
			a := e.textSnap("a", 3)
			b := e.textSnap("b", 1)
			up := append([]string{"--segment-size", "1MiB", "--part-size", "5MiB"}, tc.flags...)
			e.ok(append([]string{"upload", a}, up...)...)
			e.ok(append([]string{"upload", b, "-i", a}, up...)...)
			full, err := e.ledger().Find(a, "", 0, 0)
			if err != nil {
				t.Fatal(err)
			}
			if !full.Transformed() || len(full.Records) < 4 || full.Format() != 3 {
				t.Fatalf("full edge: transform %q, %d objects", full.Transform, len(full.Records))
			}
			for i := range full.Records {
				if got := e.object(ledger.SegmentKey(full.Key, i)); int64(len(got)) != full.Records[i].StoredBytes {
					t.Errorf("object %d has %d bytes, ledger %d", i, len(got), full.Records[i].StoredBytes)
				}
			}
			if strings.Contains(tc.name, "zstd") && full.StoredBytes*2 > full.StreamBytes {
				t.Errorf("zstd stored %d of %d bytes: text did not compress", full.StoredBytes, full.StreamBytes)
			}
			if strings.Contains(tc.name, "age") && e.bucketHolds(marker) {
				t.Error("the bucket of an encrypted backup holds the plaintext marker")
			}
			for _, args := range [][]string{{"verify", "--read-data"}, {"verify", "--read-data", "--identity", key}} {
				if r := e.ok(args...); strings.Contains(r.stdout, "BAD") {
					t.Errorf("%v:\n%s", args, r.stdout)
				}
			}
			// save writes the plaintext stream, as zfs send printed it.
			out := filepath.Join(t.TempDir(), "incr.zfs")
			e.ok("save", b, "-i", a, out, "--identity", key)
			if got, err := os.ReadFile(out); err != nil || sha(got) != e.sendSHA(b, a) {
				t.Errorf("saved stream (%v) is not what zfs send -i %s %s prints", err, a, b)
			}
			into := pool + "/" + filepath.Base(e.ds) + " restored"
			e.ok("restore", b, "--into", into, "--identity", key)
			src, _ := testbed.Mountpoint(e.ds)
			dst, _ := testbed.Mountpoint(into)
			sameTree(t, src, dst)
		})
	}
}

// TestEncryptedRestoreFailsClearly: no identity, a wrong one, and a
// flipped byte in the bucket each fail with one line, and leave no
// half-received dataset.
func TestEncryptedRestoreFailsClearly(t *testing.T) {
	key, rcpt := ageKey(t)
	other, _ := ageKey(t)
	e := newEnv(t, "enc fail")
	a := e.textSnap("a", 2)
	e.ok("upload", a, "--segment-size", "1MiB", "--compress", "zstd", "--recipient", rcpt)
	into := pool + "/" + filepath.Base(e.ds) + " restored"
	e.fails(2, "is encrypted", "restore", a, "--into", into)
	datasetGone(t, into)
	e.fails(2, "none of the --identity keys", "restore", a, "--into", into, "--identity", other)
	datasetGone(t, into)
	e.fails(2, "is encrypted", "save", a, filepath.Join(t.TempDir(), "out"))
	// An identity that opens none of the edge's (a chain switched to a new
	// key): verify checks the stored digests and finds the edge intact.
	if r := e.run("verify", "--read-data", "--identity", other); r.code != 0 || strings.Contains(r.stdout, "BAD") {
		t.Errorf("verify --read-data with another key: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	ed, _ := e.ledger().Find(a, "", 0, 0)
	k := ledger.SegmentKey(ed.Key, 1)
	data := e.object(k)
	data[len(data)/2] ^= 1
	if _, err := e.server().Client().PutObject(context.Background(), &s3.PutObjectInput{Bucket: &e.bucket, Key: &k, Body: bytes.NewReader(data)}); err != nil {
		t.Fatal(err)
	}
	r := e.run("restore", a, "--into", into, "--identity", key)
	if r.code != 1 || !strings.Contains(r.stderr, k) || !strings.Contains(r.stderr, "damaged") {
		t.Errorf("restore of a flipped byte: exit %d, stderr %q; want 1 naming %s as damaged", r.code, r.stderr, k)
	}
	datasetGone(t, into)
	if r := e.run("verify", "--read-data"); r.code == 0 || !strings.Contains(r.stdout+r.stderr, k) {
		t.Errorf("verify --read-data without identity after a flipped byte: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}

// TestHandRestoreScript: restore --dry-run prints a shell script that,
// run with sh, restores a chain of a plain full and an encrypted,
// compressed incremental, with aws, age and zstd only.
func TestHandRestoreScript(t *testing.T) {
	key, rcpt := ageKey(t)
	e := newEnv(t, "hand")
	a := e.textSnap("a", 1)
	b := e.textSnap("b", 2)
	e.ok("upload", a)
	e.ok("upload", b, "-i", a, "--segment-size", "1MiB", "--compress", "zstd", "--recipient", rcpt)
	into := pool + "/" + filepath.Base(e.ds) + " by hand"
	script := e.ok("restore", b, "--into", into, "--identity", key, "--dry-run").stdout
	for _, want := range []string{"aws s3 cp", "age -d -i", "zstd -d -c", "zfs receive"} {
		if !strings.Contains(script, want) {
			t.Errorf("script lacks %q:\n%s", want, script)
		}
	}
	datasetGone(t, into)
	sh := exec.Command("sh")
	sh.Stdin = strings.NewReader(script)
	sh.Env = append(os.Environ(), e.server().Env()...)
	if out, err := sh.CombinedOutput(); err != nil {
		t.Fatalf("sh: %v\n%s\nscript:\n%s", err, out, script)
	}
	src, _ := testbed.Mountpoint(e.ds)
	dst, _ := testbed.Mountpoint(into)
	sameTree(t, src, dst)

	// The mixed chain restores with zfs2s3 too.
	into2 := into + " 2"
	e.ok("restore", b, "--into", into2, "--identity", key)
	dst2, _ := testbed.Mountpoint(into2)
	sameTree(t, src, dst2)
}

// TestKillMidTransformedUploadThenResume kills an encrypted upload after
// its first segment is stored; resume_upload proves that segment from a
// fresh zfs send, redoes only the one in flight, and the restore is equal.
func TestKillMidTransformedUploadThenResume(t *testing.T) {
	for _, after := range []int{0, 2} {
		t.Run(fmt.Sprintf("after %d segments", after), func(t *testing.T) { killTransformedThenResume(t, after) })
	}
}

// killTransformedThenResume kills the upload once it has finished the
// given number of segments and started the next one's multipart upload.
func killTransformedThenResume(t *testing.T, after int) {
	key, rcpt := ageKey(t)
	e, _ := slowEnv(t, fmt.Sprintf("enc kill %d", after), 300*time.Millisecond)
	a := e.snap("a", 6)
	args := []string{"upload", a, "--segment-size", "1MiB", "--recipient", rcpt, "--compress", "zstd"}
	e.killWhen(func(st map[string]any) bool {
		up, _ := st["upload"].(map[string]any)
		done, _ := up["segments_done"].([]any)
		return len(done) >= after && up["upload_id"] != ""
	}, args...)
	if after == 0 && e.multipartUploads() != 1 {
		t.Errorf("%d multipart uploads after the kill, want the first segment's", e.multipartUploads())
	}
	if len(e.ledger().Edges) != 0 {
		t.Fatal("an edge was recorded before the upload finished")
	}
	st := e.stateFiles()
	// Version 4: the release before would resume a transformed upload
	// with the default checksum, sha256, sending parts with none.
	if len(st) != 1 || st[0]["version"] != 4 {
		t.Fatalf("upload state after the kill: %v", st)
	}
	up := st[0]["upload"].(map[string]any)
	var first any
	if done, _ := up["segments_done"].([]any); len(done) > 0 {
		first = done[0].(map[string]any)["stored_sha256"]
	}
	e.endpoint = bed.minio.Endpoint
	r := e.ok("resume_upload")
	if !strings.Contains(r.stdout, "stored "+a) {
		t.Errorf("resume_upload stdout = %q", r.stdout)
	}
	ed, err := e.ledger().Find(a, "", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if first != nil && ed.Records[0].StoredSHA256 != first {
		t.Errorf("segment 0 was uploaded again: %s, before the kill %s", ed.Records[0].StoredSHA256, first)
	}
	if n := e.multipartUploads(); n != 0 {
		t.Errorf("%d multipart uploads left", n)
	}
	into := pool + "/" + filepath.Base(e.ds) + " restored"
	e.ok("restore", a, "--into", into, "--identity", key)
	src, _ := testbed.Mountpoint(e.ds)
	dst, _ := testbed.Mountpoint(into)
	sameTree(t, src, dst)
}

// TestRebuildEncryptedBucket: a lost ledger of an encrypted bucket is
// rebuilt from the manifests, and the restore from it works.
func TestRebuildEncryptedBucket(t *testing.T) {
	key, rcpt := ageKey(t)
	e := newEnv(t, "enc rebuild")
	a := e.textSnap("a", 2)
	b := e.textSnap("b", 1)
	e.ok("upload", a, "--segment-size", "1MiB", "--recipient", rcpt)
	e.ok("upload", b, "-i", a, "--segment-size", "1MiB", "--recipient", rcpt, "--compress", "zstd")
	e.stateDir = t.TempDir()
	if r := e.ok("ledger", "rebuild"); !strings.Contains(r.stdout, "2 edges") {
		t.Errorf("ledger rebuild stdout = %q", r.stdout)
	}
	into := pool + "/" + filepath.Base(e.ds) + " restored"
	e.ok("restore", b, "--into", into, "--identity", key)
	src, _ := testbed.Mountpoint(e.ds)
	dst, _ := testbed.Mountpoint(into)
	sameTree(t, src, dst)

	// Without its manifest a transformed edge is reported, not guessed.
	incr := e.edgeKey(b, a)
	mk := incr + ".manifest.yaml"
	if _, err := e.server().Client().DeleteObject(context.Background(), &s3.DeleteObjectInput{Bucket: &e.bucket, Key: &mk}); err != nil {
		t.Fatal(err)
	}
	e.stateDir = t.TempDir()
	r := e.ok("ledger", "rebuild")
	if !strings.Contains(r.stdout, "skipped object "+incr) || !strings.Contains(r.stdout, "transformed stream") || !strings.Contains(r.stdout, "1 edges") {
		t.Errorf("ledger rebuild without the incremental's manifest:\n%s", r.stdout)
	}
}

// TestSendFlagsRefusedWhereUnsupported: zfs-fuse's zfs send has none of
// -c, -L, -e, -w; asking for one is a usage error before anything runs.
func TestSendFlagsRefusedWhereUnsupported(t *testing.T) {
	e := newEnv(t, "flags")
	a := e.snap("a", 1)
	e.fails(2, "has no -L (large-blocks)", "upload", a, "--send-flags", "large-blocks")
	e.fails(2, "--send-flags", "upload", a, "--send-flags", "bogus")
	e.fails(2, "--compress", "upload", a, "--compress", "zstd:99")
	e.fails(2, "--recipient", "upload", a, "--recipient", "age1notakey")
	if len(e.keys()) != 0 || len(e.stateFiles()) != 0 {
		t.Errorf("a refused upload left keys %v or state files", e.keys())
	}
}

// TestBackupWithPerDatasetTransforms: a config that encrypts everything
// (recipients at the top) and compresses one dataset only; the other turns
// encryption off. backup stores each edge with its dataset's transform,
// and restore reads both.
func TestBackupWithPerDatasetTransforms(t *testing.T) {
	key, rcpt := ageKey(t)
	e := newBackupEnv(t)
	e.writeConfig(fmt.Sprintf(`
recipients: [%s]
defaults:
  snapshots: "daily-*"
  time_format: "daily-%%Y-%%m-%%d"
datasets:
  %q:
    compress: zstd:5
  %q:
    recipients: []
`, rcpt, e.a, e.b))
	for day := 1; day <= 2; day++ {
		e.daily(e.a, day)
		e.daily(e.b, day)
	}
	if r := e.runWith(nil, "backup"); r.code != 0 {
		t.Fatalf("backup: exit %d: %s", r.code, r.stderr)
	}
	for _, ed := range e.ledger().Edges {
		want := "zstd:5+age"
		if ed.Target.Dataset() == e.b {
			want = ""
		}
		if ed.Transform != want {
			t.Errorf("%s stored with transform %q, want %q", ed, ed.Transform, want)
		}
	}
	for _, ds := range []string{e.a, e.b} {
		into := ds + " restored"
		if r := e.runWith([]string{"ZFS2S3_IDENTITY=" + key}, "restore", ds+"@daily-2026-01-02", "--into", into); r.code != 0 {
			t.Fatalf("restore %s: exit %d: %s", ds, r.code, r.stderr)
		}
		src, _ := testbed.Mountpoint(ds)
		dst, _ := testbed.Mountpoint(into)
		for _, f := range []string{"daily-2026-01-01.bin", "daily-2026-01-02.bin"} {
			sameFile(t, filepath.Join(src, f), filepath.Join(dst, f))
		}
	}
}

// TestAbortKilledTransformedUpload: abort_upload of an encrypted upload
// killed after some segments leaves no object, multipart upload or state.
func TestAbortKilledTransformedUpload(t *testing.T) {
	_, rcpt := ageKey(t)
	e, _ := slowEnv(t, "enc abort", 300*time.Millisecond)
	a := e.snap("a", 4)
	e.killWhen(func(st map[string]any) bool {
		up, _ := st["upload"].(map[string]any)
		done, _ := up["segments_done"].([]any)
		return len(done) >= 1
	}, "upload", a, "--segment-size", "1MiB", "--recipient", rcpt)
	if len(e.keys()) == 0 {
		t.Fatal("no segment object before the abort")
	}
	e.endpoint = bed.minio.Endpoint
	e.ok("abort_upload", a)
	if k := e.keys(); len(k) != 0 {
		t.Errorf("objects left after abort_upload: %v", k)
	}
	if n := e.multipartUploads(); n != 0 {
		t.Errorf("%d multipart uploads left", n)
	}
	if n := len(e.stateFiles()); n != 0 {
		t.Errorf("%d state files left", n)
	}
}

// TestKillAfterSegmentCompleteThenResume kills an encrypted upload once
// the store has completed segment 0 and before zfs2s3 heard so: the state
// still has that segment finishing. resume_upload, through a proxy that
// denies completions without If-None-Match: * as a backup host's AWS
// policy does, adopts the object rather than encrypting the segment again
// (which could never be completed there): segment 0 is neither completed
// again nor overwritten, and the restore is equal.
func TestKillAfterSegmentCompleteThenResume(t *testing.T) {
	key, rcpt := ageKey(t)
	e := newEnv(t, "enc seg complete")
	a := e.snap("a", 3)
	p := testbed.StartProxy(t, bed.minio.Endpoint)
	e.endpoint = p.URL
	up := e.killAfterSegmentComplete(p, "upload", a, "--segment-size", "1MiB", "--recipient", rcpt)
	fin, _ := up["segment_finishing"].(map[string]any)
	segKey, _ := up["key"].(string)
	head := func() *s3.HeadObjectOutput {
		t.Helper()
		out, err := bed.minio.Client().HeadObject(context.Background(), &s3.HeadObjectInput{Bucket: &e.bucket, Key: &segKey})
		if err != nil {
			t.Fatalf("segment 0: %v", err)
		}
		return out
	}
	before := head()

	var mu sync.Mutex
	var again []string
	p.SetRule(func(r *http.Request) testbed.Fault {
		if !testbed.IsComplete(r) {
			return testbed.Fault{}
		}
		inm := r.Header.Get("If-None-Match")
		if firstSegmentComplete(r) {
			mu.Lock()
			again = append(again, inm)
			mu.Unlock()
		}
		if inm != "*" {
			return testbed.S3Error(http.StatusForbidden, "AccessDenied", "explicit deny: s3:if-none-match is required")
		}
		return testbed.Fault{}
	})
	if r := e.ok("resume_upload"); !strings.Contains(r.stdout, "stored "+a) {
		t.Errorf("resume_upload stdout = %q", r.stdout)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(again) != 0 {
		t.Errorf("segment 0 was completed again on resume (If-None-Match %q)", again)
	}
	after := head()
	if aws.ToString(after.ETag) != aws.ToString(before.ETag) || !aws.ToTime(after.LastModified).Equal(aws.ToTime(before.LastModified)) {
		t.Errorf("segment 0 changed on resume: ETag %s at %v, before %s at %v", aws.ToString(after.ETag), after.LastModified, aws.ToString(before.ETag), before.LastModified)
	}
	ed, err := e.ledger().Find(a, "", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(ed.Records) < 2 || ed.Records[0].StoredSHA256 != fin["stored_sha256"] {
		t.Errorf("ledger records %+v; want segment 0 as it was being completed (stored SHA-256 %v) and more", ed.Records, fin["stored_sha256"])
	}
	if n := e.multipartUploads(); n != 0 || len(e.stateFiles()) != 0 {
		t.Errorf("%d multipart uploads and %d state files left", n, len(e.stateFiles()))
	}
	e.endpoint = bed.minio.Endpoint
	into := pool + "/" + filepath.Base(e.ds) + " restored"
	e.ok("restore", a, "--into", into, "--identity", key)
	src, _ := testbed.Mountpoint(e.ds)
	dst, _ := testbed.Mountpoint(into)
	sameTree(t, src, dst)
}

func firstSegmentComplete(r *http.Request) bool {
	return testbed.IsComplete(r) && strings.HasSuffix(r.URL.Path, ".zfs") // segments 1 on end in .zfs.2, .zfs.3…
}

// killAfterSegmentComplete runs a transformed upload through p, kill -9s
// it once the store has completed segment 0 and before zfs2s3 heard so,
// and returns the upload state it left, which must have segment 0
// finishing.
func (e *env) killAfterSegmentComplete(p *testbed.Proxy, args ...string) map[string]any {
	e.t.Helper()
	p.SetRule(func(r *http.Request) testbed.Fault { return testbed.Fault{Hang: firstSegmentComplete(r)} })
	defer p.SetRule(nil)
	c, stderr := e.start(args...)
	select {
	case <-p.Hung: // the store completed segment 0; zfs2s3 never heard back
	case <-time.After(time.Minute):
		c.Process.Kill()
		c.Wait()
		e.t.Fatalf("segment 0 was never completed: %s", stderr)
	}
	c.Process.Signal(syscall.SIGKILL)
	c.Wait()
	st := e.stateFiles()
	if len(st) != 1 {
		e.t.Fatalf("%d upload state files after the kill, want 1", len(st))
	}
	up, _ := st[0]["upload"].(map[string]any)
	fin, _ := up["segment_finishing"].(map[string]any)
	if done, _ := up["segments_done"].([]any); fin == nil || len(done) != 0 {
		e.t.Fatalf("upload state after the kill: segment finishing %v, %d done; want segment 0 finishing", fin, len(done))
	}
	return up
}

// TestAbortAfterSegmentCompleteLeavesNothing: abort_upload of an upload
// killed right after segment 0 was completed deletes that object too (no
// segment was recorded as done yet, but one may be in the bucket).
func TestAbortAfterSegmentCompleteLeavesNothing(t *testing.T) {
	_, rcpt := ageKey(t)
	e := newEnv(t, "enc seg abort")
	a := e.snap("a", 2)
	p := testbed.StartProxy(t, bed.minio.Endpoint)
	e.endpoint = p.URL
	e.killAfterSegmentComplete(p, "upload", a, "--segment-size", "1MiB", "--recipient", rcpt)
	if len(e.keys()) != 1 {
		t.Fatalf("objects after the kill: %v, want segment 0", e.keys())
	}
	e.endpoint = bed.minio.Endpoint
	e.ok("abort_upload", a)
	if k := e.keys(); len(k) != 0 {
		t.Errorf("objects left after abort_upload: %v", k)
	}
	if n := e.multipartUploads(); n != 0 || len(e.stateFiles()) != 0 {
		t.Errorf("%d multipart uploads and %d state files left", n, len(e.stateFiles()))
	}
}
