package main

// End-to-end tests of the command line itself: what it refuses before
// anything runs, where flags may go, and how it answers signals. Most run
// the built binary with a fake zfs and a fake S3 endpoint that record being
// used, so they prove that a refused command touched nothing.

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// cliEnv runs the built binary against a fake zfs (a shell script) and a
// fake S3 endpoint, with a state dir that does not exist yet.
type cliEnv struct {
	t        *testing.T
	dir      string
	stateDir string
	zfsCmd   string
	zfsRan   string // the fake zfs creates this file when it runs
	endpoint string
	requests atomic.Int32
}

// newCLIEnv makes a cliEnv whose fake zfs runs script (sh) after noting
// that it ran.
func newCLIEnv(t *testing.T, script string) *cliEnv {
	t.Helper()
	if _, err := os.Stat(bed.bin); bed.bin == "" || err != nil {
		t.Fatalf("the zfs2s3 binary was not built: %v", bed.err)
	}
	e := &cliEnv{t: t, dir: t.TempDir()}
	e.stateDir = filepath.Join(e.dir, "state")
	e.zfsRan = filepath.Join(e.dir, "zfs-ran")
	e.zfsCmd = filepath.Join(e.dir, "zfs")
	body := "#!/bin/sh\necho \"$@\" >> '" + e.zfsRan + "'\n" + script + "\n"
	if err := os.WriteFile(e.zfsCmd, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	s3 := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.requests.Add(1)
		http.Error(w, "fake S3: no request was expected", http.StatusServiceUnavailable)
	}))
	t.Cleanup(s3.Close)
	e.endpoint = s3.URL
	return e
}

func (e *cliEnv) cmd(env []string, args ...string) *exec.Cmd {
	c := exec.Command(bed.bin, args...)
	c.Env = append(os.Environ(), "ZFS2S3_BUCKET=cli", "ZFS2S3_STATE_DIR="+e.stateDir, "ZFS2S3_ZFS="+e.zfsCmd,
		"ZFS2S3_ENDPOINT="+e.endpoint, "AWS_ACCESS_KEY_ID=k", "AWS_SECRET_ACCESS_KEY=s", "AWS_REGION=us-east-1",
		"AWS_MAX_ATTEMPTS=1")
	c.Env = append(c.Env, env...)
	return c
}

// exitCodeOf is a finished command's exit code, -1 if a signal ended it.
func exitCodeOf(t *testing.T, err error) int {
	t.Helper()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return 0
}

// touchedNothing fails the test if zfs ran, S3 was asked anything or the
// state dir was created.
func (e *cliEnv) touchedNothing(t *testing.T) {
	t.Helper()
	if ran, err := os.ReadFile(e.zfsRan); err == nil {
		t.Errorf("zfs was run: %s", ran)
		os.Remove(e.zfsRan)
	}
	if n := e.requests.Swap(0); n > 0 {
		t.Errorf("%d request(s) reached S3", n)
	}
	if _, err := os.Stat(e.stateDir); err == nil {
		t.Errorf("the state dir %s was created", e.stateDir)
		os.RemoveAll(e.stateDir)
	}
}

