package statefile

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestWriteFileReplacesAtomically(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "sub", "ledger.yaml")
	for _, content := range []string{"one\n", "two\n"} {
		if err := WriteFile(p, []byte(content)); err != nil {
			t.Fatal(err)
		}
		got, _ := os.ReadFile(p)
		if string(got) != content {
			t.Errorf("after WriteFile: %q, want %q", got, content)
		}
	}
	entries, _ := os.ReadDir(filepath.Dir(p))
	if len(entries) != 1 {
		t.Errorf("WriteFile left temp files: %v", entries)
	}
}

func TestLockExcludesOtherProcesses(t *testing.T) {
	p := filepath.Join(t.TempDir(), "lock")
	l, err := TryLock(p)
	if err != nil {
		t.Fatal(err)
	}
	// flock is per open file description, so a second open in this process
	// conflicts exactly as another process would.
	if _, err := TryLock(p); !errors.Is(err, ErrLocked) {
		t.Fatalf("second TryLock = %v, want ErrLocked", err)
	}
	var le *LockedError
	if _, err := TryLock(p); !errors.As(err, &le) || le.PID != os.Getpid() {
		t.Errorf("LockedError = %v, want pid %d", err, os.Getpid())
	}
	// A real second process (flock(1)) is refused too.
	if flock, err := exec.LookPath("flock"); err == nil {
		if err := exec.Command(flock, "-n", p, "true").Run(); err == nil {
			t.Error("flock -n took a held lock")
		}
	}
	l.Unlock()
	l2, err := TryLock(p)
	if err != nil {
		t.Fatalf("TryLock after Unlock: %v", err)
	}
	l2.Unlock()
}

// mustErrUnsafe checks that err refuses a state file and names it.
func mustErrUnsafe(t *testing.T, err error, path, want string) {
	t.Helper()
	if !errors.Is(err, ErrUnsafe) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), want) {
		t.Errorf("error = %v; want ErrUnsafe naming %s and saying %q", err, path, want)
	}
}

func TestReadFileRefusesLinksSpecialFilesAndHugeFiles(t *testing.T) {
	dir := t.TempDir()
	regular := filepath.Join(dir, "regular")
	os.WriteFile(regular, []byte("0123456789"), 0o600)
	if got, err := ReadFile(regular, 10); err != nil || string(got) != "0123456789" {
		t.Fatalf("ReadFile of a 10-byte file with limit 10 = %q, %v", got, err)
	}
	if _, err := ReadFile(filepath.Join(dir, "missing"), 10); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("ReadFile of a missing file = %v, want ErrNotExist", err)
	}

	link := filepath.Join(dir, "link")
	os.Symlink(regular, link)
	_, err := ReadFile(link, 10)
	mustErrUnsafe(t, err, link, "symbolic link")

	zero := filepath.Join(dir, "zero")
	os.Symlink("/dev/zero", zero)
	_, err = ReadFile(zero, 1<<20)
	mustErrUnsafe(t, err, zero, "symbolic link")
	_, err = ReadFile("/dev/zero", 1<<20)
	mustErrUnsafe(t, err, "/dev/zero", "a device")

	// A FIFO without a writer would block a plain open forever.
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := ReadFile(fifo, 10); done <- err }()
	select {
	case err := <-done:
		mustErrUnsafe(t, err, fifo, "named pipe")
	case <-time.After(5 * time.Second):
		t.Fatal("ReadFile of a FIFO blocks")
	}

	_, err = ReadFile(dir, 10)
	mustErrUnsafe(t, err, dir, "a directory")

	// Sparse: 300 MiB that take no disk space and must not be read.
	huge := filepath.Join(dir, "huge")
	f, _ := os.Create(huge)
	f.Truncate(300 << 20)
	f.Close()
	_, err = ReadFile(huge, 256<<20)
	mustErrUnsafe(t, err, huge, "is 300 MiB, more than the 256 MiB")
	_, err = ReadFile(regular, 9)
	mustErrUnsafe(t, err, regular, "is 10 bytes, more than the 9 bytes")
}

func TestCheckDirRefusesDirsOthersCanWrite(t *testing.T) {
	base := t.TempDir()
	if err := CheckDir(filepath.Join(base, "missing")); err != nil {
		t.Errorf("CheckDir of a missing dir = %v; it is created 0700 later", err)
	}
	for mode, want := range map[fs.FileMode]string{
		0o700: "", 0o755: "",
		0o775: "writable by its group (mode 0775)", 0o757: "writable by other users (mode 0757)",
		0o777: "writable by its group and other users (mode 0777)",
	} {
		dir := filepath.Join(base, mode.String())
		os.Mkdir(dir, 0o700)
		os.Chmod(dir, mode)
		err := CheckDir(dir)
		if want == "" {
			if err != nil {
				t.Errorf("CheckDir(%v) = %v, want nil", mode, err)
			}
			continue
		}
		mustErrUnsafe(t, err, dir, want)
		if err != nil && !strings.HasSuffix(err.Error(), "run: chmod go-w "+dir) {
			t.Errorf("CheckDir(%v) = %v; want it to end with the chmod to run", mode, err)
		}
	}
	other := "/" // owned by root: another user, unless the test runs as root
	if os.Geteuid() == 0 {
		other = filepath.Join(base, "other's")
		os.Mkdir(other, 0o700)
		if err := os.Chown(other, 12345, 12345); err != nil {
			t.Fatal(err)
		}
	}
	err := CheckDir(other)
	mustErrUnsafe(t, err, other, "belongs to ")
	if err != nil && (!strings.Contains(err.Error(), "; run: chown ") || !strings.HasSuffix(err.Error(), " "+shellQuote(other))) {
		t.Errorf("CheckDir of another user's dir = %v; want the chown to run, the path shell-quoted", err)
	}
	file := filepath.Join(base, "file")
	os.WriteFile(file, nil, 0o600)
	mustErrUnsafe(t, CheckDir(file), file, "not a directory")
}

