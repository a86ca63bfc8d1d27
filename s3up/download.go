package s3up

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/zfs2s3/zfs2s3/ledger"
)

// Open returns a reader of the object at key that survives cut
// connections and truncated bodies: on a read error it asks again for the
// rest (a ranged GET from where it stopped), with exponential backoff and
// jitter, up to a bounded number of attempts in a row.
func (c *Client) Open(ctx context.Context, key string, size int64) io.ReadCloser {
	return &resumingReader{ctx: ctx, c: c, key: key, end: size}
}

// DownloadChunk is the range each parallel GET fetches.
const DownloadChunk = 16 << 20

// OpenParallel is Open with n ranged GETs of chunk bytes in flight, read
// in order. Memory stays at n+1 chunks whatever the object's size.
func (c *Client) OpenParallel(ctx context.Context, key string, size, chunk int64, n int) io.ReadCloser {
	n = max(n, 1)
	ctx, cancel := context.WithCancel(ctx)
	pr := &parallelReader{ctx: ctx, cancel: cancel, size: size, queue: make(chan chan fetched, n), bufs: make(chan []byte, n+1)}
	for i := 0; i <= n; i++ {
		pr.bufs <- nil // allocated on first use
	}
	go func() {
		defer close(pr.queue)
		for off := int64(0); off < size; off += chunk {
			var buf []byte
			select {
			case buf = <-pr.bufs:
			case <-ctx.Done():
				return
			}
			if buf == nil {
				buf = make([]byte, chunk)
			}
			end := min(off+chunk, size)
			fut := make(chan fetched, 1)
			select {
			case pr.queue <- fut:
			case <-ctx.Done():
				return
			}
			go func() {
				r := &resumingReader{ctx: ctx, c: c, key: key, off: off, end: end}
				got, err := io.ReadFull(r, buf[:end-off])
				r.Close()
				fut <- fetched{buf: buf, data: buf[:got], err: err}
			}()
		}
	}()
	return pr
}

// fetched is one chunk, or why it could not be read.
type fetched struct {
	buf, data []byte
	err       error
}

type parallelReader struct {
	ctx    context.Context
	size   int64
	done   int64 // bytes delivered
	cancel func()
	queue  chan chan fetched // chunks in object order
	bufs   chan []byte
	cur    fetched
	err    error
}

func (p *parallelReader) Read(b []byte) (int, error) {
	for len(p.cur.data) == 0 {
		if p.err != nil {
			return 0, p.err
		}
		if p.cur.buf != nil {
			p.bufs <- p.cur.buf
			p.cur = fetched{}
		}
		fut, ok := <-p.queue
		if !ok {
			p.err = io.EOF
			if p.done < p.size { // the producer stopped early: cancelled
				p.err = fmt.Errorf("read stopped at byte %d of %d: %w", p.done, p.size, errOrShort(p.ctx.Err()))
			}
			continue
		}
		p.cur = <-fut
		if p.cur.err != nil {
			p.err, p.cur = p.cur.err, fetched{}
		}
	}
	n := copy(b, p.cur.data)
	p.cur.data = p.cur.data[n:]
	p.done += int64(n)
	return n, nil
}

func (p *parallelReader) Close() error {
	p.cancel()
	return nil
}

// readRetries bounds consecutive failed attempts; progress resets it.
const readRetries = 8

// resumingReader reads bytes [off, end) of an object.
type resumingReader struct {
	ctx   context.Context
	c     *Client
	key   string
	off   int64
	end   int64
	body  io.ReadCloser
	fails int
}

func (r *resumingReader) Read(p []byte) (int, error) {
	for {
		if r.off >= r.end {
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
		if err == nil || (err == io.EOF && r.off == r.end) {
			return n, nil
		}
		// A short body or a broken connection: ask again for the rest.
		r.body.Close()
		r.body = nil
		if n > 0 {
			return n, nil
		}
		if !r.backoff() {
			return 0, fmt.Errorf("read s3 key %q at byte %d of %d: %w", r.key, r.off, r.end, errOrShort(err))
		}
	}
}

func errOrShort(err error) error {
	if err == io.EOF || err == nil {
		return io.ErrUnexpectedEOF
	}
	return err
}

func (r *resumingReader) open() error {
	rng := fmt.Sprintf("bytes=%d-%d", r.off, r.end-1)
	out, err := r.c.s3.GetObject(r.ctx, &s3.GetObjectInput{Bucket: &r.c.bucket, Key: &r.key, Range: aws.String(rng)})
	if err != nil {
		return wrap("get", r.key, err)
	}
	// A server that ignores Range sends the object from byte 0: refuse
	// rather than splice the wrong bytes in.
	if cr := aws.ToString(out.ContentRange); !strings.HasPrefix(cr, fmt.Sprintf("bytes %d-", r.off)) {
		out.Body.Close()
		return fmt.Errorf("get s3 key %q: asked for %s, the server answered range %q", r.key, rng, cr)
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

// OpenObjects reads objects one after another as one stream: a stream
// stored in several objects, each read with OpenParallel (n > 1) or Open.
func (c *Client) OpenObjects(ctx context.Context, objs []ledger.Segment, n int) io.ReadCloser {
	return &objectsReader{ctx: ctx, c: c, objs: objs, n: n}
}

type objectsReader struct {
	ctx  context.Context
	c    *Client
	objs []ledger.Segment // still to open
	n    int
	cur  io.ReadCloser
}

func (r *objectsReader) Read(p []byte) (int, error) {
	for {
		if r.cur == nil {
			if len(r.objs) == 0 {
				return 0, io.EOF
			}
			o := r.objs[0]
			r.objs = r.objs[1:]
			if r.n > 1 {
				r.cur = r.c.OpenParallel(r.ctx, o.Key, o.Bytes, DownloadChunk, r.n)
			} else {
				r.cur = r.c.Open(r.ctx, o.Key, o.Bytes)
			}
		}
		k, err := r.cur.Read(p)
		if err == io.EOF {
			err = r.cur.Close()
			r.cur = nil
			if k == 0 && err == nil {
				continue
			}
		}
		return k, err
	}
}

func (r *objectsReader) Close() error {
	if r.cur == nil {
		return nil
	}
	return r.cur.Close()
}
