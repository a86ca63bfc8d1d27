// Package statefile writes zfs2s3's files in the state dir atomically and
// guards them with locks, so a crash or a second zfs2s3 never leaves a
// half-written ledger or upload state behind.
package statefile

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// WriteFile replaces path with data: temp file, fsync, rename, fsync of the
// directory. Readers see the old or the new content, never a mix.
func WriteFile(path string, data []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after a successful rename
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("fsync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	return syncDir(dir)
}

// Remove deletes path durably; a missing file is not an error.
func Remove(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return syncDir(filepath.Dir(path))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// ErrLocked means another process holds the lock.
var ErrLocked = errors.New("locked by another zfs2s3")

// LockedError names who holds a lock.
type LockedError struct {
	Path string
	PID  int // 0 when unknown
}

func (e *LockedError) Error() string {
	who := "another zfs2s3 process"
	if e.PID > 0 {
		who = fmt.Sprintf("another zfs2s3 process (pid %d)", e.PID)
	}
	return fmt.Sprintf("%s holds %s; wait for it to finish", who, e.Path)
}

func (e *LockedError) Is(target error) bool { return target == ErrLocked }

// Lock is an exclusive flock on a file. The kernel drops it when the process
// dies, so a kill -9 never leaves a stale lock.
type Lock struct{ f *os.File }

// TryLock takes the lock on path or fails at once with a *LockedError.
// A lock file may be deleted by its holder on release; a lock taken on a
// file that is no longer at path is retried on the new file.
func TryLock(path string) (*Lock, error) {
	for {
		l, err := tryLock(path)
		if err != nil || l.stillAt(path) {
			return l, err
		}
		l.Unlock()
	}
}

func (l *Lock) stillAt(path string) bool {
	a, err1 := l.f.Stat()
	b, err2 := os.Stat(path)
	return err1 == nil && err2 == nil && os.SameFile(a, b)
}

func tryLock(path string) (*Lock, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		b, _ := os.ReadFile(path)
		pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, &LockedError{Path: path, PID: pid}
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	f.Truncate(0)
	f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return &Lock{f: f}, nil
}

// WaitLock takes the lock on path, retrying until ctx ends or wait passes.
// Use it for locks held briefly (ledger updates), where queueing behind a
// concurrent run is what a cron job wants.
func WaitLock(ctx context.Context, path string, wait time.Duration) (*Lock, error) {
	deadline := time.Now().Add(wait)
	for {
		l, err := TryLock(path)
		if !errors.Is(err, ErrLocked) || time.Now().After(deadline) {
			return l, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Unlock releases the lock.
func (l *Lock) Unlock() {
	if l != nil && l.f != nil {
		l.f.Close()
		l.f = nil
	}
}
