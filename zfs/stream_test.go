package zfs

import (
	"errors"
	"os"
	"testing"

	"pgregory.net/rapid"
)

// Streams recorded from zfs-fuse: fxpool/ds@a (guid 14743629485921276048)
// in full, and incremental from it to @b (guid 1751617006636000446).
const guidA, guidB = 14743629485921276048, 1751617006636000446

func TestStreamCheck(t *testing.T) {
	full, err := os.ReadFile("testdata/zfs-fuse-full.zfs")
	if err != nil {
		t.Fatal(err)
	}
	incr, err := os.ReadFile("testdata/zfs-fuse-incremental.zfs")
	if err != nil {
		t.Fatal(err)
	}
	flipped := append([]byte(nil), full...)
	flipped[8] ^= 1
	for _, tc := range []struct {
		name     string
		data     []byte
		to, from uint64
		ok       bool
	}{
		{"full", full, guidA, 0, true},
		{"incremental", incr, guidB, guidA, true},
		{"full checked as incremental", full, guidA, guidB, false},
		{"another snapshot", incr, guidA, 0, false},
		{"cut before END", full[:len(full)-312], guidA, 0, false},
		{"cut mid-record", full[:len(full)-100], guidA, 0, false},
		{"no BEGIN", flipped, guidA, 0, false},
		{"tiny", full[:400], guidA, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rapid.Check(t, func(rt *rapid.T) {
				var c StreamCheck
				for rest := tc.data; len(rest) > 0; {
					n := rapid.IntRange(1, len(rest)).Draw(rt, "write")
					c.Write(rest[:n])
					rest = rest[n:]
				}
				err := c.Check(tc.to, tc.from)
				if tc.ok != (err == nil) || err != nil && !errors.Is(err, ErrNotStream) {
					rt.Fatalf("Check = %v, want ok=%v", err, tc.ok)
				}
			})
		})
	}
}

// TestParseBegin reads what restore checks before zfs receive gets a
// byte: the GUIDs, the snapshot name zfs receive will give, and whether the
// stream is a compound one.
func TestParseBegin(t *testing.T) {
	incr, err := os.ReadFile("testdata/zfs-fuse-incremental.zfs")
	if err != nil {
		t.Fatal(err)
	}
	b, err := ParseBegin(incr[:BeginSize])
	if err != nil {
		t.Fatal(err)
	}
	if b.ToGUID != guidB || b.FromGUID != guidA || b.ToName != "fxpool/ds@b" || b.ToShort() != "b" || b.Compound {
		t.Errorf("ParseBegin = %+v, want the stream of fxpool/ds@b (%d) from %d, not compound", b, uint64(guidB), uint64(guidA))
	}
	compound := append([]byte(nil), incr[:BeginSize]...)
	compound[16] = compound[16]&^3 | 2 // versioninfo's header type, little-endian
	if b, err := ParseBegin(compound); err != nil || !b.Compound {
		t.Errorf("ParseBegin of a compound header = %+v, %v; want Compound", b, err)
	}
	for name, rec := range map[string][]byte{"short": incr[:BeginSize-1], "not a stream": make([]byte, BeginSize)} {
		if _, err := ParseBegin(rec); !errors.Is(err, ErrNotStream) {
			t.Errorf("ParseBegin(%s) = %v, want ErrNotStream", name, err)
		}
	}
}
