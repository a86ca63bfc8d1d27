package transform

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
)

// Segment sizes. A crash loses at most one segment's work, and a stream of
// B bytes makes B/S objects: 256 MiB keeps the loss to about a minute and a
// half on a 20 Mbit/s uplink (less once compressed) while a 1 TiB stream
// stays at 4,096 objects, a hand restore at 4,096 aws s3 cp lines, and a
// nightly incremental of under 256 MiB one object, like an untransformed
// one. See FORMAT.md.
const (
	DefaultSegmentSize = 256 << 20
	MinSegmentSize     = 1 << 20
	MaxSegmentSize     = 64 << 30
)

// CheckSegmentSize refuses a segment size outside the range, or not a whole
// number of MiB (which keeps offsets readable in a hand restore).
func CheckSegmentSize(s int64) error {
	if s < MinSegmentSize || s > MaxSegmentSize || s%(1<<20) != 0 {
		return fmt.Errorf("segment size %d: must be a whole number of MiB from 1 MiB to 64 GiB (default 256 MiB)", s)
	}
	return nil
}

// Record describes one segment of a stored stream: segment Index holds the
// plaintext bytes [PlainOffset, PlainOffset+PlainBytes), stored as
// StoredBytes bytes. The ledger keeps one per object.
type Record struct {
	Index        int    `yaml:"index" json:"index"`
	PlainOffset  int64  `yaml:"plain_offset" json:"plain_offset"`
	PlainBytes   int64  `yaml:"plain_bytes" json:"plain_bytes"`
	PlainSHA256  string `yaml:"plain_sha256" json:"plain_sha256"`
	StoredBytes  int64  `yaml:"stored_bytes" json:"stored_bytes"`
	StoredSHA256 string `yaml:"stored_sha256" json:"stored_sha256"` // CompositeSHA256 of its parts
}

// Sink receives one segment's stored bytes: typically the multipart upload
// of one object.
type Sink interface {
	io.Writer
	// Finish is called once all of the segment's stored bytes were
	// written, with its record complete but for StoredSHA256, which Finish
	// returns (the sink hashed the parts it uploaded: see StoredHash and
	// CompositeSHA256). After Finish returns nil the segment counts as done
	// for good: a resume will skip it.
	Finish(r Record) (storedSHA256 string, err error)
}

// Result is a whole segmented stream.
type Result struct {
	Segments     []Record // including those an earlier run finished
	PlainBytes   int64
	StreamSHA256 string // StreamSHA256 of Segments
}

// ErrStreamChanged means the re-read stream is not the one whose segments
// an earlier run stored: they cannot be resumed from.
var ErrStreamChanged = errors.New("the stream differs from the segments already stored")

// Segmenter cuts a plaintext stream into segments of Size bytes (the last
// one shorter, never empty unless the whole stream is) and encodes each
// into its own sink.
type Segmenter struct {
	Encoder *Encoder
	Size    int64
	// Check, when set, is called when the source reaches its end and before
	// the last segment is finished: a zfs send that was killed looks like a
	// stream that ended, and only its exit status tells (zfs.Stream.Wait).
	Check func() error
}

// copyBuf is the read size from the source: the pipe buffer zfs.Send asks
// for, so one read drains it.
const copyBuf = 1 << 20

// Run reads src to its end. The first len(done) segments were stored by an
// earlier run: their plaintext is read, hashed and compared with done's
// records, and discarded (ErrStreamChanged if any differs); encoding
// resumes at segment len(done), in a fresh age file, so no key or nonce is
// ever used for two plaintexts. open is called for each new segment, in
// order, never for two at once.
//
// On error, the segment last opened is unfinished: its sink must be
// discarded (the multipart upload aborted) by the caller.
func (s *Segmenter) Run(ctx context.Context, src io.Reader, done []Record, open func(index int) (Sink, error)) (Result, error) {
	if s.Size <= 0 {
		return Result{}, errors.New("transform: segment size must be positive")
	}
	in := bufio.NewReaderSize(src, copyBuf)
	buf := make([]byte, copyBuf)
	res := Result{Segments: make([]Record, 0, len(done)+1)}
	if err := s.skip(ctx, in, buf, done, &res); err != nil {
		return Result{}, err
	}
	for i := len(done); ; i++ {
		if len(res.Segments) > 0 && (res.Segments[len(res.Segments)-1].PlainBytes < s.Size || !more(in)) {
			break // the last segment was short, or the stream ends at a boundary
		}
		if err := ctx.Err(); err != nil {
			return Result{}, err
		}
		rec, err := s.one(ctx, in, buf, i, open)
		if err != nil {
			return Result{}, err
		}
		res.Segments = append(res.Segments, rec)
		res.PlainBytes += rec.PlainBytes
	}
	if len(done) > 0 && len(res.Segments) == len(done) && s.Check != nil {
		// Every segment was stored before: the stream must still end here.
		if err := s.Check(); err != nil {
			return Result{}, err
		}
	}
	sum, err := StreamSHA256(res.Segments)
	if err != nil {
		return Result{}, err
	}
	res.StreamSHA256 = sum
	return res, nil
}

