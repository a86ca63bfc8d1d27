package s3up

import (
	"bytes"
	"net/http"
	"sync"
	"testing"

	"github.com/zfs2s3/zfs2s3/internal/testbed"
)

// completes records the If-None-Match header of each
// CompleteMultipartUpload through a proxy, and answers those that carry
// it with refuse when refuse is set (a store that does not take it).
type completes struct {
	mu      sync.Mutex
	headers []string
	refuse  *testbed.Fault
}

func (c *completes) rule(r *http.Request) testbed.Fault {
	if !testbed.IsComplete(r) {
		return testbed.Fault{}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	h := r.Header.Get("If-None-Match")
	c.headers = append(c.headers, h)
	if h != "" && c.refuse != nil {
		return *c.refuse
	}
	return testbed.Fault{}
}

func (c *completes) take() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	h := c.headers
	c.headers = nil
	return h
}

// TestCompleteCreatesOnlyNewObjects: a stream object is completed with
// If-None-Match: *, which a backup host's AWS policy demands; an object an
// earlier attempt completed counts as done; other bytes in the way, or a
// store that refuses the header, get one plain completion, as before.
func TestCompleteCreatesOnlyNewObjects(t *testing.T) {
	p := testbed.StartProxy(t, minio.Endpoint)
	rec := &completes{}
	p.SetRule(rec.rule)
	c := newBucket(t, p)
	upload := func(key string, data []byte) {
		t.Helper()
		u := &Upload{Key: key, PartSize: MinPartSize, Checksum: "crc32c"}
		if _, err := run(t, c, u, source{Reader: bytes.NewReader(data)}); err != nil {
			t.Fatal(err)
		}
		if got := c.bytesOf(t, key); !bytes.Equal(got, data) {
			t.Fatalf("%s holds %d bytes, not the %d uploaded", key, len(got), len(data))
		}
	}
	first := randomBytes(t, MinPartSize+100)
	upload("new", first)
	if h := rec.take(); len(h) != 1 || h[0] != "*" {
		t.Errorf("a new object: completions with If-None-Match %q, want one with *", h)
	}
	upload("new", first) // the same bytes again: the 412 is for our own object
	if h := rec.take(); len(h) != 1 || h[0] != "*" {
		t.Errorf("the same object again: completions with If-None-Match %q, want one with * (412, then verified)", h)
	}
	upload("new", randomBytes(t, 100)) // other bytes in the way: overwritten by credentials that may
	if h := rec.take(); len(h) != 2 || h[0] != "*" || h[1] != "" {
		t.Errorf("other bytes in the way: completions with If-None-Match %q, want * then none", h)
	}
	refuse := testbed.S3Error(http.StatusNotImplemented, "NotImplemented", "If-None-Match is not implemented here")
	rec.refuse = &refuse
	upload("refused", first)
	if h := rec.take(); len(h) != 2 || h[0] != "*" || h[1] != "" {
		t.Errorf("a store refusing the header: completions with If-None-Match %q, want * then none", h)
	}
}
