package main

// End-to-end tests of the state dir as a careless user or another local
// user leaves it: writable by others, links planted in it, a full disk,
// a read-only mount, a lock held by another process.

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/zfs2s3/zfs2s3/internal/testbed"
	"github.com/zfs2s3/zfs2s3/ledger"
)

// storeDir is the state subdir of e's bucket.
func (e *env) storeDir() string { return ledger.OpenStore(e.stateDir, e.bucket, "").Dir }

// mount runs mount(8) and unmounts at the end of the test. Mounting needs
// root, as zfs-fuse does.
func mount(t *testing.T, args ...string) {
	t.Helper()
	_, err := testbed.Run("mount", args...)
	testbed.Require(t, "mount (root)", err)
	dir := args[len(args)-1]
	t.Cleanup(func() {
		if _, err := testbed.Run("umount", dir); err != nil {
			t.Error(err)
		}
	})
}

// mountReadOnly makes dir read-only for the rest of the test: a read-only
// bind mount of itself (chmod does not stop root).
func mountReadOnly(t *testing.T, dir string) {
	t.Helper()
	mount(t, "--bind", dir, dir)
	_, err := testbed.Run("mount", "-o", "remount,bind,ro", dir)
	testbed.Require(t, "mount (root)", err)
}

// listTree lists the paths under dir, relative to it.
func listTree(dir string) []string {
	var out []string
	filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if rel, _ := filepath.Rel(dir, p); err == nil && rel != "." {
			out = append(out, rel)
		}
		return nil
	})
	return out
}

func TestInsecureStateDirIsRefused(t *testing.T) {
	e := newEnv(t, "insecure dir")
	a := e.snap("a", 1)
	e.ok("upload", a)
	for _, tc := range []struct {
		dir  string
		mode os.FileMode
		want string
	}{
		{e.stateDir, 0o777, "state dir " + e.stateDir + " is writable by its group and other users (mode 0777), who could replace the ledger; run: chmod go-w " + e.stateDir},
		{e.stateDir, 0o1777, "state dir " + e.stateDir + " is writable by its group and other users (mode 0777)"},
		{e.storeDir(), 0o775, "state dir " + e.storeDir() + " is writable by its group (mode 0775), who could replace the ledger; run: chmod go-w " + e.storeDir()},
	} {
		os.Chmod(tc.dir, tc.mode)
		e.fails(1, tc.want, "status")
		e.fails(1, tc.want, "upload", e.snap(fmt.Sprintf("m%o", tc.mode), 1), "-i", a)
		e.fails(1, tc.want, "resume_upload")
		os.Chmod(tc.dir, 0o700)
	}
	if err := os.Chown(e.stateDir, 12345, 12345); err != nil {
		t.Fatal(err)
	}
	e.fails(1, "state dir "+e.stateDir+" belongs to uid 12345, not to root who runs zfs2s3; run: chown root "+e.stateDir, "status")
	os.Chown(e.stateDir, 0, 0)
	e.ok("status")
	// A state dir zfs2s3 creates is private.
	fresh := filepath.Join(t.TempDir(), "new", "state")
	e.stateDir = fresh
	e.ok("upload", e.snap("c", 1), "-i", a)
	for _, d := range []string{filepath.Dir(fresh), fresh, e.storeDir()} {
		if fi, err := os.Stat(d); err != nil || fi.Mode().Perm() != 0o700 {
			t.Errorf("%s: mode %v (%v), want 0700", d, fi.Mode().Perm(), err)
		}
	}
}

