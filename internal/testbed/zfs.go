package testbed

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

var errNotRoot = errors.New("zfs-fuse needs root")

// ZFS is a zfs-fuse daemon (started here, or found running) and the
// file-backed pools created on it.
type ZFS struct {
	dir     string
	started bool
	pools   []string
}

// StartZFS makes zfs and zpool usable: it starts zfs-fuse unless a ZFS is
// already answering.
func StartZFS() (*ZFS, error) {
	if _, err := exec.LookPath("zpool"); err != nil {
		return nil, fmt.Errorf("zpool not found (install zfs-fuse): %w", err)
	}
	dir, err := os.MkdirTemp("", "zfs2s3-pools-")
	if err != nil {
		return nil, err
	}
	z := &ZFS{dir: dir}
	if exec.Command("zpool", "list").Run() == nil {
		return z, nil
	}
	clearStaleDaemons()
	if os.Geteuid() != 0 {
		return nil, errNotRoot
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return nil, fmt.Errorf("zfs-fuse needs /dev/fuse: %w", err)
	}
	out, err := exec.Command("zfs-fuse", "--pidfile", filepath.Join(dir, "zfs-fuse.pid")).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("start zfs-fuse: %v: %s", err, out)
	}
	z.started = true
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if exec.Command("zpool", "list").Run() == nil {
			return z, nil
		}
	}
	z.Stop()
	return nil, fmt.Errorf("zfs-fuse did not answer zpool list within 20s")
}

// Pool creates a pool backed by a sparse file of size bytes.
func (z *ZFS) Pool(name string, size int64) error {
	img := filepath.Join(z.dir, name+".img")
	f, err := os.Create(img)
	if err != nil {
		return err
	}
	f.Truncate(size)
	f.Close()
	if out, err := exec.Command("zpool", "create", "-f", "-m", filepath.Join(z.dir, "mnt", name), name, img).CombinedOutput(); err != nil {
		return fmt.Errorf("zpool create %s: %v: %s", name, err, out)
	}
	z.pools = append(z.pools, name)
	return nil
}

// Stop destroys the pools and stops zfs-fuse if it was started here.
func (z *ZFS) Stop() {
	for _, p := range z.pools {
		if exec.Command("zpool", "list", p).Run() == nil { // else destroyed by the test
			DestroyPool(p)
		}
	}
	if z.started {
		if b, err := os.ReadFile(filepath.Join(z.dir, "zfs-fuse.pid")); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				stopDaemon(pid)
			}
		}
		unmountUnder(z.dir)
	}
	os.RemoveAll(z.dir)
}

// stopDaemon asks zfs-fuse to exit and kills it if it has not within 10s:
// a zfs-fuse shutting down with a busy mount can hang forever.
func stopDaemon(pid int) {
	syscall.Kill(pid, syscall.SIGTERM)
	for i := 0; i < 100 && syscall.Kill(pid, 0) == nil; i++ {
		time.Sleep(100 * time.Millisecond)
	}
	syscall.Kill(pid, syscall.SIGKILL)
	for i := 0; i < 50 && syscall.Kill(pid, 0) == nil; i++ {
		time.Sleep(100 * time.Millisecond)
	}
}

// clearStaleDaemons stops zfs-fuse processes that no longer answer (an
// earlier run that did not shut down), so a new daemon can start.
func clearStaleDaemons() {
	out, _ := exec.Command("pgrep", "-x", "zfs-fuse").Output()
	for _, f := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil {
			stopDaemon(pid)
		}
	}
	unmountUnder(os.TempDir())
}

// unmountUnder lazily unmounts FUSE mounts left below dir by a dead daemon.
func unmountUnder(dir string) {
	b, _ := os.ReadFile("/proc/mounts")
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 2 && strings.HasPrefix(f[2], "fuse") && strings.HasPrefix(f[1], dir) {
			exec.Command("umount", "-l", strings.ReplaceAll(f[1], `\040`, " ")).Run()
		}
	}
}

// DestroyPool destroys a pool, retrying while zfs-fuse reports it busy,
// as it does right after writes.
func DestroyPool(name string) error {
	var err error
	for i := 0; i < 10; i++ {
		if _, err = Run("zpool", "destroy", "-f", name); err == nil {
			return nil
		}
		if out, err := Run("zfs", "list", "-H", "-o", "name", "-r", name); err == nil {
			for _, ds := range strings.Split(strings.TrimSpace(out), "\n") {
				exec.Command("zfs", "unmount", "-f", ds).Run()
			}
		}
		time.Sleep(time.Second)
	}
	return err
}

// Mountpoint returns where a dataset is mounted.
func Mountpoint(dataset string) (string, error) {
	out, err := exec.Command("zfs", "get", "-H", "-o", "value", "mountpoint", dataset).Output()
	return strings.TrimSpace(string(out)), err
}

// Run runs a command (zfs, zpool, ...) and returns its stdout; stderr goes
// into the error.
func Run(name string, args ...string) (string, error) {
	var stdout, stderr bytes.Buffer
	c := exec.Command(name, args...)
	c.Stdout, c.Stderr = &stdout, &stderr
	if err := c.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}