func TestBadCommandLineIsUsageErrorAndTouchesNothing(t *testing.T) {
	e := newCLIEnv(t, "exit 1")
	long := "tank/" + strings.Repeat("x", 300) + "@a"
	withDatasets := filepath.Join(e.dir, "datasets.yaml")
	withMetrics := filepath.Join(e.dir, "metrics.yaml")
	for file, text := range map[string]string{withDatasets: "datasets:\n  tank/x: {}\n",
		withMetrics: "metrics_file: /nonexistent/zfs2s3/m.prom\ndatasets:\n  tank/x: {}\n"} {
		if err := os.WriteFile(file, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name string
		want string
		args []string
		env  []string
	}{
		// Names, checked by ZFS's rules (defect 8 and the exit-1 answers).
		{"restore into a snapshot", "not a dataset name", []string{"restore", "tank/x@a", "--into", "tank/y@snap"}, nil},
		{"restore into an option", "begins with '-'", []string{"restore", "tank/x@a", "--into", "-F"}, nil},
		{"restore into nothing", "--into was given an empty name", []string{"restore", "tank/x@a", "--into", ""}, nil},
		{"base that is an option", "begins with '-'", []string{"upload", "tank/x@b", "-i", "-R"}, nil},
		{"target that is an option", "begins with '-'", []string{"upload", "--", "-R@x"}, nil},
		{"300 characters", "at most 255", []string{"upload", long}, nil},
		{"unicode", "'é'", []string{"upload", "tank/café@a"}, nil},
		{"shell substitution", "'$'", []string{"upload", "tank/x@$(id)"}, nil},
		{"newline", "not a snapshot name", []string{"remove", "tank/x@a\nb"}, nil},
		{"dot dot", `".."`, []string{"save", "tank/../x@a", "-"}, nil},
		{"empty component", "empty component", []string{"resume_upload", "tank//x@a"}, nil},
		{"pool not a letter", "begins with a letter", []string{"abort_upload", "1tank/x@a"}, nil},
		{"status of a snapshot", "not a dataset name", []string{"status", "tank/x@a"}, nil},
		{"verify of a bad dataset", "'$'", []string{"verify", "tank/$(id)"}, nil},
		// An empty -i is not "full" (defect 14).
		{"upload -i empty", "-i was given an empty name", []string{"upload", "tank/x@b", "-i", ""}, nil},
		{"remove -i empty", "-i was given an empty name", []string{"remove", "tank/x@b", "-i="}, nil},
		{"save -i empty", "-i was given an empty name", []string{"save", "tank/x@b", "-i", "", "-"}, nil},
		// Prefixes and endpoints (defect 9).
		// (Read-only commands read what an earlier release stored under
		// such a prefix: TestLegacyPrefixStaysReadable.)
		{"prefix /", "--prefix", []string{"upload", "tank/x@a", "--prefix", "/"}, nil},
		{"prefix from env", "--prefix", []string{"remove", "tank/x@a"}, []string{"ZFS2S3_PREFIX=/host1"}},
		{"prefix //", "--prefix", []string{"abort_upload", "--prefix", "a//b"}, nil},
		{"prefix ..", "--prefix", []string{"ledger", "rebuild", "--prefix", "a/../b"}, nil},
		{"prefix .", "--prefix", []string{"resume_upload", "--prefix", "."}, nil},
		{"endpoint with a path", "--endpoint", []string{"status", "--endpoint", e.endpoint + "/other-bucket"}, nil},
		{"endpoint not a url", "--endpoint", []string{"status", "--endpoint", "not a url"}, nil},
		{"endpoint ftp", "--endpoint", []string{"status", "--endpoint", "ftp://x"}, nil},
		// Sizes (defect 14, weak answers).
		{"part size overflow", "--part-size", []string{"upload", "tank/x@a", "--part-size", "17592186044432M"}, nil},
		{"concurrency too high", "--concurrency", []string{"upload", "tank/x@a", "--concurrency", "100000"}, nil},
		// Monitoring: a check or a metrics file that cannot work is found
		// before anything runs.
		{"restore newest with --guid", "--guid picks among snapshots of one name", []string{"restore", "tank/x", "--guid", "5"}, nil},
		{"max-age not a duration", "--max-age: bad duration \"soon\"", []string{"status", "--max-age", "soon"}, nil},
		{"max-age without datasets", "none is configured", []string{"status", "--max-age", "26h"}, []string{"ZFS2S3_CONFIG=/dev/null"}},
		{"metrics file in a missing dir", "--metrics-file /nonexistent/zfs2s3/m.prom: directory /nonexistent/zfs2s3 does not exist",
			[]string{"backup", "--metrics-file", "/nonexistent/zfs2s3/m.prom"}, []string{"ZFS2S3_CONFIG=" + withDatasets}},
		{"metrics file empty", "--metrics-file or ZFS2S3_METRICS_FILE names no file", []string{"prune", "--metrics-file", ""}, []string{"ZFS2S3_CONFIG=" + withDatasets}},
		{"metrics file a directory", "--metrics-file " + os.TempDir() + " is a directory", []string{"backup", "--metrics-file", os.TempDir()}, []string{"ZFS2S3_CONFIG=" + withDatasets}},
		{"config's metrics_file in a missing dir", withMetrics + ": metrics_file /nonexistent/zfs2s3/m.prom: directory", []string{"prune"}, []string{"ZFS2S3_CONFIG=" + withMetrics}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stderr bytes.Buffer
			c := e.cmd(tt.env, tt.args...)
			c.Stderr = &stderr
			code := exitCodeOf(t, c.Run())
			msg := strings.TrimSpace(stderr.String())
			if code != exitUsage || !strings.Contains(msg, tt.want) {
				t.Errorf("zfs2s3 %q: exit %d, stderr %q; want exit 2 and %q", tt.args, code, msg, tt.want)
			}
			if strings.Contains(msg, "\n") || !strings.HasPrefix(msg, "zfs2s3: ") {
				t.Errorf("zfs2s3 %q: error is not one line:\n%s", tt.args, msg)
			}
			e.touchedNothing(t)
		})
	}
}

