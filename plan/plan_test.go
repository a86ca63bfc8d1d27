package plan

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"pgregory.net/rapid"
)

var day0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func daily(n int) []Snapshot {
	var s []Snapshot
	for i := range n {
		s = append(s, Snapshot{Name: fmt.Sprintf("tank/d@daily-%02d", i+1), GUID: uint64(i + 1), Time: day0.AddDate(0, 0, i)})
	}
	return s
}

func describe(es []Edge) []string {
	var out []string
	for _, e := range es {
		base := "full"
		if e.Base != nil {
			base = fmt.Sprint(e.Base.GUID)
		}
		out = append(out, fmt.Sprintf("%s->%d", base, e.Target.GUID))
	}
	return out
}

func TestMake(t *testing.T) {
	stored := func(s []Snapshot, fulls []int, incs ...int) []Snapshot {
		s = slices.Clone(s)
		for _, i := range fulls {
			s[i-1].Stored, s[i-1].StoredFull = true, true
		}
		for _, i := range incs {
			s[i-1].Stored = true
		}
		return s
	}
	for _, tt := range []struct {
		name      string
		snaps     []Snapshot
		rules     Rules
		fullTimes []time.Time
		want      []string
	}{
		{"first run: a full, then each from the one before", daily(3), Rules{}, nil, []string{"full->1", "1->2", "2->3"}},
		{"only what is newer than the newest stored", stored(daily(5), []int{1}, 3), Rules{}, nil, []string{"3->4", "4->5"}},
		{"nothing new", stored(daily(2), []int{1}, 2), Rules{}, nil, nil},
		{"the newest stored is gone here: from the newest stored still here",
			stored(slices.Delete(daily(4), 2, 3), []int{1}, 2), Rules{}, nil, []string{"2->4"}},
		{"chain full: each from the newest full", stored(daily(4), []int{1}, 2), Rules{ChainFull: true}, nil, []string{"1->3", "1->4"}},
		{"a new full every 30 days of snapshot time", daily(65), Rules{FullEvery: 30 * 24 * time.Hour}, nil, nil},
		{"full_every counts from a full gone here", stored(daily(3)[1:], nil, 1), Rules{FullEvery: 48 * time.Hour},
			[]time.Time{day0}, []string{"full->3"}},
		{"no full known with full_every: a full", stored(daily(3), nil, 1), Rules{FullEvery: 48 * time.Hour}, nil, []string{"full->2", "2->3"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := describe(Make(tt.snaps, tt.rules, tt.fullTimes))
			if tt.name == "a new full every 30 days of snapshot time" {
				var fulls []string
				for _, g := range got {
					if g[:4] == "full" {
						fulls = append(fulls, g)
					}
				}
				if want := []string{"full->1", "full->31", "full->61"}; !slices.Equal(fulls, want) {
					t.Errorf("fulls %v, want %v", fulls, want)
				}
				return
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("planned %v, want %v", got, tt.want)
			}
		})
	}
}

func TestMakeProperties(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		n := rapid.IntRange(0, 15).Draw(t, "n")
		snaps := daily(n)
		for i := range snaps {
			snaps[i].Time = day0.Add(time.Duration(rapid.IntRange(0, 23).Draw(t, "h"))*time.Hour).AddDate(0, 0, i)
			snaps[i].Stored = rapid.Bool().Draw(t, "stored")
			snaps[i].StoredFull = snaps[i].Stored && rapid.Bool().Draw(t, "full")
		}
		r := Rules{ChainFull: rapid.Bool().Draw(t, "chainFull"), FullEvery: time.Duration(rapid.IntRange(0, 10).Draw(t, "every")) * 24 * time.Hour}
		plan := Make(snaps, r, nil)

		newest := -1
		for i, s := range snaps {
			if s.Stored {
				newest = i
			}
		}
		var targets []uint64
		for _, e := range plan {
			targets = append(targets, e.Target.GUID)
		}
		var want []uint64
		for _, s := range snaps[newest+1:] {
			want = append(want, s.GUID)
		}
		if !slices.Equal(targets, want) {
			t.Fatalf("targets %v, want every snapshot after the newest stored, oldest first: %v", targets, want)
		}
		have := map[uint64]bool{} // stored or planned so far
		full := map[uint64]bool{}
		var lastFull time.Time
		for _, s := range snaps[:newest+1] {
			have[s.GUID] = s.Stored
			if s.StoredFull {
				full[s.GUID] = true
				lastFull = s.Time
			}
		}
		for _, e := range plan {
			if e.Base == nil {
				full[e.Target.GUID], lastFull = true, e.Target.Time
			} else {
				b := e.Base.GUID
				switch {
				case !have[b]:
					t.Fatalf("%v starts from %d, neither stored nor planned before", describe([]Edge{e}), b)
				case r.ChainFull && !full[b]:
					t.Fatalf("chain full, but %v starts from a snapshot that is not a full", describe([]Edge{e}))
				case r.FullEvery > 0 && (lastFull.IsZero() || e.Target.Time.Sub(lastFull) >= r.FullEvery):
					t.Fatalf("%v is an incremental although a full is due", describe([]Edge{e}))
				}
			}
			have[e.Target.GUID] = true
		}
	})
}

func TestWhyNamesFullEveryInDays(t *testing.T) {
	day := func(d int) time.Time { return time.Date(2026, 1, d, 0, 0, 0, 0, time.UTC) }
	snaps := []Snapshot{{Name: "t@1", GUID: 1, Time: day(1), Stored: true, StoredFull: true}, {Name: "t@31", GUID: 31, Time: day(31)}}
	edges := Make(snaps, Rules{FullEvery: 30 * 24 * time.Hour}, nil)
	if len(edges) != 1 || edges[0].Why != "full: 30d since the last full" {
		t.Errorf("edges %+v: want one full because 30d passed", edges)
	}
}
