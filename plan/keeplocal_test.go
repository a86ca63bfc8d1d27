package plan

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"pgregory.net/rapid"

	"github.com/zfs2s3/zfs2s3/retention"
)

// created makes n hourly snapshots named as create would, all stored
// (the first as a full) unless changed.
func created(n int) []LocalSnapshot {
	var s []LocalSnapshot
	for i := range n {
		s = append(s, LocalSnapshot{Name: fmt.Sprintf("z-%02d", i+1), Time: day0.Add(time.Duration(i) * time.Hour),
			Created: true, Stored: true, StoredFull: i == 0})
	}
	return s
}

func TestKeepLocal(t *testing.T) {
	with := func(s []LocalSnapshot, f func(s []LocalSnapshot)) []LocalSnapshot {
		s = slices.Clone(s)
		f(s)
		return s
	}
	last2 := retention.Policy{Last: 2}
	for _, tt := range []struct {
		name  string
		snaps []LocalSnapshot
		rules LocalRules
		want  []string
	}{
		{"beyond keep_local: the older ones", created(5), LocalRules{KeepLocal: last2}, []string{"z-01", "z-02", "z-03"}},
		{"nothing beyond keep_local", created(2), LocalRules{KeepLocal: last2}, nil},
		{"a hand-made snapshot stays", with(created(5), func(s []LocalSnapshot) { s[1].Created = false }),
			LocalRules{KeepLocal: last2}, []string{"z-01", "z-03"}},
		{"hand-made snapshots do not count toward keep_local", with(created(5), func(s []LocalSnapshot) { s[4].Created = false }),
			LocalRules{KeepLocal: last2}, []string{"z-01", "z-02"}},
		{"one not yet stored stays: it would be lost", with(created(5), func(s []LocalSnapshot) { s[0].Stored, s[0].StoredFull = false, false }),
			LocalRules{KeepLocal: last2}, []string{"z-02", "z-03"}},
		{"one a pending upload reads stays", with(created(5), func(s []LocalSnapshot) { s[2].Pending = true }),
			LocalRules{KeepLocal: last2}, []string{"z-01", "z-02"}},
		{"the newest stored stays though keep_local drops it", with(created(5), func(s []LocalSnapshot) { s[3].Stored, s[4].Stored = false, false }),
			LocalRules{KeepLocal: retention.Policy{Last: 1}}, []string{"z-01", "z-02"}},
		{"what the stored retention keeps stays", created(5),
			LocalRules{KeepLocal: retention.Policy{Last: 1}, Keep: &retention.Policy{Last: 3}}, []string{"z-01", "z-02"}},
		{"keep_local by day", created(30),
			LocalRules{KeepLocal: retention.Policy{Daily: 2}, Loc: time.UTC}, names(created(30)[:29], "z-24")},
		{"chain full: the newest full stays", with(created(5), func(s []LocalSnapshot) { s[1].StoredFull = true }),
			LocalRules{KeepLocal: retention.Policy{Last: 1}, ChainFull: true}, []string{"z-01", "z-03", "z-04"}},
		{"full_every: the newest full stays", created(5),
			LocalRules{KeepLocal: retention.Policy{Last: 1}, FullEvery: time.Hour}, []string{"z-02", "z-03", "z-04"}},
		{"chain previous without full_every: the full may go", created(5),
			LocalRules{KeepLocal: retention.Policy{Last: 1}}, []string{"z-01", "z-02", "z-03", "z-04"}},
		{"no snapshots", nil, LocalRules{KeepLocal: last2}, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if tt.rules.Loc == nil {
				tt.rules.Loc = time.UTC
			}
			if d := cmp.Diff(tt.want, KeepLocal(tt.snaps, tt.rules)); d != "" {
				t.Errorf("KeepLocal (-want +got):\n%s", d)
			}
		})
	}
}

// names lists the snapshots' names but those in except.
func names(s []LocalSnapshot, except ...string) []string {
	var out []string
	for _, x := range s {
		if !slices.Contains(except, x.Name) {
			out = append(out, x.Name)
		}
	}
	return out
}

