package main

// S3 error tests: what the store refuses discards the upload; a wrong
// secret, a missing bucket, a wrong region, a skewed clock and an
// unreachable endpoint each get one line naming the cause and the fix.

import (
	"bytes"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zfs2s3/zfs2s3/internal/testbed"
)

// runWith runs zfs2s3 with extra environment, killing it after limit.
func (e *env) runWith(limit time.Duration, extraEnv []string, args ...string) (result, time.Duration) {
	e.t.Helper()
	c := e.cmd(args...)
	c.Env = append(c.Env, extraEnv...)
	var stdout, stderr bytes.Buffer
	c.Stdout, c.Stderr = &stdout, &stderr
	start := time.Now()
	if err := c.Start(); err != nil {
		e.t.Fatal(err)
	}
	timer := time.AfterFunc(limit, func() { c.Process.Kill() })
	err := c.Wait()
	took := time.Since(start)
	if !timer.Stop() {
		e.t.Fatalf("zfs2s3 %s still ran after %v; stderr so far: %s", strings.Join(args, " "), limit, stderr.String())
	}
	r := result{stdout: stdout.String(), stderr: stderr.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		e.t.Fatal(err)
	}
	return r, took
}

// failsWith checks a run's exit code and one-line error, which must name
// every string in want and none in notWant.
func (e *env) failsWith(r result, code int, want []string, notWant ...string) {
	e.t.Helper()
	e.t.Logf("exit %d: %s", r.code, r.stderr)
	if r.code != code {
		e.t.Fatalf("exit %d, want %d; stderr: %s", r.code, code, r.stderr)
	}
	for _, w := range want {
		if !strings.Contains(r.stderr, w) {
			e.t.Errorf("stderr %q does not contain %q", r.stderr, w)
		}
	}
	for _, w := range notWant {
		if strings.Contains(r.stderr, w) {
			e.t.Errorf("stderr %q contains %q", r.stderr, w)
		}
	}
	if lines := strings.Count(strings.TrimSpace(r.stderr), "\n"); lines > 0 {
		e.t.Errorf("error is %d lines, want one:\n%s", lines+1, r.stderr)
	}
}

// noUploadLeft checks that a failed upload left nothing to resume or abort.
func (e *env) noUploadLeft() {
	e.t.Helper()
	if n, st := e.multipartUploads(), len(e.stateFiles()); n != 0 || st != 0 {
		e.t.Errorf("%d multipart uploads and %d state files left; want none", n, st)
	}
	if r := e.ok("resume_upload"); !strings.Contains(r.stdout, "no pending uploads") {
		e.t.Errorf("resume_upload after the refusal: %q", r.stdout)
	}
}

func TestUnknownStorageClassIsAUsageError(t *testing.T) {
	e := newEnv(t, "class typo")
	a := e.snap("a", 1)
	e.fails(2, "did you mean DEEP_ARCHIVE?", "upload", a, "--storage-class", "DEEP_GLACIER")
	e.fails(2, "custom:NAME", "upload", a, "--storage-class", "COLD")
	e.noUploadLeft()
	// MinIO offers STANDARD and REDUCED_REDUNDANCY only; the latter, not
	// in the list, passes forced.
	e.ok("upload", a, "--storage-class", "custom:REDUCED_REDUNDANCY")
	if ed, err := e.ledger().Find(a, "", 0, 0); err != nil || ed.StorageClass != "REDUCED_REDUNDANCY" {
		t.Errorf("edge %v (%v), want storage class REDUCED_REDUNDANCY", ed, err)
	}
}