func TestStateFilesAreNotFollowed(t *testing.T) {
	e := newEnv(t, "links")
	a := e.snap("a", 1)
	e.ok("upload", a)
	dir := e.storeDir()

	// A lock file linked to a file of another user's (root's, here) must
	// neither be truncated nor written.
	victim := filepath.Join(t.TempDir(), "precious")
	os.WriteFile(victim, []byte("precious\n"), 0o644)
	lock := filepath.Join(dir, "ledger.lock")
	os.Symlink(victim, lock)
	e.fails(1, lock+" is a symbolic link, and zfs2s3 does not follow links in its state dir; remove the link", "status")
	e.fails(1, lock+" is a symbolic link", "upload", e.snap("b", 1), "-i", a)
	if b, _ := os.ReadFile(victim); string(b) != "precious\n" {
		t.Errorf("the lock link's target holds %q", b)
	}
	os.Remove(lock)

	// A ledger linked to /dev/zero or a FIFO is refused at once, not read
	// until memory runs out or forever; an oversized one is not read.
	ledgerFile := filepath.Join(dir, "ledger.yaml")
	os.Rename(ledgerFile, ledgerFile+".saved")
	os.Symlink("/dev/zero", ledgerFile)
	e.fails(1, ledgerFile+" is a symbolic link", "status")
	os.Remove(ledgerFile)
	syscall.Mkfifo(ledgerFile, 0o600)
	e.fails(1, ledgerFile+" is a named pipe, not a file zfs2s3 wrote; move it away", "restore", "--dry-run", a)
	os.Remove(ledgerFile)
	f, _ := os.Create(ledgerFile)
	f.Truncate(300 << 20) // sparse
	f.Close()
	e.fails(1, ledgerFile+" is 300 MiB, more than the 128 MiB any such zfs2s3 file reaches; it is not one zfs2s3 wrote: move it away", "status")
	os.Rename(ledgerFile+".saved", ledgerFile)

	// An upload state file: the same.
	os.MkdirAll(filepath.Join(dir, "uploads"), 0o700)
	state := filepath.Join(dir, "uploads", "0123456789abcdef.yaml")
	os.Symlink("/dev/zero", state)
	e.fails(1, state+" is a symbolic link", "status")
	e.fails(1, state+" is a symbolic link", "resume_upload")
	os.Remove(state)
	f, _ = os.Create(state)
	f.Truncate(9 << 20)
	f.Close()
	e.fails(1, state+" is 9 MiB, more than the 8 MiB", "abort_upload")
	os.Remove(state)

	// The record of the bucket's journals is only a shortcut: a link
	// there is ignored with a warning, and the journals are compared in full.
	journal := filepath.Join(dir, "bucket-journal.json")
	os.Rename(journal, journal+".saved")
	os.Symlink("/dev/zero", journal)
	r := e.ok("status")
	if strings.Count(r.stderr, "ignoring the record of the bucket's ledger journal") != 1 || !strings.Contains(r.stdout, "@a ") {
		t.Errorf("status with a linked journal record: stdout %q, stderr %q", r.stdout, r.stderr)
	}
}