// TestKeepLocalProperties: for random local histories, stored sets and
// rules, keep_local never destroys a snapshot zfs2s3 did not create, one
// not stored, one a pending upload needs, the newest stored one, one
// keep_local keeps, or one the stored retention keeps among all stored
// snapshots (those gone locally too, which KeepLocal does not see); and
// it destroys every other created one.
func TestKeepLocalProperties(t *testing.T) {
	genPolicy := func(t *rapid.T, label string) retention.Policy {
		n := rapid.IntRange(0, 4)
		return retention.Policy{Last: n.Draw(t, label+".last"), Hourly: n.Draw(t, label+".hourly"), Daily: n.Draw(t, label+".daily"),
			Weekly: n.Draw(t, label+".weekly"), Monthly: n.Draw(t, label+".monthly"), Yearly: n.Draw(t, label+".yearly")}
	}
	rapid.Check(t, func(t *rapid.T) {
		n := rapid.IntRange(0, 30).Draw(t, "n")
		var snaps []LocalSnapshot
		var gone []retention.Snapshot // stored, destroyed locally
		at := day0
		for i := range n {
			at = at.Add(time.Duration(rapid.IntRange(0, 60*24).Draw(t, "gap")) * time.Minute)
			s := LocalSnapshot{Name: fmt.Sprintf("s%02d", i), Time: at, Created: rapid.Bool().Draw(t, "created"),
				Stored: rapid.Bool().Draw(t, "stored"), Pending: rapid.IntRange(0, 5).Draw(t, "pending") == 0}
			s.StoredFull = s.Stored && rapid.IntRange(0, 3).Draw(t, "full") == 0
			s.Undated = !s.Created && rapid.IntRange(0, 5).Draw(t, "undated") == 0
			if rapid.IntRange(0, 4).Draw(t, "gone") == 0 {
				gone = append(gone, retention.Snapshot{Name: "gone-" + s.Name, Time: s.Time})
				continue
			}
			snaps = append(snaps, s)
		}
		r := LocalRules{KeepLocal: genPolicy(t, "keep_local"), Loc: time.UTC,
			ChainFull: rapid.Bool().Draw(t, "chain_full"), FullEvery: time.Duration(rapid.IntRange(0, 1).Draw(t, "full_every")) * time.Hour}
		if r.KeepLocal.KeepsNothing() {
			r.KeepLocal.Last = 1 // config refuses a policy that keeps nothing
		}
		if rapid.Bool().Draw(t, "has keep") {
			p := genPolicy(t, "keep")
			if !p.KeepsNothing() {
				r.Keep = &p
			}
		}
		destroyed := KeepLocal(snaps, r)

		// What the rules keep, computed on the whole sets.
		keptLocal, keptStored := map[string]bool{}, map[string]bool{}
		var createdSet, storedSet []retention.Snapshot
		storedSet = append(storedSet, gone...)
		newestStored, newestFull := "", ""
		for _, s := range snaps {
			if s.Created {
				createdSet = append(createdSet, retention.Snapshot{Name: s.Name, Time: s.Time})
			}
			if s.Stored {
				if !s.Undated { // prune keeps it without counting it
					storedSet = append(storedSet, retention.Snapshot{Name: s.Name, Time: s.Time})
				}
				newestStored = s.Name
			}
			if s.StoredFull {
				newestFull = s.Name
			}
		}
		for _, d := range r.KeepLocal.Apply(createdSet, time.UTC) {
			keptLocal[d.Name] = d.Kept()
		}
		if r.Keep != nil {
			for _, d := range r.Keep.Apply(storedSet, time.UTC) {
				keptStored[d.Name] = d.Kept()
			}
		}
		byName := map[string]LocalSnapshot{}
		for _, s := range snaps {
			byName[s.Name] = s
		}
		for _, name := range destroyed {
			s, ok := byName[name]
			switch {
			case !ok:
				t.Fatalf("destroys %s, which is not a local snapshot", name)
			case !s.Created:
				t.Fatalf("destroys %s, which zfs2s3 did not create", name)
			case !s.Stored:
				t.Fatalf("destroys %s, which is not stored: it would be lost", name)
			case s.Pending:
				t.Fatalf("destroys %s, which a pending upload needs", name)
			case name == newestStored:
				t.Fatalf("destroys %s, the newest stored snapshot", name)
			case keptLocal[name]:
				t.Fatalf("destroys %s, which keep_local keeps", name)
			case keptStored[name]:
				t.Fatalf("destroys %s, which the stored retention keeps", name)
			case name == newestFull && (r.ChainFull || r.FullEvery > 0):
				t.Fatalf("destroys %s, the newest full the chain rules need", name)
			}
		}
		// Nothing is destroyed twice, and the order is the input's.
		var order []string
		for _, s := range snaps {
			if slices.Contains(destroyed, s.Name) {
				order = append(order, s.Name)
			}
		}
		if !slices.Equal(order, destroyed) {
			t.Fatalf("destroyed %v, want them once each, oldest first (%v)", destroyed, order)
		}
		// Without a stored retention, everything else created and stored goes.
		if r.Keep == nil {
			for _, s := range snaps {
				if s.Created && s.Stored && !s.Pending && s.Name != newestStored && !keptLocal[s.Name] &&
					!(s.Name == newestFull && (r.ChainFull || r.FullEvery > 0)) && !slices.Contains(destroyed, s.Name) {
					t.Fatalf("%s stays though nothing needs it", s.Name)
				}
			}
		}
	})
}
