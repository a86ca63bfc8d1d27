package transform

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"testing"

	"filippo.io/age"
	"pgregory.net/rapid"
)

// specs are the transforms a user can choose, plus none (the package still
// works without one, though the ledger stores such streams unsegmented).
var specs = []Spec{
	{Compress: CompressZstd, Level: 3},
	{Compress: CompressNone, Encrypt: true},
	{Compress: CompressZstd, Level: 3, Encrypt: true},
	{Compress: CompressZstd, Level: 19, Encrypt: true},
	{Compress: CompressZstd, Level: 1},
	{Compress: CompressNone},
}

// decodeAll decodes each sink with its record and concatenates the plaintext.
func decodeAll(t tester, sinks []*memSink, res Result, spec Spec, ids []age.Identity, partSize int64) []byte {
	t.Helper()
	var out bytes.Buffer
	for i, m := range sinks {
		sr, err := NewSegmentReader(bytes.NewReader(m.buf.Bytes()), spec, ids, Expect{Record: res.Segments[i], PartSize: partSize})
		if err != nil {
			t.Fatalf("segment %d: %v", i, err)
		}
		if _, err := io.Copy(&out, sr); err != nil {
			t.Fatalf("segment %d: %v", i, err)
		}
		sr.Close()
	}
	return out.Bytes()
}

// checkRecords checks what a user's ledger would hold for data cut at size.
func checkRecords(t tester, data []byte, sinks []*memSink, res Result, size, partSize int64) {
	t.Helper()
	want := max((int64(len(data))+size-1)/size, 1)
	if int64(len(res.Segments)) != want || len(sinks) != len(res.Segments) {
		t.Fatalf("%d bytes at %d a segment: %d records and %d objects, want %d", len(data), size, len(res.Segments), len(sinks), want)
	}
	var total int64
	for i, r := range res.Segments {
		end := min(int64(i+1)*size, int64(len(data)))
		plain := data[int64(i)*size : end]
		h := NewStoredHash(partSize)
		h.Write(sinks[i].buf.Bytes())
		if r.Index != i || r.PlainOffset != int64(i)*size || r.PlainBytes != int64(len(plain)) || r.PlainSHA256 != sha(plain) ||
			r.StoredBytes != int64(sinks[i].buf.Len()) || r.StoredSHA256 != h.Sum() || *sinks[i].finished != withoutStored(r) {
			t.Fatalf("segment %d: record %+v does not describe plaintext [%d,%d) stored as %d bytes", i, r, int64(i)*size, end, sinks[i].buf.Len())
		}
		total += r.PlainBytes
	}
	if total != int64(len(data)) || res.PlainBytes != total {
		t.Fatalf("records add up to %d plaintext bytes (result says %d), want %d", total, res.PlainBytes, len(data))
	}
	if sum, _ := StreamSHA256(res.Segments); sum != res.StreamSHA256 || res.StreamSHA256 == "" {
		t.Fatalf("stream digest %q, want %q", res.StreamSHA256, sum)
	}
}

func withoutStored(r Record) Record { r.StoredSHA256 = ""; return r }

func TestRoundTrip(t *testing.T) {
	id := newKey(t)
	const size, partSize = 64 << 10, 16 << 10
	text, noise := textLike(5*size+1000, 1), random(5*size+1000, 2)
	for _, spec := range specs {
		var rcpt []age.Recipient
		var ids []age.Identity
		if spec.Encrypt {
			rcpt, ids = []age.Recipient{id.Recipient()}, []age.Identity{id}
		}
		for _, in := range []struct {
			name string
			data []byte
		}{
			{"empty", nil},
			{"one byte", text[:1]},
			{"short", text[:1000]},
			{"exactly one segment", text[:size]},
			{"one segment and a byte", text[:size+1]},
			{"exact multiple", text[:3*size]},
			{"compressible tail", text},
			{"incompressible", noise},
			{"incompressible exact multiple", noise[:4*size]},
		} {
			t.Run(spec.String()+"/"+in.name, func(t *testing.T) {
				sinks, res := encodeAll(t, in.data, spec, rcpt, size, partSize)
				checkRecords(t, in.data, sinks, res, size, partSize)
				if got := decodeAll(t, sinks, res, spec, ids, partSize); !bytes.Equal(got, in.data) {
					t.Fatalf("decoded %d bytes, not the %d written", len(got), len(in.data))
				}
				var stored int64
				for _, r := range res.Segments {
					stored += r.StoredBytes
				}
				if spec.Compress == CompressZstd && in.name == "compressible tail" && stored*2 > int64(len(in.data)) {
					t.Errorf("text-like data stored as %d of %d bytes: not compressed", stored, len(in.data))
				}
				if spec.Encrypt {
					for i, m := range sinks {
						if !bytes.HasPrefix(m.buf.Bytes(), []byte("age-encryption.org/v1\n")) || len(in.data) > 64 && bytes.Contains(m.buf.Bytes(), in.data[int64(i)*size:][:32]) {
							t.Fatalf("segment %d is not an age file, or shows its plaintext", i)
						}
					}
				}
			})
		}
	}
}

