package s3up

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/s3"
	"gopkg.in/yaml.v3"

	"github.com/zfs2s3/zfs2s3/internal/testbed"
	"github.com/zfs2s3/zfs2s3/ledger"
	"github.com/zfs2s3/zfs2s3/transform"
)

var minio struct {
	*testbed.MinIO
	err error
	n   atomic.Int32
}

func TestMain(m *testing.M) {
	minio.MinIO, minio.err = testbed.StartMinIO()
	code := m.Run()
	if minio.MinIO != nil {
		minio.Stop()
	}
	os.Exit(code)
}

// newBucket returns a client for a fresh bucket, optionally through a proxy.
func newBucket(t testing.TB, proxy *testbed.Proxy) *Client {
	t.Helper()
	testbed.Require(t, "MinIO", minio.err)
	bucket := fmt.Sprintf("s3up-%d", minio.n.Add(1))
	if err := minio.CreateBucket(context.Background(), bucket); err != nil {
		t.Fatal(err)
	}
	for _, kv := range [][2]string{{"AWS_ACCESS_KEY_ID", minio.User}, {"AWS_SECRET_ACCESS_KEY", minio.Password}, {"AWS_EC2_METADATA_DISABLED", "true"}} {
		t.Setenv(kv[0], kv[1])
	}
	endpoint := minio.Endpoint
	if proxy != nil {
		endpoint = proxy.URL
	}
	c, err := NewClient(context.Background(), Config{Bucket: bucket, Endpoint: endpoint, Region: "us-east-1"})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// source is a stream with a chosen outcome for Wait.
type source struct {
	io.Reader
	err error
}

func (s source) Wait() error  { return s.err }
func (s source) Close() error { return nil }

func randomBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func shaHex(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

// partDigests makes the uploads of the tests PartDigests ones (persist sets
// it): TestPartDigests runs them so; alone they run as uploads an earlier
// release began, which must stay resumable.
var partDigests bool

// streamDigest is what Result.SHA256 must be for data uploaded in parts of
// MinPartSize (the tests' part size) in the current mode.
func streamDigest(data []byte) string {
	if !partDigests {
		return shaHex(data)
	}
	h := transform.NewStoredHash(MinPartSize)
	h.Write(data)
	return h.Sum()
}

// persist copies u as a state file on disk would hold it.
func persist(t *testing.T, u *Upload) Upload {
	b, err := yaml.Marshal(u)
	if err != nil {
		t.Fatal(err)
	}
	var c Upload
	if err := yaml.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	if partDigests && !c.Transformed {
		c.PartDigests = true
	}
	return c
}

// run uploads data into u and leaves in u what Save saved last.
func run(t *testing.T, c *Client, u *Upload, src Source) (Result, error) {
	t.Helper()
	up := &Uploader{Client: c, Concurrency: 3, Save: func(s *Upload) error { *u = persist(t, s); return nil }}
	cp := persist(t, u)
	return up.Run(context.Background(), &cp, func() (Source, error) { return src, nil })
}

func (c *Client) bytesOf(t *testing.T, key string) []byte {
	t.Helper()
	b, _, err := c.ReadAll(context.Background(), key, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestUploadStoresExactBytes(t *testing.T) {
	c := newBucket(t, nil)
	for i, size := range []int{0, 1, MinPartSize, 3*MinPartSize + 17, 2 * MinPartSize} {
		sum := Checksums[i%len(Checksums)]
		t.Run(fmt.Sprint(size, sum), func(t *testing.T) {
			data := randomBytes(t, size)
			u := &Upload{Key: fmt.Sprintf("obj-%d", size), PartSize: MinPartSize, Checksum: sum, Metadata: map[string]string{"zfs2s3-format": "1"}}
			res, err := run(t, c, u, source{Reader: bytes.NewReader(data)})
			if err != nil {
				t.Fatal(err)
			}
			if res.Bytes != int64(size) || res.SHA256 != streamDigest(data) {
				t.Errorf("result %+v, want %d bytes sha %s", res, size, streamDigest(data))
			}
			if got := c.bytesOf(t, u.Key); !bytes.Equal(got, data) {
				t.Errorf("object has %d bytes, differs from the %d sent", len(got), size)
			}
			obj, err := c.Head(context.Background(), u.Key)
			if err != nil || obj.ETag != MultipartETag(u.Parts) || obj.Metadata["zfs2s3-format"] != "1" {
				t.Errorf("head = %+v, %v; want ETag %s and metadata", obj, err, MultipartETag(u.Parts))
			}
		})
	}
}

func TestFailedSourceNeverCompletes(t *testing.T) {
	c := newBucket(t, nil)
	data := randomBytes(t, 2*MinPartSize+5)
	u := &Upload{Key: "cut", PartSize: MinPartSize}
	_, err := run(t, c, u, source{Reader: bytes.NewReader(data), err: errors.New("zfs send: signal: killed")})
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("signal: killed")) {
		t.Fatalf("Run with a failed zfs send = %v, want its error", err)
	}
	if _, err := c.Head(context.Background(), "cut"); !errors.Is(err, ErrNotFound) {
		t.Errorf("object exists after a failed zfs send (head: %v)", err)
	}
	if ids, _ := c.MultipartUploads(context.Background(), "cut"); len(ids) != 1 || ids[0] != u.UploadID {
		t.Errorf("multipart uploads %v, want the saved one %s kept for resume", ids, u.UploadID)
	}
	// The short tail a killed zfs send leaves is never saved as a part, so
	// a resume with the whole stream goes through.
	for _, p := range u.Parts {
		if p.Size != MinPartSize {
			t.Errorf("saved part %d of %d bytes from a failed stream", p.Number, p.Size)
		}
	}
	if _, err := run(t, c, u, source{Reader: bytes.NewReader(data)}); err != nil {
		t.Fatalf("resume after a failed zfs send: %v", err)
	}
	if got := c.bytesOf(t, "cut"); !bytes.Equal(got, data) {
		t.Error("resumed object differs from the stream")
	}
}

// failAfter reads n bytes of data, then fails as a cut network or pipe would.
func failAfter(data []byte, n int) io.Reader {
	return io.MultiReader(bytes.NewReader(data[:n]), errReader{})
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("connection reset") }

func TestResumeUploadsOnlyMissingPartsAndVerifiesTheRest(t *testing.T) {
	proxy := testbed.StartProxy(t, minio.Endpoint)
	var puts atomic.Int32
	proxy.SetRule(func(r *http.Request) testbed.Fault {
		if testbed.IsUploadPart(r) {
			puts.Add(1)
		}
		return testbed.Fault{}
	})
	c := newBucket(t, proxy)
	data := randomBytes(t, 5*MinPartSize+3)
	u := &Upload{Key: "resume", PartSize: MinPartSize}
	if _, err := run(t, c, u, source{Reader: failAfter(data, 2*MinPartSize+10)}); err == nil {
		t.Fatal("Run over a failing reader succeeded")
	}
	if len(u.Parts) != 2 {
		t.Fatalf("saved %d parts, want 2", len(u.Parts))
	}
	// A different stream is refused before anything is completed.
	changed := bytes.Clone(data)
	changed[MinPartSize+7] ^= 1
	saved := *u
	if _, err := run(t, c, u, source{Reader: bytes.NewReader(changed)}); !errors.Is(err, ErrStreamChanged) {
		t.Fatalf("resume with a changed stream = %v, want ErrStreamChanged", err)
	}
	if _, err := c.Head(context.Background(), "resume"); !errors.Is(err, ErrNotFound) {
		t.Fatal("a changed stream completed the object")
	}
	*u = saved
	puts.Store(0)
	res, err := run(t, c, u, source{Reader: bytes.NewReader(data)})
	if err != nil {
		t.Fatal(err)
	}
	if n := puts.Load(); n > 4 {
		t.Errorf("resume sent %d parts, want at most the 4 missing", n)
	}
	if got := c.bytesOf(t, "resume"); !bytes.Equal(got, data) || res.SHA256 != streamDigest(data) {
		t.Errorf("resumed object differs from the stream")
	}
}

func TestResumeRestartsAnUploadTheServerLost(t *testing.T) {
	c := newBucket(t, nil)
	data := randomBytes(t, 2*MinPartSize+1)
	u := &Upload{Key: "lost", PartSize: MinPartSize}
	run(t, c, u, source{Reader: failAfter(data, MinPartSize+1)})
	if err := c.Abort(context.Background(), "lost", u.UploadID); err != nil { // as a lifecycle rule would
		t.Fatal(err)
	}
	if _, err := run(t, c, u, source{Reader: bytes.NewReader(data)}); err != nil {
		t.Fatal(err)
	}
	if got := c.bytesOf(t, "lost"); !bytes.Equal(got, data) {
		t.Error("object differs from the stream")
	}
}

func TestUntrackedUploadIsAbortedBeforeCreating(t *testing.T) {
	c := newBucket(t, nil)
	// A crash right after CreateMultipartUpload leaves an upload whose id was never saved.
	_, err := c.s3.CreateMultipartUpload(context.Background(), &s3.CreateMultipartUploadInput{Bucket: &c.bucket, Key: ptr("orphan")})
	if err != nil {
		t.Fatal(err)
	}
	u := &Upload{Key: "orphan", PartSize: MinPartSize}
	if _, err := run(t, c, u, source{Reader: bytes.NewReader([]byte("x"))}); err != nil {
		t.Fatal(err)
	}
	if ids, _ := c.MultipartUploads(context.Background(), "orphan"); len(ids) != 0 {
		t.Errorf("untracked multipart uploads left: %v", ids)
	}
}

func ptr(s string) *string { return &s }

// TestServerRejectsACorruptedPart flips a byte of a part on the wire: with
// every checksum choice the server refuses it (over plain HTTP the SigV4
// payload hash catches it even with none), and a resume stores exact bytes.
func TestServerRejectsACorruptedPart(t *testing.T) {
	proxy := testbed.StartProxy(t, minio.Endpoint)
	c := newBucket(t, proxy)
	for _, sum := range Checksums {
		t.Run(sum, func(t *testing.T) {
			proxy.SetRule(testbed.Every(1, 1, testbed.IsUploadPart, testbed.Fault{Corrupt: true}))
			data := randomBytes(t, 2*MinPartSize)
			u := &Upload{Key: "corrupt-" + sum, PartSize: MinPartSize, Checksum: sum}
			_, err := run(t, c, u, source{Reader: bytes.NewReader(data)})
			if err == nil {
				t.Fatal("the server accepted a corrupted part")
			}
			t.Logf("rejected: %.300s", err)
			if !errors.Is(err, ErrTransient) {
				t.Errorf("a part corrupted on the wire is not a transient error, so the upload would be abandoned: %v", err)
			}
			proxy.SetRule(nil)
			if _, err := run(t, c, u, source{Reader: bytes.NewReader(data)}); err != nil {
				t.Fatal(err)
			}
			if got := c.bytesOf(t, u.Key); !bytes.Equal(got, data) {
				t.Error("stored object differs from the stream")
			}
		})
	}
}

// concat reads the objects an upload made, in order.
func (c *Client) concat(t *testing.T, u *Upload) []byte {
	t.Helper()
	var all []byte
	for _, k := range u.Keys() {
		all = append(all, c.bytesOf(t, k)...)
	}
	return all
}

// TestStreamContinuesInFurtherObjects lowers the 10,000-part limit to 2:
// a stream that outgrows one object continues in KEY.2, KEY.3, and one that
// ends exactly at an object's end adds no empty object.
func TestStreamContinuesInFurtherObjects(t *testing.T) {
	c := newBucket(t, nil)
	for _, tt := range []struct {
		size    int
		objects []int64
	}{
		{5*MinPartSize + 3, []int64{2 * MinPartSize, 2 * MinPartSize, MinPartSize + 3}},
		{4 * MinPartSize, []int64{2 * MinPartSize, 2 * MinPartSize}},
		{2*MinPartSize + 1, []int64{2 * MinPartSize, 1}},
	} {
		t.Run(fmt.Sprint(tt.size), func(t *testing.T) {
			data := randomBytes(t, tt.size)
			u := &Upload{Key: fmt.Sprintf("multi-%d", tt.size), PartSize: MinPartSize, PartsPerObject: 2}
			res, err := run(t, c, u, source{Reader: bytes.NewReader(data)})
			if err != nil {
				t.Fatal(err)
			}
			if res.Bytes != int64(tt.size) || res.SHA256 != streamDigest(data) {
				t.Errorf("result %+v, want %d bytes sha %s", res, tt.size, streamDigest(data))
			}
			var sizes []int64
			for i, k := range u.Keys() {
				if k != ledger.SegmentKey(u.Key, i) {
					t.Errorf("object %d is %s, want %s", i, k, ledger.SegmentKey(u.Key, i))
				}
				obj, err := c.Head(context.Background(), k)
				if err != nil {
					t.Fatal(err)
				}
				sizes = append(sizes, obj.Size)
			}
			if fmt.Sprint(sizes) != fmt.Sprint(tt.objects) {
				t.Errorf("object sizes %v, want %v", sizes, tt.objects)
			}
			if got := c.concat(t, u); !bytes.Equal(got, data) {
				t.Error("the objects together differ from the stream")
			}
			segs := u.Segments()
			if len(segs) != len(tt.objects)-1 || len(segs) > 0 && segs[len(segs)-1].Bytes != tt.objects[len(tt.objects)-1] {
				t.Errorf("segments %+v for objects %v", segs, tt.objects)
			}
			if ups, _ := c.AllMultipartUploads(context.Background(), ""); len(ups) != 0 {
				t.Errorf("multipart uploads left: %v", ups)
			}
		})
	}
}

// TestResumeAcrossObjects interrupts a three-object upload at points
// before, at and after object boundaries, including a crash between
// recording an object as full and completing it; each resume ends with the
// stream stored exactly, and a changed stream is refused.
func TestResumeAcrossObjects(t *testing.T) {
	c := newBucket(t, nil)
	data := randomBytes(t, 5*MinPartSize+3)
	for _, cut := range []int{MinPartSize + 1, 2 * MinPartSize, 2*MinPartSize + 9, 4*MinPartSize + 1, 5 * MinPartSize} {
		t.Run(fmt.Sprint(cut), func(t *testing.T) {
			u := &Upload{Key: fmt.Sprintf("cut-%d", cut), PartSize: MinPartSize, PartsPerObject: 2}
			if _, err := run(t, c, u, source{Reader: failAfter(data, cut)}); err == nil {
				t.Fatal("Run over a failing reader succeeded")
			}
			if len(u.Full) > 0 {
				changed := bytes.Clone(data)
				changed[7] ^= 1
				cp := persist(t, u)
				if _, err := run(t, c, &cp, source{Reader: bytes.NewReader(changed)}); !errors.Is(err, ErrStreamChanged) {
					t.Fatalf("resume with a stream changed in a full object = %v, want ErrStreamChanged", err)
				}
			}
			if _, err := run(t, c, u, source{Reader: bytes.NewReader(data)}); err != nil {
				t.Fatal(err)
			}
			if got := c.concat(t, u); !bytes.Equal(got, data) {
				t.Error("resumed objects differ from the stream")
			}
		})
	}
	t.Run("crash before completing a full object", func(t *testing.T) {
		u := &Upload{Key: "crash-full", PartSize: MinPartSize, PartsPerObject: 2}
		up := &Uploader{Client: c, Concurrency: 2, Save: func(s *Upload) error {
			*u = *s
			if len(s.Full) == 1 && s.Full[0].UploadID != "" {
				return errors.New("killed")
			}
			return nil
		}}
		cp := persist(t, u)
		if _, err := up.Run(context.Background(), &cp, func() (Source, error) { return source{Reader: bytes.NewReader(data)}, nil }); err == nil {
			t.Fatal("Run went on after its state could not be saved")
		}
		if len(u.Full) != 1 || u.Full[0].UploadID == "" {
			t.Fatalf("state after the crash: %+v", u.Full)
		}
		if _, err := run(t, c, u, source{Reader: bytes.NewReader(data)}); err != nil {
			t.Fatal(err)
		}
		if got := c.concat(t, u); !bytes.Equal(got, data) {
			t.Error("resumed objects differ from the stream")
		}
		if ups, _ := c.AllMultipartUploads(context.Background(), "crash-full"); len(ups) != 0 {
			t.Errorf("multipart uploads left: %v", ups)
		}
	})
}

// TestPayloadSignedUnlessTLSGuardsIt pins what protects a part's bytes.
// Over plain HTTP the SigV4 signature covers them (payload hash signed);
// over HTTPS the SDK sends UNSIGNED-PAYLOAD, TLS guards the transport and
// the checksum S3 verifies (crc32c, md5) catches a part changed on its way,
// such as by the proxy here after TLS. Only --checksum none over HTTPS
// leaves that last case to TLS alone, as README says. With PartDigests the
// part's SHA-256 is at hand, so the payload is signed over HTTPS too, at
// no cost, and a changed part is always refused.
func TestPayloadSignedUnlessTLSGuardsIt(t *testing.T) {
	for _, tt := range []struct {
		tls      bool
		checksum string
		unsigned bool
	}{
		{false, "crc32c", false}, {false, "md5", false},
		{true, "crc32c", true}, {true, "md5", true}, {true, "none", true},
	} {
		t.Run(fmt.Sprintf("tls=%v,%s", tt.tls, tt.checksum), func(t *testing.T) {
			proxy := testbed.StartProxy(t, minio.Endpoint)
			if tt.tls {
				proxy = testbed.StartTLSProxy(t, minio.Endpoint)
			}
			var mu sync.Mutex
			var hashes []string
			proxy.SetRule(func(r *http.Request) testbed.Fault {
				if testbed.IsUploadPart(r) {
					mu.Lock()
					hashes = append(hashes, r.Header.Get("X-Amz-Content-Sha256"))
					mu.Unlock()
				}
				return testbed.Fault{}
			})
			c := newBucket(t, proxy)
			data := randomBytes(t, 2*MinPartSize+1)
			u := &Upload{Key: "signed", PartSize: MinPartSize, Checksum: tt.checksum}
			if _, err := run(t, c, u, source{Reader: bytes.NewReader(data)}); err != nil {
				t.Fatal(err)
			}
			if got := c.bytesOf(t, u.Key); !bytes.Equal(got, data) {
				t.Error("stored object differs from the stream")
			}
			if len(hashes) != 3 {
				t.Errorf("saw %d UploadPart requests, want 3", len(hashes))
			}
			for _, h := range hashes {
				if (h == "UNSIGNED-PAYLOAD") != (tt.unsigned && !partDigests) || h == "" {
					t.Errorf("x-amz-content-sha256 %q, want unsigned=%v", h, tt.unsigned && !partDigests)
				}
			}
			proxy.SetRule(testbed.Every(1, 1, testbed.IsUploadPart, testbed.Fault{Corrupt: true}))
			bad := &Upload{Key: "changed", PartSize: MinPartSize, Checksum: tt.checksum}
			_, err := run(t, c, bad, source{Reader: bytes.NewReader(data)})
			if refused := err != nil; refused != (tt.checksum != "none" || !tt.tls || partDigests) {
				t.Errorf("a part changed after TLS: refused=%v (%v)", refused, err)
			}
			if err != nil && !errors.Is(err, ErrTransient) {
				t.Errorf("a part changed on the wire is not a transient error, so the upload would be abandoned: %v", err)
			}
		})
	}
}

// runKilled runs an upload whose process dies at its k-th Save: before or
// after that state reached the disk (landed). disk holds what a state file
// would. It reports how many Saves the run made.
func runKilled(t *testing.T, c *Client, disk *Upload, data []byte, k int, landed bool, concurrency int) (saves int, err error) {
	var mu sync.Mutex
	dead := false
	up := &Uploader{Client: c, Concurrency: concurrency, Save: func(s *Upload) error {
		mu.Lock()
		defer mu.Unlock()
		if dead {
			return errors.New("killed")
		}
		if saves++; saves == k {
			dead = true
			if landed {
				*disk = persist(t, s)
			}
			return errors.New("killed")
		}
		*disk = persist(t, s)
		return nil
	}}
	u := persist(t, disk)
	_, err = up.Run(context.Background(), &u, func() (Source, error) { return source{Reader: bytes.NewReader(data)}, nil })
	return saves, err
}

// TestKillAtEverySave kills uploads of one, two and three objects at each
// of their state changes, and checks both ways on: resume_upload stores
// exactly the stream, and abort_upload (AbortUpload, then deleting the
// keys) leaves no object and no multipart upload.
func TestKillAtEverySave(t *testing.T) {
	c := newBucket(t, nil)
	ctx := context.Background()
	for _, tc := range []struct{ size, per, concurrency int }{
		{5*MinPartSize + 3, 2, 3}, {4 * MinPartSize, 2, 1}, {2*MinPartSize + 1, 1, 2}, {0, 2, 1},
	} {
		data := randomBytes(t, tc.size)
		for k := 1; ; k++ {
			finished := false
			for _, landed := range []bool{false, true} {
				name := fmt.Sprintf("%d-%d-%d-save%d-landed=%v", tc.size, tc.per, tc.concurrency, k, landed)
				disk := Upload{Key: "resume-" + name, PartSize: MinPartSize, PartsPerObject: tc.per}
				if saves, err := runKilled(t, c, &disk, data, k, landed, tc.concurrency); err == nil && saves < k {
					finished = true // the upload makes fewer than k saves
					break
				}
				if _, err := run(t, c, &disk, source{Reader: bytes.NewReader(data)}); err != nil {
					t.Errorf("%s: resume: %v", name, err)
				} else if got := c.concat(t, &disk); !bytes.Equal(got, data) {
					t.Errorf("%s: resumed objects differ from the stream", name)
				}
				aborted := Upload{Key: "abort-" + name, PartSize: MinPartSize, PartsPerObject: tc.per}
				runKilled(t, c, &aborted, data, k, landed, tc.concurrency)
				if err := c.AbortUpload(ctx, &aborted); err != nil {
					t.Fatal(err)
				}
				for _, key := range aborted.Keys() {
					c.Delete(ctx, key)
				}
				if ups, _ := c.AllMultipartUploads(ctx, "abort-"+name); len(ups) != 0 {
					t.Errorf("%s: abort left multipart uploads %v", name, ups)
				}
				if objs, _ := c.List(ctx, "abort-"+name); len(objs) != 0 {
					t.Errorf("%s: abort left objects %v", name, objs)
				}
			}
			if finished {
				t.Logf("%d bytes, %d parts per object: killed at each of %d saves", tc.size, tc.per, k-1)
				break
			}
		}
	}
	if ups, _ := c.AllMultipartUploads(ctx, ""); len(ups) != 0 {
		t.Errorf("multipart uploads left in the bucket: %d", len(ups))
	}
}

// TestMissingFullObjectIsNeverRecorded deletes the first object of a
// pending three-object upload: the resume refuses to complete it.
func TestMissingFullObjectIsNeverRecorded(t *testing.T) {
	c := newBucket(t, nil)
	data := randomBytes(t, 5*MinPartSize+3)
	u := Upload{Key: "gone", PartSize: MinPartSize, PartsPerObject: 2}
	if _, err := run(t, c, &u, source{Reader: failAfter(data, 4*MinPartSize+1)}); err == nil {
		t.Fatal("Run over a failing reader succeeded")
	}
	if len(u.Full) != 1 {
		t.Fatalf("%d full objects after the cut, want 1", len(u.Full))
	}
	if err := c.Delete(context.Background(), "gone"); err != nil {
		t.Fatal(err)
	}
	_, err := run(t, c, &u, source{Reader: bytes.NewReader(data)})
	if !errors.Is(err, ErrObjectLost) || !strings.Contains(err.Error(), `object "gone" is missing`) {
		t.Fatalf("resume with its first object deleted = %v", err)
	}
	if u.Completing {
		t.Error("the upload was marked completing")
	}
}

// TestPartDigests runs the upload tests again as uploads of this release
// make them (Upload.PartDigests): every part hashed once, by its sender.
func TestPartDigests(t *testing.T) {
	partDigests = true
	defer func() { partDigests = false }()
	for name, test := range map[string]func(*testing.T){
		"StoresExactBytes":           TestUploadStoresExactBytes,
		"FailedSourceNeverCompletes": TestFailedSourceNeverCompletes,
		"Resume":                     TestResumeUploadsOnlyMissingPartsAndVerifiesTheRest,
		"ServerLost":                 TestResumeRestartsAnUploadTheServerLost,
		"CorruptedPart":              TestServerRejectsACorruptedPart,
		"FurtherObjects":             TestStreamContinuesInFurtherObjects,
		"ResumeAcrossObjects":        TestResumeAcrossObjects,
		"PayloadSigned":              TestPayloadSignedUnlessTLSGuardsIt,
		"KillAtEverySave":            TestKillAtEverySave,
		"MissingFullObject":          TestMissingFullObjectIsNeverRecorded,
		"NonMD5ETags":                TestNonMD5ETagsAreCheckedBySHA256,
		"EmptyListParts":             TestEmptyListPartsMeansGoneOrCompleted,
		"UnechoedChecksum":           TestUnechoedChecksumFallsBackToMD5,
	} {
		t.Run(name, test)
	}
}

// TestOneDigestPerPart pins the one pass: each part's single SHA-256 is
// the payload hash SigV4 signs, the x-amz-checksum-sha256 S3 verifies, and
// (combined) the digest the ledger records.
func TestOneDigestPerPart(t *testing.T) {
	proxy := testbed.StartProxy(t, minio.Endpoint)
	var mu sync.Mutex
	headers := map[string][2]string{} // part number: payload hash, checksum
	proxy.SetRule(func(r *http.Request) testbed.Fault {
		if testbed.IsUploadPart(r) {
			mu.Lock()
			headers[r.URL.Query().Get("partNumber")] = [2]string{r.Header.Get("X-Amz-Content-Sha256"), r.Header.Get("X-Amz-Checksum-Sha256")}
			mu.Unlock()
		}
		return testbed.Fault{}
	})
	c := newBucket(t, proxy)
	data := randomBytes(t, 2*MinPartSize+5)
	u := &Upload{Key: "one-pass", PartSize: MinPartSize, Checksum: "sha256", PartDigests: true}
	res, err := run(t, c, u, source{Reader: bytes.NewReader(data)})
	if err != nil {
		t.Fatal(err)
	}
	var sums [][sha256.Size]byte
	for i := 0; i*MinPartSize < len(data); i++ {
		sum := sha256.Sum256(data[i*MinPartSize : min((i+1)*MinPartSize, len(data))])
		sums = append(sums, sum)
		got := headers[fmt.Sprint(i+1)]
		if got[0] != hex.EncodeToString(sum[:]) || got[1] != base64.StdEncoding.EncodeToString(sum[:]) {
			t.Errorf("part %d sent payload hash %q and checksum %q, want its SHA-256 %x in both", i+1, got[0], got[1], sum)
		}
	}
	if len(headers) != len(sums) {
		t.Errorf("saw %d UploadPart requests, want %d", len(headers), len(sums))
	}
	if want := transform.CompositeSHA256(sums); res.SHA256 != want {
		t.Errorf("recorded digest %s, want %s", res.SHA256, want)
	}
	if got := c.bytesOf(t, u.Key); !bytes.Equal(got, data) {
		t.Error("stored object differs from the stream")
	}
}
