// Package statefile writes zfs2s3's files in the state dir atomically and
// guards them with locks, so a crash or a second zfs2s3 never leaves a
// half-written ledger or upload state behind. It also reads them without
// trusting the directory more than it deserves: no symbolic links, only
// regular files, bounded sizes, and no state dir that other users can write.
package statefile

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ErrUnsafe marks a state file or dir that zfs2s3 refuses to use: a
// symbolic link, something other than a regular file, a file larger than
// any zfs2s3 writes, or a dir other users can write.
var ErrUnsafe = errors.New("unsafe state file")

type unsafeError struct{ msg string }

func (e *unsafeError) Error() string        { return e.msg }
func (e *unsafeError) Is(target error) bool { return target == ErrUnsafe }

func unsafef(format string, args ...any) error {
	return &unsafeError{msg: fmt.Sprintf(format, args...)}
}

// CheckDir refuses a state dir that another user owns or that its group or
// other users can write: whoever can write it can swap the ledger or plant
// a link that makes zfs2s3 overwrite another file. A missing dir is fine;
// zfs2s3 creates its dirs with mode 0700.
func CheckDir(dir string) error {
	fi, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return unsafef("state dir %s is not a directory; point --state-dir elsewhere", dir)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
		me := userName(os.Geteuid())
		return unsafef("state dir %s belongs to %s, not to %s who runs zfs2s3; run: chown %s %s",
			dir, userName(int(st.Uid)), me, me, shellQuote(dir))
	}
	if perm := fi.Mode().Perm(); perm&0o022 != 0 {
		who := map[fs.FileMode]string{0o020: "its group", 0o002: "other users", 0o022: "its group and other users"}[perm&0o022]
		return unsafef("state dir %s is writable by %s (mode %04o), who could replace the ledger; run: chmod go-w %s",
			dir, who, perm, shellQuote(dir))
	}
	return nil
}

func userName(uid int) string {
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil && u.Username != "" {
		return u.Username
	}
	return "uid " + strconv.Itoa(uid)
}

// shellQuote quotes s for the shell when it needs it, so a printed hint
// can be pasted as it is.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._-+%~,:@=") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// ReadFile reads a state file of at most limit bytes. It does not follow a
// symbolic link at path and refuses anything but a regular file, so that a
// link to /dev/zero or a FIFO neither exhausts memory nor blocks. A missing
// file is an error satisfying errors.Is(err, fs.ErrNotExist).
func ReadFile(path string, limit int64) ([]byte, error) {
	f, err := openRegular(path, os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	size := int64(0)
	if fi, err := f.Stat(); err == nil {
		if size = fi.Size(); size > limit {
			return nil, tooBig(path, size, limit)
		}
	}
	// Read into a buffer of the file's size (and one byte more to see it
	// grew): io.ReadAll's doubling copies a 32 MB ledger several times.
	buf := bytes.NewBuffer(make([]byte, 0, size+bytes.MinRead))
	_, err = buf.ReadFrom(io.LimitReader(f, limit+1))
	b := buf.Bytes()
	if err != nil {
		return nil, fmt.Errorf("cannot read %s: %w", path, bare(err))
	}
	if int64(len(b)) > limit {
		return nil, tooBig(path, int64(len(b)), limit)
	}
	return b, nil
}

func tooBig(path string, size, limit int64) error {
	return unsafef("%s is %s, more than the %s any such zfs2s3 file reaches; it is not one zfs2s3 wrote: move it away", path, sizeString(size), sizeString(limit))
}

func sizeString(n int64) string {
	if n < 1<<20 {
		return strconv.FormatInt(n, 10) + " bytes"
	}
	return strings.TrimSuffix(strconv.FormatFloat(float64(n)/(1<<20), 'f', 1, 64), ".0") + " MiB"
}

// openRegular opens path without following a symbolic link and without
// blocking on a FIFO, and returns it only if it is a regular file. A
// non-regular file found by Lstat is refused before it is opened at all,
// since opening some devices has effects.
func openRegular(path string, flag int, perm fs.FileMode) (*os.File, error) {
	if fi, err := os.Lstat(path); err == nil && !fi.Mode().IsRegular() {
		return nil, notRegular(path, fi.Mode())
	}
	f, err := os.OpenFile(path, flag|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, perm)
	if errors.Is(err, syscall.ELOOP) {
		return nil, notRegular(path, fs.ModeSymlink)
	}
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, notRegular(path, fi.Mode())
	}
	return f, nil
}

