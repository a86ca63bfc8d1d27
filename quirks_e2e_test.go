package main

// S3 stores that answer differently from S3 (issue 11), reproduced by the
// fault proxy on top of MinIO: Ceph RGW 16.2, rclone serve s3 1.76,
// SeaweedFS 4 and versitygw with non-MD5 ETags. zfs2s3 must cross-check
// what they say and keep working, and name what a store lacks.

import (
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/zfs2s3/zfs2s3/internal/testbed"
)

// quirkyEnv routes zfs2s3 through a proxy answering as a store with q.
func quirkyEnv(t *testing.T, name string, q testbed.Quirks) (*env, *testbed.Proxy) {
	e := newEnv(t, name)
	p := testbed.StartProxy(t, bed.minio.Endpoint)
	q.Backend = bed.minio.Client()
	p.SetQuirks(q)
	e.endpoint = p.URL
	return e, p
}

// resumeRecords resumes the upload of snap and checks that the stored
// object is what zfs send gives.
func (e *env) resumeRecords(snap string) {
	e.t.Helper()
	r := e.ok("resume_upload", snap)
	if !strings.Contains(r.stdout, "stored "+snap) {
		e.t.Errorf("resume_upload stdout = %q", r.stdout)
	}
	ed, err := e.ledger().Find(snap, "", 0, 0)
	if err != nil {
		e.t.Fatal(err)
	}
	if obj := e.object(ed.Key); sha(obj) != e.sendSHA(snap, "") || ed.SHA256 != ledgerDigest(ed, obj) {
		got, want := sha(obj), e.sendSHA(snap, "")
		e.t.Errorf("object sha256 %s, ledger %s, zfs send %s", got, ed.SHA256, want)
	}
	if n := e.multipartUploads(); n != 0 || len(e.stateFiles()) != 0 {
		e.t.Errorf("%d multipart uploads and %d state files left", n, len(e.stateFiles()))
	}
}

// TestCephRGWLedgerCopyStaysInStep: Ceph RGW 16.2 answers a quoted If-Match
// with 412 and ignores x-amz-checksum-crc32c and -sha256. Every ledger change must
// reach the bucket's journal (before the journal, every second write of
// the whole copy failed with "another machine changed the bucket's
// ledger"; journal entries are written with If-None-Match, which Ceph
// honours), parts fall back to Content-MD5 with one warning, and -v shows
// the quirk, cached for later commands.
func TestCephRGWLedgerCopyStaysInStep(t *testing.T) {
	e, _ := quirkyEnv(t, "ceph", testbed.Quirks{QuotedIfMatch412: true, NoChecksumEcho: true})
	a := e.snap("a", 7)
	b := e.snap("b", 1)
	c := e.snap("c", 1)
	r := e.ok("upload", a, "--part-size", "5MiB")
	if n := strings.Count(r.stderr, "does not echo the x-amz-checksum header"); n != 1 {
		t.Errorf("upload warned %d times about the ignored checksum, want once:\n%s", n, r.stderr)
	}
	e.ok("upload", b, "-i", a)
	e.ok("upload", c, "-i", b)
	leaf := e.edgeKey(c, b)
	r = e.ok("remove", c, "-i", b, "-v")
	for _, q := range []string{"checksum-not-echoed"} {
		if !strings.Contains(r.stderr, q) {
			t.Errorf("remove -v does not show the cached quirk %s:\n%s", q, r.stderr)
		}
	}
	if e.has(leaf) {
		t.Error("the removed edge's object is still in the bucket")
	}
	if !e.bucketInStep() {
		t.Fatalf("the bucket's ledger holds %v, the local one %v: the copy went stale", e.bucketLedger("").Edges, e.ledger().Edges)
	}
	e.stateDir = t.TempDir() // a new machine sees what is stored, no more
	e.ok("status")
	want := []string{a + " (full)", a + " -> " + b}
	if got := e.edges(); !slices.Equal(got, want) {
		t.Errorf("a new machine sees %v, want %v", got, want)
	}
}

