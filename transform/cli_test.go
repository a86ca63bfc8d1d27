package transform

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"filippo.io/age"

	"github.com/zfs2s3/zfs2s3/internal/testbed"
)

// requireCLI finds the tools of the hand restore FORMAT.md documents
// (Debian's age and zstd; make test installs them).
func requireCLI(t *testing.T, names ...string) {
	t.Helper()
	for _, n := range names {
		_, err := exec.LookPath(n)
		testbed.Require(t, "the "+n+" command (apt-get install "+n+")", err)
	}
}

// handRestore decodes stored segment objects the way FORMAT.md tells a
// user to, without zfs2s3: each object through "age -d -i KEY" if
// encrypted, all of them in order into one "zstd -d" if compressed.
func handRestore(t *testing.T, objects [][]byte, spec Spec, keyFile string) ([]byte, error) {
	t.Helper()
	var out, zstdErr bytes.Buffer
	var sink io.Writer = &out
	var zstd *exec.Cmd
	var zin io.WriteCloser
	if spec.Compress == CompressZstd {
		zstd = exec.Command("zstd", "-d", "-c")
		zstd.Stdout, zstd.Stderr = &out, &zstdErr
		var err error
		if zin, err = zstd.StdinPipe(); err != nil {
			t.Fatal(err)
		}
		if err := zstd.Start(); err != nil {
			t.Fatal(err)
		}
		sink = zin
	}
	var firstErr error
	for i, obj := range objects {
		if !spec.Encrypt {
			sink.Write(obj)
			continue
		}
		var stderr bytes.Buffer
		c := exec.Command("age", "-d", "-i", keyFile)
		c.Stdin, c.Stdout, c.Stderr = bytes.NewReader(obj), sink, &stderr
		if err := c.Run(); err != nil && firstErr == nil {
			firstErr = fmt.Errorf("age -d, object %d: %v: %s", i, err, strings.TrimSpace(stderr.String()))
		}
	}
	if zstd != nil {
		zin.Close()
		if err := zstd.Wait(); err != nil && firstErr == nil {
			firstErr = fmt.Errorf("zstd -d: %v: %s", err, strings.TrimSpace(zstdErr.String()))
		}
	}
	return out.Bytes(), firstErr
}

// writeKey writes id as age-keygen does.
func writeKey(t *testing.T, id *age.X25519Identity) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "key.txt")
	text := "# created: by the test\n# public key: " + id.Recipient().String() + "\n" + id.String() + "\n"
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// The promise of the format: the objects of a backup restore by hand with
// the age and zstd CLIs, byte for byte, whatever the segment boundaries.
func TestHandRestoreWithCLIs(t *testing.T) {
	requireCLI(t, "age", "zstd")
	id := newKey(t)
	key := writeKey(t, id)
	const size = 256 << 10
	for _, spec := range specs[:5] {
		for _, in := range []struct {
			name string
			data []byte
		}{
			{"empty", nil},
			{"text, short last segment", textLike(3*size+12345, 10)},
			{"random, exact multiple", random(2*size, 11)},
		} {
			t.Run(spec.String()+"/"+in.name, func(t *testing.T) {
				var rcpt []age.Recipient
				if spec.Encrypt {
					rcpt = []age.Recipient{id.Recipient()}
				}
				sinks, _ := encodeAll(t, in.data, spec, rcpt, size, 64<<10)
				objects := make([][]byte, len(sinks))
				for i, m := range sinks {
					objects[i] = m.buf.Bytes()
				}
				got, err := handRestore(t, objects, spec, key)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, in.data) {
					t.Fatalf("the hand pipeline gave %d bytes, not the %d stored", len(got), len(in.data))
				}
			})
		}
	}
}

// By hand, damage and a wrong key make the pipeline fail: a user piping it
// into zfs receive gets an error, not a different stream.
func TestHandRestoreFailsClearly(t *testing.T) {
	requireCLI(t, "age", "zstd")
	id := newKey(t)
	spec := Spec{Compress: CompressZstd, Level: 3, Encrypt: true}
	sinks, _ := encodeAll(t, textLike(600<<10, 12), spec, []age.Recipient{id.Recipient()}, 256<<10, 64<<10)
	objects := func() [][]byte {
		o := make([][]byte, len(sinks))
		for i, m := range sinks {
			o[i] = bytes.Clone(m.buf.Bytes())
		}
		return o
	}
	if _, err := handRestore(t, objects(), spec, writeKey(t, newKey(t))); err == nil || !strings.Contains(err.Error(), "age -d, object 0") {
		t.Fatalf("wrong key: %v, want age to fail on the first object", err)
	}
	damaged := objects()
	damaged[1][len(damaged[1])/2] ^= 1
	if _, err := handRestore(t, damaged, spec, writeKey(t, id)); err == nil || !strings.Contains(err.Error(), "age -d, object 1") {
		t.Fatalf("damaged object: %v, want age to fail on object 1", err)
	}
}

// The committed fixture of format version 1 restores by hand too.
func TestHandRestoreFixture(t *testing.T) {
	requireCLI(t, "age", "zstd")
	for _, specName := range fixtureSpecs {
		f, objects := readFixture(t, specName)
		spec, _ := ParseSpec(f.Spec)
		got, err := handRestore(t, objects, spec, filepath.Join(fixtureDir, "key.txt"))
		if err != nil {
			t.Fatalf("%s: %v", specName, err)
		}
		var recs []Record
		for off := 0; off < len(got); off += int(f.SegmentSize) {
			recs = append(recs, Record{PlainSHA256: sha(got[off:min(off+int(f.SegmentSize), len(got))])})
		}
		if sum, _ := StreamSHA256(recs); int64(len(got)) != f.StreamBytes || sum != f.StreamSHA256 {
			t.Fatalf("%s: by hand %d bytes with stream digest %s, want %d and %s", specName, len(got), sum, f.StreamBytes, f.StreamSHA256)
		}
	}
}
