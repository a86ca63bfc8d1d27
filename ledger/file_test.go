package ledger

import (
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
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
		"not yaml":        "version: 1\nedges: [\n",
		"future version":  "version: 2\nbucket: b\nprefix: \"\"\nedges: []\n",
		"unknown field":   "version: 1\nbucket: b\nprefix: \"\"\nedges: []\nextra: 1\n",
		"edge w/o guid":   "version: 1\nbucket: b\nprefix: \"\"\nedges:\n- target: {name: a@b}\n  key: k\n",
		"duplicate edge":  "version: 1\nbucket: b\nprefix: \"\"\nedges:\n- {target: {name: a@b, guid: 1}, key: k}\n- {target: {name: a@b, guid: 1}, key: k}\n",
		"other bucket":    "version: 1\nbucket: other\nprefix: \"\"\nedges: []\n",
		"truncated guids": "version: 1\nbucket: b\nprefix: \"\"\nedges:\n- {target: {name: a@b, guid: -1}, key: k}\n",
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