func notRegular(path string, mode fs.FileMode) error {
	if mode&fs.ModeSymlink != 0 {
		return unsafef("%s is a symbolic link, and zfs2s3 does not follow links in its state dir; remove the link", path)
	}
	kind := "not a regular file"
	switch {
	case mode.IsDir():
		kind = "a directory"
	case mode&fs.ModeNamedPipe != 0:
		kind = "a named pipe"
	case mode&fs.ModeSocket != 0:
		kind = "a socket"
	case mode&fs.ModeDevice != 0:
		kind = "a device"
	}
	return unsafef("%s is %s, not a file zfs2s3 wrote; move it away", path, kind)
}

// bare drops the path an *fs.PathError or *os.LinkError carries, for
// errors that name the path themselves. Temp file names mean nothing to
// the user, and repeating the path makes the one error line hard to read.
func bare(err error) error {
	var pe *fs.PathError
	var le *os.LinkError
	switch {
	case errors.As(err, &pe):
		return pe.Err
	case errors.As(err, &le):
		return le.Err
	}
	return err
}

// NotWritable reports whether err means the state dir cannot be written
// (a read-only file system or missing permission), as opposed to a damaged
// or unsafe state dir.
func NotWritable(err error) bool {
	return errors.Is(err, syscall.EROFS) || errors.Is(err, fs.ErrPermission)
}

// WriteFile replaces path with data: temp file, fsync, rename, fsync of the
// directory. Readers see the old or the new content, never a mix. A failed
// write leaves no temp file, and its error names path once (not the temp
// file): "cannot write PATH: no space left on device".
func WriteFile(path string, data []byte) error {
	if err := writeFile(path, data); err != nil {
		return fmt.Errorf("cannot write %s: %w", path, bare(err))
	}
	return nil
}

func writeFile(path string, data []byte) error {
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
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
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
		return fmt.Errorf("cannot remove %s: %w", path, bare(err))
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
	Path    string
	PID     int           // 0 when unknown
	Command string        // the holder's command name, "" when unknown
	Waited  time.Duration // how long WaitLock waited; 0 for TryLock
}

// Holder describes the process holding the lock, for messages.
func (e *LockedError) Holder() string {
	switch {
	case e.PID <= 0:
		return "another process"
	case e.Command == "" || e.Command == "zfs2s3":
		return fmt.Sprintf("zfs2s3 process %d", e.PID)
	}
	return fmt.Sprintf("process %d (%s)", e.PID, e.Command)
}

func (e *LockedError) Error() string {
	waited := ""
	if e.Waited > 0 {
		waited = fmt.Sprintf(" (waited %s)", e.Waited.Round(time.Second))
	}
	return fmt.Sprintf("%s holds the lock %s%s; wait for it to finish", e.Holder(), e.Path, waited)
}

func (e *LockedError) Is(target error) bool { return target == ErrLocked }

// InterruptedError means the wait for a held lock was cancelled (Ctrl-C).
// It unwraps to the context's error.
type InterruptedError struct {
	Locked *LockedError
	Err    error
}

func (e *InterruptedError) Error() string {
	return fmt.Sprintf("interrupted while waiting for the lock %s held by %s", e.Locked.Path, e.Locked.Holder())
}

func (e *InterruptedError) Unwrap() error { return e.Err }

// Lock is an exclusive flock on a file. The kernel drops it when the process
// dies, so a kill -9 never leaves a stale lock. Unlock deletes the lock
// file, and the dirs TryLock created if they stayed empty, so a command,
// failed or not, leaves no lock file or empty dir behind; a lock file a
// killed process left is taken over, PID and all, by its next holder.
type Lock struct {
	f    *os.File
	path string
	dirs []string // created by TryLock, outermost first
}

// errVanished means the lock file's dir was removed between creating it and
// opening the file (a holder releasing it); the attempt is repeated.
var errVanished = errors.New("lock dir removed meanwhile")

// TryLock takes the lock on path or fails at once with a *LockedError.
// A lock file is deleted by its holder on release; a lock taken on a file
// that is no longer at path is retried on the new file.
func TryLock(path string) (*Lock, error) {
	for tries := 0; ; tries++ {
		l, err := tryLock(path)
		if errors.Is(err, errVanished) {
			if tries < 100 {
				continue
			}
			return nil, fmt.Errorf("cannot create the lock file %s: %w", path, err)
		}
		if err != nil || l.stillAt(path) {
			return l, err
		}
		l.close()
	}
}

func (l *Lock) stillAt(path string) bool {
	a, err1 := l.f.Stat()
	b, err2 := os.Lstat(path)
	return err1 == nil && err2 == nil && os.SameFile(a, b)
}