// A flipped byte anywhere in a stored segment is reported as damage when
// the record is known (verify --read-data, restore); without any record an
// encrypted segment still fails to decode (as damage or, in the recipient
// stanza, as a key that does not match).
func TestFlippedByte(t *testing.T) {
	id := newKey(t)
	data := textLike(150<<10, 3)
	const size, partSize = 100 << 10, 8 << 10
	for _, spec := range specs {
		var rcpt []age.Recipient
		var ids []age.Identity
		if spec.Encrypt {
			rcpt, ids = []age.Recipient{id.Recipient()}, []age.Identity{id}
		}
		sinks, res := encodeAll(t, data, spec, rcpt, size, partSize)
		t.Run(spec.String(), func(t *testing.T) {
			undetected := 0
			for seg, m := range sinks {
				stored := m.buf.Bytes()
				for pos := range stored {
					// Every byte of the header and the last 100, every 251st between.
					if pos > 300 && pos < len(stored)-100 && pos%251 != 0 {
						continue
					}
					bad := bytes.Clone(stored)
					bad[pos] ^= 0x10
					err := decodeErr(bad, spec, ids, Expect{Record: res.Segments[seg], PartSize: partSize})
					if !errors.Is(err, ErrDamaged) {
						t.Fatalf("segment %d byte %d flipped, with its record: %v, want ErrDamaged", seg, pos, err)
					}
					err = decodeErr(bad, spec, ids, Expect{})
					switch {
					case spec.Encrypt && !errors.Is(err, ErrDamaged) && !errors.Is(err, ErrWrongIdentity):
						t.Fatalf("segment %d byte %d flipped, no record: %v, want an error", seg, pos, err)
					case err == nil:
						undetected++
					}
				}
			}
			if spec.Encrypt && undetected > 0 || spec == (Spec{Compress: CompressNone}) && undetected == 0 {
				t.Fatalf("%d flips undetected without a record", undetected)
			}
			t.Logf("%s: %d flipped bytes not detected by the format alone (the stored digest catches them)", spec, undetected)
		})
	}
}

// decodeErr reads a whole segment and returns the error, nil on success.
func decodeErr(stored []byte, spec Spec, ids []age.Identity, want Expect) error {
	sr, err := NewSegmentReader(bytes.NewReader(stored), spec, ids, want)
	if err != nil {
		return err
	}
	defer sr.Close()
	_, err = io.Copy(io.Discard, sr)
	return err
}

