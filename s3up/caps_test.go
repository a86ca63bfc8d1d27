package s3up

// Stores that answer differently from S3, reproduced by the proxy on top of
// MinIO: zfs2s3 must cross-check what they say, not take it as given.

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/zfs2s3/zfs2s3/internal/testbed"
)

// quirkyBucket is a fresh bucket behind a proxy answering with q.
func quirkyBucket(t *testing.T, q testbed.Quirks) (*Client, *testbed.Proxy) {
	t.Helper()
	p := testbed.StartProxy(t, minio.Endpoint)
	c := newBucket(t, p)
	q.Backend = minio.Client()
	p.SetQuirks(q)
	return c, p
}

// TestQuotedIfMatchRefusedIsSentUnquoted: Ceph RGW 16 answers 412 to a
// quoted If-Match however the object's ETag is. The object's ETag still
// matches on HEAD, so the write is sent again unquoted, and that is learnt.
func TestQuotedIfMatchRefusedIsSentUnquoted(t *testing.T) {
	c, _ := quirkyBucket(t, testbed.Quirks{QuotedIfMatch412: true})
	ctx := context.Background()
	etag, err := c.PutIf(ctx, "ledger", []byte("1"), nil, "")
	if err != nil {
		t.Fatal(err)
	}
	for i := 2; i <= 3; i++ {
		if etag, err = c.PutIf(ctx, "ledger", []byte{byte('0' + i)}, nil, etag); err != nil {
			t.Fatalf("write %d over an unchanged object: %v", i, err)
		}
	}
	if got := c.bytesOf(t, "ledger"); string(got) != "3" {
		t.Errorf("object holds %q, want 3", got)
	}
	if caps := c.Caps(); !caps.IfMatchUnquoted || caps.NoConditionalWrites {
		t.Errorf("caps = %+v, want if-match-unquoted only", caps)
	}
	// A real change is still a conflict.
	if err := c.Put(ctx, "ledger", []byte("other"), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := c.PutIf(ctx, "ledger", []byte("4"), nil, etag); !errors.Is(err, ErrChanged) {
		t.Errorf("write over a changed object = %v, want ErrChanged", err)
	}
}

// TestStoreWithoutConditionalWritesIsNamed: a store that refuses any
// If-Match with 412 is reported as lacking conditional writes, not as a
// concurrent change.
func TestStoreWithoutConditionalWritesIsNamed(t *testing.T) {
	p := testbed.StartProxy(t, minio.Endpoint)
	c := newBucket(t, p)
	p.SetRule(func(r *http.Request) testbed.Fault {
		if r.Method == http.MethodPut && r.Header.Get("If-Match") != "" {
			return testbed.S3Error(http.StatusPreconditionFailed, "PreconditionFailed", "no")
		}
		return testbed.Fault{}
	})
	ctx := context.Background()
	etag, err := c.PutIf(ctx, "ledger", []byte("1"), nil, "")
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.PutIf(ctx, "ledger", []byte("2"), nil, etag)
	if !errors.Is(err, ErrNoConditionalWrites) || errors.Is(err, ErrChanged) {
		t.Fatalf("PutIf on a store without If-Match = %v, want ErrNoConditionalWrites", err)
	}
	if !c.Caps().NoConditionalWrites {
		t.Error("caps do not record the missing conditional writes")
	}
}

// TestListUploadsNotFoundIsAnEmptyListing: rclone serve s3 answers
// ListMultipartUploads on a bucket that never had one with 404 NoSuchUpload.
func TestListUploadsNotFoundIsAnEmptyListing(t *testing.T) {
	c, _ := quirkyBucket(t, testbed.Quirks{ListUploadsNotFound: true})
	ups, err := c.AllMultipartUploads(context.Background(), "")
	if err != nil || len(ups) != 0 {
		t.Fatalf("AllMultipartUploads = %v, %v; want an empty listing", ups, err)
	}
	if n, err := c.AbortAll(context.Background(), "k"); err != nil || n != 0 {
		t.Fatalf("AbortAll = %d, %v", n, err)
	}
	if !c.Caps().ListUploadsNotFound {
		t.Error("caps do not record the quirk")
	}
}

// hangComplete uploads data into u through a proxy that lets MinIO complete
// the upload and never answers, then stops the upload: a crash right after
// CompleteMultipartUpload. u is left as the last save left it.
func hangComplete(t *testing.T, c *Client, p *testbed.Proxy, u *Upload, data []byte) {
	t.Helper()
	p.SetRule(func(r *http.Request) testbed.Fault { return testbed.Fault{Hang: testbed.IsComplete(r)} })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	up := &Uploader{Client: c, Concurrency: 2, Save: func(s *Upload) error {
		mu.Lock()
		*u = persist(t, s)
		mu.Unlock()
		return nil
	}}
	done := make(chan error, 1)
	go func() {
		cp := persist(t, u)
		_, err := up.Run(ctx, &cp, func() (Source, error) { return source{Reader: bytes.NewReader(data)}, nil })
		done <- err
	}()
	select {
	case <-p.Hung:
	case err := <-done:
		t.Fatalf("upload ended (%v) before CompleteMultipartUpload", err)
	case <-time.After(time.Minute):
		t.Fatal("CompleteMultipartUpload never came")
	}
	cancel() // the crash
	<-done
	p.SetRule(nil)
	mu.Lock()
	defer mu.Unlock()
	if !u.Completing {
		t.Fatal("state not saved as completing")
	}
}

// TestNonMD5ETagsAreCheckedBySHA256: rclone's and versitygw's multipart
// ETags are not MD5-of-MD5s (and versitygw's part ETags not hex), so after a
// crash right after CompleteMultipartUpload the object is read back and
// checked against the SHA-256 recorded at upload, not refused for its ETag;
// an object whose bytes differ is still refused.
func TestNonMD5ETagsAreCheckedBySHA256(t *testing.T) {
	for _, q := range []testbed.Quirks{{PlainMultipartETag: true}, {PlainMultipartETag: true, NonHexPartETags: true}} {
		name := "rclone"
		if q.NonHexPartETags {
			name = "versitygw"
		}
		t.Run(name, func(t *testing.T) {
			c, p := quirkyBucket(t, q)
			data := randomBytes(t, 3*MinPartSize+11)
			u := &Upload{Key: "crash", PartSize: MinPartSize}
			hangComplete(t, c, p, u, data)
			saved := *u
			res, err := run(t, c, u, source{Reader: bytes.NewReader(data)})
			if err != nil {
				t.Fatalf("resume after a crash after complete: %v", err)
			}
			if res.SHA256 != streamDigest(data) || !c.Caps().ETagNotMD5 {
				t.Errorf("result %+v, caps %+v", res, c.Caps())
			}
			// Same size, other bytes: refused, whatever the ETag.
			other := bytes.Clone(data)
			other[len(other)/2] ^= 1
			if _, err := minio.Client().PutObject(context.Background(), &s3.PutObjectInput{Bucket: &c.bucket, Key: ptr("crash"), Body: bytes.NewReader(other)}); err != nil {
				t.Fatal(err)
			}
			*u = saved
			if _, err := run(t, c, u, source{Reader: bytes.NewReader(data)}); err == nil || !strings.Contains(err.Error(), "does not hold what was uploaded") {
				t.Errorf("resume over an object with other bytes = %v, want a refusal", err)
			}
		})
	}
}

// TestEmptyListPartsMeansGoneOrCompleted: SeaweedFS answers ListParts on a
// completed or aborted upload with no parts. A completed one is verified
// and recorded; an aborted one is started again cleanly, never uploaded into.
func TestEmptyListPartsMeansGoneOrCompleted(t *testing.T) {
	c, p := quirkyBucket(t, testbed.Quirks{EmptyListPartsWhenGone: true})
	data := randomBytes(t, 3*MinPartSize+5)
	u := &Upload{Key: "done", PartSize: MinPartSize}
	hangComplete(t, c, p, u, data)
	opened := false
	up := &Uploader{Client: c, Concurrency: 2, Save: func(*Upload) error { return nil }}
	cp := persist(t, u)
	res, err := up.Run(context.Background(), &cp, func() (Source, error) {
		opened = true
		return source{Reader: bytes.NewReader(data)}, nil
	})
	if err != nil || opened || res.SHA256 != streamDigest(data) {
		t.Fatalf("resume of a completed upload: %+v, %v, zfs send re-run %v; want it recorded as is", res, err, opened)
	}
	if !c.Caps().ListPartsEmptyWhenGone {
		t.Error("caps do not record the quirk")
	}

	gone := &Upload{Key: "gone", PartSize: MinPartSize}
	run(t, c, gone, source{Reader: failAfter(data, 2*MinPartSize+1)})
	if len(gone.Parts) != 2 {
		t.Fatalf("saved %d parts, want 2", len(gone.Parts))
	}
	if err := c.Abort(context.Background(), "gone", gone.UploadID); err != nil {
		t.Fatal(err)
	}
	old := gone.UploadID
	if _, err := run(t, c, gone, source{Reader: bytes.NewReader(data)}); err != nil {
		t.Fatalf("resume of an aborted upload: %v", err)
	}
	if gone.UploadID == old || !bytes.Equal(c.bytesOf(t, "gone"), data) {
		t.Errorf("upload id %s (was %s); want a new upload holding the stream", gone.UploadID, old)
	}
}

// TestUnechoedChecksumFallsBackToMD5: Ceph RGW and rclone accept
// x-amz-checksum-crc32c and ignore it (nothing echoed). The part is sent
// again with Content-MD5, and so are all later ones.
func TestUnechoedChecksumFallsBackToMD5(t *testing.T) {
	c, p := quirkyBucket(t, testbed.Quirks{NoChecksumEcho: true})
	var mu sync.Mutex
	var withMD5, without int
	p.SetRule(func(r *http.Request) testbed.Fault {
		if testbed.IsUploadPart(r) {
			mu.Lock()
			if r.Header.Get("Content-Md5") != "" {
				withMD5++
			} else {
				without++
			}
			mu.Unlock()
		}
		return testbed.Fault{}
	})
	data := randomBytes(t, 4*MinPartSize)
	u := &Upload{Key: "md5", PartSize: MinPartSize}
	up := &Uploader{Client: c, Concurrency: 1, Save: func(s *Upload) error { *u = persist(t, s); return nil }}
	cp := persist(t, u)
	if _, err := up.Run(context.Background(), &cp, func() (Source, error) { return source{Reader: bytes.NewReader(data)}, nil }); err != nil {
		t.Fatal(err)
	}
	if !c.Caps().ChecksumNotEchoed || without != 1 || withMD5 != 4 {
		t.Errorf("caps %+v, %d parts sent without Content-MD5, %d with; want 1 (the probe) and 4", c.Caps(), without, withMD5)
	}
	if !bytes.Equal(c.bytesOf(t, "md5"), data) {
		t.Error("object differs from the stream")
	}
}

// TestConditionalWriteAnswersThatAreNotAMisCompare: a store that does not
// implement conditional writes is named, and no unconditional write
// follows (it could overwrite another machine's ledger copy); a 409 is a
// change by someone else, and teaches nothing about the store.
func TestConditionalWriteAnswersThatAreNotAMisCompare(t *testing.T) {
	for _, tt := range []struct {
		name   string
		status int
		code   string
		want   error
	}{
		{"not implemented", http.StatusNotImplemented, "NotImplemented", ErrNoConditionalWrites},
		{"conflict", http.StatusConflict, "ConditionalRequestConflict", ErrChanged},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var puts atomic.Int32
			refuse := s3Error(tt.status, tt.code, "no")
			c := cannedClient(t, "us-east-1", func(w http.ResponseWriter, r *http.Request) {
				if r.Method == http.MethodPut {
					puts.Add(1)
				}
				refuse(w, r)
			})
			_, err := c.PutIf(context.Background(), "k", []byte("x"), nil, "etag")
			if !errors.Is(err, tt.want) {
				t.Errorf("PutIf = %v, want %v", err, tt.want)
			}
			if n := puts.Load(); n != 1 {
				t.Errorf("%d PUTs, want 1 (no unconditional write after the refusal)", n)
			}
			if c.Caps().IfMatchUnquoted {
				t.Error("learnt to send If-Match unquoted")
			}
		})
	}
}
