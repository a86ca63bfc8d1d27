package main

// End-to-end tests of restore, save, verify and status when the bucket or
// the destination is not what the ledger expects.

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/zfs2s3/zfs2s3/backup"
	"github.com/zfs2s3/zfs2s3/internal/testbed"
)

// deleteObject removes a stored object behind zfs2s3's back.
func (e *env) deleteObject(key string) {
	e.t.Helper()
	if _, err := bed.minio.Client().DeleteObject(context.Background(), &s3.DeleteObjectInput{Bucket: &e.bucket, Key: &key}); err != nil {
		e.t.Fatal(err)
	}
}

// snapshotsOf lists a dataset's snapshots, one name a line.
func snapshotsOf(t *testing.T, ds string) string {
	t.Helper()
	out, err := testbed.Run("zfs", "list", "-H", "-t", "snapshot", "-o", "name", "-r", ds)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(out)
}

// threeEdges stores a (full), a -> b and b -> c.
func threeEdges(e *env) (a, b, c string) {
	a, b, c = e.snap("a", 2), e.snap("b", 2), e.snap("c", 2)
	e.ok("upload", a)
	e.ok("upload", b, "-i", a)
	e.ok("upload", c, "-i", b)
	return a, b, c
}

func TestStatusAndVerifyCountMissingObjects(t *testing.T) {
	e := newEnv(t, "missing")
	a, b, c := threeEdges(e)
	e.deleteObject(e.edgeKey(b, a))

	var st backup.Status
	if err := json.Unmarshal([]byte(e.ok("status", "--json").stdout), &st); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		a: "",
		b: "its object is missing",
		c: "its chain needs " + a + " -> " + b + ", whose object is missing",
	}
	for _, es := range st.Datasets[0].Edges {
		if es.Restorable != (want[es.Snapshot] == "") || es.Why != want[es.Snapshot] {
			t.Errorf("status of %s: restorable %v, why %q; want why %q", es.Snapshot, es.Restorable, es.Why, want[es.Snapshot])
		}
	}
	if table := e.ok("status").stdout; !strings.Contains(table, "no: its chain needs "+a+" -> "+b) {
		t.Errorf("status table does not say why @c is not restorable:\n%s", table)
	}

	r := e.fails(1, "verify found 2 problem(s)", "verify")
	for _, line := range []string{
		"ok   " + a + " (full)",
		"BAD  " + a + " -> " + b + ": object missing",
		"BAD  " + b + " -> " + c + ": not restorable: its chain needs " + a + " -> " + b + ", whose object is missing",
	} {
		if !strings.Contains(r.stdout, line) {
			t.Errorf("verify stdout lacks %q:\n%s", line, r.stdout)
		}
	}
}

func TestRestoreChecksEveryObjectBeforeReceiving(t *testing.T) {
	e := newEnv(t, "check first")
	a, b, c := threeEdges(e)
	e.deleteObject(e.edgeKey(c, b))
	into := pool + "/" + filepath.Base(e.ds) + " restored"
	r := e.fails(1, "object "+e.edgeKey(c, b)+" of "+b+" -> "+c+" is missing from the bucket", "restore", c, "--into", into)
	if strings.Contains(r.stdout, "received") || !strings.Contains(r.stderr, "nothing was received") {
		t.Errorf("restore received streams before finding the missing object:\nstdout: %s\nstderr: %s", r.stdout, r.stderr)
	}
	if ok, _ := testbedExists(into); ok {
		t.Errorf("restore created %s", into)
	}
	e.fails(1, "is missing from the bucket", "restore", c, "--into", into, "--dry-run")
	e.ok("restore", a, "--into", into) // the intact part of the chain restores
}

func TestRestoreAvoidsAMissingBypass(t *testing.T) {
	e := newEnv(t, "bypass gone")
	s := bypassChain(t, e)
	e.deleteObject(e.edgeKey(s["D"], s["A"]))
	into := pool + "/" + filepath.Base(e.ds) + " restored"
	r := e.ok("restore", s["D"], "--into", into)
	if !strings.Contains(r.stdout, "received "+s["C"]+" -> "+s["D"]) {
		t.Errorf("restore did not take the long way round the missing bypass:\n%s", r.stdout)
	}
	src, _ := testbed.Mountpoint(e.ds)
	dst, _ := testbed.Mountpoint(into)
	sameTree(t, src, dst)
}

