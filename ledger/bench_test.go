package ledger_test

import (
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/zfs2s3/zfs2s3/internal/ledgertest"
	"github.com/zfs2s3/zfs2s3/ledger"
)

func BenchmarkParse100k(b *testing.B) { benchParse(b, ledger.Marshal) }

// BenchmarkParseBlockYAML100k reads the same ledger written in YAML's block
// style, as hand-edited files and zfs2s3 before the JSON-compatible form
// are: the slow path Parse keeps for them.
func BenchmarkParseBlockYAML100k(b *testing.B) {
	benchParse(b, func(l *ledger.Ledger) ([]byte, error) { return yaml.Marshal(l) })
}

// benchParse times Parse of a 100,000-edge ledger encoded by marshal.
func benchParse(b *testing.B, marshal func(*ledger.Ledger) ([]byte, error)) {
	data, err := marshal(ledgertest.Daily(100000))
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := ledger.Parse(data); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMarshal100k(b *testing.B) {
	l := ledgertest.Daily(100000)
	for b.Loop() {
		if _, err := ledger.Marshal(l); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCheckRemove100k(b *testing.B) {
	l := ledgertest.Daily(100000)
	mid := l.Edges[len(l.Edges)/2].ID()
	for b.Loop() {
		if err := l.CheckRemove(mid, nil); err == nil {
			b.Fatal("removing the middle of a chain was allowed")
		}
	}
}

func BenchmarkUnrestorable100k(b *testing.B) {
	l := ledgertest.Daily(100000)
	for b.Loop() {
		if bad := l.Unrestorable(); len(bad) != 0 {
			b.Fatalf("%d unrestorable edges", len(bad))
		}
	}
}

// BenchmarkChain100k finds the cheapest chain to the newest snapshot of one
// dataset, what restore does first.
func BenchmarkChain100k(b *testing.B) {
	l := ledgertest.Daily(100000)
	last := l.Edges[len(l.Edges)-1].Target.GUID
	for b.Loop() {
		if c, err := l.Chain(0, last); err != nil || len(c) == 0 {
			b.Fatal(c, err)
		}
	}
}