// TestStoreRefusalDiscardsTheUpload: a storage class MinIO does not offer
// (forced with custom:), then refusals at a later part and at completion:
// each exits 1 saying what was refused and leaves nothing pending, so that
// the next upload of the edge just works.
func TestStoreRefusalDiscardsTheUpload(t *testing.T) {
	var refuse atomic.Value // func(*http.Request) testbed.Fault
	refuse.Store(func(*http.Request) testbed.Fault { return testbed.Fault{} })
	e, _ := faultyEnv(t, "refused", func(r *http.Request) testbed.Fault {
		return refuse.Load().(func(*http.Request) testbed.Fault)(r)
	})
	a := e.snap("a", 12)
	r, _ := e.runWith(time.Minute, nil, "upload", a, "--part-size", "5MiB", "--storage-class", "custom:NO_SUCH_CLASS")
	e.failsWith(r, 1, []string{`the store does not offer storage class "NO_SUCH_CLASS"`, "InvalidStorageClass", "--storage-class", "nothing is pending"},
		"interrupted", "resume_upload")
	e.noUploadLeft()

	var parts atomic.Int32
	refuse.Store(func(r *http.Request) testbed.Fault {
		if testbed.IsUploadPart(r) && parts.Add(1) == 2 {
			return testbed.S3Error(http.StatusBadRequest, "EntityTooLarge", "Your proposed upload exceeds the maximum allowed size")
		}
		return testbed.Fault{}
	})
	r, _ = e.runWith(time.Minute, nil, "upload", a, "--part-size", "5MiB", "--concurrency", "1")
	e.failsWith(r, 1, []string{"a part is larger than the store accepts", "upload part 2", "nothing is pending"},
		"interrupted", "resume_upload")
	e.noUploadLeft()

	refuse.Store(func(r *http.Request) testbed.Fault {
		if testbed.IsComplete(r) {
			return testbed.S3Error(http.StatusBadRequest, "EntityTooSmall", "Your proposed upload is smaller than the minimum allowed object size.")
		}
		return testbed.Fault{}
	})
	r, _ = e.runWith(time.Minute, nil, "upload", a, "--part-size", "5MiB")
	e.failsWith(r, 1, []string{"smaller than the store accepts", "--part-size", "nothing is pending"}, "interrupted", "resume_upload")
	e.noUploadLeft()
	if keys := e.keys(); len(keys) > 1 {
		t.Errorf("bucket holds %v after the refusals", keys)
	}

	refuse.Store(func(*http.Request) testbed.Fault { return testbed.Fault{} })
	e.ok("upload", a, "--part-size", "5MiB")
	if ed, err := e.ledger().Find(a, "", 0, 0); err != nil || sha(e.object(ed.Key)) != e.sendSHA(a, "") {
		t.Errorf("upload after the refusals: %v", err)
	}
}

// TestSetupProblemMidUploadStaysResumable: access denied on a part is the
// credentials' or policy's fault, not the upload's: it stays pending and
// resume_upload finishes it once access is back.
func TestSetupProblemMidUploadStaysResumable(t *testing.T) {
	e, _ := faultyEnv(t, "denied", func(r *http.Request) testbed.Fault {
		if testbed.IsUploadPart(r) {
			return testbed.S3Error(http.StatusForbidden, "AccessDenied", "Access Denied.")
		}
		return testbed.Fault{}
	})
	a := e.snap("a", 6)
	r, _ := e.runWith(time.Minute, nil, "upload", a, "--part-size", "5MiB")
	e.failsWith(r, 1, []string{"access denied", "bucket policy", "once that is fixed, run zfs2s3 resume_upload"})
	if n, st := e.multipartUploads(), len(e.stateFiles()); n != 1 || st != 1 {
		t.Fatalf("%d multipart uploads, %d state files; want the upload kept (1, 1)", n, st)
	}
	e.endpoint = bed.minio.Endpoint
	e.ok("resume_upload")
	if ed, err := e.ledger().Find(a, "", 0, 0); err != nil || sha(e.object(ed.Key)) != e.sendSHA(a, "") {
		t.Errorf("after resume: %v", err)
	}
}

// TestSetupProblemsNameCauseAndFix runs status (a new machine) and upload
// against each wrong setup.
func TestSetupProblemsNameCauseAndFix(t *testing.T) {
	e, p := faultyEnv(t, "setup", nil)
	a := e.snap("a", 1)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + l.Addr().String()
	l.Close()
	for _, tt := range []struct {
		name     string
		env      []string
		fault    testbed.Fault
		want     []string
		fastOnly bool
	}{
		{name: "wrong secret", env: []string{"AWS_SECRET_ACCESS_KEY=wrong"},
			want: []string{"secret key does not match", "AWS_SECRET_ACCESS_KEY"}},
		{name: "missing bucket", env: []string{"ZFS2S3_BUCKET=no-such-bucket-here"},
			want: []string{`bucket "no-such-bucket-here" does not exist`, "create the bucket"}},
		{name: "wrong region", fault: testbed.Fault{Status: http.StatusMovedPermanently, Code: "PermanentRedirect",
			Message: "The bucket you are attempting to access must be addressed using the specified endpoint.", Region: "eu-west-1"},
			want: []string{"is in region eu-west-1, not us-east-1", "--region eu-west-1"}},
		{name: "clock skew", fault: testbed.S3Error(http.StatusForbidden, "RequestTimeTooSkewed", "The difference between the request time and the server's time is too large."),
			want: []string{"clock", "NTP"}},
		{name: "unreachable", env: []string{"ZFS2S3_ENDPOINT=" + closed},
			want: []string{"cannot connect to " + closed, "--endpoint"}, fastOnly: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p.SetRule(func(*http.Request) testbed.Fault { return tt.fault })
			defer p.SetRule(nil)
			e.t = t
			env := append([]string{"AWS_REGION=us-east-1"}, tt.env...)
			for _, args := range [][]string{{"status"}, {"upload", a}} {
				e.stateDir = t.TempDir() // a new machine: nothing to fall back on
				r, took := e.runWith(time.Minute, env, args...)
				e.failsWith(r, 1, tt.want, "cannot read the bucket's ledger", "try again")
				if tt.fastOnly && took > 5*time.Second {
					t.Errorf("%s took %v against a refused endpoint", args[0], took.Round(time.Millisecond))
				}
			}
		})
	}
}

