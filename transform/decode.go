package transform

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"sync"
	"sync/atomic"

	"filippo.io/age"
	"github.com/klauspost/compress/zstd"
)

// Errors a SegmentReader returns, for errors.Is. A read error of the source
// itself (a cut connection) is returned as it is, never as ErrDamaged: it
// says nothing about the stored object.
var (
	// ErrNoIdentity: the segment is encrypted and no identity was given.
	// Returned before any byte is read.
	ErrNoIdentity = errors.New("the stream is encrypted and no age identity was given (--identity)")
	// ErrWrongIdentity: none of the identities opens the segment's age
	// header. When the stored digest is known and matches, the object is
	// intact and the identity is really the wrong one; without a stored
	// digest a damaged header cannot be told apart from a wrong key.
	ErrWrongIdentity = errors.New("none of the age identities given matches the stream's recipients")
	// ErrDamaged: the stored bytes are not what was uploaded: an age chunk
	// or header MAC failed, zstd found a bad frame or checksum, data
	// follows the end, or a size or digest differs from the record.
	ErrDamaged = errors.New("the stored object is damaged")
)

// Expect is what a segment should decode to, from its upload record. Empty
// digests are not checked; a digest that is checked brings its byte count
// with it.
type Expect struct {
	Record
	// PartSize is the part size Record.StoredSHA256 was computed with
	// (StoredHash); the stored digest is not checked without it.
	PartSize int64
}

// SegmentReader reads a segment's plaintext from its stored bytes. It
// checks everything it can as it goes and, at the end, the sizes and
// digests of Expect: only a Read that returned io.EOF proves the segment
// was whole and as recorded. Close it to release the zstd decoder.
type SegmentReader struct {
	src    *countReader
	r      io.Reader // the top layer: zstd, age or src
	zdec   *zstd.Decoder
	zin    atomic.Int64 // bytes zstd read (from its own goroutine)
	layer  string       // what r is, for errors
	want   Expect
	plain  hash.Hash
	plainN int64
	err    error // sticky
}

// NewSegmentReader opens a segment for reading. For an encrypted segment it
// reads the age header at once, so a missing or wrong identity fails here,
// before any plaintext is produced.
func NewSegmentReader(src io.Reader, spec Spec, identities []age.Identity, want Expect) (*SegmentReader, error) {
	if spec.Encrypt && len(identities) == 0 {
		return nil, ErrNoIdentity
	}
	sr := &SegmentReader{src: &countReader{r: src}, want: want, plain: sha256.New(), layer: "stored bytes"}
	if want.StoredSHA256 != "" && want.PartSize > 0 {
		sr.src.h = NewStoredHash(want.PartSize)
	}
	sr.r = sr.src
	if spec.Encrypt {
		r, err := age.Decrypt(sr.r, identities...)
		if err != nil {
			return nil, sr.headerError(err)
		}
		sr.r, sr.layer = r, "age"
	}
	switch spec.compress() {
	case CompressNone:
	case CompressZstd:
		zdec, err := zstd.NewReader(&atomicCounter{r: sr.r, n: &sr.zin},
			// zstd -d refuses windows over 128 MiB without --long; so does
			// this, rather than allocate what a damaged header asks for.
			zstd.WithDecoderMaxWindow(128<<20),
			zstd.WithDecoderConcurrency(0))
		if err != nil {
			return nil, fmt.Errorf("zstd decoder: %w", err)
		}
		sr.zdec, sr.r, sr.layer = zdec, zdec, "zstd"
	default:
		return nil, fmt.Errorf("unknown compression %q", spec.Compress)
	}
	return sr, nil
}

// headerError classifies a failed age header.
func (sr *SegmentReader) headerError(err error) error {
	if serr := sr.src.readErr(); serr != nil {
		return serr
	}
	var nomatch *age.NoIdentityMatchError
	if !errors.As(err, &nomatch) {
		return fmt.Errorf("%w (age header: %w)", ErrDamaged, err)
	}
	if sr.src.h == nil {
		return ErrWrongIdentity
	}
	// A damaged recipient stanza also matches no identity; the stored
	// digest tells the two apart.
	if _, err := io.Copy(io.Discard, sr.src); err != nil {
		return err
	}
	if derr := sr.checkStored(); derr != nil {
		return derr
	}
	return ErrWrongIdentity
}

