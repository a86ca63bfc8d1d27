package main

// Fault tests: S3 that resets, throttles, stalls and truncates; a MinIO
// restart; a killed zfs send; kill -9 at many points of an upload.

import (
	"bytes"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/zfs2s3/zfs2s3/backup"
	"github.com/zfs2s3/zfs2s3/internal/testbed"
	"github.com/zfs2s3/zfs2s3/transform"
)

// faultyEnv routes zfs2s3 through a proxy with the given rule.
func faultyEnv(t *testing.T, name string, rule func(*http.Request) testbed.Fault) (*env, *testbed.Proxy) {
	e := newEnv(t, name)
	p := testbed.StartProxy(t, bed.minio.Endpoint)
	p.SetRule(rule)
	e.endpoint = p.URL
	return e, p
}

func isGet(r *http.Request) bool { return r.Method == http.MethodGet }

func TestUploadAndRestoreThroughAFaultyNetwork(t *testing.T) {
	var rules []func(*http.Request) testbed.Fault
	rules = append(rules,
		testbed.Every(3, 25, testbed.Any, testbed.Fault{Reset: true}, testbed.SlowDown, testbed.Fault{Delay: 700 * time.Millisecond}),
		testbed.Every(2, 25, isGet, testbed.Fault{Truncate: true}, testbed.Fault{Reset: true}))
	e, _ := faultyEnv(t, "faults", func(r *http.Request) testbed.Fault {
		for _, rule := range rules {
			if f := rule(r); f != (testbed.Fault{}) {
				return f
			}
		}
		return testbed.Fault{}
	})
	a := e.snap("a", 30)
	b := e.snap("b", 12)
	e.ok("upload", a, "--part-size", "5MiB")
	e.ok("upload", b, "-i", a, "--part-size", "5MiB")
	for _, ed := range e.ledger().Edges {
		base := ed.BaseName()
		if sha(e.object(ed.Key)) != e.sendSHA(ed.Target.Name, base) {
			t.Errorf("%s: stored object differs from zfs send", ed)
		}
	}
	into := pool + "/" + filepath.Base(t.Name())
	e.ok("restore", b, "--into", into)
	src, _ := testbed.Mountpoint(e.ds)
	dst, _ := testbed.Mountpoint(into)
	sameTree(t, src, dst)
	e.ok("verify", "--read-data")
}

func TestRetriesExhaustedLeaveTheUploadResumable(t *testing.T) {
	e, _ := faultyEnv(t, "exhausted", func(r *http.Request) testbed.Fault {
		if testbed.IsUploadPart(r) {
			return testbed.SlowDown
		}
		return testbed.Fault{}
	})
	a := e.snap("a", 12)
	c := e.cmd("upload", a, "--part-size", "5MiB")
	c.Env = append(c.Env, "AWS_MAX_ATTEMPTS=2") // keep the test short
	var stderr bytes.Buffer
	c.Stderr = &stderr
	if err := c.Run(); err == nil || !strings.Contains(stderr.String(), "resume_upload") || !strings.Contains(stderr.String(), "SlowDown") {
		t.Fatalf("upload against a throttling server: %v, stderr %q; want a failure that names SlowDown and resume_upload", err, stderr.String())
	}
	e.endpoint = bed.minio.Endpoint
	e.ok("resume_upload")
	ed, err := e.ledger().Find(a, "", 0, 0)
	if err != nil || sha(e.object(ed.Key)) != e.sendSHA(a, "") {
		t.Errorf("after resume: %v", err)
	}
}

func TestMinIORestartMidUpload(t *testing.T) {
	e, _ := slowEnv(t, "restart", 300*time.Millisecond)
	a := e.snap("a", 25)
	c, _ := e.start("upload", a, "--part-size", "5MiB", "--concurrency", "1")
	e.waitParts(1)
	if err := bed.minio.Restart(); err != nil {
		t.Fatal(err)
	}
	if err := c.Wait(); err != nil {
		e.ok("resume_upload") // the run gave up while MinIO was down
	}
	e.endpoint = bed.minio.Endpoint
	ed, err := e.ledger().Find(a, "", 0, 0)
	if err != nil || sha(e.object(ed.Key)) != e.sendSHA(a, "") || e.multipartUploads() != 0 {
		t.Errorf("after a MinIO restart: edge %v (%v), %d multipart uploads left", ed, err, e.multipartUploads())
	}
}

// childPID returns a child process of pid (forked by any of its threads).
func childPID(pid int) int {
	tasks, _ := filepath.Glob("/proc/" + strconv.Itoa(pid) + "/task/*/children")
	for _, t := range tasks {
		b, _ := os.ReadFile(t)
		if f := strings.Fields(string(b)); len(f) > 0 {
			n, _ := strconv.Atoi(f[0])
			return n
		}
	}
	return 0
}

func TestKilledZFSSendNeverCompletes(t *testing.T) {
	e, _ := slowEnv(t, "send killed", 300*time.Millisecond)
	a := e.snap("a", 30)
	c, stderr := e.start("upload", a, "--part-size", "5MiB", "--concurrency", "1")
	e.waitParts(1)
	send := childPID(c.Process.Pid)
	if send == 0 {
		t.Fatal("zfs send is not running under zfs2s3")
	}
	syscall.Kill(send, syscall.SIGKILL)
	err := c.Wait()
	if ee, ok := err.(interface{ ExitCode() int }); !ok || ee.ExitCode() != 1 || !strings.Contains(stderr.String(), "zfs send failed") {
		t.Fatalf("upload with a killed zfs send: %v, stderr %q", err, stderr.String())
	}
	if len(e.ledger().Edges) != 0 || e.multipartUploads() != 1 {
		t.Fatalf("after the killed send: %d edges, %d multipart uploads; want 0 and 1 (resumable)", len(e.ledger().Edges), e.multipartUploads())
	}
	for _, k := range e.keys() {
		if strings.HasSuffix(k, ".zfs") {
			t.Fatalf("object %s was completed from a killed zfs send", k)
		}
	}
	e.endpoint = bed.minio.Endpoint
	e.ok("resume_upload")
	ed, _ := e.ledger().Find(a, "", 0, 0)
	if sha(e.object(ed.Key)) != e.sendSHA(a, "") {
		t.Error("resumed object differs from zfs send")
	}
}

