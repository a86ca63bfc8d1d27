package ledger

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"
)

// bigLedger is n daily snapshots of 10 datasets: a full stream each, a
// chain of incrementals, and a monthly bypass every 30 days.
func bigLedger(n int) *Ledger {
	l := New("bucket", "")
	per := n / 10
	for d := 0; d < 10; d++ {
		snap := func(i int) Snapshot {
			return Snapshot{Name: fmt.Sprintf("tank/ds%d@day%05d", d, i), GUID: uint64(d*per + i + 1)}
		}
		at := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
		for i := 0; i < per; i++ {
			e := Edge{Target: snap(i), Key: fmt.Sprintf("k/%d/%d", d, i), StreamBytes: 1 << 20, StoredBytes: 1 << 20, SHA256: "00", Uploaded: at, StorageClass: "STANDARD"}
			switch {
			case i == 0:
			case i%30 == 0 && len(l.Edges) < n:
				b := snap(i - 30)
				bypass := e
				bypass.Base, bypass.Key = &b, bypass.Key+"m"
				l.Edges = append(l.Edges, bypass)
				fallthrough
			default:
				b := snap(i - 1)
				e.Base = &b
			}
			if len(l.Edges) < n {
				l.Edges = append(l.Edges, e)
			}
		}
	}
	return l
}

func BenchmarkParse100k(b *testing.B) {
	data, err := Marshal(bigLedger(100000))
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := Parse(data); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkParseJSON100k decodes the same ledger with encoding/json, the
// yardstick for choosing a faster encoding of the ledger file.
func BenchmarkParseJSON100k(b *testing.B) {
	data, err := json.Marshal(bigLedger(100000))
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		var l Ledger
		if err := json.Unmarshal(data, &l); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCheckRemove100k(b *testing.B) {
	l := bigLedger(100000)
	mid := l.Edges[len(l.Edges)/2].ID()
	for b.Loop() {
		l.CheckRemove(mid, nil)
	}
}

func BenchmarkUnrestorable100k(b *testing.B) {
	l := bigLedger(100000)
	for b.Loop() {
		if bad := l.Unrestorable(); len(bad) != 0 {
			b.Fatalf("%d unrestorable edges", len(bad))
		}
	}
}
