package retention

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"
	_ "time/tzdata" // the zone below, also on machines without a zone database

	"pgregory.net/rapid"
)

func at(s string) time.Time {
	t, err := time.Parse("2006-01-02 15:04", s)
	if err != nil {
		panic(err)
	}
	return t
}

// kept lists the names Apply keeps, with their reasons, newest first.
func kept(p Policy, snaps []Snapshot) []string {
	var out []string
	for _, d := range p.Apply(snaps, time.UTC) {
		if d.Kept() {
			out = append(out, d.Name+"="+strings.Join(d.Reasons, "+"))
		}
	}
	return out
}

func TestApply(t *testing.T) {
	// Two a day at 06:00 and 18:00 from Mon 2026-11-02 to Sun 2026-11-15,
	// plus one on 2026-10-31 and one on 2025-12-31.
	var snaps []Snapshot
	for d := at("2026-11-02 06:00"); d.Before(at("2026-11-16 00:00")); d = d.Add(12 * time.Hour) {
		snaps = append(snaps, Snapshot{Name: d.Format("01-02T15"), Time: d})
	}
	snaps = append(snaps, Snapshot{"10-31T12", at("2026-10-31 12:00")}, Snapshot{"2025-12-31", at("2025-12-31 23:00")})
	for _, tt := range []struct {
		name string
		p    Policy
		want []string
	}{
		{"last 3", Policy{Last: 3}, []string{"11-15T18=last", "11-15T06=last", "11-14T18=last"}},
		{"daily 3: newest of each of the 3 newest days", Policy{Daily: 3}, []string{"11-15T18=daily", "11-14T18=daily", "11-13T18=daily"}},
		{"weekly 3: ISO weeks (Mon-Sun)", Policy{Weekly: 3}, []string{"11-15T18=weekly", "11-08T18=weekly", "10-31T12=weekly"}},
		{"monthly 3 counts only months that have one", Policy{Monthly: 3}, []string{"11-15T18=monthly", "10-31T12=monthly", "2025-12-31=monthly"}},
		{"yearly 5, only two years exist", Policy{Yearly: 5}, []string{"11-15T18=yearly", "2025-12-31=yearly"}},
		{"hourly 2", Policy{Hourly: 2}, []string{"11-15T18=hourly", "11-15T06=hourly"}},
		{"rules overlap and each counts", Policy{Last: 1, Daily: 2, Monthly: 2},
			[]string{"11-15T18=last+daily+monthly", "11-14T18=daily", "10-31T12=monthly"}},
		{"nothing", Policy{}, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := kept(tt.p, snaps); !slices.Equal(got, tt.want) {
				t.Errorf("kept %v, want %v", got, tt.want)
			}
		})
	}
}

func TestApplyUsesTheTimeZone(t *testing.T) {
	// 23:30 and 00:30 UTC are one day in New York (18:30, 19:30).
	snaps := []Snapshot{{"a", at("2026-11-02 23:30")}, {"b", at("2026-11-03 00:30")}}
	ny, err := time.LoadLocation("America/New_York")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, d := range (Policy{Daily: 5}).Apply(snaps, ny) {
		if d.Kept() {
			n++
		}
	}
	if n != 1 {
		t.Errorf("daily in New York kept %d, want 1", n)
	}
	if got := kept(Policy{Daily: 5}, snaps); len(got) != 2 {
		t.Errorf("daily in UTC kept %v, want both", got)
	}
}

var (
	genPolicy = rapid.Custom(func(t *rapid.T) Policy {
		n := rapid.IntRange(0, 6)
		return Policy{Last: n.Draw(t, "last"), Hourly: n.Draw(t, "hourly"), Daily: n.Draw(t, "daily"),
			Weekly: n.Draw(t, "weekly"), Monthly: n.Draw(t, "monthly"), Yearly: n.Draw(t, "yearly")}
	})
	// Snapshots spread over about three years, some at the same time.
	genSnaps = rapid.Custom(func(t *rapid.T) []Snapshot {
		hours := rapid.SliceOfN(rapid.IntRange(0, 3*365*24), 0, 40).Draw(t, "hours")
		snaps := make([]Snapshot, len(hours))
		for i, h := range hours {
			snaps[i] = Snapshot{Name: fmt.Sprintf("s%02d", i), Time: at("2024-01-01 00:00").Add(time.Duration(h) * time.Hour)}
		}
		return snaps
	})
)

func TestApplyProperties(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		p, snaps := genPolicy.Draw(t, "policy"), genSnaps.Draw(t, "snaps")
		ds := p.Apply(snaps, time.UTC)
		if len(ds) != len(snaps) {
			t.Fatalf("%d decisions for %d snapshots", len(ds), len(snaps))
		}
		// Each rule keeps at most its count, and only the newest snapshot
		// of each period it keeps.
		byRule := map[string][]Decision{}
		for _, d := range ds {
			for _, r := range d.Reasons {
				byRule[r] = append(byRule[r], d)
			}
		}
		for _, r := range p.rules() {
			got := byRule[r.name]
			if len(got) > r.count {
				t.Fatalf("%s kept %d, more than %d", r.name, len(got), r.count)
			}
			// It keeps exactly min(count, periods) periods' newest snapshots.
			newest := map[int]Decision{}
			for _, d := range ds {
				key := len(newest) // "last": every snapshot its own period
				if r.period != nil {
					key = r.period(d.Time)
				}
				if _, ok := newest[key]; !ok {
					newest[key] = d
				}
			}
			var keys []int
			for k := range newest {
				keys = append(keys, k)
			}
			want := []string{}
			if r.period != nil {
				sort.Sort(sort.Reverse(sort.IntSlice(keys)))
				for _, k := range keys[:min(len(keys), r.count)] {
					want = append(want, newest[k].Name)
				}
			} else {
				for _, d := range ds[:min(len(ds), r.count)] {
					want = append(want, d.Name)
				}
			}
			var names []string
			for _, d := range got {
				names = append(names, d.Name)
			}
			slices.Sort(names)
			slices.Sort(want)
			if !slices.Equal(names, append([]string{}, want...)) && !(len(names) == 0 && len(want) == 0) {
				t.Fatalf("%s %d kept %v, want %v", r.name, r.count, names, want)
			}
		}
		// The newest snapshot is kept whenever any rule keeps anything.
		if len(ds) > 0 && !p.KeepsNothing() && !ds[0].Kept() {
			t.Fatal("the newest snapshot was not kept")
		}
		// The order of the input does not matter.
		rev := slices.Clone(snaps)
		slices.Reverse(rev)
		if again := p.Apply(rev, time.UTC); !sameDecisions(ds, again) {
			t.Fatal("the decisions depend on the input order")
		}
		// Keeping more never keeps less.
		more := p
		more.Daily++
		more.Last++
		again := more.Apply(snaps, time.UTC)
		for i := range ds {
			if ds[i].Kept() && !again[i].Kept() {
				t.Fatalf("a larger policy drops %s", ds[i].Name)
			}
		}
	})
}

func sameDecisions(a, b []Decision) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Name != b[i].Name || !slices.Equal(a[i].Reasons, b[i].Reasons) {
			return false
		}
	}
	return true
}
