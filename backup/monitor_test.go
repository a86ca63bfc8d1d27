package backup

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/zfs2s3/zfs2s3/config"
	"github.com/zfs2s3/zfs2s3/health"
	"github.com/zfs2s3/zfs2s3/ledger"
	"github.com/zfs2s3/zfs2s3/retention"
	"github.com/zfs2s3/zfs2s3/s3up"
	"github.com/zfs2s3/zfs2s3/zfs"
)

var upload0 = time.Date(2026, 2, 1, 3, 0, 0, 0, time.UTC)

func snap(name string, guid uint64) ledger.Snapshot { return ledger.Snapshot{Name: name, GUID: guid} }

// edge is a stored edge base -> target (base zero: full) of size bytes,
// uploaded day days after upload0.
func edge(base, target ledger.Snapshot, bytes int64, day int) ledger.Edge {
	e := ledger.Edge{Target: target, StoredBytes: bytes, Uploaded: upload0.AddDate(0, 0, day)}
	if base.GUID != 0 {
		e.Base = &base
	}
	e.Key = ledger.ObjectKey("", target, e.Base)
	return e
}

func TestSummarize(t *testing.T) {
	a, b, c := snap("tank/a@daily-2026-01-01", 1), snap("tank/a@daily-2026-01-02", 2), snap("tank/a@daily-2026-01-03", 3)
	other := snap("tank/other@daily-2026-01-09", 9)
	chain := []ledger.Edge{edge(ledger.Snapshot{}, a, 100, 0), edge(a, b, 10, 1), edge(b, c, 1, 2), edge(ledger.Snapshot{}, other, 5000, 9)}
	byName := config.Dataset{Name: "tank/a", TimeFormat: "daily-%Y-%m-%d"}
	byCreation := config.Dataset{Name: "tank/a"}
	created := func(s ledger.Snapshot, t time.Time) zfs.Snapshot {
		return zfs.Snapshot{Name: s.Name, GUID: s.GUID, Creation: t}
	}
	jan := func(d, h int) time.Time { return time.Date(2026, 1, d, h, 0, 0, 0, time.UTC) }

	for _, tc := range []struct {
		name    string
		edges   []ledger.Edge
		missing []ledger.ID
		d       config.Dataset
		local   []zfs.Snapshot
		want    health.Stored
	}{
		{"time from the name", chain, nil, byName, nil,
			health.Stored{Dataset: "tank/a", Snapshots: 3, Bytes: 111, Newest: c.Name, NewestTime: time.Date(2026, 1, 3, 0, 0, 0, 0, time.Local)}},
		{"time from creation", chain, nil, byCreation, []zfs.Snapshot{created(a, jan(1, 5)), created(b, jan(2, 5)), created(c, jan(3, 5))},
			health.Stored{Dataset: "tank/a", Snapshots: 3, Bytes: 111, Newest: c.Name, NewestTime: jan(3, 5)}},
		{"gone locally: when its first edge was uploaded", append(chain, edge(a, c, 7, 20)), nil, byCreation, []zfs.Snapshot{created(a, jan(1, 5))},
			health.Stored{Dataset: "tank/a", Snapshots: 3, Bytes: 118, Newest: c.Name, NewestTime: upload0.AddDate(0, 0, 2)}},
		{"a local snapshot of the same name but another guid is not it", chain, nil, byCreation, []zfs.Snapshot{{Name: c.Name, GUID: 77, Creation: jan(30, 0)}},
			health.Stored{Dataset: "tank/a", Snapshots: 3, Bytes: 111, Newest: c.Name, NewestTime: upload0.AddDate(0, 0, 2)}},
		{"a missing object cuts the chain", chain, []ledger.ID{chain[1].ID()}, byName, nil,
			health.Stored{Dataset: "tank/a", Snapshots: 1, Unrestorable: 2, Bytes: 111, Newest: a.Name, NewestTime: time.Date(2026, 1, 1, 0, 0, 0, 0, time.Local)}},
		{"a bypass keeps the newest restorable", append(chain, edge(a, c, 7, 20)), []ledger.ID{chain[1].ID()}, byName, nil,
			health.Stored{Dataset: "tank/a", Snapshots: 2, Unrestorable: 1, Bytes: 118, Newest: c.Name, NewestTime: time.Date(2026, 1, 3, 0, 0, 0, 0, time.Local)}},
		{"edges being removed count for nothing", append(chain[:3:3], func() ledger.Edge {
			e := edge(b, snap("tank/a@daily-2026-01-04", 4), 50, 3)
			e.Removing = true
			return e
		}()), nil, byName, nil,
			health.Stored{Dataset: "tank/a", Snapshots: 3, Bytes: 111, Newest: c.Name, NewestTime: time.Date(2026, 1, 3, 0, 0, 0, 0, time.Local)}},
		{"nothing stored", chain[3:], nil, byName, nil, health.Stored{Dataset: "tank/a"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := &ledger.Ledger{Edges: tc.edges}
			missing := map[ledger.ID]bool{}
			for _, id := range tc.missing {
				missing[id] = true
			}
			got := summarize(l, brokenIDs(l, missing), tc.d, tc.local).health(tc.d.Name)
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}
}

// With equal times (all uploaded at once, nothing here), the newest is
// the end of the chain, whatever the names say.
func TestSummarizeOrdersByTheChainOnEqualTimes(t *testing.T) {
	first, second, third := snap("tank/a@z", 1), snap("tank/a@m", 2), snap("tank/a@a", 3)
	l := &ledger.Ledger{Edges: []ledger.Edge{edge(second, third, 1, 0), edge(ledger.Snapshot{}, first, 1, 0), edge(first, second, 1, 0)}}
	sum := summarize(l, brokenIDs(l, nil), config.Dataset{Name: "tank/a"}, nil)
	var order []string
	for _, s := range sum.restorable {
		order = append(order, s.snap.Name)
	}
	if d := cmp.Diff([]string{first.Name, second.Name, third.Name}, order); d != "" {
		t.Errorf("order (-want +got):\n%s", d)
	}
}

func TestStatusMaxAge(t *testing.T) {
	a1, a2 := snap("tank/a@daily-2026-01-01", 1), snap("tank/a@daily-2026-01-02", 2)
	l := &ledger.Ledger{Edges: []ledger.Edge{edge(ledger.Snapshot{}, a1, 10, 0), edge(a1, a2, 1, 1)}}
	var objs []s3up.ObjectInfo
	for _, e := range l.Edges {
		objs = append(objs, s3up.ObjectInfo{Key: e.Key}, s3up.ObjectInfo{Key: s3up.ManifestKey(e.Key)})
	}
	rules := config.Dataset{TimeFormat: "daily-%Y-%m-%d"}
	da, dn := rules, rules
	da.Name, dn.Name = "tank/a", "tank/new"
	in := statusInput{ledger: l, local: map[string][]zfs.Snapshot{}, objects: objs, check: []config.Dataset{da, dn},
		maxAge: 26 * time.Hour, now: time.Date(2026, 1, 3, 1, 0, 0, 0, time.Local)}
	fresh := func(st Status) map[string][]string {
		out := map[string][]string{}
		for _, v := range st.Checked() {
			out[v.Dataset] = v.Problems
		}
		return out
	}
	if d := cmp.Diff(map[string][]string{"tank/a": {}, "tank/new": {"nothing restorable is stored"}}, fresh(in.report())); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
	in.objects = objs[2:] // the full's object is gone from the bucket
	if d := cmp.Diff(map[string][]string{"tank/a": {"nothing restorable is stored", "2 stored snapshot(s) cannot be restored (see zfs2s3 status tank/a)"},
		"tank/new": {"nothing restorable is stored"}}, fresh(in.report())); d != "" {
		t.Errorf("with the full's object missing (-want +got):\n%s", d)
	}
}

func TestStatusSaysWhyChainLinksStay(t *testing.T) {
	day := func(d string, g uint64) ledger.Snapshot { return snap("tank/a@daily-2026-"+d, g) }
	j30, j31, f1, f2 := day("01-30", 1), day("01-31", 2), day("02-01", 3), day("02-02", 4)
	l := &ledger.Ledger{Edges: []ledger.Edge{edge(ledger.Snapshot{}, j30, 100, 0), edge(j30, j31, 1, 1), edge(j31, f1, 1, 2), edge(f1, f2, 1, 3)}}
	var objs []s3up.ObjectInfo
	for _, e := range l.Edges {
		objs = append(objs, s3up.ObjectInfo{Key: e.Key}, s3up.ObjectInfo{Key: s3up.ManifestKey(e.Key)})
	}
	// monthly 2 keeps Jan 31 and Feb 2; Jan 30 and Feb 1 go unless a
	// bypass can be sent, which needs the local snapshots.
	d := config.Dataset{Name: "tank/a", TimeFormat: "daily-%Y-%m-%d", Keep: &retention.Policy{Monthly: 2}}
	stays := func(local []zfs.Snapshot) (map[string]string, string) {
		in := statusInput{ledger: l, local: map[string][]zfs.Snapshot{"tank/a": local}, objects: objs, configured: []config.Dataset{d}}
		st := in.report()
		out := map[string]string{}
		for _, e := range st.Datasets[0].Edges {
			if e.Stays != "" {
				out[e.Snapshot] = e.Stays
			}
		}
		var text strings.Builder
		if err := st.WriteText(&text); err != nil {
			t.Fatal(err)
		}
		return out, text.String()
	}
	got, text := stays(nil)
	want := map[string]string{
		// Jan 30 is a link of Jan 31's chain and of Feb 2's (through Jan
		// 31 and Feb 1); prune names the newest.
		j30.Name: "kept as a chain link of " + f2.Name + ": the local snapshots for a bypass edge are gone",
		f1.Name:  "kept as a chain link of " + f2.Name + ": the local snapshots for a bypass edge are gone",
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("all gone locally (-want +got):\n%s", d)
	}
	if line := "@daily-2026-02-01 stays: " + want[f1.Name] + "\n"; !strings.Contains(text, line) {
		t.Errorf("text lacks %q:\n%s", line, text)
	}
	var local []zfs.Snapshot
	for _, s := range []ledger.Snapshot{j30, j31, f1, f2} {
		local = append(local, zfs.Snapshot{Name: s.Name, GUID: s.GUID})
	}
	if got, _ := stays(local); len(got) != 0 {
		t.Errorf("with every snapshot here prune sends bypasses, yet status says links stay: %v", got)
	}
	// Without a keep rule nothing is said.
	d.Keep = nil
	if got, _ := stays(nil); len(got) != 0 {
		t.Errorf("without a keep rule: %v", got)
	}
}

func TestNeedsCreation(t *testing.T) {
	l := &ledger.Ledger{Edges: []ledger.Edge{edge(ledger.Snapshot{}, snap("tank/a@daily-2026-01-01", 1), 1, 0),
		edge(ledger.Snapshot{}, snap("tank/b@manual", 2), 1, 0)}}
	for _, tc := range []struct {
		d    config.Dataset
		want bool
	}{
		{config.Dataset{Name: "tank/a", TimeFormat: "daily-%Y-%m-%d"}, false},
		{config.Dataset{Name: "tank/a"}, true},
		{config.Dataset{Name: "tank/b", TimeFormat: "daily-%Y-%m-%d"}, true}, // a name the format does not read
		{config.Dataset{Name: "tank/c", TimeFormat: "daily-%Y-%m-%d"}, false},
	} {
		if got := needsCreation(l, tc.d); got != tc.want {
			t.Errorf("needsCreation(%s, %q) = %v, want %v", tc.d.Name, tc.d.TimeFormat, got, tc.want)
		}
	}
}
