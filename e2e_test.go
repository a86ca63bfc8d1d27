package main

// End-to-end tests: the built zfs2s3 binary against real zfs-fuse pools and
// a real MinIO server, started by TestMain (make test installs both).

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"
	"gopkg.in/yaml.v3"

	"github.com/zfs2s3/zfs2s3/internal/testbed"
	"github.com/zfs2s3/zfs2s3/ledger"
	"github.com/zfs2s3/zfs2s3/transform"
)

// pool is named per run: a pool left in zfs-fuse's cache by a killed
// daemon would block a fixed name.
var pool = fmt.Sprintf("z2s3e2e%d", os.Getpid())

var bed struct {
	bin   string
	minio *testbed.MinIO
	zfs   *testbed.ZFS
	err   error
	n     atomic.Int32
}

func TestMain(m *testing.M) {
	code := func() int {
		dir, err := os.MkdirTemp("", "zfs2s3-bin-")
		if err != nil {
			bed.err = err
			return m.Run()
		}
		defer os.RemoveAll(dir)
		bed.bin = filepath.Join(dir, "zfs2s3")
		if out, err := exec.Command("go", "build", "-o", bed.bin, ".").CombinedOutput(); err != nil {
			bed.err = fmt.Errorf("go build: %v: %s", err, out)
			return m.Run()
		}
		if bed.zfs, bed.err = testbed.StartZFS(); bed.err != nil {
			return m.Run()
		}
		defer bed.zfs.Stop()
		if bed.err = bed.zfs.Pool(pool, 4<<30); bed.err != nil {
			return m.Run()
		}
		if bed.minio, bed.err = testbed.StartMinIO(); bed.err != nil {
			return m.Run()
		}
		defer bed.minio.Stop()
		return m.Run()
	}()
	os.Exit(code)
}

// env is one test's bucket, state dir and dataset.
type env struct {
	t        *testing.T
	bucket   string
	stateDir string
	ds       string
	endpoint string
	srv      testbed.Server // nil: the shared MinIO
}

// server is the S3 server the env's bucket lives on.
func (e *env) server() testbed.Server {
	if e.srv != nil {
		return e.srv
	}
	return bed.minio
}

func newEnv(t *testing.T, dsName string) *env {
	t.Helper()
	testbed.Require(t, "zfs-fuse and MinIO", bed.err)
	n := bed.n.Add(1)
	e := &env{t: t, bucket: fmt.Sprintf("e2e-%d", n), stateDir: t.TempDir(), endpoint: bed.minio.Endpoint,
		ds: fmt.Sprintf("%s/t%d %s", pool, n, dsName)}
	if err := bed.minio.CreateBucket(context.Background(), e.bucket); err != nil {
		t.Fatal(err)
	}
	e.zfs("create", "-p", e.ds)
	return e
}

type result struct {
	code           int
	stdout, stderr string
}

func (e *env) cmd(args ...string) *exec.Cmd {
	c := exec.Command(bed.bin, args...)
	c.Env = append(os.Environ(), e.server().Env()...)
	c.Env = append(c.Env, "ZFS2S3_BUCKET="+e.bucket, "ZFS2S3_STATE_DIR="+e.stateDir, "ZFS2S3_ENDPOINT="+e.endpoint)
	return c
}

// run runs zfs2s3 to the end.
func (e *env) run(args ...string) result {
	e.t.Helper()
	return e.runCmd(e.cmd(args...))
}

// runCmd runs a zfs2s3 command made by cmd to the end.
func (e *env) runCmd(c *exec.Cmd) result {
	e.t.Helper()
	var stdout, stderr bytes.Buffer
	c.Stdout, c.Stderr = &stdout, &stderr
	err := c.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		e.t.Fatal(err)
	}
	return r
}

