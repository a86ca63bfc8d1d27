package backup

import (
	"bytes"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/zfs2s3/zfs2s3/ledger"
	"github.com/zfs2s3/zfs2s3/zfs"
)

// After a prune, the local snapshots older than the newest stored one are
// not "not stored yet": a backup will never upload them. Status tells the
// two apart, so that what a backup has yet to do is not lost in a list of
// every pruned day.
func TestStatusTellsPrunedFromNotYetStored(t *testing.T) {
	local := []zfs.Snapshot{{Name: "t/d@1", GUID: 1}, {Name: "t/d@2", GUID: 2}, {Name: "t/d@3", GUID: 3},
		{Name: "t/d@4", GUID: 4}, {Name: "t/d@5", GUID: 5}, {Name: "t/d@6", GUID: 6}, {Name: "t/d@7", GUID: 7}}
	edges := []ledger.Edge{
		{Target: ledger.Snapshot{Name: "t/d@1", GUID: 1}},
		{Target: ledger.Snapshot{Name: "t/d@5", GUID: 5}, Base: &ledger.Snapshot{Name: "t/d@1", GUID: 1}},
	}
	d := datasetStatus("t/d", edges, local, nil)
	if diff := cmp.Diff([]string{"t/d@2", "t/d@3", "t/d@4", "t/d@6", "t/d@7"}, d.NotStored); diff != "" {
		t.Errorf("not stored (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"t/d@6", "t/d@7"}, d.NewerNotStored); diff != "" {
		t.Errorf("newer than stored (-want +got):\n%s", diff)
	}
	var out bytes.Buffer
	if err := (Status{Datasets: []DatasetStatus{d}}).WriteText(&out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"not stored yet: t/d@6, t/d@7\n", "3 older local snapshot(s) not stored (pruned, or never selected): t/d@2, t/d@3, t/d@4\n"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("status text lacks %q:\n%s", want, out.String())
		}
	}

	// Nothing stored: every local snapshot is yet to be stored.
	d = datasetStatus("t/d", nil, local[:2], nil)
	if diff := cmp.Diff([]string{"t/d@1", "t/d@2"}, d.NewerNotStored); diff != "" {
		t.Errorf("nothing stored: newer than stored (-want +got):\n%s", diff)
	}
}
