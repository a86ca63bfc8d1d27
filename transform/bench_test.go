package transform

import (
	"bytes"
	"context"
	"io"
	"runtime"
	"runtime/metrics"
	"sync"
	"testing"
	"time"

	"filippo.io/age"
)

// benchText is 256 MiB of text-like data (about 3:1 with zstd -3), made
// once per test binary.
var benchText = sync.OnceValue(func() []byte { return textLike(256<<20, 42) })

// Encoding throughput and ratio of 256 MiB of text-like data in segments
// of the default size, on all cores: run with
//
//	go test -run '^$' -bench . -benchtime 3x ./transform
//
// MB/s is of plaintext; ratio is plaintext over stored bytes; peak-heap-MiB
// is the most heap the encode held, garbage not yet collected included (an
// upper bound for the upload's memory formula).
func BenchmarkEncode(b *testing.B) {
	id := newKey(b)
	data := benchText()
	for _, spec := range []Spec{
		{Compress: CompressZstd, Level: 3},
		{Compress: CompressZstd, Level: 3, Encrypt: true},
		{Compress: CompressNone, Encrypt: true},
		{Compress: CompressZstd, Level: 1, Encrypt: true},
	} {
		b.Run(spec.String(), func(b *testing.B) {
			var rcpt []age.Recipient
			if spec.Encrypt {
				rcpt = []age.Recipient{id.Recipient()}
			}
			b.SetBytes(int64(len(data)))
			var stored int64
			peak := watchHeap()
			for b.Loop() {
				enc, err := NewEncoder(spec, rcpt)
				if err != nil {
					b.Fatal(err)
				}
				stored = 0
				s := &Segmenter{Encoder: enc, Size: DefaultSegmentSize}
				_, err = s.Run(context.Background(), bytes.NewReader(data), nil, func(int) (Sink, error) {
					return &sinkAdder{total: &stored}, nil
				})
				enc.Close()
				if err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(len(data))/float64(stored), "ratio")
			b.ReportMetric(float64(peak())/(1<<20), "peak-heap-MiB")
		})
	}
}

// Decoding throughput of the same data, compressed and encrypted. Its
// peak-heap-MiB is mostly garbage: filippo.io/age allocates a new 64 KiB
// buffer for each chunk it decrypts.
func BenchmarkDecode(b *testing.B) {
	id := newKey(b)
	data := benchText()
	spec := Spec{Compress: CompressZstd, Level: 3, Encrypt: true}
	sinks, res := encodeAll(b, data, spec, []age.Recipient{id.Recipient()}, DefaultSegmentSize, 16<<20)
	b.SetBytes(int64(len(data)))
	peak := watchHeap()
	for b.Loop() {
		for i, m := range sinks {
			sr, err := NewSegmentReader(bytes.NewReader(m.buf.Bytes()), spec, []age.Identity{id}, Expect{Record: res.Segments[i], PartSize: 16 << 20})
			if err != nil {
				b.Fatal(err)
			}
			if _, err := io.Copy(io.Discard, sr); err != nil {
				b.Fatal(err)
			}
			sr.Close()
		}
	}
	b.ReportMetric(float64(peak())/(1<<20), "peak-heap-MiB")
}

type sinkAdder struct{ total *int64 }

func (s *sinkAdder) Write(p []byte) (int, error)   { *s.total += int64(len(p)); return len(p), nil }
func (s *sinkAdder) Finish(Record) (string, error) { return "", nil }

// watchHeap samples the live heap every 10 ms until the returned function
// is called, which returns the largest sample above the heap at the start.
func watchHeap() func() uint64 {
	runtime.GC()
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	read := func() uint64 { metrics.Read(sample); return sample[0].Value.Uint64() }
	base := read()
	var peak uint64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				if v := read(); v > base && v-base > peak {
					peak = v - base
				}
			}
		}
	}()
	return func() uint64 { close(stop); <-done; return peak }
}
