package s3up

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// Open returns a reader of the object at key that survives cut
// connections and truncated bodies: on a read error it asks again for the
// rest (a ranged GET from where it stopped), with exponential backoff and
// jitter, up to a bounded number of attempts in a row.
func (c *Client) Open(ctx context.Context, key string, size int64) io.ReadCloser {
	return &resumingReader{ctx: ctx, c: c, key: key, size: size}
}

// readRetries bounds consecutive failed attempts; progress resets it.
const readRetries = 8

type resumingReader struct {
	ctx   context.Context
	c     *Client
	key   string
	size  int64
	off   int64
	body  io.ReadCloser
	fails int
}

func (r *resumingReader) Read(p []byte) (int, error) {
	for {
		if r.off >= r.size {
			return 0, io.EOF
		}
		if r.body == nil {
			if err := r.open(); err != nil {
				if errors.Is(err, ErrNotFound) || !r.backoff() {
					return 0, err
				}
				continue
			}
		}
		n, err := r.body.Read(p)
		r.off += int64(n)
		if n > 0 {
			r.fails = 0
		}
		if err == nil || (err == io.EOF && r.off == r.size) {
			return n, nil
		}
		// A short body or a broken connection: ask again for the rest.
		r.body.Close()
		r.body = nil
		if n > 0 {
			return n, nil
		}
		if !r.backoff() {
			return 0, fmt.Errorf("read s3 key %q at byte %d of %d: %w", r.key, r.off, r.size, errOrShort(err))
		}
	}
}

func errOrShort(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

func (r *resumingReader) open() error {
	rng := fmt.Sprintf("bytes=%d-", r.off)
	out, err := r.c.s3.GetObject(r.ctx, &s3.GetObjectInput{Bucket: &r.c.bucket, Key: &r.key, Range: aws.String(rng)})
	if err != nil {
		return wrap("get", r.key, err)
	}
	r.body = out.Body
	return nil
}

// backoff sleeps before the next attempt; false when attempts are used up
// or the context ended.
func (r *resumingReader) backoff() bool {
	r.fails++
	if r.fails > readRetries || r.ctx.Err() != nil {
		return false
	}
	d := time.Duration(50<<min(r.fails, 7)) * time.Millisecond // 100 ms .. 6.4 s
	d = d/2 + rand.N(d/2+1)                                    // jitter
	select {
	case <-time.After(d):
		return true
	case <-r.ctx.Done():
		return false
	}
}

func (r *resumingReader) Close() error {
	if r.body != nil {
		return r.body.Close()
	}
	return nil
}