func TestTruncatedAndTrailing(t *testing.T) {
	id := newKey(t)
	data := textLike(200<<10, 4)
	for _, spec := range specs[:4] {
		rcpt, ids := []age.Recipient(nil), []age.Identity(nil)
		if spec.Encrypt {
			rcpt, ids = []age.Recipient{id.Recipient()}, []age.Identity{id}
		}
		sinks, res := encodeAll(t, data, spec, rcpt, 1<<20, 1<<20)
		stored, rec := sinks[0].buf.Bytes(), res.Segments[0]
		for name, bad := range map[string][]byte{
			"cut by one":      stored[:len(stored)-1],
			"cut in half":     stored[:len(stored)/2],
			"trailing zero":   append(bytes.Clone(stored), 0),
			"trailing copy":   append(bytes.Clone(stored), stored...),
			"trailing frame":  append(bytes.Clone(stored), []byte("\x28\xb5\x2f\xfd")...),
			"trailing header": append(bytes.Clone(stored), []byte("age-encryption.org/v1\n")...),
		} {
			// The format alone catches these, but for one: zstd frames
			// concatenate, so a zstd segment followed by a whole frame is
			// a longer valid stream that only the record tells from the
			// one uploaded.
			if spec.Encrypt || name != "trailing copy" {
				if err := decodeErr(bad, spec, ids, Expect{}); !errors.Is(err, ErrDamaged) {
					t.Errorf("%s, %s: %v, want ErrDamaged", spec, name, err)
				}
			}
			if err := decodeErr(bad, spec, ids, Expect{Record: rec}); !errors.Is(err, ErrDamaged) {
				t.Errorf("%s, %s, with the plaintext record: %v, want ErrDamaged", spec, name, err)
			}
			if err := decodeErr(bad, spec, ids, Expect{Record: rec, PartSize: 1 << 20}); !errors.Is(err, ErrDamaged) {
				t.Errorf("%s, %s, with record: %v, want ErrDamaged", spec, name, err)
			}
		}
	}
}

func TestIdentity(t *testing.T) {
	owner, other, third := newKey(t), newKey(t), newKey(t)
	spec := Spec{Compress: CompressZstd, Level: 3, Encrypt: true}
	data := textLike(10<<10, 5)
	sinks, res := encodeAll(t, data, spec, []age.Recipient{owner.Recipient(), third.Recipient()}, 1<<20, 1<<20)
	stored := sinks[0].buf.Bytes()
	want := Expect{Record: res.Segments[0], PartSize: 1 << 20}

	// No identity: refused before reading anything.
	src := &countReader{r: bytes.NewReader(stored)}
	if _, err := NewSegmentReader(src, spec, nil, want); !errors.Is(err, ErrNoIdentity) || src.count() != 0 {
		t.Fatalf("no identity: %v after %d bytes read, want ErrNoIdentity at once", err, src.count())
	}
	// The wrong one: typed, and the intact object is not called damaged.
	for _, w := range []Expect{want, {}} {
		if _, err := NewSegmentReader(bytes.NewReader(stored), spec, []age.Identity{other}, w); !errors.Is(err, ErrWrongIdentity) || errors.Is(err, ErrDamaged) {
			t.Fatalf("wrong identity: %v, want ErrWrongIdentity", err)
		}
	}
	// Any recipient's identity opens it, among others.
	for _, ids := range [][]age.Identity{{owner}, {third}, {other, third}} {
		if err := decodeErr(stored, spec, ids, want); err != nil {
			t.Fatalf("identities %v: %v", ids, err)
		}
	}
	// The ErrWrongIdentity message carries no key.
	_, err := NewSegmentReader(bytes.NewReader(stored), spec, []age.Identity{other}, want)
	if bytes.Contains([]byte(err.Error()), []byte(other.String()[16:40])) {
		t.Fatalf("error shows the identity: %v", err)
	}
}

// A source that fails is not damage: the caller retries a cut connection.
func TestSourceErrorIsNotDamage(t *testing.T) {
	id := newKey(t)
	cut := errors.New("connection reset")
	for _, spec := range specs[:3] {
		rcpt, ids := []age.Recipient(nil), []age.Identity(nil)
		if spec.Encrypt {
			rcpt, ids = []age.Recipient{id.Recipient()}, []age.Identity{id}
		}
		sinks, res := encodeAll(t, random(300<<10, 6), spec, rcpt, 1<<20, 1<<20)
		stored := sinks[0].buf.Bytes()
		for _, at := range []int{10, len(stored) / 2} {
			src := io.MultiReader(bytes.NewReader(stored[:at]), &failReader{cut})
			err := func() error {
				sr, err := NewSegmentReader(src, spec, ids, Expect{Record: res.Segments[0], PartSize: 1 << 20})
				if err != nil {
					return err
				}
				defer sr.Close()
				_, err = io.Copy(io.Discard, sr)
				return err
			}()
			if !errors.Is(err, cut) || errors.Is(err, ErrDamaged) {
				t.Errorf("%s, source cut at %d: %v, want the source's error", spec, at, err)
			}
		}
	}
}

