package transform

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"strconv"
	"testing"

	"filippo.io/age"
)

// textLike returns n bytes that compress about 3:1 with zstd -3, like logs:
// a timestamp, a few words of a 2,000-word vocabulary drawn Zipf-like, a
// number. It is deterministic in seed.
func textLike(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	words := make([][]byte, 2000)
	for i := range words {
		w := make([]byte, 2+r.IntN(9))
		for j := range w {
			w[j] = byte('a' + r.IntN(26))
		}
		words[i] = w
	}
	// Drawing from math/rand's Zipf per word is slow; a table of draws is
	// as good for compression.
	z := rand.NewZipf(r, 1.1, 2, uint64(len(words)-1))
	table := make([]uint16, 1<<16)
	for i := range table {
		table[i] = uint16(z.Uint64())
	}
	out := make([]byte, 0, n+256)
	for line := 0; len(out) < n; line++ {
		out = strconv.AppendInt(out, int64(1700000000+line*3+r.IntN(3)), 10)
		out = append(out, ' ')
		for k := 4 + r.IntN(12); k > 0; k-- {
			out = append(out, words[table[r.Uint32()&0xffff]]...)
			out = append(out, ' ')
		}
		out = strconv.AppendInt(out, int64(r.IntN(100000)), 10)
		out = append(out, '\n')
	}
	return out[:n]
}

// random returns n incompressible bytes, deterministic in seed.
func random(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for j := 0; j < 8; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	for i := n &^ 7; i < n; i++ {
		b[i] = byte(r.Uint32())
	}
	return b
}

// newKey returns a fresh X25519 identity.
func newKey(t testing.TB) *age.X25519Identity {
	t.Helper()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// memSink keeps a segment's stored bytes and hashes them as an uploader
// with parts of partSize would.
type memSink struct {
	partSize int64
	buf      bytes.Buffer
	finished *Record
}

func (m *memSink) Write(p []byte) (int, error) { return m.buf.Write(p) }

func (m *memSink) Finish(r Record) (string, error) {
	if r.StoredBytes != int64(m.buf.Len()) {
		return "", fmt.Errorf("record says %d stored bytes, the sink got %d", r.StoredBytes, m.buf.Len())
	}
	h := NewStoredHash(m.partSize)
	h.Write(m.buf.Bytes())
	m.finished = &r
	return h.Sum(), nil
}

// encodeAll segments data with spec into memory sinks.
func encodeAll(t tester, data []byte, spec Spec, recipients []age.Recipient, size, partSize int64) ([]*memSink, Result) {
	t.Helper()
	enc, err := NewEncoder(spec, recipients)
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	var sinks []*memSink
	s := &Segmenter{Encoder: enc, Size: size}
	res, err := s.Run(context.Background(), bytes.NewReader(data), nil, func(i int) (Sink, error) {
		if i != len(sinks) {
			t.Fatalf("open(%d) after %d segments", i, len(sinks))
		}
		m := &memSink{partSize: partSize}
		sinks = append(sinks, m)
		return m, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return sinks, res
}

func sha(b []byte) string { return fmt.Sprintf("%x", sha256.Sum256(b)) }

func sha256Sum(b []byte) [32]byte { return sha256.Sum256(b) }

// tester is what the helpers need of *testing.T and *rapid.T.
type tester interface {
	Helper()
	Fatal(args ...any)
	Fatalf(format string, args ...any)
}
