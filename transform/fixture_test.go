package transform

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"filippo.io/age"
)

// The fixture in testdata/v1 was written by this package's first version
// (ZFS2S3_WRITE_FIXTURE=1 go test -run TestFormatFixture, once): three streams, one
// per transform, with the records the ledger keeps and a test identity.
// Every later version must read them as they are: they are the format's
// stability test. Never regenerate them; add a v2 beside them instead.
const fixtureDir = "testdata/v1"

type fixture struct {
	Spec         string   `json:"spec"`
	SegmentSize  int64    `json:"segment_size"`
	PartSize     int64    `json:"part_size"`
	StreamBytes  int64    `json:"stream_bytes"`
	StreamSHA256 string   `json:"stream_sha256"`
	Objects      []Record `json:"objects"`
}

var fixtureSpecs = []string{"zstd:3", "age", "zstd:3+age"}

func fixtureName(spec string) string {
	return map[string]string{"zstd:3": "zstd", "age": "age", "zstd:3+age": "zstd-age"}[spec]
}

func TestFormatFixture(t *testing.T) {
	if os.Getenv("ZFS2S3_WRITE_FIXTURE") == "1" {
		writeFixture(t)
	}
	ids, err := ReadIdentitiesFile(filepath.Join(fixtureDir, "key.txt"))
	if err != nil {
		t.Fatal(err)
	}
	for _, specName := range fixtureSpecs {
		t.Run(specName, func(t *testing.T) {
			f, objects := readFixture(t, specName)
			spec, err := ParseSpec(f.Spec)
			if err != nil {
				t.Fatal(err)
			}
			var plain bytes.Buffer
			for i, obj := range objects {
				sr, err := NewSegmentReader(bytes.NewReader(obj), spec, Identities(ids), Expect{Record: f.Objects[i], PartSize: f.PartSize})
				if err != nil {
					t.Fatalf("object %d: %v", i, err)
				}
				if _, err := plain.ReadFrom(sr); err != nil {
					t.Fatalf("object %d: %v", i, err)
				}
				sr.Close()
			}
			sum, _ := StreamSHA256(f.Objects)
			if int64(plain.Len()) != f.StreamBytes || sum != f.StreamSHA256 {
				t.Fatalf("fixture decodes to %d bytes with stream digest %s, want %d and %s", plain.Len(), sum, f.StreamBytes, f.StreamSHA256)
			}
			// And a stream re-encoded today has the same records but for
			// the stored bytes (zstd output and age keys vary).
			var rcpt []age.Recipient
			if spec.Encrypt {
				rcpt = []age.Recipient{ids[0].Recipient()}
			}
			_, res := encodeAll(t, plain.Bytes(), spec, rcpt, f.SegmentSize, f.PartSize)
			for i, r := range res.Segments {
				o := f.Objects[i]
				if r.Index != o.Index || r.PlainOffset != o.PlainOffset || r.PlainBytes != o.PlainBytes || r.PlainSHA256 != o.PlainSHA256 {
					t.Fatalf("segment %d re-encoded: %+v, the fixture has %+v", i, r, o)
				}
			}
			if res.StreamSHA256 != f.StreamSHA256 {
				t.Fatalf("stream digest today %s, fixture %s", res.StreamSHA256, f.StreamSHA256)
			}
		})
	}
}

func readFixture(t *testing.T, spec string) (fixture, [][]byte) {
	t.Helper()
	dir := filepath.Join(fixtureDir, fixtureName(spec))
	b, err := os.ReadFile(filepath.Join(dir, "record.json"))
	if err != nil {
		t.Fatal(err)
	}
	var f fixture
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	var objects [][]byte
	for i := range f.Objects {
		obj, err := os.ReadFile(filepath.Join(dir, objectName(i)))
		if err != nil {
			t.Fatal(err)
		}
		objects = append(objects, obj)
	}
	return f, objects
}

// objectName mirrors the bucket's KEY, KEY.2, KEY.3 ...
func objectName(i int) string {
	if i == 0 {
		return "stream"
	}
	return "stream." + string(rune('1'+i))
}

func writeFixture(t *testing.T) {
	if _, err := os.Stat(fixtureDir); err == nil {
		t.Fatalf("%s exists: a fixture is never rewritten", fixtureDir)
	}
	id := newKey(t)
	os.MkdirAll(fixtureDir, 0o755)
	key := "# A TEST KEY, public in this repository: it protects nothing.\n# public key: " + id.Recipient().String() + "\n" + id.String() + "\n"
	if err := os.WriteFile(filepath.Join(fixtureDir, "key.txt"), []byte(key), 0o644); err != nil {
		t.Fatal(err)
	}
	data := textLike(80<<10, 2026)
	for _, specName := range fixtureSpecs {
		spec, _ := ParseSpec(specName)
		var rcpt []age.Recipient
		if spec.Encrypt {
			rcpt = []age.Recipient{id.Recipient()}
		}
		const size, partSize = 32 << 10, 8 << 10
		sinks, res := encodeAll(t, data, spec, rcpt, size, partSize)
		dir := filepath.Join(fixtureDir, fixtureName(specName))
		os.MkdirAll(dir, 0o755)
		for i, m := range sinks {
			if err := os.WriteFile(filepath.Join(dir, objectName(i)), m.buf.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		b, _ := json.MarshalIndent(fixture{Spec: specName, SegmentSize: size, PartSize: partSize, StreamBytes: res.PlainBytes, StreamSHA256: res.StreamSHA256, Objects: res.Segments}, "", "  ")
		if err := os.WriteFile(filepath.Join(dir, "record.json"), append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