type failReader struct{ err error }

func (f *failReader) Read([]byte) (int, error) { return 0, f.err }

func TestResume(t *testing.T) {
	id := newKey(t)
	spec := Spec{Compress: CompressZstd, Level: 3, Encrypt: true}
	rcpt, ids := []age.Recipient{id.Recipient()}, []age.Identity{id}
	const size, partSize = 32 << 10, 8 << 10
	data := textLike(5*size+77, 7)
	first, res := encodeAll(t, data, spec, rcpt, size, partSize)

	for k := 0; k <= len(res.Segments); k++ {
		enc, _ := NewEncoder(spec, rcpt)
		var sinks []*memSink
		s := &Segmenter{Encoder: enc, Size: size}
		got, err := s.Run(t.Context(), bytes.NewReader(data), res.Segments[:k], func(i int) (Sink, error) {
			if i != k+len(sinks) {
				t.Fatalf("resume from %d opened segment %d", k, i)
			}
			m := &memSink{partSize: partSize}
			sinks = append(sinks, m)
			return m, nil
		})
		enc.Close()
		if err != nil {
			t.Fatalf("resume after %d segments: %v", k, err)
		}
		all := append(append([]*memSink(nil), first[:k]...), sinks...)
		checkRecords(t, data, all, got, size, partSize)
		if got.StreamSHA256 != res.StreamSHA256 {
			t.Fatalf("resume after %d: stream digest changed", k)
		}
		if !bytes.Equal(decodeAll(t, all, got, spec, ids, partSize), data) {
			t.Fatalf("resume after %d: old and new segments do not decode to the stream", k)
		}
		// Every segment written again is a new age file: same plaintext,
		// other bytes (a fresh file key and nonce).
		for i, m := range sinks {
			if bytes.Equal(m.buf.Bytes()[len(m.buf.Bytes())-64:], first[k+i].buf.Bytes()[len(first[k+i].buf.Bytes())-64:]) {
				t.Fatalf("segment %d re-encrypted to the same bytes", k+i)
			}
		}
	}

	changed := bytes.Clone(data)
	changed[2*size+5] ^= 1
	for _, tc := range []struct {
		name string
		data []byte
		k    int
	}{
		{"byte changed in a stored segment", changed, 3},
		{"stream shorter", data[:2*size+10], 3},
		{"stream longer after the last", append(bytes.Clone(data), 'x'), len(res.Segments)},
		{"stream ends at a stored boundary", data[:3*size], 4},
	} {
		enc, _ := NewEncoder(spec, rcpt)
		s := &Segmenter{Encoder: enc, Size: size}
		_, err := s.Run(t.Context(), bytes.NewReader(tc.data), res.Segments[:tc.k], func(int) (Sink, error) { return &memSink{partSize: partSize}, nil })
		enc.Close()
		if !errors.Is(err, ErrStreamChanged) {
			t.Errorf("%s: %v, want ErrStreamChanged", tc.name, err)
		}
	}
}

// A producer that failed (a killed zfs send reads like a short stream) must
// leave the last segment unfinished.
func TestCheckBeforeLastSegment(t *testing.T) {
	enc, _ := NewEncoder(Spec{Compress: CompressZstd, Level: 3}, nil)
	defer enc.Close()
	killed := errors.New("zfs send: killed")
	for _, n := range []int{100, 2 << 10, 3 << 10} { // short last, exact boundary, full
		var finished []int
		var lastSink *finishSink
		s := &Segmenter{Encoder: enc, Size: 1 << 10, Check: func() error { return killed }}
		_, err := s.Run(t.Context(), bytes.NewReader(textLike(n, 8)), nil, func(i int) (Sink, error) {
			lastSink = &finishSink{i: i, finished: &finished}
			return lastSink, nil
		})
		last := (n+1023)/1024 - 1
		if !errors.Is(err, killed) || len(finished) != last {
			t.Errorf("%d bytes: %v, finished %v; want the error and all but segment %d finished", n, err, finished, last)
		}
		// What the unfinished segment wrote is not a whole object.
		if err := decodeErr(lastSink.buf.Bytes(), Spec{Compress: CompressZstd, Level: 3}, nil, Expect{}); !errors.Is(err, ErrDamaged) {
			t.Errorf("%d bytes: the aborted segment's %d bytes decode: %v", n, lastSink.buf.Len(), err)
		}
	}
	// The encoder is free for the next run after an abort.
	if _, err := enc.NewSegment(io.Discard); err != nil {
		t.Fatal(err)
	}
}