func tryLock(path string) (*Lock, error) {
	dirs, err := mkdirs(filepath.Dir(path))
	if err != nil {
		return nil, fmt.Errorf("cannot create the lock file %s: %w", path, bare(err))
	}
	f, err := openRegular(path, os.O_RDWR|os.O_CREATE, 0o600)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, errVanished
	}
	if err != nil {
		removeDirs(dirs)
		if errors.Is(err, ErrUnsafe) {
			return nil, err
		}
		return nil, fmt.Errorf("cannot create the lock file %s: %w", path, bare(err))
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		le := &LockedError{Path: path}
		le.PID, le.Command = holder(f)
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, le
		}
		return nil, fmt.Errorf("cannot lock %s: %w", path, err)
	}
	// The PID is for messages only: a lock whose PID cannot be written (a
	// full disk) still excludes, and read-only commands still run.
	f.Truncate(0)
	f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return &Lock{f: f, path: path, dirs: dirs}, nil
}

// mkdirs creates dir and its missing parents with mode 0700 and returns the
// ones it created, outermost first.
func mkdirs(dir string) ([]string, error) {
	var missing []string
	for d := dir; ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err == nil {
			if !fi.IsDir() {
				return nil, &fs.PathError{Op: "mkdir", Path: d, Err: syscall.ENOTDIR}
			}
			break
		}
		if !errors.Is(err, fs.ErrNotExist) || filepath.Dir(d) == d {
			return nil, err
		}
		missing = append(missing, d)
	}
	var created []string
	for i := len(missing) - 1; i >= 0; i-- {
		err := os.Mkdir(missing[i], 0o700)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			removeDirs(created)
			return nil, err
		}
		created = append(created, missing[i])
	}
	return created, nil
}

// removeDirs removes the dirs mkdirs created, innermost first, as long as
// they are empty: rmdir fails on a dir another process has put a file in.
func removeDirs(dirs []string) {
	for i := len(dirs) - 1; i >= 0; i-- {
		if os.Remove(dirs[i]) != nil {
			return
		}
	}
}

// holder finds the process holding the flock on f: the kernel's record in
// /proc/locks (Linux), which is right even when the holder is not zfs2s3,
// else the PID the holder wrote into the file.
func holder(f *os.File) (pid int, command string) {
	pid = procLocksHolder(f)
	if pid == 0 {
		buf := make([]byte, 32)
		n, _ := f.ReadAt(buf, 0)
		pid, _ = strconv.Atoi(strings.TrimSpace(string(buf[:n])))
	}
	if pid > 0 {
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); err == nil {
			command = strings.TrimSpace(string(b))
		}
	}
	return pid, command
}

// procLocksHolder returns the PID /proc/locks gives for the flock on f's
// file, 0 when there is none or no /proc/locks.
func procLocksHolder(f *os.File) int {
	fi, err := f.Stat()
	if err != nil {
		return 0
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0
	}
	dev := uint64(st.Dev)
	major, minor := (dev>>8)&0xfff|(dev>>32)&^0xfff, dev&0xff|(dev>>12)&^0xff
	id := fmt.Sprintf("%02x:%02x:%d", major, minor, st.Ino)
	locks, err := os.Open("/proc/locks")
	if err != nil {
		return 0
	}
	defer locks.Close()
	sc := bufio.NewScanner(locks)
	for sc.Scan() {
		// "1: FLOCK  ADVISORY  WRITE 14583 fe:00:9978689 0 EOF"; waiters
		// blocked on a lock have "->" after the number.
		col := strings.Fields(sc.Text())
		if len(col) >= 6 && col[1] == "FLOCK" && col[5] == id {
			if pid, err := strconv.Atoi(col[4]); err == nil && pid > 0 {
				return pid
			}
		}
	}
	return 0
}

// WaitLock takes the lock on path, retrying until ctx ends or wait passes.
// Use it for locks held briefly (ledger updates), where queueing behind a
// concurrent run is what a cron job wants. A cancelled wait returns an
// *InterruptedError naming the holder.
func WaitLock(ctx context.Context, path string, wait time.Duration) (*Lock, error) {
	start := time.Now()
	for logged := false; ; logged = true {
		l, err := TryLock(path)
		var le *LockedError
		if !errors.As(err, &le) {
			return l, err
		}
		if time.Since(start) >= wait {
			le.Waited = time.Since(start)
			return nil, le
		}
		if !logged {
			slog.Info("waiting for the lock", "path", path, "holder", le.Holder())
		}
		select {
		case <-ctx.Done():
			return nil, &InterruptedError{Locked: le, Err: ctx.Err()}
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Unlock releases the lock and deletes its file, then the dirs TryLock
// created if they are empty.
func (l *Lock) Unlock() {
	if l == nil || l.f == nil {
		return
	}
	// Deleted while still held: a process waiting on this file gets the
	// lock after the close, sees the file is gone and retries on a new one.
	if l.stillAt(l.path) {
		os.Remove(l.path)
	}
	l.close()
	removeDirs(l.dirs)
}

func (l *Lock) close() {
	if l != nil && l.f != nil {
		l.f.Close()
		l.f = nil
	}
}
