package s3up

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"filippo.io/age"

	"github.com/zfs2s3/zfs2s3/internal/testbed"
	"github.com/zfs2s3/zfs2s3/ledger"
	"github.com/zfs2s3/zfs2s3/transform"
)

// hostCompletes stands for a backup host's AWS policy (zfs2s3 policy
// host): a CompleteMultipartUpload without If-None-Match: * is denied, so
// an object is never overwritten. It records each completion by key.
type hostCompletes struct {
	bucket string
	mu     sync.Mutex
	seen   map[string][]string // key: the If-None-Match of each completion
	reset  string              // completions of this key get a cut connection
}

func (h *hostCompletes) rule(r *http.Request) testbed.Fault {
	if !testbed.IsComplete(r) {
		return testbed.Fault{}
	}
	key := strings.TrimPrefix(r.URL.Path, "/"+h.bucket+"/")
	inm := r.Header.Get("If-None-Match")
	h.mu.Lock()
	defer h.mu.Unlock()
	h.seen[key] = append(h.seen[key], inm)
	switch {
	case key == h.reset:
		return testbed.Fault{Reset: true}
	case inm != "*":
		return testbed.S3Error(http.StatusForbidden, "AccessDenied", "explicit deny: s3:if-none-match is required")
	}
	return testbed.Fault{}
}

func (h *hostCompletes) take(key string) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.seen[key]
	h.seen = map[string][]string{}
	return s
}

// segmentBed is a transformed upload to MinIO through a proxy that acts as
// a host's policy, with the state saved as a state file would hold it.
type segmentBed struct {
	t     *testing.T
	c     *Client
	proxy *testbed.Proxy
	host  *hostCompletes
	id    *age.X25519Identity
	data  []byte
	saved Upload
	// crash, when set, fails the save it returns true for, once, as if the
	// process died before that state reached the disk.
	crash func(*Upload) bool
}

const (
	testSegmentSize = 11 << 20 // three parts of MinPartSize and a bit
	testKey         = "seg/a.zfs"
)

func newSegmentBed(t *testing.T) *segmentBed {
	testbed.Require(t, "MinIO", minio.err)
	t.Setenv("AWS_MAX_ATTEMPTS", "1") // a cut completion fails at once
	p := testbed.StartProxy(t, minio.Endpoint)
	b := &segmentBed{t: t, proxy: p}
	b.c = newBucket(t, p)
	b.host = &hostCompletes{bucket: b.c.Bucket(), seen: map[string][]string{}}
	p.SetRule(b.host.rule)
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	b.id = id
	b.data = randomBytes(t, 2*testSegmentSize+12345)
	b.saved = Upload{Key: testKey, PartSize: MinPartSize, Transformed: true}
	return b
}

// run runs (or resumes) the upload from the saved state.
func (b *segmentBed) run() (transform.Result, error) {
	b.t.Helper()
	enc, err := transform.NewEncoder(transform.Spec{Encrypt: true}, []age.Recipient{b.id.Recipient()})
	if err != nil {
		b.t.Fatal(err)
	}
	defer enc.Close()
	up := &Uploader{Client: b.c, Concurrency: 2, Save: func(u *Upload) error {
		if b.crash != nil && b.crash(u) {
			b.crash = nil
			return errors.New("simulated crash before the state reached the disk")
		}
		b.saved = persist(b.t, u)
		return nil
	}}
	u := persist(b.t, &b.saved)
	seg := &transform.Segmenter{Encoder: enc, Size: testSegmentSize}
	return up.RunSegments(context.Background(), &u, seg, func() (Source, error) {
		return source{Reader: bytes.NewReader(b.data)}, nil
	})
}

// crashAfterComplete fails the save that records segment 0 as done: the
// object is completed, the state on disk still has it finishing.
func (b *segmentBed) crashAfterComplete() {
	b.t.Helper()
	b.crash = func(u *Upload) bool { return len(u.Done) == 1 }
	if _, err := b.run(); err == nil {
		b.t.Fatal("the upload went on after the crash")
	}
	if b.saved.Finishing == nil || len(b.saved.Done) != 0 || len(b.saved.Parts) != 3 || b.saved.UploadID == "" {
		b.t.Fatalf("state after the crash: finishing %v, %d done, %d parts, upload id %q; want segment 0 finishing with its 3 parts",
			b.saved.Finishing, len(b.saved.Done), len(b.saved.Parts), b.saved.UploadID)
	}
}