type finishSink struct {
	i        int
	finished *[]int
	buf      bytes.Buffer
}

func (f *finishSink) Write(p []byte) (int, error) { return f.buf.Write(p) }
func (f *finishSink) Finish(Record) (string, error) {
	*f.finished = append(*f.finished, f.i)
	return "x", nil
}

// Any stream, cut at any segment size and resumed after any number of
// segments, decodes to itself, and the records describe it.
func TestSegmenterProperty(t *testing.T) {
	id := newKey(t)
	rapid.Check(t, func(rt *rapid.T) {
		spec := rapid.SampledFrom(specs).Draw(rt, "spec")
		size := rapid.Int64Range(1, 5000).Draw(rt, "size")
		partSize := rapid.Int64Range(1, 3000).Draw(rt, "partSize")
		n := rapid.IntRange(0, int(size)*4+10).Draw(rt, "n")
		var data []byte
		if rapid.Bool().Draw(rt, "text") {
			data = textLike(n, uint64(n))
		} else {
			data = random(n, uint64(n))
		}
		rcpt, ids := []age.Recipient(nil), []age.Identity(nil)
		if spec.Encrypt {
			rcpt, ids = []age.Recipient{id.Recipient()}, []age.Identity{id}
		}
		sinks, res := encodeAll(t, data, spec, rcpt, size, partSize)
		checkRecords(rt, data, sinks, res, size, partSize)
		k := rapid.IntRange(0, len(res.Segments)).Draw(rt, "resumeAfter")
		enc, _ := NewEncoder(spec, rcpt)
		defer enc.Close()
		more := sinks[:k:k]
		got, err := (&Segmenter{Encoder: enc, Size: size}).Run(t.Context(), bytes.NewReader(data), res.Segments[:k], func(int) (Sink, error) {
			m := &memSink{partSize: partSize}
			more = append(more, m)
			return m, nil
		})
		if err != nil {
			rt.Fatal(err)
		}
		checkRecords(rt, data, more, got, size, partSize)
		if !bytes.Equal(decodeAll(rt, more, got, spec, ids, partSize), data) {
			rt.Fatal("resumed stream does not decode to the data")
		}
	})
}

func TestStoredHash(t *testing.T) {
	data := random(10000, 9)
	for _, ps := range []int64{1, 7, 4096, 5000, 9999, 10000, 10001} {
		// Written in any pieces, it equals the composite of the parts.
		h := NewStoredHash(ps)
		for rest := data; len(rest) > 0; {
			k := min(len(rest), 1+len(rest)%333)
			h.Write(rest[:k])
			rest = rest[k:]
		}
		var parts [][32]byte
		for off := int64(0); off < int64(len(data)); off += ps {
			parts = append(parts, sha256Sum(data[off:min(off+ps, int64(len(data)))]))
		}
		if got, want := h.Sum(), CompositeSHA256(parts); got != want || got[len(got)-len(fmt.Sprint(len(parts))):] != fmt.Sprint(len(parts)) {
			t.Errorf("part size %d: %s, want %s", ps, got, want)
		}
	}
	if a, b := NewStoredHash(5).Sum(), CompositeSHA256([][32]byte{sha256Sum(nil)}); a != b {
		t.Errorf("empty object: %s, want one empty part %s", a, b)
	}
}

