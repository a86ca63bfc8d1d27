package transform

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"runtime"

	"filippo.io/age"
	"github.com/klauspost/compress/zstd"
)

// Encoder makes the segments of one stream, one at a time. It holds the
// zstd encoder (its goroutines and buffers) across segments; Close releases
// it.
type Encoder struct {
	spec       Spec
	recipients []age.Recipient
	zenc       *zstd.Encoder
	busy       bool // a SegmentWriter is open
}

// NewEncoder checks that spec and recipients agree (encryption needs at
// least one recipient; recipients without encryption are a caller's bug)
// and prepares the zstd encoder.
func NewEncoder(spec Spec, recipients []age.Recipient) (*Encoder, error) {
	if spec.Encrypt && len(recipients) == 0 {
		return nil, errors.New("encryption needs at least one age recipient (--recipient or --recipients-file)")
	}
	if !spec.Encrypt && len(recipients) > 0 {
		return nil, errors.New("age recipients given for a transform without encryption")
	}
	e := &Encoder{spec: spec, recipients: recipients}
	switch spec.compress() {
	case CompressNone:
	case CompressZstd:
		if spec.Level < MinZstdLevel || spec.Level > MaxZstdLevel {
			return nil, fmt.Errorf("zstd level %d: must be from %d to %d", spec.Level, MinZstdLevel, MaxZstdLevel)
		}
		cores := runtime.GOMAXPROCS(0)
		zenc, err := zstd.NewWriter(nil,
			zstd.WithEncoderLevel(zstd.EncoderLevelFromZstd(spec.Level)),
			zstd.WithEncoderConcurrency(cores),
			// Up to two cores, a stream's blocks are compressed by two
			// goroutines taking turns, in about 20 MiB of heap; the rest of
			// the upload (hashing, age, S3) has the other core. With more
			// cores, jobs of four windows (32 MiB) are compressed in
			// parallel, at about 100 MiB of heap per core (measured by
			// BenchmarkEncode). Either way the output is one frame per
			// segment, and the format does not depend on it.
			zstd.WithConcurrentBlocks(cores > 2),
			// The frame checksum lets zstd -d, by hand, catch what an
			// unencrypted object's damage did to the data.
			zstd.WithEncoderCRC(true),
			// An empty segment is still a zstd file zstd -d accepts.
			zstd.WithZeroFrames(true),
		)
		if err != nil {
			return nil, fmt.Errorf("zstd encoder: %w", err)
		}
		e.zenc = zenc
	default:
		return nil, fmt.Errorf("unknown compression %q", spec.Compress)
	}
	return e, nil
}

// Spec is the transform the encoder applies.
func (e *Encoder) Spec() Spec { return e.spec }

// Close releases the zstd encoder's goroutines and buffers.
func (e *Encoder) Close() error {
	if e.zenc != nil {
		return e.zenc.Close()
	}
	return nil
}

// SegmentWriter takes a segment's plaintext and writes its stored bytes to
// the destination: plaintext → zstd → age → dst. Close finishes both
// layers; only then is the segment complete. It counts and hashes the
// plaintext; it counts the stored bytes but does not hash them (the caller
// hashes each stored part once anyway, for S3: see StoredHash).
type SegmentWriter struct {
	enc    *Encoder
	w      io.Writer      // the top layer: zstd, age or dst
	age    io.WriteCloser // nil without encryption
	stored countWriter
	plain  hash.Hash
	plainN int64
	closed bool
	err    error
	oneOff bool // made by NewSegmentWriter: Close closes the encoder too
}

// NewSegment starts a segment written to dst. Each segment is a new age
// file with its own random file key; only one segment of an Encoder may be
// open at a time.
func (e *Encoder) NewSegment(dst io.Writer) (*SegmentWriter, error) {
	if e.busy {
		return nil, errors.New("transform: a segment is still open on this encoder")
	}
	sw := &SegmentWriter{enc: e, plain: sha256.New(), stored: countWriter{w: dst}}
	sw.w = &sw.stored
	if e.spec.Encrypt {
		a, err := age.Encrypt(sw.w, e.recipients...)
		if err != nil {
			return nil, fmt.Errorf("age encrypt: %w", err)
		}
		sw.age, sw.w = a, a
	}
	if e.zenc != nil {
		e.zenc.Reset(sw.w)
		sw.w = e.zenc
	}
	e.busy = true
	return sw, nil
}

// NewSegmentWriter is NewEncoder and NewSegment for a single segment; its
// Close also releases the encoder.
func NewSegmentWriter(dst io.Writer, spec Spec, recipients []age.Recipient) (*SegmentWriter, error) {
	e, err := NewEncoder(spec, recipients)
	if err != nil {
		return nil, err
	}
	sw, err := e.NewSegment(dst)
	if err != nil {
		e.Close()
		return nil, err
	}
	sw.oneOff = true
	return sw, nil
}

// Write hashes p as plaintext and passes it down the layers.
func (sw *SegmentWriter) Write(p []byte) (int, error) {
	if sw.err != nil {
		return 0, sw.err
	}
	if sw.closed {
		return 0, errors.New("transform: write to a closed segment")
	}
	n, err := sw.w.Write(p)
	sw.plain.Write(p[:n])
	sw.plainN += int64(n)
	if err != nil {
		sw.err = err
	}
	return n, err
}

// Close flushes zstd's last block and writes age's final chunk. The stored
// bytes are complete when it returns nil.
func (sw *SegmentWriter) Close() error {
	if sw.closed {
		return sw.err
	}
	sw.closed = true
	defer func() {
		sw.enc.busy = false
		if sw.oneOff {
			sw.enc.Close()
		}
	}()
	if sw.err != nil {
		return sw.err
	}
	if sw.enc.zenc != nil {
		if err := sw.enc.zenc.Close(); err != nil {
			sw.err = fmt.Errorf("zstd: %w", err)
			return sw.err
		}
	}
	if sw.age != nil {
		if err := sw.age.Close(); err != nil {
			sw.err = fmt.Errorf("age: %w", err)
			return sw.err
		}
	}
	return nil
}

// errAborted is what a write to an aborted segment returns.
var errAborted = errors.New("transform: segment aborted")

// Abort drops the segment: what zstd still buffers is discarded and age's
// final chunk is never written, so what reached dst is not a whole object
// (a reader finds it cut short). The caller discards it too (aborts the
// multipart upload). Abort after Close does nothing.
func (sw *SegmentWriter) Abort() {
	if sw.closed {
		return
	}
	sw.closed = true
	if sw.err == nil {
		sw.err = errAborted
	}
	if sw.enc.zenc != nil {
		sw.enc.zenc.Reset(io.Discard)
	}
	sw.enc.busy = false
	if sw.oneOff {
		sw.enc.Close()
	}
}

// PlainBytes is the plaintext written so far.
func (sw *SegmentWriter) PlainBytes() int64 { return sw.plainN }

// PlainSHA256 is the hex SHA-256 of the plaintext written so far.
func (sw *SegmentWriter) PlainSHA256() string { return hex.EncodeToString(sw.plain.Sum(nil)) }

// StoredBytes is what reached dst so far; final after Close.
func (sw *SegmentWriter) StoredBytes() int64 { return sw.stored.n }

// countWriter counts what passes through to w.
type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
