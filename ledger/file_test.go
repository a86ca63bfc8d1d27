package ledger

import (
	"bytes"
	"context"
	"errors"
	"fmt"
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
	e.Key = ObjectKey("backups/host 1/", e.Target, nil)
	if err := l.Add(e); err != nil {
		t.Fatal(err)
	}
	e2 := stored(Edge{Target: snap(2), Base: &e.Target})
	e2.Key = ObjectKey("backups/host 1/", e2.Target, e2.Base)
	if err := l.Add(e2); err != nil {
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
		"future version":   "version: 5\nbucket: b\nprefix: \"\"\nedges: []\n",
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
	b := Snapshot{Name: "tank/my data@b", GUID: 2}
	l.Edges = []Edge{
		{Target: a, Key: ObjectKey(l.Prefix, a, nil), StreamBytes: 5, StoredBytes: 6, SHA256: strings.Repeat("ab", 32), Uploaded: time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC), StorageClass: "GLACIER"},
		{Target: b, Base: &a, Key: ObjectKey(l.Prefix, b, &a), StreamBytes: 1, StoredBytes: 1, SHA256: strings.Repeat("0", 64), Uploaded: time.Date(2026, 1, 3, 0, 0, 0, 0, time.UTC), Removing: true},
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
	k := l.Edges[0].Key
	want := []Segment{{Key: k, Bytes: 6}, {Key: k + ".2", Bytes: 3}, {Key: k + ".3", Bytes: 1}}
	if d := cmp.Diff(want, got.Edges[0].Objects()); d != "" {
		t.Errorf("Objects (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]Segment{{Key: l.Edges[1].Key, Bytes: 1}}, got.Edges[1].Objects()); d != "" {
		t.Errorf("Objects of a one-object edge (-want +got):\n%s", d)
	}
}

// TestParseReadsVersion1 reads a ledger written before Edge.Segments, and
// writes version 1 for as long as no edge needs version 2, so that older
// zfs2s3 sharing the bucket keep reading it.
func TestParseReadsVersion1(t *testing.T) {
	l, err := Parse(readFixture(t, "ledger-v1.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if l.Version != FormatVersion || len(l.Edges) != 4 || l.Edges[0].StoredBytes != 3162920 {
		t.Errorf("parsed %+v", l)
	}
	data, _ := Marshal(l)
	if !bytes.HasPrefix(data, []byte(`{"version": 1,`)) {
		t.Errorf("a ledger without segments written as\n%s", data)
	}
	l.Edges[0].Segments = []Segment{{Key: l.Edges[0].Key + ".2", Bytes: 1}}
	if data, _ := Marshal(l); !bytes.HasPrefix(data, []byte(`{"version": 2,`)) {
		t.Errorf("a ledger with segments written as\n%s", data)
	}
}

// TestReadsWhatReleasesWrote parses ledger files written by the release
// before keys, sizes and digests were checked on load (testdata/*.yaml,
// made with that release's ledger.Marshal and yaml.v3), and writes them
// back byte for byte: people's existing ledgers keep working.
func TestReadsWhatReleasesWrote(t *testing.T) {
	for name, edges := range map[string]int{"ledger-v1.yaml": 4, "ledger-v1-block.yaml": 4, "ledger-v2.yaml": 5, "ledger-v3.yaml": 8} {
		t.Run(name, func(t *testing.T) {
			data := readFixture(t, name)
			l, err := Parse(data)
			if err != nil {
				t.Fatal(err)
			}
			if len(l.Edges) != edges || l.Prefix != "host1/" || !l.Edges[2].Removing {
				t.Errorf("parsed %d edges, prefix %q, removal mark %v", len(l.Edges), l.Prefix, l.Edges[2].Removing)
			}
			if strings.HasSuffix(name, "block.yaml") {
				return
			}
			if again, _ := Marshal(l); !bytes.Equal(again, data) {
				t.Errorf("written back as\n%s\nwant\n%s", again, data)
			}
		})
	}
}

// TestFormatVersions: a ledger is written in the oldest version that holds
// it, so plain backups stay readable by releases before transforms: only
// a transformed edge, or one with zfs send flags, raises it to 3.
func TestFormatVersions(t *testing.T) {
	l, err := Parse(readFixture(t, "ledger-v3.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	all := l.Edges
	for n, want := range map[int]int{4: 1, 5: 2, 6: 3, 7: 3, 8: 3} {
		l.Edges = all[:n]
		if n == 4 {
			l.Edges = append([]Edge(nil), all[:2]...) // v1 edges only
		}
		data, err := Marshal(l)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(data, []byte(fmt.Sprintf(`{"version": %d,`, want))) {
			t.Errorf("%d edges written as %.20s, want version %d", len(l.Edges), data, want)
		}
	}
	fri := all[5]
	if !fri.Transformed() || fri.Format() != 3 || len(fri.Records) != 3 {
		t.Fatalf("edge %s: transform %q, %d records", fri, fri.Transform, len(fri.Records))
	}
	keys := fri.Keys()
	if len(keys) != 3 || keys[0] != fri.Key || keys[2] != fri.Key+".3" {
		t.Errorf("Keys = %v", keys)
	}
	if objs := fri.Objects(); len(objs) != 3 || objs[1].Bytes != 1500000 || objs[1].Key != fri.Key+".2" {
		t.Errorf("Objects = %v", objs)
	}
	// An older release, whose newest format is 2, refuses it with its
	// newer-format message: the check it runs is the version number.
	v3 := bytes.Replace(readFixture(t, "ledger-v3.yaml"), []byte(`"version": 3`), fmt.Appendf(nil, `"version": %d`, FormatVersion+1), 1)
	if _, err := Parse(v3); !errors.Is(err, ErrNewerFormat) {
		t.Errorf("Parse of version %d = %v, want ErrNewerFormat", FormatVersion+1, err)
	}
}

// TestParseRefusesBadTransforms: every field of a transformed edge's
// record is checked on load, so a damaged record is refused before restore
// or verify act on it.
func TestParseRefusesBadTransforms(t *testing.T) {
	fri := func(f func(e *Edge)) func(l *Ledger) { return func(l *Ledger) { f(&l.Edges[5]) } }
	for name, tc := range map[string]struct {
		change func(l *Ledger)
		want   string
	}{
		"unknown spec":         {fri(func(e *Edge) { e.Transform = "lz4" }), "not one this version"},
		"none spec":            {fri(func(e *Edge) { e.Transform = "none" }), "transforms nothing"},
		"no recipients":        {fri(func(e *Edge) { e.Recipients = nil }), "0 recipients"},
		"bad recipient":        {fri(func(e *Edge) { e.Recipients = []string{"age1nope"} }), "recipient"},
		"recipients, no age":   {func(l *Ledger) { l.Edges[6].Recipients = l.Edges[5].Recipients }, "1 recipients"},
		"segment size":         {fri(func(e *Edge) { e.SegmentSize = 1000 }), "whole number of MiB"},
		"part size":            {fri(func(e *Edge) { e.PartSize = 0 }), "part size 0"},
		"no objects":           {fri(func(e *Edge) { e.Records = nil }), "0 objects"},
		"index":                {fri(func(e *Edge) { e.Records[1].Index = 2 }), "records segment 2"},
		"offset":               {fri(func(e *Edge) { e.Records[1].PlainOffset++ }), "at offset"},
		"short middle segment": {fri(func(e *Edge) { e.Records[1].PlainBytes-- }), "plaintext bytes"},
		"plain digest":         {fri(func(e *Edge) { e.Records[0].PlainSHA256 = "xyz" }), "plain_sha256"},
		"stored digest":        {fri(func(e *Edge) { e.Records[0].StoredSHA256 = e.Records[0].StoredSHA256[:64] }), "stored_sha256"},
		"part count":           {fri(func(e *Edge) { e.Records[1].StoredSHA256 = e.Records[1].StoredSHA256[:64] + "-3" }), "digest of 2 parts"},
		"stored total":         {fri(func(e *Edge) { e.StoredBytes++ }), "the edge records"},
		"stream digest":        {fri(func(e *Edge) { e.SHA256 = strings.Repeat("0", 64) }), "not the stream digest"},
		"send flags":           {func(l *Ledger) { l.Edges[7].SendFlags = "rawest" }, "send_flags"},
		"objects on plain":     {func(l *Ledger) { l.Edges[7].Records = l.Edges[6].Records }, "without a transform"},
		"segments and objects": {fri(func(e *Edge) { e.Segments = []Segment{{Key: e.Key + ".2", Bytes: 1}} }), "not segments"},
	} {
		t.Run(name, func(t *testing.T) {
			l, err := Parse(readFixture(t, "ledger-v3.yaml"))
			if err != nil {
				t.Fatal(err)
			}
			tc.change(l)
			data, err := Marshal(l)
			if err != nil {
				t.Fatal(err)
			}
			_, err = Parse(data)
			if !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Parse = %v, want ErrDamaged saying %q", err, tc.want)
			}
		})
	}
}

func readFixture(t *testing.T, name string) []byte {
	t.Helper()
	data, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return data
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
			seg = strings.ReplaceAll(seg, `"k.`, `"a/b@0000000000000001.full.zfs.`)
			data := `{"version": 2, "bucket": "b", "prefix": "", "generation": 1, "edges": [{"target": {"name": "a@b", "guid": 1}, "key": "a/b@0000000000000001.full.zfs", "stream_bytes": 5, "stored_bytes": 5, "sha256": "` + strings.Repeat("a", 64) + `", "segments": ` + seg + `}]}`
			if _, err := Parse([]byte(data)); !errors.Is(err, ErrDamaged) {
				t.Errorf("Parse = %v, want ErrDamaged", err)
			}
		})
	}
}

// TestParseRefusesTampering feeds Parse ledgers (local files or the
// bucket's copy) whose edges point at objects zfs2s3 would not have
// written, or carry sizes, digests or shapes no upload produces. Each is
// refused whole, so no command reads, restores from or deletes anything a
// tampered ledger names.
func TestParseRefusesTampering(t *testing.T) {
	victim := func(key string) func(l *Ledger) { return func(l *Ledger) { l.Edges[3].Key = key } }
	for name, tc := range map[string]struct {
		change func(l *Ledger)
		want   string
	}{
		"key outside the prefix": {victim("victim-outside"), `key "victim-outside" is not the key zfs2s3 derives`},
		"key of another host":    {victim("host2/tank/my%20data/thu@8000000000000001.from.mon@f553cdab2fc018e6.zfs"), "not the key zfs2s3 derives"},
		"key with ..":            {victim("host1/../host2/tank/my%20data/thu@8000000000000001.from.mon@f553cdab2fc018e6.zfs"), "not the key zfs2s3 derives"},
		"another edge's key":     {func(l *Ledger) { l.Edges[3].Key = l.Edges[0].Key }, "not the key zfs2s3 derives"},
		"segment of another edge": {func(l *Ledger) {
			l.Edges[3].Segments = []Segment{{Key: l.Edges[0].Key, Bytes: 1}}
		}, "further object 2"},
		"dot-dot dataset": {func(l *Ledger) {
			e := &l.Edges[0]
			e.Target.Name = "tank/../other@mon"
			e.Key = ObjectKey(l.Prefix, e.Target, nil)
		}, "'..' dataset component"},
		"option-like name": {func(l *Ledger) {
			e := &l.Edges[0]
			e.Target.Name = "-R tank@mon"
			e.Key = ObjectKey(l.Prefix, e.Target, nil)
		}, "begins with '-'"},
		"base on another dataset": {func(l *Ledger) {
			e := &l.Edges[1]
			e.Base.Name = "tank/other@mon"
			e.Key = ObjectKey(l.Prefix, e.Target, e.Base)
		}, "another dataset"},
		"negative size":    {func(l *Ledger) { l.Edges[3].StoredBytes = -5 }, "never empty"},
		"zero size":        {func(l *Ledger) { l.Edges[3].StreamBytes, l.Edges[3].StoredBytes = 0, 0 }, "never empty"},
		"absurd size":      {func(l *Ledger) { l.Edges[3].StoredBytes = 1 << 62 }, "1 byte to 5 TiB"},
		"not a sha256":     {func(l *Ledger) { l.Edges[3].SHA256 = "ab" }, "not 64 hex digits"},
		"duplicate key":    {func(l *Ledger) { l.Edges = append(l.Edges, l.Edges[3]) }, "appears twice"},
		"zero guid target": {func(l *Ledger) { l.Edges[0].Target.GUID = 0 }, "has no GUID"},
		"cycle": {func(l *Ledger) {
			// thu -> tue next to mon -> tue -> wed and mon -> thu: no cycle yet;
			// tue -> thu closes thu -> tue -> thu.
			tue, thu := l.Edges[1].Target, l.Edges[3].Target
			l.Edges = append(l.Edges, stored(Edge{Target: tue, Base: &thu}), stored(Edge{Target: thu, Base: &tue}))
			for i := len(l.Edges) - 2; i < len(l.Edges); i++ {
				l.Edges[i].Key = ObjectKey(l.Prefix, l.Edges[i].Target, l.Edges[i].Base)
			}
		}, "cycle"},
	} {
		t.Run(name, func(t *testing.T) {
			l, err := Parse(readFixture(t, "ledger-v1.yaml"))
			if err != nil {
				t.Fatal(err)
			}
			tc.change(l)
			data, err := Marshal(l)
			if err != nil {
				t.Fatal(err)
			}
			_, err = Parse(data)
			if !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Parse = %v, want ErrDamaged saying %q", err, tc.want)
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
		"over the limit":    {func(s Store) { sparse(s.Path(), MaxFileBytes+1<<20) }, "is 129 MiB, more than the 128 MiB"},
		"state dir 0777":    {func(s Store) { os.Chmod(filepath.Dir(s.Dir), 0o777) }, "is writable by its group and other users (mode 0777)"},
		"bucket dir 0757":   {func(s Store) { os.Chmod(s.Dir, 0o757) }, "is writable by other users (mode 0757)"},
		"uploads dir 0777":  {func(s Store) { os.MkdirAll(s.UploadsDir(), 0o700); os.Chmod(s.UploadsDir(), 0o777) }, "(mode 0777)"},
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

// TestPartDigestEdges reads plain edges whose digest is made of their
// parts' digests (testdata/ledger-v4.yaml: one object, and three objects
// of whole parts), writes them back byte for byte as version 4, and
// refuses such a digest that does not fit the edge.
func TestPartDigestEdges(t *testing.T) {
	data := readFixture(t, "ledger-v4.yaml")
	l, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Edges) != 10 {
		t.Fatalf("parsed %d edges", len(l.Edges))
	}
	for _, e := range l.Edges[8:] {
		if !e.PartDigest() || e.Format() != 4 || e.Transformed() {
			t.Errorf("edge %s: part digest %v, format %d", e, e.PartDigest(), e.Format())
		}
	}
	if again, _ := Marshal(l); !bytes.Equal(again, data) {
		t.Errorf("written back as\n%s\nwant\n%s", again, data)
	}
	l.Edges = l.Edges[:8]
	if again, _ := Marshal(l); !bytes.HasPrefix(again, []byte(`{"version": 3,`)) {
		t.Errorf("without part digests written as %.20s, want version 3", again)
	}
	for name, change := range map[string]func(e *Edge){
		"whole-stream digest":    func(e *Edge) { e.SHA256 = e.SHA256[:64] },
		"wrong part count":       func(e *Edge) { e.SHA256 = e.SHA256[:65] + "4" },
		"part count with a sign": func(e *Edge) { e.SHA256 = e.SHA256[:65] + "+5" },
		"not hex":                func(e *Edge) { e.SHA256 = "x" + e.SHA256[1:] },
		"part over 5 GiB":        func(e *Edge) { e.PartSize = MaxPartSize + 1 },
		"first object not whole parts": func(e *Edge) {
			e.Segments[0].Bytes++
			e.StoredBytes, e.StreamBytes = e.StoredBytes-1, e.StreamBytes-1
		},
		"middle object not whole parts": func(e *Edge) {
			e.Segments[0].Bytes--
			e.Segments[1].Bytes++
		},
	} {
		t.Run(name, func(t *testing.T) {
			l, err := Parse(data)
			if err != nil {
				t.Fatal(err)
			}
			change(&l.Edges[9])
			out, err := Marshal(l)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := Parse(out); !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), "tank/db@huge") {
				t.Errorf("Parse = %v, want ErrDamaged naming the edge", err)
			}
		})
	}
}
