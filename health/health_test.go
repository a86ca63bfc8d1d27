package health

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestCheck(t *testing.T) {
	now := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	maxAge := 26 * time.Hour
	for _, tc := range []struct {
		name     string
		stored   Stored
		fresh    bool
		problems []string
	}{
		{"nightly backup from last night", Stored{Dataset: "tank/a", Snapshots: 3, Newest: "tank/a@d", NewestTime: now.Add(-13 * time.Hour)}, true, []string{}},
		{"exactly max age is still fresh", Stored{Dataset: "tank/a", Snapshots: 1, Newest: "tank/a@d", NewestTime: now.Add(-maxAge)}, true, []string{}},
		{"a minute past max age", Stored{Dataset: "tank/a", Snapshots: 1, Newest: "tank/a@d", NewestTime: now.Add(-maxAge - time.Minute)}, false,
			[]string{"newest restorable stored snapshot tank/a@d is 1d2h1m old (max age 1d2h)"}},
		{"nothing stored", Stored{Dataset: "tank/b"}, false, []string{"nothing restorable is stored"}},
		{"only unrestorable snapshots", Stored{Dataset: "tank/b", Unrestorable: 2}, false,
			[]string{"nothing restorable is stored", "2 stored snapshot(s) cannot be restored (see zfs2s3 status tank/b)"}},
		{"fresh but an older snapshot lost its chain", Stored{Dataset: "tank/c", Snapshots: 4, Unrestorable: 1, Newest: "tank/c@x", NewestTime: now.Add(-time.Hour)}, false,
			[]string{"1 stored snapshot(s) cannot be restored (see zfs2s3 status tank/c)"}},
		{"snapshot time in the future", Stored{Dataset: "tank/d", Snapshots: 1, Newest: "tank/d@x", NewestTime: now.Add(48 * time.Hour)}, true, []string{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vs := Check([]Stored{tc.stored}, maxAge, now)
			if len(vs) != 1 {
				t.Fatalf("%d verdicts for one dataset", len(vs))
			}
			v := vs[0]
			if v.Fresh != tc.fresh || v.Dataset != tc.stored.Dataset {
				t.Errorf("verdict %+v, want fresh=%v", v, tc.fresh)
			}
			if d := cmp.Diff(tc.problems, v.Problems); d != "" {
				t.Errorf("problems (-want +got):\n%s", d)
			}
			if tc.stored.Newest != "" && v.AgeSeconds != max(now.Sub(tc.stored.NewestTime), 0).Seconds() {
				t.Errorf("age %v s", v.AgeSeconds)
			}
		})
	}
}

func TestStaleKeepsOrder(t *testing.T) {
	now := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	vs := Check([]Stored{
		{Dataset: "z", Snapshots: 1, Newest: "z@1", NewestTime: now},
		{Dataset: "b"},
		{Dataset: "a", Snapshots: 1, Newest: "a@1", NewestTime: now.AddDate(0, 0, -3)},
	}, time.Hour, now)
	var names []string
	for _, v := range Stale(vs) {
		names = append(names, v.Dataset)
	}
	if d := cmp.Diff([]string{"b", "a"}, names); d != "" {
		t.Errorf("stale (-want +got):\n%s", d)
	}
}

func TestAge(t *testing.T) {
	for d, want := range map[time.Duration]string{
		30 * time.Second:              "30s",
		45 * time.Minute:              "45m",
		26 * time.Hour:                "1d2h",
		49*time.Hour + 90*time.Second: "2d1h2m",
		72 * time.Hour:                "3d",
		time.Hour + 29*time.Second:    "1h",
	} {
		if got := Age(d); got != want {
			t.Errorf("Age(%v) = %q, want %q", d, got, want)
		}
	}
}