// TestRcloneServeS3: ListMultipartUploads on a bucket that never had one
// answers 404 NoSuchUpload (before, every command failed), multipart ETags
// are plain MD5-like (before, a crash right after CompleteMultipartUpload
// could never be resumed: "the upload's parts give ...-N").
func TestRcloneServeS3(t *testing.T) {
	e, p := quirkyEnv(t, "rclone", testbed.Quirks{ListUploadsNotFound: true, PlainMultipartETag: true, NoChecksumEcho: true})
	e.ok("status")
	a := e.snap("a", 11)
	e.killAfterComplete(p, "upload", a, "--part-size", "5MiB")
	e.resumeRecords(a)
	r := e.ok("verify", "--read-data", "-v")
	if !strings.Contains(r.stderr, "etag-not-md5") {
		t.Errorf("verify -v does not show the learnt quirk:\n%s", r.stderr)
	}
}

// TestVersitygwNonMD5ETags: part ETags that are not hex and object ETags
// that are not MD5-of-MD5s; a crash right after CompleteMultipartUpload is
// verified by size and SHA-256 and recorded.
func TestVersitygwNonMD5ETags(t *testing.T) {
	e, p := quirkyEnv(t, "versitygw", testbed.Quirks{NonHexPartETags: true, PlainMultipartETag: true})
	a := e.snap("a", 11)
	e.killAfterComplete(p, "upload", a, "--part-size", "5MiB")
	e.resumeRecords(a)
	e.ok("verify", "--read-data")
}

// TestSeaweedFSEmptyListParts: ListParts on a completed UploadId answers
// 200 with no parts; before, resume re-uploaded into the dead upload and
// failed on every retry.
func TestSeaweedFSEmptyListParts(t *testing.T) {
	e, p := quirkyEnv(t, "seaweedfs", testbed.Quirks{EmptyListPartsWhenGone: true})
	a := e.snap("a", 11)
	e.killAfterComplete(p, "upload", a, "--part-size", "5MiB")
	e.resumeRecords(a)
}

// TestConditionalWritesOff: a store whose conditional writes always get
// 412 is named as such, with the switch that fixes it, never as "another
// machine"; with --conditional-writes off (or its variable) the journal's
// entries are written after a HEAD finds none there yet.
func TestConditionalWritesOff(t *testing.T) {
	e, _ := faultyEnv(t, "no if-match", func(r *http.Request) testbed.Fault {
		if r.Method == http.MethodPut && (r.Header.Get("If-Match") != "" || r.Header.Get("If-None-Match") != "") {
			return testbed.S3Error(http.StatusPreconditionFailed, "PreconditionFailed", "At least one of the pre-conditions you specified did not hold")
		}
		return testbed.Fault{}
	})
	a := e.snap("a", 1)
	b := e.snap("b", 1)
	c := e.snap("c", 1)
	r := e.fails(1, "does not honour conditional writes", "upload", a)
	if !strings.Contains(r.stderr, "--conditional-writes off") || strings.Contains(r.stderr, "another machine") {
		t.Errorf("stderr %q: want the missing feature and the switch, not another machine", r.stderr)
	}
	if !strings.Contains(r.stdout, "stored "+a) || len(e.ledger().Edges) != 1 {
		t.Errorf("the upload is not recorded locally: %q", r.stdout)
	}
	e.fails(2, "--conditional-writes \"maybe\"", "status", "--conditional-writes", "maybe")
	cmd := e.cmd("upload", b, "-i", a)
	cmd.Env = append(cmd.Env, "ZFS2S3_CONDITIONAL_WRITES=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("upload with ZFS2S3_CONDITIONAL_WRITES=off: %v: %s", err, out)
	}
	e.ok("upload", c, "-i", b, "--conditional-writes", "off")
	if !e.bucketInStep() || len(e.bucketLedger("").Edges) != 3 {
		t.Errorf("the bucket's ledger holds %d edges, not the local ledger's 3", len(e.bucketLedger("").Edges))
	}
	e.ok("remove", c, "-i", b, "--conditional-writes", "off")
	if !e.bucketInStep() {
		t.Errorf("after remove: the bucket's ledger holds %v, the local one %v", e.bucketLedger("").Edges, e.ledger().Edges)
	}
}
