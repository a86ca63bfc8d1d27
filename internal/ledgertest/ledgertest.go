// Package ledgertest builds large ledgers for benchmarks.
package ledgertest

import (
	"fmt"
	"time"

	"github.com/zfs2s3/zfs2s3/ledger"
)

// Daily returns a ledger of n edges: daily snapshots of 10 datasets, each
// with a full stream, a chain of incrementals, and a monthly bypass every
// 30 days, the shape consolidation leaves behind.
func Daily(n int) *ledger.Ledger {
	l := ledger.New("bucket", "")
	per := n / 10
	for d := 0; d < 10; d++ {
		snap := func(i int) ledger.Snapshot {
			return ledger.Snapshot{Name: fmt.Sprintf("tank/ds%d@day%05d", d, i), GUID: uint64(d*per + i + 1)}
		}
		at := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
		for i := 0; i < per; i++ {
			e := ledger.Edge{Target: snap(i),
				StreamBytes: 1 << 20, StoredBytes: 1 << 20, SHA256: fmt.Sprintf("%064x", d*per+i),
				Uploaded: at.AddDate(0, 0, i), StorageClass: "STANDARD"}
			switch {
			case i == 0:
			case i%30 == 0 && len(l.Edges) < n:
				b := snap(i - 30)
				bypass := e
				bypass.Base, bypass.Key = &b, ledger.ObjectKey(l.Prefix, bypass.Target, &b)
				l.Edges = append(l.Edges, bypass)
				fallthrough
			default:
				b := snap(i - 1)
				e.Base = &b
			}
			e.Key = ledger.ObjectKey(l.Prefix, e.Target, e.Base)
			if len(l.Edges) < n {
				l.Edges = append(l.Edges, e)
			}
		}
	}
	return l
}