func TestRestoreShowsWhyZfsReceiveFailed(t *testing.T) {
	e := newEnv(t, "modified")
	a := e.snap("a", 1)
	b := e.snap("b", 1)
	e.ok("upload", a)
	e.ok("upload", b, "-i", a)
	into := pool + "/" + filepath.Base(e.ds) + " restored"
	e.ok("restore", a, "--into", into)
	mnt, _ := testbed.Mountpoint(into)
	if err := os.WriteFile(filepath.Join(mnt, "local change"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := e.fails(1, "has been modified", "restore", b, "--into", into)
	if !strings.Contains(r.stderr, "--force") || strings.Contains(r.stderr, "broken pipe") {
		t.Errorf("restore into a modified dataset: %q; want zfs's reason and the --force hint", r.stderr)
	}
	e.ok("restore", b, "--into", into, "--force")
	if got := snapshotsOf(t, into); got != into+"@a\n"+into+"@b" {
		t.Errorf("after restore --force: snapshots %q", got)
	}
}

func TestFailedForcedRestoreLeavesDestinationAsItWas(t *testing.T) {
	e := newEnv(t, "forced")
	a, b, c := threeEdges(e)
	e.corrupt(e.edgeKey(c, b)) // found only when b -> c is read to its end

	// An existing dataset without snapshots, overwritten by --force.
	into := pool + "/" + filepath.Base(e.ds) + " mine"
	e.zfs("create", "-o", "org.zfs2s3:note=kept", into)
	mnt, _ := testbed.Mountpoint(into)
	if err := os.WriteFile(filepath.Join(mnt, "mine"), []byte("my own data"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := e.fails(1, "was left as it was", "restore", c, "--into", into, "--force")
	if !strings.Contains(r.stdout, "received "+a+" -> "+b) {
		t.Errorf("the restore did not get as far as b -> c:\n%s", r.stdout)
	}
	mnt, _ = testbed.Mountpoint(into)
	if got, err := os.ReadFile(filepath.Join(mnt, "mine")); err != nil || string(got) != "my own data" {
		t.Errorf("after a failed restore --force, %s/mine = %q, %v; want it unchanged", mnt, got, err)
	}
	if _, err := os.Stat(filepath.Join(mnt, "a.bin")); err == nil {
		t.Errorf("after a failed restore --force, %s holds part of the chain", into)
	}
	if got := snapshotsOf(t, into); got != "" {
		t.Errorf("after a failed restore --force, %s has snapshots %q", into, got)
	}
	if out := e.zfs("list", "-H", "-o", "name", "-r", pool); strings.Contains(out, "zfs2s3-") {
		t.Errorf("temporary datasets left behind:\n%s", out)
	}

	// A forced restore that succeeds replaces the data, keeps the properties.
	e.ok("restore", b, "--into", into, "--force")
	if got := snapshotsOf(t, into); got != into+"@a\n"+into+"@b" {
		t.Errorf("after restore --force: snapshots %q", got)
	}
	mnt, _ = testbed.Mountpoint(into)
	src, _ := testbed.Mountpoint(e.ds)
	sameFile(t, filepath.Join(src, "b.bin"), filepath.Join(mnt, "b.bin"))
	if _, err := os.Stat(filepath.Join(mnt, "mine")); err == nil {
		t.Error("restore --force kept the replaced data")
	}
	if got := strings.TrimSpace(e.zfs("get", "-H", "-o", "value", "org.zfs2s3:note", into)); got != "kept" {
		t.Errorf("property org.zfs2s3:note = %q after restore --force, want kept", got)
	}

	// Onto a's restored snapshot: the failure rolls back a -> b's data too.
	onto := pool + "/" + filepath.Base(e.ds) + " onto"
	e.ok("restore", a, "--into", onto)
	e.fails(1, "rolled back to "+onto+"@a", "restore", c, "--into", onto)
	if got := snapshotsOf(t, onto); got != onto+"@a" {
		t.Errorf("after a failed incremental restore %s has %q, want only @a", onto, got)
	}
	mnt, _ = testbed.Mountpoint(onto)
	if _, err := os.Stat(filepath.Join(mnt, "b.bin")); err == nil {
		t.Errorf("after a failed incremental restore %s holds b's data without its snapshot", onto)
	}
}

// countGets routes e through a proxy that counts GETs of stored streams
// (not of the ledger) and delays each by delay.
func countGets(t *testing.T, e *env, delay time.Duration) *atomic.Int32 {
	var n atomic.Int32
	p := testbed.StartProxy(t, bed.minio.Endpoint)
	p.SetRule(func(r *http.Request) testbed.Fault {
		if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, ".zfs") {
			n.Add(1)
			return testbed.Fault{Delay: delay}
		}
		return testbed.Fault{}
	})
	e.endpoint = p.URL
	return &n
}

func TestSaveToDevicesAndPipes(t *testing.T) {
	e := newEnv(t, "save devices")
	a := e.snap("a", 2)
	e.ok("upload", a)
	want := e.sendSHA(a, "")
	dir := t.TempDir()

	// A device node stays a device node (here a second /dev/null).
	null := filepath.Join(dir, "null")
	if err := syscall.Mknod(null, syscall.S_IFCHR|0o666, 1<<8|3); err != nil {
		t.Fatalf("mknod (the e2e tests run as root): %v", err)
	}
	e.ok("save", a, null)
	if fi, err := os.Stat(null); err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		t.Errorf("save to a character device replaced it: %v, %v", fi.Mode(), err)
	}

	// A FIFO gets the stream, as with a shell redirection.
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := os.OpenFile(fifo, os.O_RDWR, 0) // both ends: opens at once, and a replaced FIFO cannot hang the test
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	got := make(chan []byte, 1)
	go func() { b, _ := io.ReadAll(r); got <- b }()
	e.ok("save", a, fifo)
	r.SetReadDeadline(time.Now().Add(2 * time.Second)) // we hold the write end too: no EOF comes
	b := <-got
	if sha(b) != want {
		t.Errorf("the FIFO read %d bytes that differ from zfs send", len(b))
	}
	if fi, _ := os.Stat(fifo); fi.Mode()&os.ModeNamedPipe == 0 {
		t.Errorf("save replaced the FIFO: %v", fi.Mode())
	}

	// /dev/fd/1 is stdout: the stream, and no "saved" line mixed into it.
	if r := e.ok("save", a, "/dev/fd/1"); sha([]byte(r.stdout)) != want {
		t.Errorf("save to /dev/fd/1 wrote %d bytes that differ from zfs send", len(r.stdout))
	}
}

func TestSaveChecksThePathFirst(t *testing.T) {
	e := newEnv(t, "save path")
	a := e.snap("a", 2)
	e.ok("upload", a)
	gets := countGets(t, e, 0)
	e.fails(2, "is a directory", "save", a, t.TempDir())
	e.fails(2, "empty", "save", a, "")
	if n := gets.Load(); n != 0 {
		t.Errorf("save to a bad path downloaded first (%d GETs)", n)
	}
}

// tempFiles lists the files in dir that a save to name left besides it.
func tempFiles(t *testing.T, dir, name string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var tmp []string
	for _, de := range entries {
		if strings.HasPrefix(de.Name(), "."+name+".") {
			tmp = append(tmp, de.Name())
		}
	}
	return tmp
}

// saveUntilTemp starts a save to file and sends sig once its temporary
// file exists.
func saveUntilTemp(t *testing.T, e *env, sig syscall.Signal, args ...string) {
	t.Helper()
	file := args[len(args)-1]
	c, stderr := e.start(args...)
	done := make(chan error, 1)
	go func() { done <- c.Wait() }()
	for len(tempFiles(t, filepath.Dir(file), filepath.Base(file))) == 0 {
		select {
		case err := <-done:
			t.Fatalf("save ended (%v) before it wrote a temporary file: %s", err, stderr)
		case <-time.After(10 * time.Millisecond):
		}
	}
	c.Process.Signal(sig)
	<-done
}

func TestSaveLeavesNoTemporaryFiles(t *testing.T) {
	e := newEnv(t, "save temp")
	a := e.snap("a", 2)
	e.ok("upload", a)
	dir := t.TempDir()
	file := filepath.Join(dir, "a.zfs")
	countGets(t, e, 3*time.Second)

	saveUntilTemp(t, e, syscall.SIGTERM, "save", a, file)
	if tmp := tempFiles(t, dir, "a.zfs"); len(tmp) != 0 {
		t.Errorf("an interrupted save left %v", tmp)
	}
	saveUntilTemp(t, e, syscall.SIGKILL, "save", a, file)
	left := tempFiles(t, dir, "a.zfs")
	if len(left) != 1 {
		t.Fatal("a killed save left no temporary file; the test cannot see it swept")
	}
	old := time.Now().Add(-11 * time.Minute) // a later save sweeps only files left for 10 minutes
	if err := os.Chtimes(filepath.Join(dir, left[0]), old, old); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(dir, ".a.zfs.notes") // not save's: kept
	if err := os.WriteFile(other, nil, 0o644); err != nil {
		t.Fatal(err)
	}

	e.endpoint = bed.minio.Endpoint
	e.ok("save", a, file)
	if tmp := tempFiles(t, dir, "a.zfs"); len(tmp) != 1 || tmp[0] != ".a.zfs.notes" {
		t.Errorf("after a second save, files beside a.zfs: %v; want only .a.zfs.notes", tmp)
	}
	if got, _ := os.ReadFile(file); sha(got) != e.sendSHA(a, "") {
		t.Error("saved file differs from zfs send")
	}
}

// onGet runs do once, before forwarding the first GET of key: a change
// someone else makes to the destination while a restore runs.
func onGet(t *testing.T, e *env, key string, do func()) {
	var once sync.Once
	p := testbed.StartProxy(t, bed.minio.Endpoint)
	p.SetRule(func(r *http.Request) testbed.Fault {
		if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, key) {
			once.Do(do)
		}
		return testbed.Fault{}
	})
	e.endpoint = p.URL
}

func TestFailedRestoreKeepsSnapshotsTakenMeanwhile(t *testing.T) {
	e := newEnv(t, "meanwhile")
	a, b, c := threeEdges(e)
	onto := pool + "/" + filepath.Base(e.ds) + " onto"
	e.ok("restore", a, "--into", onto)
	e.corrupt(e.edgeKey(c, b)) // found only when b -> c is read to its end
	// sanoid takes a snapshot after a -> b is received, before b -> c.
	onGet(t, e, e.edgeKey(c, b), func() {
		if out, err := testbed.Run("zfs", "snapshot", onto+"@theirs"); err != nil {
			t.Errorf("zfs snapshot: %v %s", err, out)
		}
	})
	e.fails(1, "was not rolled back to "+onto+"@a", "restore", c, "--into", onto)
	if got := snapshotsOf(t, onto); got != onto+"@a\n"+onto+"@theirs" {
		t.Errorf("after a failed restore, %s has snapshots %q; want @a and the one taken meanwhile, @theirs", onto, got)
	}
}

func TestFailedRestoreKeepsADatasetCreatedMeanwhile(t *testing.T) {
	e := newEnv(t, "created meanwhile")
	a := e.snap("a", 1)
	e.ok("upload", a)
	into := pool + "/" + filepath.Base(e.ds) + " theirs"
	onGet(t, e, e.edgeKey(a, ""), func() { testbed.Run("zfs", "create", into) })
	e.fails(1, "exists", "restore", a, "--into", into)
	if ok, _ := testbedExists(into); !ok {
		t.Errorf("a failed restore destroyed %s, which someone else created while it ran", into)
	}
}

func TestForcedRestoreRefusesALeftoverTemporaryDataset(t *testing.T) {
	e := newEnv(t, "leftover")
	a := e.snap("a", 1)
	e.ok("upload", a)
	for i, suffix := range []string{".zfs2s3-restore", ".zfs2s3-old"} {
		into := pool + "/" + filepath.Base(e.ds) + " mine" + strconv.Itoa(i)
		e.zfs("create", into)
		left := into + suffix
		e.zfs("create", left) // left by a restore that was killed
		e.fails(1, left+" exists", "restore", a, "--into", into, "--force")
		if ok, _ := testbedExists(left); !ok {
			t.Errorf("restore --force destroyed %s, which it did not create", left)
		}
		if got := snapshotsOf(t, into); got != "" {
			t.Errorf("a refused restore --force changed %s: snapshots %q", into, got)
		}
	}
}

func TestForcedRestoreRefusesAPoolRoot(t *testing.T) {
	e := newEnv(t, "pool root")
	a := e.snap("a", 1)
	e.ok("upload", a)
	root := pool + "root"
	if err := bed.zfs.Pool(root, 128<<20); err != nil {
		t.Fatal(err)
	}
	defer testbed.DestroyPool(root)
	mnt, _ := testbed.Mountpoint(root)
	if err := os.WriteFile(filepath.Join(mnt, "mine"), []byte("my own data"), 0o644); err != nil {
		t.Fatal(err)
	}
	e.fails(2, "pool's root dataset", "restore", a, "--into", root, "--force")
	if got, err := os.ReadFile(filepath.Join(mnt, "mine")); err != nil || string(got) != "my own data" {
		t.Errorf("after a refused restore --force into pool root %s: mine = %q, %v", root, got, err)
	}
}

func TestSaveReplacesASymlinkNotItsTarget(t *testing.T) {
	e := newEnv(t, "save symlink")
	a := e.snap("a", 1)
	e.ok("upload", a)
	dir := t.TempDir()
	victim := filepath.Join(dir, "shadow") // as /etc/shadow, linked from a shared /tmp
	if err := os.WriteFile(victim, []byte("root:secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "x")
	if err := os.Symlink(victim, link); err != nil {
		t.Fatal(err)
	}
	e.ok("save", a, link)
	if got, err := os.ReadFile(victim); err != nil || string(got) != "root:secret" {
		t.Errorf("save through a symbolic link changed its target: now %d bytes, %v", len(got), err)
	}
	fi, err := os.Lstat(link)
	if err != nil || !fi.Mode().IsRegular() {
		t.Fatalf("save to a symbolic link: %s is %v, %v; want the saved regular file", link, fi.Mode(), err)
	}
	if got, _ := os.ReadFile(link); sha(got) != e.sendSHA(a, "") {
		t.Error("saved file differs from zfs send")
	}
}