// more reports whether in has another byte (a read error counts as more:
// the next read returns it).
func more(in *bufio.Reader) bool {
	_, err := in.Peek(1)
	return err != io.EOF
}

// skip re-reads the segments of done and checks them.
func (s *Segmenter) skip(ctx context.Context, in *bufio.Reader, buf []byte, done []Record, res *Result) error {
	for i, d := range done {
		if d.Index != i || d.PlainOffset != int64(i)*s.Size {
			return fmt.Errorf("transform: resume record %d is for segment %d at offset %d", i, d.Index, d.PlainOffset)
		}
		if i < len(done)-1 && d.PlainBytes != s.Size {
			return fmt.Errorf("transform: resume record %d has %d bytes; only the last segment may be short", i, d.PlainBytes)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		h := sha256.New()
		n, err := io.CopyBuffer(h, io.LimitReader(in, s.Size), buf)
		if err != nil {
			return fmt.Errorf("read stream: %w", err)
		}
		if got := hex.EncodeToString(h.Sum(nil)); n != d.PlainBytes || got != d.PlainSHA256 {
			return fmt.Errorf("%w: segment %d (plaintext bytes %d to %d) reads as %d bytes with SHA-256 %s, %d bytes with %s were stored", ErrStreamChanged, i, d.PlainOffset, d.PlainOffset+d.PlainBytes, n, got, d.PlainBytes, d.PlainSHA256)
		}
		res.Segments = append(res.Segments, d)
		res.PlainBytes += d.PlainBytes
	}
	if k := len(done); k > 0 && done[k-1].PlainBytes < s.Size && more(in) {
		return fmt.Errorf("%w: it goes on after segment %d, which was stored as the last", ErrStreamChanged, k-1)
	}
	return nil
}

// one encodes segment i from in into a new sink.
func (s *Segmenter) one(ctx context.Context, in *bufio.Reader, buf []byte, i int, open func(int) (Sink, error)) (Record, error) {
	sink, err := open(i)
	if err != nil {
		return Record{}, err
	}
	sw, err := s.Encoder.NewSegment(sink)
	if err != nil {
		return Record{}, err
	}
	n, err := copyCtx(ctx, sw, io.LimitReader(in, s.Size), buf)
	if err != nil {
		sw.Abort()
		return Record{}, err
	}
	if (n < s.Size || !more(in)) && s.Check != nil {
		// The last segment: finish it only if the producer succeeded.
		if err := s.Check(); err != nil {
			sw.Abort()
			return Record{}, err
		}
	}
	if err := sw.Close(); err != nil {
		return Record{}, fmt.Errorf("segment %d: %w", i, err)
	}
	rec := Record{Index: i, PlainOffset: int64(i) * s.Size, PlainBytes: n, PlainSHA256: sw.PlainSHA256(), StoredBytes: sw.StoredBytes()}
	sum, err := sink.Finish(rec)
	if err != nil {
		return Record{}, err
	}
	rec.StoredSHA256 = sum
	return rec, nil
}

// copyCtx is io.CopyBuffer that stops between reads once ctx is done. Read
// errors are the source's; write errors are the sink's (or the encoder's).
func copyCtx(ctx context.Context, dst io.Writer, src io.Reader, buf []byte) (int64, error) {
	var n int64
	for {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		r, rerr := src.Read(buf)
		if r > 0 {
			w, werr := dst.Write(buf[:r])
			n += int64(w)
			if werr != nil {
				return n, fmt.Errorf("write segment: %w", werr)
			}
		}
		if rerr == io.EOF {
			return n, nil
		}
		if rerr != nil {
			return n, fmt.Errorf("read stream: %w", rerr)
		}
	}
}