func TestDiskFullLeavesNoDebris(t *testing.T) {
	e := newEnv(t, "disk full")
	a, b := e.snap("a", 1), e.snap("b", 1)
	e.stateDir = filepath.Join(t.TempDir(), "state")
	os.Mkdir(e.stateDir, 0o700)
	mount(t, "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", e.stateDir)
	e.ok("upload", a)
	before := listTree(e.stateDir)
	// Fill the file system.
	filler, err := os.Create(filepath.Join(e.stateDir, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(filler, io.LimitReader(zeros{}, 1<<20)); err == nil {
		t.Fatal("the 256k tmpfs took 1 MiB")
	}
	filler.Close()
	before = append(before, "filler")

	r := e.fails(1, ": no space left on device", "upload", b, "-i", a)
	line := strings.TrimSpace(r.stderr)
	if strings.Contains(line, ".tmp") || strings.Count(line, e.stateDir) != 1 {
		t.Errorf("error %q should name the state file once, and no temp file", line)
	}
	if after := listTree(e.stateDir); strings.Join(after, " ") != strings.Join(before, " ") {
		t.Errorf("the failed upload left %v, want %v", after, before)
	}
	if n := e.multipartUploads(); n != 0 {
		t.Errorf("%d multipart uploads started", n)
	}
	// Commands that only read still work on the full disk.
	if r := e.ok("status"); !strings.Contains(r.stdout, "@a ") {
		t.Errorf("status on a full disk: %q", r.stdout)
	}
	e.ok("restore", "--dry-run", a, "--into", pool+"/full-restore")
	if after := listTree(e.stateDir); strings.Join(after, " ") != strings.Join(before, " ") {
		t.Errorf("status and restore --dry-run left %v, want %v", after, before)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

func TestLockWaitNamesTheHolderAndCanBeInterrupted(t *testing.T) {
	e := newEnv(t, "lock holder")
	a := e.snap("a", 1)
	e.ok("upload", a)
	lock := filepath.Join(e.storeDir(), "ledger.lock")

	// interrupted runs zfs2s3 -v status until it waits for the lock, then
	// interrupts it as Ctrl-C would and returns its last stderr line.
	interrupted := func(env *env) string {
		t.Helper()
		c, stderr := env.start("status", "-v")
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline) && !strings.Contains(stderr.String(), "waiting for the lock"); {
			time.Sleep(20 * time.Millisecond)
		}
		c.Process.Signal(os.Interrupt)
		if err := c.Wait(); err == nil || c.ProcessState.ExitCode() != 1 {
			t.Errorf("interrupted status: %v, want exit 1", err)
		}
		lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
		return lines[len(lines)-1]
	}

	// A process that is not zfs2s3 holds the lock, in a file that still
	// names an earlier holder (pid 1, alive, so liveness cannot tell).
	os.WriteFile(lock, []byte("1\n"), 0o600)
	holder := exec.Command("flock", lock, "sleep", "60")
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { holder.Process.Kill(); holder.Wait() }()
	for exec.Command("flock", "-n", lock, "true").Run() == nil {
		time.Sleep(20 * time.Millisecond) // flock(1) has not taken it yet
	}
	want := fmt.Sprintf("zfs2s3: interrupted while waiting for the lock %s held by process %d (flock)", lock, holder.Process.Pid)
	if got := interrupted(e); got != want {
		t.Errorf("interrupted status said\n%q, want\n%q", got, want)
	}
	holder.Process.Kill()
	holder.Wait()
	os.Remove(lock) // what the kill of a holder leaves; the next zfs2s3 takes it over

	// A zfs2s3 holds it: a status whose LIST of the bucket's ledger hangs.
	p := testbed.StartProxy(t, bed.minio.Endpoint)
	p.SetRule(func(r *http.Request) testbed.Fault {
		return testbed.Fault{Delay: map[bool]time.Duration{true: 20 * time.Second}[testbed.IsLedgerList(r)]}
	})
	slow := *e
	slow.endpoint = p.URL
	first, _ := slow.start("status")
	defer func() { first.Process.Kill(); first.Wait() }()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if b, _ := os.ReadFile(lock); strings.TrimSpace(string(b)) == strconv.Itoa(first.Process.Pid) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the first status never took the lock")
		}
	}
	want = fmt.Sprintf("zfs2s3: interrupted while waiting for the lock %s held by zfs2s3 process %d", lock, first.Process.Pid)
	if got := interrupted(e); got != want {
		t.Errorf("interrupted status said\n%q, want\n%q", got, want)
	}
}

func TestReadOnlyStateDir(t *testing.T) {
	e := newEnv(t, "read-only")
	a := e.snap("a", 1)
	b := e.snap("b", 1)
	e.ok("upload", a)
	e.ok("upload", b, "-i", a)
	mountReadOnly(t, e.stateDir)
	before := listTree(e.stateDir)

	r := e.ok("status")
	if !strings.Contains(r.stdout, "@a ") || !strings.Contains(r.stdout, "@b ") || r.stderr != "" {
		t.Errorf("status in a read-only state dir: stdout %q, stderr %q", r.stdout, r.stderr)
	}
	r = e.ok("restore", "--dry-run", b, "--into", pool+"/ro-restore")
	if strings.Count(r.stdout, "get s3://") != 2 {
		t.Errorf("restore --dry-run in a read-only state dir: %q", r.stdout)
	}
	e.ok("verify")
	// Changes need the lock: refused in one line.
	lock := filepath.Join(e.storeDir(), "ledger.lock")
	e.fails(1, "zfs2s3: cannot create the lock file "+lock+": read-only file system", "upload", e.snap("c", 1), "-i", b)

	// A new machine whose (empty) state dir is read-only reads the
	// bucket's copy without saving it.
	fresh := *e
	fresh.stateDir = t.TempDir()
	mountReadOnly(t, fresh.stateDir)
	r = fresh.ok("status")
	if !strings.Contains(r.stdout, "@b ") || !strings.Contains(r.stderr, "using the bucket's copy without saving it locally") {
		t.Errorf("status on a new machine with a read-only state dir: stdout %q, stderr %q", r.stdout, r.stderr)
	}
	fresh.ok("restore", "--dry-run", b, "--into", pool+"/ro-restore")
	if got := listTree(fresh.stateDir); len(got) != 0 {
		t.Errorf("read-only state dir holds %v", got)
	}
	if got := listTree(e.stateDir); strings.Join(got, " ") != strings.Join(before, " ") {
		t.Errorf("state dir changed from %v to %v", before, got)
	}
}

func TestMissingBucketLeavesNoStateSubdir(t *testing.T) {
	e := newEnv(t, "no bucket")
	a := e.snap("a", 1)
	e.bucket = "no-such-bucket-" + strconv.Itoa(os.Getpid())
	for _, args := range [][]string{{"status"}, {"upload", a}, {"restore", "--dry-run", a}, {"ledger", "rebuild"}} {
		if r := e.run(args...); r.code == 0 {
			t.Errorf("zfs2s3 %s with a missing bucket: exit 0", strings.Join(args, " "))
		}
		if got := listTree(e.stateDir); len(got) != 0 {
			t.Errorf("zfs2s3 %s with a missing bucket left %v in the state dir", strings.Join(args, " "), got)
		}
	}
}
