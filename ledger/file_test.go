package ledger

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"gopkg.in/yaml.v3"

	"github.com/zfs2s3/zfs2s3/statefile"
)

func TestStoreRoundTrip(t *testing.T) {
	s := OpenStore(t.TempDir(), "bucket", "backups/host 1/")
	l, err := s.Load("bucket", "backups/host 1/")
	if err != nil || len(l.Edges) != 0 {
		t.Fatalf("Load of a new store = %v, %v; want an empty ledger", l, err)
	}
	e := full(1)
	e.Target.GUID = 18446744073709551615 // GUIDs use all 64 bits
	e.Uploaded = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if err := l.Add(e); err != nil {
		t.Fatal(err)
	}
	if err := l.Add(Edge{Target: snap(2), Base: &e.Target, Key: "k2"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Save(l); err != nil {
		t.Fatal(err)
	}
	got, err := s.Load("bucket", "backups/host 1/")
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(l, got); d != "" {
		t.Errorf("round trip (-saved +loaded):\n%s", d)
	}
}

func TestLoadRefusesDamage(t *testing.T) {
	for name, content := range map[string]string{
		"not yaml":         "version: 1\nedges: [\n",
		"future version":   "version: 3\nbucket: b\nprefix: \"\"\nedges: []\n",
		"unknown field":    "version: 1\nbucket: b\nprefix: \"\"\nedges: []\nextra: 1\n",
		"edge w/o guid":    "version: 1\nbucket: b\nprefix: \"\"\nedges:\n- target: {name: a@b}\n  key: k\n",
		"duplicate edge":   "version: 1\nbucket: b\nprefix: \"\"\nedges:\n- {target: {name: a@b, guid: 1}, key: k}\n- {target: {name: a@b, guid: 1}, key: k}\n",
		"other bucket":     "version: 1\nbucket: other\nprefix: \"\"\nedges: []\n",
		"truncated guids":  "version: 1\nbucket: b\nprefix: \"\"\nedges:\n- {target: {name: a@b, guid: -1}, key: k}\n",
		"json: unknown":    `{"version": 1, "bucket": "b", "prefix": "", "edges": [], "extra": 1}`,
		"json: dup edge":   `{"version": 1, "bucket": "b", "prefix": "", "edges": [{"target": {"name": "a@b", "guid": 1}, "key": "k"}, {"target": {"name": "a@b", "guid": 1}, "key": "k"}]}`,
		"json: dup key":    `{"version": 1, "bucket": "b", "prefix": "", "prefix": "x", "edges": []}`,
		"json: trailing":   `{"version": 1, "bucket": "b", "prefix": "", "edges": []} {"version": 1}`,
		"json: cut short":  `{"version": 1, "bucket": "b", "prefix": "", "edges": [{"target": {"name": "a@b", "guid": 1}, "key": "k"}`,
		"json: wrong case": `{"Version": 1, "bucket": "b", "prefix": "", "edges": []}`,
	} {
		t.Run(name, func(t *testing.T) {
			s := OpenStore(t.TempDir(), "b", "")
			os.MkdirAll(s.Dir, 0o700)
			os.WriteFile(s.Path(), []byte(content), 0o600)
			_, err := s.Load("b", "")
			if !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), s.Path()) {
				t.Errorf("Load = %v, want ErrDamaged naming the file", err)
			}
		})
	}
}

// oddLedger has what a ledger file must carry exactly: names with quotes,
// spaces and non-ASCII, 64-bit GUIDs, nanosecond times, a removal mark.
func oddLedger() *Ledger {
	l := New("bucket", "host 1/")
	l.Generation = 7
	a := Snapshot{Name: `tank/my data@"quoted" é:1`, GUID: 18446744073709551615}
	l.Edges = []Edge{
		{Target: a, Key: "tank/my%20data/k", StreamBytes: 5, StoredBytes: 6, SHA256: "ab", Uploaded: time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC), StorageClass: "GLACIER"},
		{Target: Snapshot{Name: "tank/my data@b", GUID: 2}, Base: &a, Key: "k2", Uploaded: time.Date(2026, 1, 3, 0, 0, 0, 0, time.UTC), Removing: true},
	}
	return l
}

// TestFileIsYAML checks that what zfs2s3 writes is YAML: a YAML parser
// (as older zfs2s3 and users' tools use) reads the same ledger from it.
func TestFileIsYAML(t *testing.T) {
	for _, l := range []*Ledger{oddLedger(), New("b", "")} {
		data, err := Marshal(l)
		if err != nil {
			t.Fatal(err)
		}
		var viaYAML Ledger
		if err := yaml.Unmarshal(data, &viaYAML); err != nil {
			t.Fatalf("yaml.Unmarshal of\n%s: %v", data, err)
		}
		if viaYAML.Version != 1 {
			t.Errorf("written as version %d, want 1 (no edge has segments)", viaYAML.Version)
		}
		viaYAML.Version = l.Version
		if d := cmp.Diff(l, &viaYAML); d != "" {
			t.Errorf("read by a YAML parser (-written +read):\n%s", d)
		}
		got, err := Parse(data)
		if err != nil {
			t.Fatal(err)
		}
		if d := cmp.Diff(l, got); d != "" {
			t.Errorf("Parse (-written +read):\n%s", d)
		}
		if n := bytes.Count(data, []byte("\n  {")); n != len(l.Edges) {
			t.Errorf("%d edge lines for %d edges:\n%s", n, len(l.Edges), data)
		}
	}
}

