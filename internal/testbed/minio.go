package testbed

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"
)

// MinIO is a MinIO server on 127.0.0.1 with its data in a temp dir.
type MinIO struct {
	S3
	dir  string
	addr string
	cmd  *exec.Cmd
}

// Name is the server's name in ZFS2S3_SERVERS.
func (m *MinIO) Name() string { return "minio" }

// MinIOBinary finds the server: $ZFS2S3_MINIO, the cache that make test
// fills, or PATH.
func MinIOBinary() (string, error) {
	if p := os.Getenv("ZFS2S3_MINIO"); p != "" {
		return p, nil
	}
	if home, err := os.UserHomeDir(); err == nil {
		p := filepath.Join(home, ".cache", "zfs2s3", "bin", "minio")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return exec.LookPath("minio")
}

// StartMinIO starts a fresh server and waits until it is live.
func StartMinIO() (*MinIO, error) {
	bin, err := MinIOBinary()
	if err != nil {
		return nil, fmt.Errorf("minio binary: %w", err)
	}
	dir, err := os.MkdirTemp("", "zfs2s3-minio-")
	if err != nil {
		return nil, err
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	m := &MinIO{S3: newS3(addr), dir: dir, addr: addr}
	return m, m.start(bin)
}

func (m *MinIO) start(bin string) error {
	console, err := freeAddr()
	if err != nil {
		return err
	}
	m.cmd = exec.Command(bin, "server", filepath.Join(m.dir, "data"), "--address", m.addr, "--console-address", console, "--quiet")
	m.cmd.Env = append(os.Environ(), "MINIO_ROOT_USER="+m.User, "MINIO_ROOT_PASSWORD="+m.Password, "MINIO_BROWSER=off")
	log, err := os.Create(filepath.Join(m.dir, "minio.log"))
	if err != nil {
		return err
	}
	m.cmd.Stdout, m.cmd.Stderr = log, log
	if err := m.cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", bin, err)
	}
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		resp, err := http.Get(m.Endpoint + "/minio/health/live")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
	}
	m.Stop()
	b, _ := os.ReadFile(filepath.Join(m.dir, "minio.log"))
	return fmt.Errorf("minio did not become live in 30s: %s", b)
}

// Restart stops the server and starts it again on the same port and data.
func (m *MinIO) Restart() error {
	bin := m.cmd.Path
	m.stopProcess()
	return m.start(bin)
}

func (m *MinIO) stopProcess() {
	if m.cmd != nil && m.cmd.Process != nil {
		m.cmd.Process.Kill()
		m.cmd.Wait()
	}
}

// Stop kills the server and deletes its data.
func (m *MinIO) Stop() {
	m.stopProcess()
	os.RemoveAll(m.dir)
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return "127.0.0.1:" + strconv.Itoa(l.Addr().(*net.TCPAddr).Port), nil
}
