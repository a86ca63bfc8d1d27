package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/zfs2s3/zfs2s3/backup"
	"github.com/zfs2s3/zfs2s3/internal/testbed"
)

// TestNinetyDailySnapshots is a season of nightly runs at once: two
// datasets with 90 daily snapshots named by date, a config with a new full
// every 30 days and keep {daily: 7, monthly: 3}. backup stores them all in
// order, a second backup uploads nothing, and prune leaves exactly the
// snapshots the rules name, each restorable.
func TestNinetyDailySnapshots(t *testing.T) {
	e := &backupEnv{env: newEnv(t, "season")}
	e.a, e.b = e.ds, e.ds+"/b"
	e.zfs("create", e.b)
	e.config = filepath.Join(t.TempDir(), "config.yaml")
	e.writeConfig(fmt.Sprintf(`
defaults:
  snapshots: "daily-*"
  time_format: "daily-%%Y-%%m-%%d"
  chain: previous
  full_every: 30d
  keep: {daily: 7, monthly: 3}
datasets:
  %q: {}
  %q: {}
`, e.a, e.b))
	first := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var all []time.Time
	for i := 0; i < 90; i++ { // 2026-01-01 to 2026-03-31
		d := first.AddDate(0, 0, i)
		e.snapNamed(e.a, "daily-"+d.Format("2006-01-02"))
		e.snapNamed(e.b, "daily-"+d.Format("2006-01-02"))
		all = append(all, d)
	}

	// What backup must store: a full on days 0, 30 and 60 (30 days of
	// snapshot time since the last full), else each from the day before.
	stored := func(ds string) []string {
		var s []string
		for i, d := range all {
			if i%30 == 0 {
				s = append(s, dayName(ds, d)+" (full)")
			} else {
				s = append(s, dayName(ds, all[i-1])+" -> "+dayName(ds, d))
			}
		}
		return s
	}

	t.Run("backup stores all 180 in order, a full every 30 days", func(t *testing.T) {
		e.t = t
		rep := e.report(0, nil)
		for _, ds := range []string{e.a, e.b} {
			if d := cmp.Diff(stored(ds), uploadedEdges(rep[ds])); d != "" {
				t.Errorf("%s uploaded (-want +got):\n%s", ds, d)
			}
		}
		want := append(stored(e.a), stored(e.b)...)
		slices.Sort(want)
		if d := cmp.Diff(want, e.edges()); d != "" {
			t.Errorf("ledger (-want +got):\n%s", d)
		}
	})

	t.Run("a second backup uploads nothing", func(t *testing.T) {
		e.t = t
		before := e.snapshotState()
		rep := e.report(0, nil)
		for _, ds := range []string{e.a, e.b} {
			if u := uploadedEdges(rep[ds]); len(u) != 0 {
				t.Errorf("%s: second backup uploaded %v", ds, u)
			}
		}
		if after := e.snapshotState(); after != before {
			t.Errorf("second backup changed state:\nbefore %s\nafter  %s", before, after)
		}
	})

	// The rules, from the dates alone: the 7 newest days, and the newest
	// snapshot of each of the 3 newest months (Jan 31, Feb 28, Mar 31).
	var kept []time.Time
	for i, d := range all {
		lastOfMonth := i == len(all)-1 || all[i+1].Month() != d.Month()
		if i >= len(all)-7 || lastOfMonth {
			kept = append(kept, d)
		}
	}
	if len(kept) != 9 || kept[0].Format("01-02") != "01-31" || kept[1].Format("01-02") != "02-28" {
		t.Fatalf("test's own rule computation: kept %v", kept)
	}

	t.Run("prune leaves exactly the snapshots the rules name", func(t *testing.T) {
		e.t = t
		if r := e.runWith(nil, "prune"); r.code != 0 {
			t.Fatalf("prune: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
		}
		for _, ds := range []string{e.a, e.b} {
			var want []string
			for _, d := range kept {
				want = append(want, dayName(ds, d))
			}
			var got []string
			for _, ed := range e.ledger().Edges {
				if ed.Target.Dataset() == ds {
					got = append(got, ed.Target.Name)
				}
			}
			slices.Sort(got)
			if d := cmp.Diff(want, slices.Compact(got)); d != "" {
				t.Errorf("%s: stored snapshots after prune (-want +got):\n%s", ds, d)
			}
		}
		r := e.runWith(nil, "status", "--json")
		var st backup.Status
		if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || len(st.Datasets) != 2 {
			t.Fatalf("status --json: exit %d: %v\n%s\n%s", r.code, err, r.stdout, r.stderr)
		}
		for _, d := range st.Datasets {
			for _, ed := range d.Edges {
				if !ed.Restorable {
					t.Errorf("%s is not restorable after prune: %s", ed.Snapshot, ed.Why)
				}
			}
		}
		if u := e.unknownObjects(); len(u) != 0 {
			t.Errorf("objects the ledger does not know: %v", u)
		}
	})

	t.Run("the oldest kept snapshot of each dataset restores", func(t *testing.T) {
		e.t = t
		for i, ds := range []string{e.a, e.b} {
			into := fmt.Sprintf("%s/%s restored %d", pool, filepath.Base(e.ds), i)
			e.ok("restore", dayName(ds, kept[0]), "--into", into)
			src, err := testbed.Mountpoint(ds)
			if err != nil {
				t.Fatal(err)
			}
			dst, err := testbed.Mountpoint(into)
			if err != nil {
				t.Fatal(err)
			}
			for _, d := range []time.Time{all[0], kept[0]} {
				name := "daily-" + d.Format("2006-01-02") + ".bin"
				sameFile(t, filepath.Join(src, name), filepath.Join(dst, name))
			}
			newer := "daily-" + kept[0].AddDate(0, 0, 1).Format("2006-01-02") + ".bin"
			if _, err := os.Stat(filepath.Join(dst, newer)); err == nil {
				t.Errorf("restored %s holds a newer snapshot's file", dayName(ds, kept[0]))
			}
		}
	})
}
