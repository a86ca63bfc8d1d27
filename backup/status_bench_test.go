package backup

import (
	"io"
	"testing"

	"github.com/zfs2s3/zfs2s3/internal/ledgertest"
	"github.com/zfs2s3/zfs2s3/ledger"
	"github.com/zfs2s3/zfs2s3/s3up"
	"github.com/zfs2s3/zfs2s3/zfs"
)

// BenchmarkLedger100k is what a user waits for with 100,000 stored edges:
// load the ledger file, check a removal, and print the status table. Only
// the zfs and S3 listings, which are I/O, are prepared outside the loop.
func BenchmarkLedger100k(b *testing.B) {
	store := ledger.OpenStore(b.TempDir(), "bucket", "")
	l := ledgertest.Daily(100000)
	if err := store.Save(l); err != nil {
		b.Fatal(err)
	}
	in := statusInput{local: map[string][]zfs.Snapshot{}, ledgerKey: LedgerKey("")}
	for _, e := range l.Edges {
		in.local[e.Target.Dataset()] = append(in.local[e.Target.Dataset()], zfs.Snapshot{Name: e.Target.Name, GUID: e.Target.GUID})
		in.objects = append(in.objects, s3up.ObjectInfo{Key: e.Key}, s3up.ObjectInfo{Key: s3up.ManifestKey(e.Key)})
	}
	mid := l.Edges[len(l.Edges)/2].ID()
	for b.Loop() {
		var err error
		if in.ledger, err = store.Load("bucket", ""); err != nil {
			b.Fatal(err)
		}
		if err := in.ledger.CheckRemove(mid, nil); err == nil {
			b.Fatal("removing the middle of a chain was allowed")
		}
		st := in.report()
		if len(st.Datasets) != 10 || len(st.UnknownObjects) != 0 {
			b.Fatalf("status of %d datasets with %d unknown objects, want 10 and 0", len(st.Datasets), len(st.UnknownObjects))
		}
		if err := st.WriteText(io.Discard); err != nil {
			b.Fatal(err)
		}
	}
}
