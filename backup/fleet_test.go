package backup

import (
	"slices"
	"testing"

	"github.com/zfs2s3/zfs2s3/config"
	"github.com/zfs2s3/zfs2s3/retention"
	"github.com/zfs2s3/zfs2s3/s3up"
)

func TestHostPrefixes(t *testing.T) {
	keys := []string{
		"fleet/web1/.zfs2s3/ledger/tank%2Fdata/000000000001.json",
		"fleet/web1/.zfs2s3/ledger/tank%2Fdata/000000000002.json",
		"fleet/web1/.zfs2s3/ledger.yaml",
		"fleet/web1/tank/data/a@000000000000007b.full.zfs",
		"fleet/web2/.zfs2s3/ledger/tank%2Fdata/000000000001.json",
		"fleet/old/.zfs2s3/ledger.yaml",                 // a tree of before the journal
		"fleet/web3/tank/data/x.zfs",                    // no ledger: not a host
		"fleet/webx.zfs2s3/ledger.yaml",                 // not a whole prefix
		"other/web4/.zfs2s3/ledger/d/000000000001.json", // outside the root
	}
	var objs []s3up.ObjectInfo
	for _, k := range keys {
		objs = append(objs, s3up.ObjectInfo{Key: k})
	}
	got := hostPrefixes("fleet/", objs)
	if want := []string{"fleet/old/", "fleet/web1/", "fleet/web2/"}; !slices.Equal(got, want) {
		t.Errorf("hostPrefixes = %v, want %v", got, want)
	}
	if got := hostPrefixes("", objs); !slices.Contains(got, "other/web4/") || len(got) != 4 {
		t.Errorf("hostPrefixes of the whole bucket = %v", got)
	}
}

func TestFleetRules(t *testing.T) {
	last2, last3 := &retention.Policy{Last: 2}, &retention.Policy{Last: 3}
	cfg := &config.Config{
		Defaults: config.Dataset{TimeFormat: "daily-%Y-%m-%d", Keep: last2},
		Datasets: []config.Dataset{
			{Name: "tank/db", Keep: last3},
			{Name: "tank/vm", Keep: last3, Recursive: true},
		},
	}
	rules := FleetRules(cfg)
	for _, tc := range []struct {
		ds   string
		keep *retention.Policy
		tf   string
	}{
		{"tank/data", last2, "daily-%Y-%m-%d"}, // the defaults
		{"tank/db", last3, ""},                 // its own entry
		{"tank/vm/one", last3, ""},             // covered by a recursive entry
		{"tank/dbx", last2, "daily-%Y-%m-%d"},
	} {
		d := rules(tc.ds)
		if d.Name != tc.ds || d.Keep != tc.keep || d.TimeFormat != tc.tf {
			t.Errorf("rules(%s) = %+v, want keep %v, time_format %q", tc.ds, d, tc.keep, tc.tf)
		}
	}
}