// restored reads the stream back from the bucket, checking every digest.
func (b *segmentBed) restored(res transform.Result) []byte {
	b.t.Helper()
	var out bytes.Buffer
	for i, r := range res.Segments {
		key := ledger.SegmentKey(testKey, i)
		obj := b.c.Open(context.Background(), key, r.StoredBytes)
		sr, err := transform.NewSegmentReader(obj, transform.Spec{Encrypt: true}, []age.Identity{b.id}, transform.Expect{Record: r, PartSize: MinPartSize})
		if err != nil {
			b.t.Fatalf("%s: %v", key, err)
		}
		if _, err := io.Copy(&out, sr); err != nil {
			b.t.Fatalf("%s: %v", key, err)
		}
		sr.Close()
		obj.Close()
	}
	return out.Bytes()
}

// finishes resumes the upload and checks that it completes, that segment
// 0 is the object that was there (or completed from the saved parts), and
// that the stream reads back as uploaded.
func (b *segmentBed) finishes(wantCompletes []string) {
	b.t.Helper()
	rec := *b.saved.Finishing
	b.host.take(testKey)
	res, err := b.run()
	if err != nil {
		b.t.Fatalf("resume: %v", err)
	}
	if got := b.host.take(testKey); strings.Join(got, ",") != strings.Join(wantCompletes, ",") {
		b.t.Errorf("completions of segment 0 on resume: If-None-Match %q, want %q", got, wantCompletes)
	}
	if len(res.Segments) != 3 || res.Segments[0] != rec {
		b.t.Fatalf("resumed upload: %d segments, segment 0 %+v; want 3, segment 0 as it was being completed: %+v", len(res.Segments), res.Segments[0], rec)
	}
	if !b.saved.Completing || b.saved.Finishing != nil || len(b.saved.Done) != 3 {
		b.t.Errorf("state after the resume: completing %v, finishing %v, %d done", b.saved.Completing, b.saved.Finishing, len(b.saved.Done))
	}
	if got := b.restored(res); !bytes.Equal(got, b.data) {
		b.t.Errorf("restored %d bytes that differ from the %d uploaded", len(got), len(b.data))
	}
	if ids, err := b.c.MultipartUploads(context.Background(), testKey); err != nil || len(ids) != 0 {
		b.t.Errorf("multipart uploads left at segment 0: %v (%v)", ids, err)
	}
}

// TestSegmentCompletedBeforeCrashIsAdopted: a crash after segment 0's
// CompleteMultipartUpload and before the state recorded it as done must
// not wedge the upload. The resume recognises the object (by its
// multipart ETag, or, where the store makes ETags otherwise, by reading it
// back) and adopts it: no completion at its key, so no overwrite, which a
// host may not do; the stream restores as uploaded.
func TestSegmentCompletedBeforeCrashIsAdopted(t *testing.T) {
	for _, plainETags := range []bool{false, true} {
		name := "md5 etags"
		if plainETags {
			name = "other etags"
		}
		t.Run(name, func(t *testing.T) {
			b := newSegmentBed(t)
			b.proxy.SetQuirks(testbed.Quirks{PlainMultipartETag: plainETags})
			b.crashAfterComplete()
			before, err := b.c.Head(context.Background(), testKey)
			if err != nil {
				t.Fatalf("segment 0 after the crash: %v", err)
			}
			b.finishes(nil)
			if got := b.c.Caps().ETagNotMD5; got != plainETags {
				t.Errorf("learned that ETags are not MD5-based: %v, want %v (segment 0 read back only where they are not)", got, plainETags)
			}
			after, err := b.c.Head(context.Background(), testKey)
			if err != nil || after.ETag != before.ETag || !after.LastModified.Equal(before.LastModified) {
				t.Errorf("segment 0 changed on resume: ETag %s at %v, before %s at %v (%v)", after.ETag, after.LastModified, before.ETag, before.LastModified, err)
			}
		})
	}
}

