package testbed

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// Server is a real S3 server on 127.0.0.1 that the end-to-end tests run
// against. Every implementation serves path-style requests signed with the
// same test credentials, so one test body runs unchanged against each.
type Server interface {
	// Name is the server's name in ZFS2S3_SERVERS.
	Name() string
	// URL is the endpoint, http://127.0.0.1:PORT.
	URL() string
	// Env is the environment a zfs2s3 process needs to reach the server.
	Env() []string
	// Client is an S3 client for the tests' own checks of the bucket.
	Client() *s3.Client
	CreateBucket(ctx context.Context, name string) error
	// Stop kills the server and deletes its data.
	Stop()
}

// Servers are the names StartServer knows, in the order make test and
// make test-compat list them.
var Servers = []string{"minio", "versitygw", "versitygw-etag", "rclone", "ceph"}

// StartServer starts a fresh server by name; the caller stops it.
func StartServer(name string) (Server, error) {
	switch name {
	case "minio":
		return StartMinIO()
	case "versitygw":
		return StartVersityGW(false)
	case "versitygw-etag":
		return StartVersityGW(true)
	case "rclone":
		return StartRclone()
	case "ceph":
		return StartCeph()
	}
	return nil, fmt.Errorf("unknown S3 server %q (known: %s)", name, strings.Join(Servers, ", "))
}

// S3 is what every test server shares: its endpoint and root credentials.
type S3 struct {
	Endpoint string
	User     string
	Password string
}

func newS3(addr string) S3 {
	return S3{Endpoint: "http://" + addr, User: "zfs2s3test", Password: "zfs2s3test-secret"}
}

// URL is the endpoint.
func (s *S3) URL() string { return s.Endpoint }

// Env is the environment a zfs2s3 process needs to reach the server.
func (s *S3) Env() []string {
	return []string{"AWS_ACCESS_KEY_ID=" + s.User, "AWS_SECRET_ACCESS_KEY=" + s.Password,
		"AWS_REGION=us-east-1", "AWS_EC2_METADATA_DISABLED=true", "ZFS2S3_ENDPOINT=" + s.Endpoint}
}

// Client is an S3 client for the tests' own checks of the bucket.
func (s *S3) Client() *s3.Client {
	return s3.New(s3.Options{
		Region:       "us-east-1",
		BaseEndpoint: aws.String(s.Endpoint),
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(s.User, s.Password, ""),
	})
}

// CreateBucket makes a bucket.
func (s *S3) CreateBucket(ctx context.Context, name string) error {
	_, err := s.Client().CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(name)})
	return err
}

// waitReady waits until a signed ListBuckets succeeds: the server is up
// and knows the test credentials. It gives up early when the server's
// process exits, and quotes the log so a failed start says why.
func (s *S3) waitReady(proc *child, logFile string, limit time.Duration) error {
	var err error
	for deadline := time.Now().Add(limit); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		select {
		case <-proc.done:
			return fmt.Errorf("%s exited at start: %s", proc.cmd.Path, tail(logFile))
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err = s.Client().ListBuckets(ctx, &s3.ListBucketsInput{})
		cancel()
		if err == nil {
			return nil
		}
	}
	return fmt.Errorf("%s not ready in %v (%v): %s", s.Endpoint, limit, err, tail(logFile))
}

// child is a server process; done is closed once it has exited and been
// reaped.
type child struct {
	cmd  *exec.Cmd
	done chan struct{}
}

// startChild starts cmd with its output appended to logFile.
func startChild(cmd *exec.Cmd, logFile string) (*child, error) {
	log, err := os.OpenFile(logFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer log.Close()
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", cmd.Path, err)
	}
	c := &child{cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); close(c.done) }()
	return c, nil
}

// stop kills the process and waits until it is gone.
func (c *child) stop() {
	c.cmd.Process.Kill()
	<-c.done
}

// tail is the end of a log file, for error messages.
func tail(name string) string {
	b, _ := os.ReadFile(name)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return strings.TrimSpace(string(b))
}

// CachedBinary finds a server binary: $envVar, else the cache make test and
// make test-compat fill (~/.cache/zfs2s3/bin/NAME). PATH is not searched:
// Debian's rclone, say, is too old to serve S3.
func CachedBinary(name, envVar string) (string, error) {
	if p := os.Getenv(envVar); p != "" {
		return p, nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", err
	}
	p := filepath.Join(home, ".cache", "zfs2s3", "bin", name)
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("%s not installed (set %s, or run make test / make test-compat): %w", name, envVar, err)
	}
	return p, nil
}

// process is a server that is one child process with its data in a temp dir.
type process struct {
	S3
	name string
	dir  string
	proc *child
}

func (p *process) Name() string { return p.name }

// Stop kills the server and deletes its data.
func (p *process) Stop() {
	if p.proc != nil {
		p.proc.stop()
	}
	os.RemoveAll(p.dir)
}

// startProcess runs bin with args (in which ADDR, DIR, USER and PASSWORD
// stand for the listen address, the data dir and the credentials) and
// waits until it serves the test credentials.
func startProcess(name, bin string, env []string, args ...string) (_ *process, err error) {
	dir, err := os.MkdirTemp("", "zfs2s3-"+name+"-")
	if err != nil {
		return nil, err
	}
	addr, err := freeAddr()
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	p := &process{S3: newS3(addr), name: name, dir: dir}
	defer func() {
		if err != nil {
			p.Stop()
			err = fmt.Errorf("%s: %w", name, err)
		}
	}()
	data := filepath.Join(dir, "data")
	if err := os.Mkdir(data, 0o700); err != nil {
		return nil, err
	}
	r := strings.NewReplacer("ADDR", addr, "DIR", data, "USER", p.User, "PASSWORD", p.Password)
	for i := range args {
		args[i] = r.Replace(args[i])
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	logFile := filepath.Join(dir, name+".log")
	if p.proc, err = startChild(cmd, logFile); err != nil {
		return nil, err
	}
	if err := p.waitReady(p.proc, logFile, 30*time.Second); err != nil {
		return nil, err
	}
	return p, nil
}

// ServersFromEnv is the list in ZFS2S3_SERVERS (comma-separated), else def.
func ServersFromEnv(def string) ([]string, error) {
	v := os.Getenv("ZFS2S3_SERVERS")
	if v == "" {
		v = def
	}
	var names []string
	for _, n := range strings.Split(v, ",") {
		if n = strings.TrimSpace(n); n == "" {
			continue
		}
		if !slices.Contains(Servers, n) {
			return nil, fmt.Errorf("ZFS2S3_SERVERS: unknown server %q (known: %s)", n, strings.Join(Servers, ", "))
		}
		names = append(names, n)
	}
	if len(names) == 0 {
		return nil, errors.New("ZFS2S3_SERVERS names no server")
	}
	return names, nil
}