// TestKillAtManyPoints kill -9s uploads at spread-out moments, from before
// the multipart upload exists to after it completed, then resumes. Every
// run must end with the edge stored, the data equal and nothing left over.
func TestKillAtManyPoints(t *testing.T) {
	e, _ := slowEnv(t, "many kills", 150*time.Millisecond)
	for i := 0; i < 8; i++ {
		s := e.snap("s"+strconv.Itoa(i), 11) // 3 parts of 5 MiB
		c := e.cmd("upload", s, "--part-size", "5MiB", "--concurrency", "1")
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(i) * 90 * time.Millisecond)
		c.Process.Signal(syscall.SIGKILL)
		c.Wait()
		r := e.ok("resume_upload")
		ed, err := e.ledger().Find(s, "", 0, 0)
		if err != nil && strings.Contains(r.stdout, "no pending uploads") {
			// Killed before it recorded its intent: it must have left nothing.
			if n := e.multipartUploads(); n != 0 {
				t.Fatalf("kill after %d ms left %d multipart uploads and no state", i*90, n)
			}
			e.ok("upload", s, "--part-size", "5MiB")
			ed, err = e.ledger().Find(s, "", 0, 0)
		}
		if err != nil {
			t.Fatalf("kill after %d ms, then resume (%q): %v", i*90, r.stdout, err)
		}
		if sha(e.object(ed.Key)) != e.sendSHA(s, "") {
			t.Errorf("kill after %d ms: stored object differs from zfs send", i*90)
		}
		if n := e.multipartUploads(); n != 0 || len(e.stateFiles()) != 0 {
			t.Errorf("kill after %d ms: %d multipart uploads, %d state files left", i*90, n, len(e.stateFiles()))
		}
	}
}

// TestUploadMemoryIsBounded checks the documented bound on peak memory,
// (concurrency + 2) x part size + 32 MiB, plus 16 MiB per core with zstd
// (backup.MemoryBound), on a stream of many parts, plain and compressed
// and encrypted.
func TestUploadMemoryIsBounded(t *testing.T) {
	e := newEnv(t, "memory")
	a := e.snap("a", 120)
	_, rcpt := ageKey(t)
	for _, tc := range []struct {
		name  string
		flags []string
		spec  transform.Spec
	}{
		{"plain", nil, transform.Spec{}},
		{"zstd+age", []string{"--compress", "zstd", "--recipient", rcpt}, transform.Spec{Compress: transform.CompressZstd, Level: 3, Encrypt: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := e.cmd(append([]string{"upload", a, "--part-size", "8MiB", "--concurrency", "4"}, tc.flags...)...)
			var out bytes.Buffer
			c.Stdout, c.Stderr = &out, &out
			if err := c.Start(); err != nil {
				t.Fatal(err)
			}
			// zfs2s3's own high-water mark, read while it runs: the rusage
			// of the process tree would also count the zfs commands it
			// starts.
			var peak int64
			done := make(chan error)
			go func() { done <- c.Wait() }()
			for running := true; running; {
				select {
				case err := <-done:
					if err != nil {
						t.Fatalf("upload: %v: %s", err, out.String())
					}
					running = false
				case <-time.After(10 * time.Millisecond):
					peak = max(peak, vmHWM(c.Process.Pid))
				}
			}
			if bound := backup.MemoryBound(4, 8<<20, tc.spec); peak > bound {
				t.Errorf("peak RSS %d MiB exceeds the bound %d MiB", peak>>20, bound>>20)
			}
			t.Logf("peak RSS %d MiB", peak>>20)
			e.ok("remove", a)
		})
	}
}

// vmHWM reads a process's peak resident memory in bytes (0 once it is gone).
func vmHWM(pid int) int64 {
	b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "VmHWM:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

// TestLedgerCopyWriteFailsAfterUpload: the stream is stored and recorded
// locally, the command says the bucket's copy is behind and exits 1, and
// the next command (status) brings the copy up to date.
func TestLedgerCopyWriteFailsAfterUpload(t *testing.T) {
	var failPuts atomic.Bool
	e, _ := faultyEnv(t, "ledger put", func(r *http.Request) testbed.Fault {
		if failPuts.Load() && testbed.IsLedger(r, http.MethodPut) {
			return testbed.Fault{Status: http.StatusInternalServerError}
		}
		return testbed.Fault{}
	})
	t.Setenv("AWS_MAX_ATTEMPTS", "2") // keep the failing writes short
	a := e.snap("a", 1)
	failPuts.Store(true)
	r := e.fails(1, "ledger saved locally but not to the bucket", "upload", a)
	if !strings.Contains(r.stdout, "stored "+a) || len(e.stateFiles()) != 0 || len(e.ledger().Edges) != 1 {
		t.Errorf("after the failed copy: stdout %q, %d state files, %d local edges", r.stdout, len(e.stateFiles()), len(e.ledger().Edges))
	}
	failPuts.Store(false)
	e.ok("status")
	e.stateDir = t.TempDir() // a new machine sees the edge
	e.ok("status")
	if _, err := e.ledger().Find(a, "", 0, 0); err != nil {
		t.Error(err)
	}
}
