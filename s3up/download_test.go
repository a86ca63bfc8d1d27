package s3up

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"testing"

	"github.com/zfs2s3/zfs2s3/internal/testbed"
)

// TestParallelDownloadSurvivesFaults reads objects of awkward sizes in
// parallel ranges through a proxy that truncates and resets GETs.
func TestParallelDownloadSurvivesFaults(t *testing.T) {
	proxy := testbed.StartProxy(t, minio.Endpoint)
	c := newBucket(t, proxy)
	const chunk = 1 << 20
	for _, size := range []int{0, 1, chunk - 1, chunk, 3*chunk + 5} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			data := randomBytes(t, size)
			key := fmt.Sprintf("dl-%d", size)
			if err := c.Put(context.Background(), key, data, nil); err != nil {
				t.Fatal(err)
			}
			isGet := func(r *http.Request) bool { return r.Method == http.MethodGet }
			proxy.SetRule(testbed.Every(2, 6, isGet, testbed.Fault{Truncate: true}, testbed.Fault{Reset: true}))
			defer proxy.SetRule(nil)
			r := c.OpenParallel(context.Background(), key, int64(size), chunk, 3)
			got, err := io.ReadAll(r)
			r.Close()
			if err != nil || !bytes.Equal(got, data) {
				t.Errorf("read %d of %d bytes (%v), equal=%v", len(got), size, err, bytes.Equal(got, data))
			}
		})
	}
}

func TestParallelDownloadOfAMissingObjectFails(t *testing.T) {
	c := newBucket(t, nil)
	r := c.OpenParallel(context.Background(), "nope", 10, 4, 2)
	defer r.Close()
	if _, err := io.ReadAll(r); !errors.Is(err, ErrNotFound) {
		t.Errorf("reading a missing object: %v, want ErrNotFound", err)
	}
}

func TestCancelledParallelDownloadIsNotAShortSuccess(t *testing.T) {
	c := newBucket(t, nil)
	const chunk = 1 << 20
	data := randomBytes(t, 4*chunk)
	if err := c.Put(context.Background(), "k", data, nil); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := c.OpenParallel(ctx, "k", int64(len(data)), chunk, 1)
	defer r.Close()
	if _, err := io.ReadFull(r, make([]byte, chunk)); err != nil {
		t.Fatal(err)
	}
	cancel()
	if rest, err := io.ReadAll(r); err == nil {
		t.Errorf("after cancel: %d more bytes and no error; a cancelled read must fail", len(rest))
	}
}