func TestLockDoesNotFollowALink(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(dir, "root-owned")
	os.WriteFile(victim, []byte("precious\n"), 0o644)
	p := filepath.Join(dir, "state", "ledger.lock")
	os.Mkdir(filepath.Dir(p), 0o700)
	os.Symlink(victim, p)
	l, err := TryLock(p)
	if err == nil {
		l.Unlock()
	}
	mustErrUnsafe(t, err, p, "symbolic link")
	if b, _ := os.ReadFile(victim); string(b) != "precious\n" {
		t.Errorf("the link's target now holds %q", b)
	}
	fifo := filepath.Join(dir, "state", "fifo.lock")
	syscall.Mkfifo(fifo, 0o600)
	_, err = TryLock(fifo)
	mustErrUnsafe(t, err, fifo, "named pipe")
}

func TestUnlockLeavesNoDebris(t *testing.T) {
	base := t.TempDir()
	p := filepath.Join(base, "state", "bucket", "ledger.lock")
	l, err := TryLock(p)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Dir(p)); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("lock dir: %v, %v; want mode 0700", fi.Mode(), err)
	}
	l.Unlock()
	if entries, _ := os.ReadDir(base); len(entries) != 0 {
		t.Errorf("after Unlock %s holds %v, want nothing", base, entries)
	}
	// A dir that received a file under the lock stays, without the lock file.
	l, _ = TryLock(p)
	WriteFile(filepath.Join(filepath.Dir(p), "ledger.yaml"), []byte("x\n"))
	l.Unlock()
	if entries, _ := os.ReadDir(filepath.Dir(p)); len(entries) != 1 || entries[0].Name() != "ledger.yaml" {
		t.Errorf("after Unlock the state dir holds %v, want only ledger.yaml", entries)
	}
}

func TestLockedErrorNamesTheLiveHolder(t *testing.T) {
	flock, err := exec.LookPath("flock")
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "ledger.lock")
	// A process that is not zfs2s3 holds the lock; the file still names
	// an earlier holder (pid 1 is alive, so that cannot tell either).
	os.WriteFile(p, []byte("1\n"), 0o600)
	holder := exec.Command(flock, p, "sleep", "30")
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { holder.Process.Kill(); holder.Wait() }()
	var le *LockedError
	for deadline := time.Now().Add(5 * time.Second); ; {
		l, err := TryLock(p)
		if errors.As(err, &le) {
			break
		}
		if err == nil {
			l.close() // flock(1) has not taken it yet
		}
		if time.Now().After(deadline) {
			t.Fatalf("flock(1) never took the lock: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if le.PID != holder.Process.Pid || le.Command != "flock" {
		t.Errorf("LockedError names pid %d (%q), want the holder flock(1), pid %d", le.PID, le.Command, holder.Process.Pid)
	}
	if want := fmt.Sprintf("process %d (flock) holds the lock %s", holder.Process.Pid, p); !strings.Contains(le.Error(), want) {
		t.Errorf("error %q does not contain %q", le, want)
	}
}

func TestWaitLockInterruptedNamesTheHolder(t *testing.T) {
	p := filepath.Join(t.TempDir(), "ledger.lock")
	l, err := TryLock(p)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err = WaitLock(ctx, p, time.Minute)
	want := fmt.Sprintf("interrupted while waiting for the lock %s held by process %d (", p, os.Getpid())
	if err == nil || !strings.HasPrefix(err.Error(), want) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("WaitLock cancelled = %v; want %q… wrapping the context's error", err, want)
	}
	start := time.Now()
	_, err = WaitLock(context.Background(), p, 300*time.Millisecond)
	var le *LockedError
	if !errors.As(err, &le) || le.PID != os.Getpid() || time.Since(start) < 300*time.Millisecond || !strings.Contains(err.Error(), "(waited 0s)") {
		t.Errorf("WaitLock past its wait = %v after %s; want a LockedError naming pid %d", err, time.Since(start), os.Getpid())
	}
}

func TestWriteFileErrorNamesThePathOnce(t *testing.T) {
	dir := t.TempDir()
	notDir := filepath.Join(dir, "file")
	os.WriteFile(notDir, nil, 0o600)
	p := filepath.Join(notDir, "ledger.yaml")
	err := WriteFile(p, []byte("x"))
	if err == nil || err.Error() != "cannot write "+p+": not a directory" || !errors.Is(err, syscall.ENOTDIR) {
		t.Errorf("WriteFile into a file = %v", err)
	}
}