// ok runs zfs2s3 and fails the test unless it exits 0.
func (e *env) ok(args ...string) result {
	e.t.Helper()
	r := e.run(args...)
	if r.code != 0 {
		e.t.Fatalf("zfs2s3 %s: exit %d\nstderr: %s", strings.Join(args, " "), r.code, r.stderr)
	}
	return r
}

// fails runs zfs2s3 and checks the exit code and the one-line error.
func (e *env) fails(code int, want string, args ...string) result {
	e.t.Helper()
	r := e.run(args...)
	if r.code != code {
		e.t.Fatalf("zfs2s3 %s: exit %d, want %d\nstderr: %s", strings.Join(args, " "), r.code, code, r.stderr)
	}
	if !strings.Contains(r.stderr, want) {
		e.t.Errorf("zfs2s3 %s: stderr %q does not contain %q", strings.Join(args, " "), r.stderr, want)
	}
	if lines := strings.Count(strings.TrimSpace(r.stderr), "\n"); lines > 0 {
		e.t.Errorf("zfs2s3 %s: error is %d lines, want one:\n%s", strings.Join(args, " "), lines+1, r.stderr)
	}
	return r
}

func (e *env) zfs(args ...string) string {
	e.t.Helper()
	out, err := testbed.Run("zfs", args...)
	if err != nil {
		e.t.Fatal(err)
	}
	return out
}

// snap writes mb MiB of random data into a new file of ds and snapshots it.
func (e *env) snap(name string, mb int) string {
	e.t.Helper()
	mnt, err := testbed.Mountpoint(e.ds)
	if err != nil {
		e.t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(mnt, name+".bin"))
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := io.CopyN(f, rand.Reader, int64(mb)<<20); err != nil {
		e.t.Fatal(err)
	}
	f.Close()
	full := e.ds + "@" + name
	e.zfs("snapshot", full)
	return full
}

func (e *env) ledger() *ledger.Ledger {
	e.t.Helper()
	l, err := ledger.OpenStore(e.stateDir, e.bucket, "").Load(e.bucket, "")
	if err != nil {
		e.t.Fatal(err)
	}
	return l
}

// edges lists the ledger's edges as "base -> target" strings, sorted.
func (e *env) edges() []string {
	var s []string
	for _, ed := range e.ledger().Edges {
		s = append(s, ed.String())
	}
	sort.Strings(s)
	return s
}

func (e *env) keys() []string {
	e.t.Helper()
	out, err := e.server().Client().ListObjectsV2(context.Background(), &s3.ListObjectsV2Input{Bucket: &e.bucket})
	if err != nil {
		e.t.Fatal(err)
	}
	var keys []string
	for _, o := range out.Contents {
		keys = append(keys, *o.Key)
	}
	return keys
}

func (e *env) multipartUploads() int {
	e.t.Helper()
	out, err := e.server().Client().ListMultipartUploads(context.Background(), &s3.ListMultipartUploadsInput{Bucket: &e.bucket})
	if err != nil {
		e.t.Fatal(err)
	}
	return len(out.Uploads)
}