func TestSegmentWriterAlone(t *testing.T) {
	id := newKey(t)
	spec := Spec{Compress: CompressZstd, Level: 6, Encrypt: true}
	data := textLike(300<<10, 13)
	var obj bytes.Buffer
	sw, err := NewSegmentWriter(&obj, spec, []age.Recipient{id.Recipient()})
	if err != nil {
		t.Fatal(err)
	}
	for rest := data; len(rest) > 0; rest = rest[min(len(rest), 7777):] {
		if _, err := sw.Write(rest[:min(len(rest), 7777)]); err != nil {
			t.Fatal(err)
		}
	}
	if err := sw.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := sw.Write([]byte("x")); err == nil {
		t.Fatal("write after Close succeeded")
	}
	if sw.PlainBytes() != int64(len(data)) || sw.PlainSHA256() != sha(data) || sw.StoredBytes() != int64(obj.Len()) {
		t.Fatalf("counters: %d plain (%s), %d stored; want %d (%s), %d", sw.PlainBytes(), sw.PlainSHA256(), sw.StoredBytes(), len(data), sha(data), obj.Len())
	}
	sr, err := NewSegmentReader(&obj, spec, []age.Identity{id}, Expect{Record: Record{PlainBytes: sw.PlainBytes(), PlainSHA256: sw.PlainSHA256()}})
	if err != nil {
		t.Fatal(err)
	}
	defer sr.Close()
	got, err := io.ReadAll(sr)
	if err != nil || !bytes.Equal(got, data) || sr.PlainSHA256() != sha(data) {
		t.Fatalf("read back %d bytes, %v", len(got), err)
	}
}

func TestEncoderRefuses(t *testing.T) {
	id := newKey(t)
	for _, tc := range []struct {
		spec Spec
		rcpt []age.Recipient
		want string
	}{
		{Spec{Compress: CompressZstd, Level: 3, Encrypt: true}, nil, "at least one age recipient"},
		{Spec{Compress: CompressZstd, Level: 3}, []age.Recipient{id.Recipient()}, "without encryption"},
		{Spec{Compress: CompressZstd, Level: 0}, nil, "level 0"},
		{Spec{Compress: "lz4"}, nil, "unknown compression"},
	} {
		if _, err := NewEncoder(tc.spec, tc.rcpt); err == nil || !bytes.Contains([]byte(err.Error()), []byte(tc.want)) {
			t.Errorf("NewEncoder(%+v): %v, want %q", tc.spec, err, tc.want)
		}
	}
	enc, _ := NewEncoder(Spec{Compress: CompressZstd, Level: 3}, nil)
	defer enc.Close()
	if _, err := enc.NewSegment(io.Discard); err != nil {
		t.Fatal(err)
	}
	if _, err := enc.NewSegment(io.Discard); err == nil {
		t.Fatal("two segments open on one encoder")
	}
}

// An object with no zstd frame at all (empty, or an age file of nothing) is
// not a segment, though a zstd decoder reads it as an empty stream.
func TestNoFrameIsDamage(t *testing.T) {
	id := newKey(t)
	var empty bytes.Buffer
	w, _ := age.Encrypt(&empty, id.Recipient())
	w.Close()
	if err := decodeErr(nil, Spec{Compress: CompressZstd, Level: 3}, nil, Expect{}); !errors.Is(err, ErrDamaged) {
		t.Errorf("empty zstd object: %v, want ErrDamaged", err)
	}
	if err := decodeErr(empty.Bytes(), Spec{Compress: CompressZstd, Level: 3, Encrypt: true}, []age.Identity{id}, Expect{}); !errors.Is(err, ErrDamaged) {
		t.Errorf("age file of nothing: %v, want ErrDamaged", err)
	}
	// An empty segment as written is one empty frame, and reads.
	sinks, res := encodeAll(t, nil, Spec{Compress: CompressZstd, Level: 3, Encrypt: true}, []age.Recipient{id.Recipient()}, 1<<20, 1<<20)
	if got := decodeAll(t, sinks, res, Spec{Compress: CompressZstd, Level: 3, Encrypt: true}, []age.Identity{id}, 1<<20); len(got) != 0 {
		t.Errorf("empty segment read as %d bytes", len(got))
	}
}
