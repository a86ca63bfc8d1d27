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

// FrameSize is the plaintext of each zstd frame zfs2s3 writes. Frames are
// independent, so the cores compress several at once, as pzstd and zstd -T
// do; a frame this size costs under 0.5% of the ratio of one long frame
// (BenchmarkEncode) and its window is the frame itself, well within the
// 8 MiB the format allows. Readers do not depend on it (FORMAT.md).
const FrameSize = 4 << 20

// EncoderMemory is what an Encoder for spec holds beyond the upload's part
// buffers, at most. With zstd and w cores: up to 2w+2 frame buffers (a
// frame being filled, w compressing with their outputs, one being
// written), and per core a zstd encoder's history (a frame, with
// WithLowerEncoderMem) and match tables, which grow with the level
// (TestEncoderMemory measures it). age streams through 64 KiB chunks.
func EncoderMemory(spec Spec) int64 {
	if spec.compress() == CompressNone {
		return 0
	}
	w := int64(runtime.GOMAXPROCS(0))
	return (2*w+2)*(FrameSize+FrameSize/64) + w*(FrameSize+1<<20+zstdTables(spec.Level))
}

// zstdTables is a bound on one klauspost zstd encoder's match tables at a
// zfs2s3 level (zstd.EncoderLevelFromZstd: 1 fastest, 2-5 default, 6-9
// better, 10 and above best).
func zstdTables(level int) int64 {
	switch zstd.EncoderLevelFromZstd(level) {
	case zstd.SpeedFastest:
		return 1 << 20
	case zstd.SpeedDefault:
		return 2 << 20
	case zstd.SpeedBetterCompression:
		return 5 << 20
	}
	return 35 << 20
}

// Encoder makes the segments of one stream, one at a time. It holds the
// zstd encoder and the frame buffers across segments; Close releases them.
type Encoder struct {
	spec       Spec
	recipients []age.Recipient
	zenc       *zstd.Encoder
	workers    int      // frames compressed at once
	free       [][]byte // frame buffers to reuse, plaintext and compressed alike
	busy       bool     // a SegmentWriter is open
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
		// One frame per core at a time: each EncodeAll runs on one core,
		// in one of the encoder's `workers` states, and holds a frame's
		// plaintext and output (EncoderMemory).
		e.workers = runtime.GOMAXPROCS(0)
		zenc, err := zstd.NewWriter(nil,
			zstd.WithEncoderLevel(zstd.EncoderLevelFromZstd(spec.Level)),
			zstd.WithEncoderConcurrency(e.workers),
			// A frame is never longer than FrameSize, so a longer window
			// (or the double-size history kept by default) would only
			// cost each encoder memory.
			zstd.WithWindowSize(FrameSize),
			zstd.WithLowerEncoderMem(true),
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

// Close releases the zstd encoder and the frame buffers.
func (e *Encoder) Close() error {
	e.free = nil
	if e.zenc != nil {
		return e.zenc.Close()
	}
	return nil
}

// buffer returns an empty frame buffer, reused when one is free.
func (e *Encoder) buffer() []byte {
	if n := len(e.free); n > 0 {
		b := e.free[n-1]
		e.free = e.free[:n-1]
		return b[:0]
	}
	return make([]byte, 0, FrameSize+FrameSize/64)
}

// frame is one zstd frame being compressed in the background.
type frame struct {
	in, out []byte
	done    chan struct{}
}

// SegmentWriter takes a segment's plaintext and writes its stored bytes to
// the destination: plaintext → zstd → age → dst. Close finishes both
// layers; only then is the segment complete. It counts and hashes the
// plaintext; it counts the stored bytes but does not hash them (the caller
// hashes each stored part once anyway, for S3: see StoredHash).
//
// With zstd, the plaintext is cut into frames of FrameSize, compressed on
// all cores at once and written in order; without it, each Write goes
// straight down.
type SegmentWriter struct {
	enc    *Encoder
	w      io.Writer      // below zstd: age or dst
	age    io.WriteCloser // nil without encryption
	stored countWriter
	plain  hash.Hash
	plainN int64
	in     []byte   // the frame being filled (zstd only)
	queue  []*frame // frames compressing, oldest first
	frames int      // frames written to w
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
	if sw.enc.zenc == nil {
		n, err := sw.w.Write(p)
		sw.plain.Write(p[:n])
		sw.plainN += int64(n)
		if err != nil {
			sw.err = err
		}
		return n, err
	}
	n := 0
	for n < len(p) {
		if sw.in == nil {
			sw.in = sw.enc.buffer()
		}
		take := min(len(p)-n, FrameSize-len(sw.in))
		sw.in = append(sw.in, p[n:n+take]...)
		sw.plain.Write(p[n : n+take])
		sw.plainN += int64(take)
		n += take
		if len(sw.in) == FrameSize {
			if err := sw.compress(); err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

// compress starts compressing the filled frame in the background and
// writes out the oldest frames while more than one per core is queued.
func (sw *SegmentWriter) compress() error {
	f := &frame{in: sw.in, out: sw.enc.buffer(), done: make(chan struct{})}
	sw.in = nil
	go func() {
		f.out = sw.enc.zenc.EncodeAll(f.in, f.out)
		close(f.done)
	}()
	sw.queue = append(sw.queue, f)
	for len(sw.queue) > sw.enc.workers {
		if err := sw.writeFrame(); err != nil {
			return err
		}
	}
	return nil
}

// writeFrame waits for the oldest queued frame and writes it down.
func (sw *SegmentWriter) writeFrame() error {
	f := sw.queue[0]
	<-f.done
	sw.queue = sw.queue[1:]
	_, err := sw.w.Write(f.out)
	sw.enc.free = append(sw.enc.free, f.in, f.out)
	sw.frames++
	if err != nil {
		sw.err = err
	}
	return err
}

// Close writes the last frames and age's final chunk. The stored bytes are
// complete when it returns nil.
func (sw *SegmentWriter) Close() error {
	if sw.closed {
		return sw.err
	}
	defer sw.release()
	if sw.err != nil {
		return sw.err
	}
	if sw.enc.zenc != nil {
		// An empty segment is one empty frame.
		if len(sw.in) > 0 || sw.frames+len(sw.queue) == 0 {
			if sw.in == nil {
				sw.in = sw.enc.buffer()
			}
			if err := sw.compress(); err != nil {
				return fmt.Errorf("zstd: %w", err)
			}
		}
		for len(sw.queue) > 0 {
			if err := sw.writeFrame(); err != nil {
				return fmt.Errorf("zstd: %w", err)
			}
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

// release ends the segment: frames still compressing are waited for and
// dropped, and the encoder is free for the next segment.
func (sw *SegmentWriter) release() {
	sw.closed = true
	for _, f := range sw.queue {
		<-f.done
		sw.enc.free = append(sw.enc.free, f.in, f.out)
	}
	sw.queue = nil
	if sw.in != nil {
		sw.enc.free = append(sw.enc.free, sw.in)
		sw.in = nil
	}
	sw.enc.busy = false
	if sw.oneOff {
		sw.enc.Close()
	}
}

// errAborted is what a write to an aborted segment returns.
var errAborted = errors.New("transform: segment aborted")

// Abort drops the segment: frames not yet written are discarded and age's
// final chunk is never written, so what reached dst is not a whole object
// (a reader finds it cut short). The caller discards it too (aborts the
// multipart upload). Abort after Close does nothing.
func (sw *SegmentWriter) Abort() {
	if sw.closed {
		return
	}
	if sw.err == nil {
		sw.err = errAborted
	}
	sw.release()
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