func (e *env) object(key string) []byte {
	e.t.Helper()
	out, err := e.server().Client().GetObject(context.Background(), &s3.GetObjectInput{Bucket: &e.bucket, Key: &key})
	if err != nil {
		e.t.Fatalf("get %s: %v", key, err)
	}
	defer out.Body.Close()
	b, err := io.ReadAll(out.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return b
}

// sendSHA hashes what zfs send prints for an edge.
func (e *env) sendSHA(target, base string) string {
	e.t.Helper()
	args := []string{"send", target}
	if base != "" {
		args = []string{"send", "-i", base, target}
	}
	c := exec.Command("zfs", args...)
	h := sha256.New()
	c.Stdout = h
	if err := c.Run(); err != nil {
		e.t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func sha(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

// ledgerDigest is what the ledger must record for a plain edge whose
// objects hold data: its part digest (ledger format 4, what this release
// uploads), or the SHA-256 of the stream (an upload an earlier release
// began).
func ledgerDigest(ed ledger.Edge, data []byte) string {
	if !ed.PartDigest() {
		return sha(data)
	}
	h := transform.NewStoredHash(ed.PartSize)
	h.Write(data)
	return h.Sum()
}

// receive pipes a stored object into zfs receive, as a user without
// zfs2s3 would (aws s3 cp s3://B/KEY - | zfs receive DS).
func (e *env) receive(key, into string) {
	e.t.Helper()
	c := exec.Command("zfs", "receive", into)
	c.Stdin = bytes.NewReader(e.object(key))
	if out, err := c.CombinedOutput(); err != nil {
		e.t.Fatalf("zfs receive %s from %s: %v: %s", into, key, err, out)
	}
}

func sameFile(t *testing.T, a, b string) {
	t.Helper()
	x, err1 := os.ReadFile(a)
	y, err2 := os.ReadFile(b)
	if err1 != nil || err2 != nil || !bytes.Equal(x, y) {
		t.Errorf("%s and %s differ (%v, %v)", a, b, err1, err2)
	}
}

func (e *env) edgeKey(target, base string) string {
	e.t.Helper()
	ed, err := e.ledger().Find(target, base, 0, 0)
	if err != nil {
		e.t.Fatal(err)
	}
	return ed.Key
}

func TestFullAndIncrementalRestoreByteForByte(t *testing.T) {
	e := newEnv(t, "my data")
	a := e.snap("a", 12)
	b := e.snap("b", 7)
	r := e.ok("upload", a, "--part-size", "5MiB")
	if !strings.Contains(r.stdout, "stored "+a+" (full)") {
		t.Errorf("upload stdout = %q", r.stdout)
	}
	e.ok("upload", b, "-i", a, "--part-size", "5MiB")
	if got, want := e.edges(), []string{a + " (full)", a + " -> " + b}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("ledger edges = %v, want %v", got, want)
	}
	for _, ed := range e.ledger().Edges {
		base := ed.BaseName()
		obj := e.object(ed.Key)
		if !ed.PartDigest() {
			t.Errorf("%s: a new upload recorded without its part digest (sha256 %s, part size %d)", ed, ed.SHA256, ed.PartSize)
		}
		if got, want := sha(obj), e.sendSHA(ed.Target.Name, base); got != want || ledgerDigest(ed, obj) != ed.SHA256 {
			t.Errorf("%s: object sha256 %s, zfs send %s, ledger %s", ed, got, want, ed.SHA256)
		}
		if int64(len(obj)) != ed.StreamBytes {
			t.Errorf("%s: object has %d bytes, ledger says %d", ed, len(obj), ed.StreamBytes)
		}
		if !strings.Contains(ed.Key, "my%20data") {
			t.Errorf("key %q does not carry the escaped dataset name", ed.Key)
		}
		head, err := bed.minio.Client().HeadObject(context.Background(), &s3.HeadObjectInput{Bucket: &e.bucket, Key: &ed.Key})
		if err != nil || head.Metadata["zfs2s3-target-guid"] != fmt.Sprint(ed.Target.GUID) {
			t.Errorf("%s: object metadata %v (%v) lacks the target GUID", ed, head.Metadata, err)
		}
	}
	if n, l := len(e.keys()), e.ledgerKeys(""); n-len(l) != 4 || len(l) < 2 || l[0] != ".zfs2s3/ledger.yaml" {
		t.Errorf("bucket holds %v, want the ledger's stub and journal, 2 streams and 2 manifests", e.keys())
	}
	// The objects alone restore the data, oldest first.
	into := pool + "/restored " + filepath.Base(t.Name())
	e.receive(e.edgeKey(a, ""), into)
	e.receive(e.edgeKey(b, a), into)
	src, _ := testbed.Mountpoint(e.ds)
	dst, _ := testbed.Mountpoint(into)
	sameFile(t, filepath.Join(src, "a.bin"), filepath.Join(dst, "a.bin"))
	sameFile(t, filepath.Join(src, "b.bin"), filepath.Join(dst, "b.bin"))
}

func TestChainRefusalAndBypass(t *testing.T) {
	e := newEnv(t, "chain")
	s := map[string]string{}
	for _, n := range []string{"A", "B", "C", "D", "E"} {
		s[n] = e.snap(n, 1)
	}
	e.ok("upload", s["A"])
	for _, p := range [][2]string{{"A", "B"}, {"B", "C"}, {"C", "D"}, {"D", "E"}} {
		e.ok("upload", s[p[1]], "-i", s[p[0]])
	}
	before := e.edges()
	// The middle of the chain is needed by what follows it.
	e.fails(3, s["C"]+" -> "+s["D"], "remove", s["C"], "-i", s["B"])
	e.fails(3, s["D"]+" -> "+s["E"], "remove", s["D"], "-i", s["C"])
	e.fails(3, s["A"]+" -> "+s["B"], "remove", s["A"])
	if got := e.edges(); fmt.Sprint(got) != fmt.Sprint(before) {
		t.Fatalf("refused removals changed the ledger: %v", got)
	}
	// A bypass A -> D keeps D (and so D -> E) restorable without B and C.
	e.ok("upload", s["D"], "-i", s["A"])
	cdKey := e.edgeKey(s["D"], s["C"])
	e.ok("remove", s["D"], "-i", s["C"])
	e.ok("remove", s["C"], "-i", s["B"])
	e.ok("remove", s["B"], "-i", s["A"])
	want := []string{s["A"] + " (full)", s["A"] + " -> " + s["D"], s["D"] + " -> " + s["E"]}
	sort.Strings(want)
	if got := e.edges(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("after consolidation edges = %v, want %v", got, want)
	}
	for _, k := range e.keys() {
		if strings.HasPrefix(k, cdKey) {
			t.Errorf("removed edge's object %s is still in the bucket", k)
		}
	}
	if n := len(e.dataKeys()); n != 6 || len(e.ledgerKeys("")) < 2 {
		t.Errorf("bucket holds %d objects, want the ledger copy, 3 streams and 3 manifests", n)
	}
	// The bypass itself is what keeps D: its base cannot go now.
	e.fails(3, s["D"]+" -> "+s["E"], "remove", s["D"], "-i", s["A"])
}

// stateFiles returns the parsed upload state files.
func (e *env) stateFiles() []map[string]any {
	e.t.Helper()
	names, _ := filepath.Glob(filepath.Join(e.stateDir, "*", "uploads", "*.yaml"))
	var out []map[string]any
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err != nil {
			continue
		}
		var m map[string]any
		if yaml.Unmarshal(b, &m) == nil {
			out = append(out, m)
		}
	}
	return out
}

func partsDone(st map[string]any) int {
	up, _ := st["upload"].(map[string]any)
	parts, _ := up["parts"].([]any)
	return len(parts)
}

// slowEnv routes zfs2s3 through a proxy that delays every part upload.
func slowEnv(t *testing.T, name string, delay time.Duration) (*env, *testbed.Proxy) {
	e := newEnv(t, name)
	p := testbed.StartProxy(t, bed.minio.Endpoint)
	p.SetRule(func(r *http.Request) testbed.Fault {
		if testbed.IsUploadPart(r) {
			return testbed.Fault{Delay: delay}
		}
		return testbed.Fault{}
	})
	e.endpoint = p.URL
	return e, p
}

// start runs zfs2s3 in the background, collecting its stderr.
func (e *env) start(args ...string) (*exec.Cmd, *bytes.Buffer) {
	e.t.Helper()
	c := e.cmd(args...)
	var stderr bytes.Buffer
	c.Stderr = &stderr
	if err := c.Start(); err != nil {
		e.t.Fatal(err)
	}
	return c, &stderr
}

// waitParts waits until the one pending upload has saved n parts.
func (e *env) waitParts(n int) {
	for st := e.stateFiles(); len(st) == 0 || partsDone(st[0]) < n; st = e.stateFiles() {
		time.Sleep(20 * time.Millisecond)
	}
}

// killAfterParts starts an upload and kill -9s it once n parts are saved.
func (e *env) killAfterParts(n int, args ...string) {
	e.t.Helper()
	e.killWhen(func(st map[string]any) bool { return partsDone(st) >= n }, args...)
}

// killWhen starts an upload and kill -9s it once its state satisfies cond.
func (e *env) killWhen(cond func(st map[string]any) bool, args ...string) {
	e.t.Helper()
	c, stderr := e.start(args...)
	done := make(chan error, 1)
	go func() { done <- c.Wait() }()
	for {
		select {
		case err := <-done:
			e.t.Fatalf("upload ended (%v) before it could be killed: %s", err, stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
		if st := e.stateFiles(); len(st) == 1 && cond(st[0]) {
			c.Process.Signal(syscall.SIGKILL)
			<-done
			return
		}
	}
}

func TestKillMidUploadThenResume(t *testing.T) {
	e, _ := slowEnv(t, "kill", 300*time.Millisecond)
	a := e.snap("a", 40)
	e.killAfterParts(2, "upload", a, "--part-size", "5MiB", "--concurrency", "2")
	if e.multipartUploads() != 1 || len(e.ledger().Edges) != 0 {
		t.Fatalf("after kill: %d multipart uploads, %d edges; want 1 and 0", e.multipartUploads(), len(e.ledger().Edges))
	}
	e.endpoint = bed.minio.Endpoint // no more delay
	r := e.ok("resume_upload")
	if !strings.Contains(r.stdout, "stored "+a) {
		t.Errorf("resume_upload stdout = %q", r.stdout)
	}
	ed, err := e.ledger().Find(a, "", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := sha(e.object(ed.Key)), e.sendSHA(a, ""); got != want {
		t.Errorf("resumed object sha256 %s, zfs send %s", got, want)
	}
	if n := e.multipartUploads(); n != 0 {
		t.Errorf("%d multipart uploads left in the bucket", n)
	}
	if n := len(e.stateFiles()); n != 0 {
		t.Errorf("%d upload state files left", n)
	}
}

// killAfterComplete runs an upload that the store completes but whose
// answer never comes, and kill -9s it then.
func (e *env) killAfterComplete(p *testbed.Proxy, args ...string) {
	e.t.Helper()
	p.SetRule(func(r *http.Request) testbed.Fault { return testbed.Fault{Hang: testbed.IsComplete(r)} })
	defer p.SetRule(nil)
	c, stderr := e.start(args...)
	select {
	case <-p.Hung:
	case <-time.After(time.Minute):
		e.t.Fatalf("CompleteMultipartUpload never happened: %s", stderr)
	}
	c.Process.Signal(syscall.SIGKILL)
	c.Wait()
	if len(e.ledger().Edges) != 0 {
		e.t.Fatal("edge recorded before the upload finished")
	}
}

func TestKillAfterCompleteThenResumeRecords(t *testing.T) {
	e := newEnv(t, "complete")
	a := e.snap("a", 12)
	p := testbed.StartProxy(t, bed.minio.Endpoint)
	e.endpoint = p.URL
	e.killAfterComplete(p, "upload", a, "--part-size", "5MiB")
	e.endpoint = bed.minio.Endpoint
	e.ok("resume_upload", a)
	ed, err := e.ledger().Find(a, "", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if obj := e.object(ed.Key); sha(obj) != e.sendSHA(a, "") || ledgerDigest(ed, obj) != ed.SHA256 {
		got, want := sha(obj), e.sendSHA(a, "")
		t.Errorf("object sha256 %s, ledger %s, zfs send %s", got, ed.SHA256, want)
	}
}

func TestAbortAfterKillLeavesNothing(t *testing.T) {
	e, _ := slowEnv(t, "abort", 300*time.Millisecond)
	a := e.snap("a", 30)
	e.killAfterParts(1, "upload", a, "--part-size", "5MiB", "--concurrency", "1")
	e.endpoint = bed.minio.Endpoint
	r := e.ok("abort_upload", a)
	if !strings.Contains(r.stdout, "aborted upload of "+a) {
		t.Errorf("abort_upload stdout = %q", r.stdout)
	}
	if n := e.multipartUploads(); n != 0 {
		t.Errorf("%d multipart uploads left after abort", n)
	}
	if len(e.stateFiles()) != 0 || len(e.keys()) != 0 || len(e.ledger().Edges) != 0 {
		t.Errorf("abort left state %d, objects %v, edges %v", len(e.stateFiles()), e.keys(), e.edges())
	}
	// And the edge can be uploaded afresh.
	e.ok("upload", a)
}

func TestConcurrentRuns(t *testing.T) {
	e, _ := slowEnv(t, "concurrent", 200*time.Millisecond)
	a := e.snap("a", 20)
	first, stderr := e.start("upload", a, "--part-size", "5MiB", "--concurrency", "1")
	e.waitParts(0)
	// The same edge: refused while the first run holds it.
	e.fails(1, "already running", "upload", a, "--part-size", "5MiB")
	e.fails(1, "already running", "resume_upload", a)
	// Another dataset's upload proceeds meanwhile.
	other := newEnv(t, "concurrent other")
	other.bucket, other.stateDir, other.endpoint = e.bucket, e.stateDir, e.endpoint
	o := other.snap("o", 1)
	other.ok("upload", o)
	if err := first.Wait(); err != nil {
		t.Fatalf("first upload: %v: %s", err, stderr.String())
	}
	if got := len(e.ledger().Edges); got != 2 {
		t.Errorf("ledger holds %d edges, want 2", got)
	}
	e.fails(3, "already stored", "upload", a)
}

// snapshotState captures the ledger, state files and bucket, to prove that
// a failed command changed none of them.
func (e *env) snapshotState() string {
	var b strings.Builder
	filepath.Walk(e.stateDir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() && !strings.HasSuffix(p, ".lock") {
			data, _ := os.ReadFile(p)
			fmt.Fprintf(&b, "%s %s\n", p, sha(data))
		}
		return nil
	})
	fmt.Fprintf(&b, "objects %v multipart %d\n", e.keys(), e.multipartUploads())
	return b.String()
}

func TestBadInputChangesNothing(t *testing.T) {
	e := newEnv(t, "bad")
	a := e.snap("a", 1)
	b := e.snap("b", 1)
	c := e.snap("c", 1)
	e.ok("upload", a)
	otherDS := pool + "/" + filepath.Base(e.ds) + "-other"
	e.zfs("create", otherDS)
	e.zfs("snapshot", otherDS+"@x")
	tests := []struct {
		name string
		code int
		want string
		args []string
	}{
		{"missing dataset", 2, "does not exist", []string{"upload", pool + "/nope@a"}},
		{"unknown snapshot", 2, "does not exist", []string{"upload", e.ds + "@nope"}},
		{"not a snapshot name", 2, "not a snapshot name", []string{"upload", e.ds}},
		{"base not stored", 3, "is not stored", []string{"upload", c, "-i", b}},
		{"base newer than target", 2, "not older", []string{"upload", a, "-i", b}},
		{"base from another dataset", 2, "same dataset", []string{"upload", b, "-i", otherDS + "@x"}},
		{"already stored", 3, "already stored", []string{"upload", a}},
		{"remove unknown edge", 2, "not in the ledger", []string{"remove", b, "-i", a}},
		{"no bucket", 2, "no bucket", []string{"upload", a, "--bucket", ""}},
		{"bad part size", 2, "--part-size", []string{"upload", b, "-i", a, "--part-size", "lots"}},
		{"unknown flag", 2, "not defined", []string{"upload", b, "--frobnicate"}},
		{"resume nothing", 2, "no pending upload", []string{"resume_upload", b}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e.t = t
			before := e.snapshotState()
			e.fails(tt.code, tt.want, tt.args...)
			if after := e.snapshotState(); after != before {
				t.Errorf("state changed:\nbefore %s\nafter  %s", before, after)
			}
		})
	}
	t.Run("damaged ledger", func(t *testing.T) {
		e.t = t
		path := ledger.OpenStore(e.stateDir, e.bucket, "").Path()
		os.WriteFile(path, []byte("version: 1\nedges: [ {\n"), 0o600)
		before := e.snapshotState()
		e.fails(1, "damaged", "upload", b, "-i", a)
		e.fails(1, "damaged", "remove", a)
		if after := e.snapshotState(); after != before {
			t.Errorf("a damaged ledger was touched:\nbefore %s\nafter  %s", before, after)
		}
	})
}

// TestKeysOfNestedDatasetsDoNotCollide guards the key layout: readable, unique per edge,
// never colliding across datasets.
func TestKeysOfNestedDatasetsDoNotCollide(t *testing.T) {
	e := newEnv(t, "nest")
	child := e.ds + "/x"
	e.zfs("create", child)
	e.zfs("snapshot", e.ds+"@x")
	e.zfs("snapshot", child+"@x")
	e.ok("upload", e.ds+"@x")
	e.ok("upload", child+"@x")
	k1, k2 := e.edgeKey(e.ds+"@x", ""), e.edgeKey(child+"@x", "")
	if k1 == k2 || strings.HasPrefix(k2, k1) {
		t.Errorf("keys collide or nest: %q %q", k1, k2)
	}
}

func TestInterruptedRemoveFinishesOnNextRun(t *testing.T) {
	e := newEnv(t, "interrupted remove")
	a := e.snap("a", 1)
	b := e.snap("b", 1)
	e.ok("upload", a)
	e.ok("upload", b, "-i", a)
	key := e.edgeKey(b, a)
	p := testbed.StartProxy(t, bed.minio.Endpoint)
	p.SetRule(func(r *http.Request) testbed.Fault {
		if r.Method == http.MethodDelete && strings.HasSuffix(r.URL.Path, ".zfs") {
			return testbed.Fault{Status: http.StatusForbidden} // not retried: the run stops here
		}
		return testbed.Fault{}
	})
	e.endpoint = p.URL
	e.fails(1, "run the command again", "remove", b, "-i", a)
	ed, err := e.ledger().Find(b, a, 0, 0)
	if err != nil || !ed.Removing {
		t.Fatalf("after the failed delete the edge is %+v (%v), want it marked as being removed", ed, err)
	}
	// status shows the edge stuck in its removal, in text and in JSON.
	e.endpoint = bed.minio.Endpoint
	if r := e.ok("status"); !strings.Contains(r.stdout, "no: being removed") {
		t.Errorf("status does not show the unfinished removal:\n%s", r.stdout)
	}
	if r := e.ok("status", "--json"); !strings.Contains(r.stdout, `"why": "being removed"`) {
		t.Errorf("status --json does not show the unfinished removal:\n%s", r.stdout)
	}
	// Its base may not be built on meanwhile: the removal was already approved.
	c := e.snap("c", 1)
	r := e.fails(3, "not stored", "upload", c, "-i", b)
	if !strings.Contains(r.stdout, "finished an interrupted removal") {
		t.Errorf("the next run did not finish the removal: stdout %q", r.stdout)
	}
	if got := e.edges(); len(got) != 1 {
		t.Errorf("edges = %v, want only the full stream", got)
	}
	for _, k := range e.keys() {
		if strings.HasPrefix(k, key) {
			t.Errorf("object %s of the removed edge is still in the bucket", k)
		}
	}
}