// TestSignalsInterrupt sends each signal to an upload whose zfs hangs: it
// must stop, say "interrupted" and exit 1 like any failed command.
func TestSignalsInterrupt(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP} {
		t.Run(sig.String(), func(t *testing.T) {
			e := newCLIEnv(t, "exec sleep 30")
			c, stderr := e.startHung("upload", "tank/x@a")
			c.Process.Signal(sig)
			code, took := e.wait(c)
			msg := strings.TrimSpace(stderr.String())
			if code != exitFailed || took > 5*time.Second {
				t.Errorf("after %v: exit %d after %v, want exit 1 at once; stderr %q", sig, code, took, msg)
			}
			if !strings.HasPrefix(msg, "zfs2s3: ") || !strings.Contains(msg, "interrupted") ||
				strings.Contains(msg, "context canceled") || strings.Contains(msg, "\n") {
				t.Errorf("after %v: stderr %q, want one line that says interrupted", sig, msg)
			}
		})
	}
}

// TestSecondSIGINTExitsAtOnce: a zfs that ignores its kill (its child keeps
// the output pipe open, as a zfs hung in the kernel would) keeps the
// command from stopping; a second Ctrl-C must exit at once with 130.
func TestSecondSIGINTExitsAtOnce(t *testing.T) {
	e := newCLIEnv(t, "")
	pidFile := filepath.Join(e.dir, "sleep.pid")
	body := "#!/bin/sh\necho \"$@\" >> '" + e.zfsRan + "'\nsleep 30 &\necho $! > '" + pidFile + "'\nwait\n"
	if err := os.WriteFile(e.zfsCmd, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { // the sleep this test started, by its pid
		if b, err := os.ReadFile(pidFile); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
	c, stderr := e.startHung("upload", "tank/x@a")
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- c.Wait() }()
	c.Process.Signal(syscall.SIGINT)
	select {
	case err := <-done:
		t.Fatalf("the first SIGINT already ended it (%v, stderr %q): the test's hang does not hang", err, stderr)
	case <-time.After(time.Second):
	}
	c.Process.Signal(syscall.SIGINT)
	select {
	case err := <-done:
		if code := exitCodeOf(t, err); code != 130 {
			t.Errorf("exit %d after the second SIGINT, want 130; stderr %q", code, stderr)
		}
		if !strings.Contains(stderr.String(), "SIGINT again: exiting at once") {
			t.Errorf("stderr %q does not say why it exits", stderr)
		}
	case <-time.After(5 * time.Second):
		c.Process.Kill()
		t.Fatalf("still running %v after the second SIGINT", time.Since(start))
	}
}

// startHung starts zfs2s3 and waits until it runs the fake zfs, so its
// signal handling is in place.
func (e *cliEnv) startHung(args ...string) (*exec.Cmd, *bytes.Buffer) {
	e.t.Helper()
	c := e.cmd(nil, args...)
	var stderr bytes.Buffer
	c.Stderr = &stderr
	if err := c.Start(); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { c.Process.Kill() })
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(e.zfsRan); err == nil {
			time.Sleep(100 * time.Millisecond)
			return c, &stderr
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("zfs2s3 %q never ran zfs; stderr %q", args, stderr.String())
		}
	}
}