// Read returns plaintext. At the end of the segment it checks the sizes and
// digests and returns io.EOF only if they agree.
func (sr *SegmentReader) Read(p []byte) (int, error) {
	if sr.err != nil {
		return 0, sr.err
	}
	n, err := sr.r.Read(p)
	sr.plain.Write(p[:n])
	sr.plainN += int64(n)
	switch {
	case err == io.EOF:
		sr.err = sr.finish()
		if sr.err == nil {
			sr.err = io.EOF
		}
		return n, sr.err
	case err != nil:
		sr.err = sr.layerError(err)
		return n, sr.err
	}
	return n, nil
}

// layerError tells a source failure (returned as is) from damage.
func (sr *SegmentReader) layerError(err error) error {
	if serr := sr.src.readErr(); serr != nil {
		return serr
	}
	return fmt.Errorf("%w (%s: %w)", ErrDamaged, sr.layer, err)
}

// finish runs at the plaintext's end: nothing may follow the segment's
// last layer, and the record must match.
func (sr *SegmentReader) finish() error {
	// age refuses data after its final chunk itself, and zstd reads to the
	// end; without either layer the count and digest below decide.
	var b [1]byte
	if n, err := io.ReadFull(sr.src, b[:]); n > 0 {
		return fmt.Errorf("%w: data follows the end of the %s stream", ErrDamaged, sr.layer)
	} else if err != io.EOF {
		return err
	}
	if sr.zdec != nil && sr.zin.Load() == 0 {
		// The decoder takes no input as an empty stream; every segment
		// has at least one frame, even an empty one.
		return fmt.Errorf("%w: the object is empty, not even one zstd frame", ErrDamaged)
	}
	if err := sr.checkStored(); err != nil {
		return err
	}
	if want := sr.want.PlainSHA256; want != "" {
		if sr.plainN != sr.want.PlainBytes {
			return fmt.Errorf("%w: it decodes to %d bytes, %d were uploaded", ErrDamaged, sr.plainN, sr.want.PlainBytes)
		}
		if got := hex.EncodeToString(sr.plain.Sum(nil)); got != want {
			return fmt.Errorf("%w: its plaintext has SHA-256 %s, the upload's was %s", ErrDamaged, got, want)
		}
	}
	return nil
}

// checkStored compares the stored bytes read so far (all of them, at the
// end) with the record.
func (sr *SegmentReader) checkStored() error {
	if sr.src.h == nil {
		return nil
	}
	if n := sr.src.count(); n != sr.want.StoredBytes {
		return fmt.Errorf("%w: it holds %d bytes, %d were uploaded", ErrDamaged, n, sr.want.StoredBytes)
	}
	if got := sr.src.h.Sum(); got != sr.want.StoredSHA256 {
		return fmt.Errorf("%w: its bytes have digest %s, the upload's was %s", ErrDamaged, got, sr.want.StoredSHA256)
	}
	return nil
}

// PlainBytes is the plaintext read so far.
func (sr *SegmentReader) PlainBytes() int64 { return sr.plainN }

// PlainSHA256 is the hex SHA-256 of the plaintext read so far.
func (sr *SegmentReader) PlainSHA256() string { return hex.EncodeToString(sr.plain.Sum(nil)) }

// StoredBytes is the stored bytes read so far.
func (sr *SegmentReader) StoredBytes() int64 { return sr.src.count() }

// Close releases the zstd decoder. It does not close the source.
func (sr *SegmentReader) Close() error {
	if sr.zdec != nil {
		sr.zdec.Close()
	}
	return nil
}

// countReader counts (and optionally hashes) what is read through it and
// keeps the first read error that is not io.EOF. The zstd decoder reads it
// from its own goroutine, hence the lock.
type countReader struct {
	r  io.Reader
	h  *StoredHash
	mu sync.Mutex
	n  int64
	e  error
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n += int64(n)
	if c.h != nil {
		c.h.Write(p[:n])
	}
	if err != nil && err != io.EOF && c.e == nil {
		c.e = err
	}
	return n, err
}

func (c *countReader) count() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

func (c *countReader) readErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.e
}

// atomicCounter counts what is read through it.
type atomicCounter struct {
	r io.Reader
	n *atomic.Int64
}

func (a *atomicCounter) Read(p []byte) (int, error) {
	n, err := a.r.Read(p)
	a.n.Add(int64(n))
	return n, err
}