// TestRecreatedSnapshotGivesOneAdvice: a pending upload whose snapshot was
// re-created or destroyed can never be finished: the error says to abort
// it, and nothing about resuming.
func TestRecreatedSnapshotGivesOneAdvice(t *testing.T) {
	var fail atomic.Bool
	e, _ := faultyEnv(t, "recreated", func(r *http.Request) testbed.Fault {
		if fail.Load() && testbed.IsUploadPart(r) {
			return testbed.Fault{Reset: true}
		}
		return testbed.Fault{}
	})
	a := e.snap("a", 6)
	fail.Store(true)
	r, _ := e.runWith(time.Minute, []string{"AWS_MAX_ATTEMPTS=1"}, "upload", a, "--part-size", "5MiB")
	e.failsWith(r, 1, []string{"resume_upload"})
	fail.Store(false)
	e.zfs("destroy", a)
	e.zfs("snapshot", a)
	r, _ = e.runWith(time.Minute, nil, "resume_upload", a)
	e.failsWith(r, 1, []string{"re-created", "abort_upload " + a}, "resume_upload")
	e.zfs("destroy", a)
	r, _ = e.runWith(time.Minute, nil, "resume_upload", a)
	e.failsWith(r, 1, []string{"destroyed", "abort_upload " + a}, "resume_upload")
	e.ok("abort_upload", a)
	e.noUploadLeft()
}

// TestUnknown4xxKeepsTheUploadResumable: a 4xx zfs2s3 does not know to be
// final (a proxy's, a quota's) stops the upload but keeps it: what was
// uploaded is not thrown away, and resume_upload finishes it.
func TestUnknown4xxKeepsTheUploadResumable(t *testing.T) {
	var parts atomic.Int32
	e, _ := faultyEnv(t, "unknown 4xx", func(r *http.Request) testbed.Fault {
		if testbed.IsUploadPart(r) && parts.Add(1) == 2 {
			return testbed.S3Error(http.StatusBadRequest, "XMinioAdminBucketQuotaExceeded", "Bucket quota exceeded")
		}
		return testbed.Fault{}
	})
	a := e.snap("a", 12)
	r, _ := e.runWith(time.Minute, nil, "upload", a, "--part-size", "5MiB", "--concurrency", "1")
	e.failsWith(r, 1, []string{"quota", "resume_upload"}, "discarded")
	e.ok("resume_upload")
	if got := e.edges(); len(got) != 1 {
		t.Errorf("edges after the resume: %v", got)
	}
}

// TestLostObjectGivesOneAdvice: an upload killed right after
// CompleteMultipartUpload whose object then vanished from the bucket cannot
// be resumed; the error says so once (abort_upload and upload again), not
// also "run resume_upload", and following it works.
func TestLostObjectGivesOneAdvice(t *testing.T) {
	e := newEnv(t, "lost object")
	a := e.snap("a", 12)
	p := testbed.StartProxy(t, bed.minio.Endpoint)
	e.endpoint = p.URL
	e.killAfterComplete(p, "upload", a, "--part-size", "5MiB")
	e.endpoint = bed.minio.Endpoint
	for _, k := range e.keys() {
		e.del(k)
	}
	r := e.fails(1, "abort_upload "+a+" and upload again", "resume_upload", a)
	if strings.Contains(r.stderr, "resume_upload") {
		t.Errorf("the error also advises resume_upload: %q", r.stderr)
	}
	e.ok("abort_upload", a)
	e.ok("upload", a)
}