// TestParseReadsBlockYAML reads ledgers written by zfs2s3 before the
// JSON-compatible form, and hand-edited ones, through the YAML parser.
func TestParseReadsBlockYAML(t *testing.T) {
	l := oddLedger()
	block, err := yaml.Marshal(l)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Parse(block)
	if err != nil {
		t.Fatalf("Parse of\n%s: %v", block, err)
	}
	if d := cmp.Diff(l, got); d != "" {
		t.Errorf("(-written +read):\n%s", d)
	}
}

func TestSegmentsRoundTripAndObjects(t *testing.T) {
	l := oddLedger()
	l.Edges[0].StoredBytes = 10
	l.Edges[0].Segments = []Segment{{Key: SegmentKey(l.Edges[0].Key, 1), Bytes: 3}, {Key: SegmentKey(l.Edges[0].Key, 2), Bytes: 1}}
	data, err := Marshal(l)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(l, got); d != "" {
		t.Errorf("round trip (-written +read):\n%s", d)
	}
	want := []Segment{{Key: "tank/my%20data/k", Bytes: 6}, {Key: "tank/my%20data/k.2", Bytes: 3}, {Key: "tank/my%20data/k.3", Bytes: 1}}
	if d := cmp.Diff(want, got.Edges[0].Objects()); d != "" {
		t.Errorf("Objects (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]Segment{{Key: "k2", Bytes: 0}}, got.Edges[1].Objects()); d != "" {
		t.Errorf("Objects of a one-object edge (-want +got):\n%s", d)
	}
}

// TestParseReadsVersion1 reads a ledger written before Edge.Segments, and
// writes version 1 for as long as no edge needs version 2, so that older
// zfs2s3 sharing the bucket keep reading it.
func TestParseReadsVersion1(t *testing.T) {
	l, err := Parse([]byte("version: 1\nbucket: b\nprefix: \"\"\ngeneration: 3\nedges:\n- {target: {name: a@b, guid: 1}, key: k, stored_bytes: 5}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if l.Version != FormatVersion || len(l.Edges) != 1 || l.Edges[0].StoredBytes != 5 {
		t.Errorf("parsed %+v", l)
	}
	data, _ := Marshal(l)
	if !bytes.HasPrefix(data, []byte(`{"version": 1,`)) {
		t.Errorf("a ledger without segments written as\n%s", data)
	}
	l.Edges[0].Segments = []Segment{{Key: "k.2", Bytes: 1}}
	if data, _ := Marshal(l); !bytes.HasPrefix(data, []byte(`{"version": 2,`)) {
		t.Errorf("a ledger with segments written as\n%s", data)
	}
}

func TestParseRefusesBadSegments(t *testing.T) {
	for name, seg := range map[string]string{
		"no key":         `[{"key": "", "bytes": 1}]`,
		"no bytes":       `[{"key": "k.2", "bytes": 0}]`,
		"more than all":  `[{"key": "k.2", "bytes": 5}]`,
		"another key":    `[{"key": "other.full.zfs", "bytes": 1}]`,
		"out of order":   `[{"key": "k.3", "bytes": 1}, {"key": "k.2", "bytes": 1}]`,
		"unknown member": `[{"key": "k.2", "bytes": 1, "etag": "x"}]`,
	} {
		t.Run(name, func(t *testing.T) {
			data := `{"version": 2, "bucket": "b", "prefix": "", "generation": 1, "edges": [{"target": {"name": "a@b", "guid": 1}, "key": "k", "stored_bytes": 5, "segments": ` + seg + `}]}`
			if _, err := Parse([]byte(data)); !errors.Is(err, ErrDamaged) {
				t.Errorf("Parse = %v, want ErrDamaged", err)
			}
		})
	}
}

func TestLoadRefusesUnsafeFiles(t *testing.T) {
	good := OpenStore(t.TempDir(), "b", "")
	if err := good.Save(New("b", "")); err != nil {
		t.Fatal(err)
	}
	sparse := func(path string, size int64) {
		f, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		f.Truncate(size)
		f.Close()
	}
	for name, tc := range map[string]struct {
		setup func(s Store)
		want  string
	}{
		"link to a ledger":  {func(s Store) { os.Symlink(good.Path(), s.Path()) }, "is a symbolic link"},
		"link to /dev/zero": {func(s Store) { os.Symlink("/dev/zero", s.Path()) }, "is a symbolic link"},
		"fifo":              {func(s Store) { syscall.Mkfifo(s.Path(), 0o600) }, "is a named pipe"},
		"257 MiB":           {func(s Store) { sparse(s.Path(), MaxFileBytes+1<<20) }, "is 257 MiB, more than the 256 MiB"},
		"state dir 0777":    {func(s Store) { os.Chmod(filepath.Dir(s.Dir), 0o777) }, "is writable by its group and other users (mode 0777)"},
		"bucket dir 0757":   {func(s Store) { os.Chmod(s.Dir, 0o757) }, "is writable by other users (mode 0757)"},
	} {
		t.Run(name, func(t *testing.T) {
			s := OpenStore(t.TempDir(), "b", "")
			os.MkdirAll(s.Dir, 0o700)
			tc.setup(s)
			done := make(chan error, 1)
			go func() { _, err := s.Load("b", ""); done <- err }()
			select {
			case err := <-done:
				if !errors.Is(err, statefile.ErrUnsafe) || !strings.Contains(err.Error(), tc.want) {
					t.Errorf("Load = %v, want an unsafe-file error saying %q", err, tc.want)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Load does not return")
			}
			if l, err := s.Lock(context.Background()); err == nil {
				l.Unlock()
				if strings.Contains(name, "dir") {
					t.Error("Lock took a lock in an unsafe state dir")
				}
			}
		})
	}
}