// TestSegmentCompletionLostIsCompletedAgain: segment 0's completion never
// reached the store (cut connections); the resume completes the saved
// parts, with If-None-Match: *, instead of encrypting the segment again.
func TestSegmentCompletionLostIsCompletedAgain(t *testing.T) {
	b := newSegmentBed(t)
	b.host.reset = testKey
	if _, err := b.run(); err == nil {
		t.Fatal("the upload went on without completing segment 0")
	}
	if b.saved.Finishing == nil || b.saved.UploadID == "" {
		t.Fatalf("state after the failed completion: finishing %v, upload id %q", b.saved.Finishing, b.saved.UploadID)
	}
	if _, err := b.c.Head(context.Background(), testKey); !errors.Is(err, ErrNotFound) {
		t.Fatalf("segment 0 exists after its completion was cut: %v", err)
	}
	b.host.reset = ""
	parts := b.saved.Parts
	b.finishes([]string{"*"})
	if obj, err := b.c.Head(context.Background(), testKey); err != nil || obj.ETag != MultipartETag(parts) {
		t.Errorf("segment 0 is not made of the parts uploaded before: ETag %s (%v)", obj.ETag, err)
	}
}

// TestSegmentNeitherCompletedNorCompletableIsRedone: with the object
// absent and the multipart upload gone (aborted, or expired by a lifecycle
// rule), the segment is encrypted and uploaded again.
func TestSegmentNeitherCompletedNorCompletableIsRedone(t *testing.T) {
	b := newSegmentBed(t)
	b.host.reset = testKey
	if _, err := b.run(); err == nil {
		t.Fatal("the upload went on without completing segment 0")
	}
	if err := b.c.Abort(context.Background(), testKey, b.saved.UploadID); err != nil {
		t.Fatal(err)
	}
	b.host.reset = ""
	old := *b.saved.Finishing
	b.host.take(testKey)
	res, err := b.run()
	if err != nil {
		t.Fatalf("resume: %v", err)
	}
	if got := b.host.take(testKey); len(got) != 1 || got[0] != "*" {
		t.Errorf("completions of segment 0 on resume: If-None-Match %q, want one with *", got)
	}
	if len(res.Segments) != 3 || res.Segments[0].PlainSHA256 != old.PlainSHA256 || res.Segments[0].StoredSHA256 == old.StoredSHA256 {
		t.Errorf("segment 0 after the resume: %+v; want it encrypted again (before: %+v)", res.Segments[0], old)
	}
	if got := b.restored(res); !bytes.Equal(got, b.data) {
		t.Errorf("restored %d bytes that differ from the %d uploaded", len(got), len(b.data))
	}
}

// TestSegmentKeyHoldingOtherBytesFailsClearly: an object at the key of the
// segment being completed that is not that segment is never overwritten;
// the resume fails naming the key.
func TestSegmentKeyHoldingOtherBytesFailsClearly(t *testing.T) {
	b := newSegmentBed(t)
	b.host.reset = testKey
	if _, err := b.run(); err == nil {
		t.Fatal("the upload went on without completing segment 0")
	}
	b.host.reset = ""
	other := randomBytes(t, 1000)
	if err := b.c.Put(context.Background(), testKey, other, nil); err != nil {
		t.Fatal(err)
	}
	before, err := b.c.Head(context.Background(), testKey)
	if err != nil {
		t.Fatal(err)
	}
	b.host.take(testKey)
	_, err = b.run()
	if !errors.Is(err, ErrObjectLost) || !strings.Contains(err.Error(), `"`+testKey+`"`) {
		t.Fatalf("resume with other bytes at the key: %v; want ErrObjectLost naming %q", err, testKey)
	}
	if got := b.host.take(testKey); len(got) != 0 {
		t.Errorf("completions of segment 0 on resume: %q, want none", got)
	}
	if after, err := b.c.Head(context.Background(), testKey); err != nil || after.ETag != before.ETag {
		t.Errorf("the object at the key changed: ETag %s, before %s (%v)", after.ETag, before.ETag, err)
	}
	if b.saved.Finishing == nil || b.saved.UploadID == "" {
		t.Errorf("the failed resume changed the state: finishing %v, upload id %q", b.saved.Finishing, b.saved.UploadID)
	}
}
