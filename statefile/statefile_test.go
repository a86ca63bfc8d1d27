package statefile

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
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
