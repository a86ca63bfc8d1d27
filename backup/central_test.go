package backup

import (
	"testing"

	"github.com/zfs2s3/zfs2s3/central"
	"github.com/zfs2s3/zfs2s3/config"
	"github.com/zfs2s3/zfs2s3/ledger"
	"github.com/zfs2s3/zfs2s3/retention"
)

// TestEffectiveKeep: the central keep rules replace every dataset's own,
// those without keep included; without central rules the config's stay;
// the caller's datasets are not changed.
func TestEffectiveKeep(t *testing.T) {
	own := &retention.Policy{Last: 2}
	ds := []config.Dataset{{Name: "tank/a", Keep: own}, {Name: "tank/b"}}
	if got := EffectiveKeep(ds, central.Settings{}, "web1"); got[0].Keep != own || got[1].Keep != nil {
		t.Errorf("no central keep: %+v", got)
	}
	c := &retention.Policy{Daily: 7}
	got := EffectiveKeep(ds, central.Settings{Keep: c}, "web1")
	for _, d := range got {
		if d.Keep != c {
			t.Errorf("%s keeps %+v, want the central %+v", d.Name, d.Keep, c)
		}
	}
	if ds[0].Keep != own || ds[1].Keep != nil {
		t.Errorf("the config's datasets were changed: %+v", ds)
	}
}

// TestStoredBytes: a host's quota counts every edge's stored bytes, edges
// being removed included (their objects are still in the bucket).
func TestStoredBytes(t *testing.T) {
	l := &ledger.Ledger{Edges: []ledger.Edge{{StoredBytes: 100}, {StoredBytes: 50, Removing: true}, {StoredBytes: 7}}}
	if got := StoredBytes(l); got != 157 {
		t.Errorf("StoredBytes = %d, want 157", got)
	}
}