func (e *cliEnv) wait(c *exec.Cmd) (int, time.Duration) {
	start := time.Now()
	err := c.Wait()
	return exitCodeOf(e.t, err), time.Since(start)
}

// TestCommonFlagsBeforeTheCommand: README shows "zfs2s3 -v ...".
func TestCommonFlagsBeforeTheCommand(t *testing.T) {
	e := newEnv(t, "flags first")
	a := e.snap("a", 1)
	e.ok("-v", "--prefix", "host1", "upload", a)
	found := false
	for _, k := range e.keys() {
		found = found || strings.HasPrefix(k, "host1/")
	}
	if !found {
		t.Errorf("--prefix before the command was ignored: keys %v", e.keys())
	}
	if r := e.ok("--prefix=host1", "-q", "status", e.ds); !strings.Contains(r.stdout, "@a") {
		t.Errorf("status --prefix=host1 does not list @a:\n%s", r.stdout)
	}
	e.ok("--prefix", "host1", "ledger", "rebuild")
}

// TestRestoreIntoASnapshotNameReceivesNothing is defect 8 on real zfs:
// the half-received dataset it used to leave must not appear.
func TestRestoreIntoASnapshotNameReceivesNothing(t *testing.T) {
	e := newEnv(t, "into")
	a := e.snap("a", 1)
	e.ok("upload", a)
	into := e.ds + " restored"
	before := e.snapshotState()
	e.fails(2, "not a dataset name", "restore", a, "--into", into+"@snap")
	if out, err := exec.Command("zfs", "list", "-H", "-o", "name", into).CombinedOutput(); err == nil {
		t.Errorf("restore created %s: %s", into, out)
	}
	if after := e.snapshotState(); after != before {
		t.Errorf("state changed:\nbefore %s\nafter  %s", before, after)
	}
}

// TestVerifyOfADatasetWithNoEdgesFails: "verify tank/typo" checked nothing
// and said all was well.
func TestVerifyOfADatasetWithNoEdgesFails(t *testing.T) {
	e := newEnv(t, "verify typo")
	a := e.snap("a", 1)
	e.ok("upload", a)
	e.fails(2, "no edge of dataset", "verify", e.ds+"x")
	if r := e.ok("verify", e.ds); !strings.Contains(r.stdout, "ok   "+a) {
		t.Errorf("verify %s: stdout %q", e.ds, r.stdout)
	}
}

// TestNohupKeepsRunningOnHangup: a command started under nohup (SIGHUP
// ignored) is not stopped by a hangup, so logging out does not end a long
// upload; Ctrl-C still does.
func TestNohupKeepsRunningOnHangup(t *testing.T) {
	nohup, err := exec.LookPath("nohup")
	if err != nil {
		t.Fatal(err)
	}
	e := newCLIEnv(t, "exec sleep 30")
	c := e.cmd(nil, "upload", "tank/x@a")
	c.Args = append([]string{"nohup", c.Path}, c.Args[1:]...)
	c.Path = nohup
	var stderr bytes.Buffer
	c.Stderr = &stderr
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Process.Kill() })
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(e.zfsRan); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("zfs2s3 never ran zfs; stderr %q", stderr.String())
		}
	}
	time.Sleep(100 * time.Millisecond)
	done := make(chan error, 1)
	go func() { done <- c.Wait() }()
	c.Process.Signal(syscall.SIGHUP)
	select {
	case err := <-done:
		t.Fatalf("a hangup under nohup ended it (%v); stderr %q", err, stderr.String())
	case <-time.After(time.Second):
	}
	c.Process.Signal(syscall.SIGINT)
	select {
	case err := <-done:
		if code := exitCodeOf(t, err); code != exitFailed || !strings.Contains(stderr.String(), "interrupted") {
			t.Errorf("after Ctrl-C: exit %d, stderr %q", code, stderr.String())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Ctrl-C did not stop it")
	}
}
