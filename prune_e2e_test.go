package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/zfs2s3/zfs2s3/backup"
	"github.com/zfs2s3/zfs2s3/internal/testbed"
)

// pruneEnv is an env with a config whose one dataset has daily snapshots
// named by date and the given keep rule.
func pruneEnv(t *testing.T, name, keep string) *backupEnv {
	e := &backupEnv{env: newEnv(t, name)}
	e.a = e.ds
	e.config = filepath.Join(t.TempDir(), "config.yaml")
	e.writeDailyConfig(fmt.Sprintf(`
  %q:
    keep: %s
`, e.a, keep))
	return e
}

func dayName(ds string, d time.Time) string { return ds + "@daily-" + d.Format("2006-01-02") }

// dailies takes one snapshot a day from first to last, oldest first.
func (e *backupEnv) dailies(first, last time.Time) []time.Time {
	var ds []time.Time
	for d := first; !d.After(last); d = d.AddDate(0, 0, 1) {
		e.snapNamed(e.a, "daily-"+d.Format("2006-01-02"))
		ds = append(ds, d)
	}
	return ds
}

// chainEdges lists the edges of a chain through snaps (oldest first): a
// full of the first, then each from the one before, sorted as e.edges().
func chainEdges(snaps []string) []string {
	var s []string
	for i, n := range snaps {
		if i == 0 {
			s = append(s, n+" (full)")
		} else {
			s = append(s, snaps[i-1]+" -> "+n)
		}
	}
	slices.Sort(s)
	return s
}

// unknownObjects returns status --json's objects the ledger does not know.
func (e *backupEnv) unknownObjects() []string {
	e.t.Helper()
	r := e.runWith(nil, "status", "--json")
	var st backup.Status
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		e.t.Fatalf("status --json: exit %d: %v\n%s\n%s", r.code, err, r.stdout, r.stderr)
	}
	return st.UnknownObjects
}

// killAt runs prune through the proxy and kill -9s it once the proxy hung
// a request that hang matches: the store acted, the client never learned.
func (e *backupEnv) killAt(p *testbed.Proxy, what string, hang func(*http.Request) bool, args ...string) {
	e.t.Helper()
	p.SetRule(func(r *http.Request) testbed.Fault { return testbed.Fault{Hang: hang(r)} })
	defer p.SetRule(nil)
	e.endpoint = p.URL
	defer func() { e.endpoint = bed.minio.Endpoint }()
	c := e.cmd(args...)
	c.Env = append(c.Env, "ZFS2S3_CONFIG="+e.config)
	var stderr strings.Builder
	c.Stderr = &stderr
	if err := c.Start(); err != nil {
		e.t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Wait() }()
	select {
	case <-p.Hung:
	case err := <-done:
		e.t.Fatalf("%v ended (%v) before %s: %s", args, err, what, stderr.String())
	case <-time.After(time.Minute):
		e.t.Fatalf("%v never reached %s: %s", args, what, stderr.String())
	}
	c.Process.Signal(syscall.SIGKILL)
	<-done
}

func TestPruneKeepsWhatTheRulesName(t *testing.T) {
	e := pruneEnv(t, "prune", "{daily: 7, monthly: 2}")
	first := time.Date(2025, 12, 20, 0, 0, 0, 0, time.Local)
	all := e.dailies(first, first.AddDate(0, 0, 39)) // to 2026-01-28
	if r := e.runWith(nil, "backup"); r.code != 0 {
		t.Fatalf("backup: exit %d: %s", r.code, r.stderr)
	}
	if n := len(e.edges()); n != 40 {
		t.Fatalf("backup stored %d edges, want 40", n)
	}

	// The rules, computed from the dates: the 7 newest days, and the
	// newest snapshot of each of the 2 newest months.
	keep := map[time.Time]bool{}
	months := map[time.Month]bool{}
	for i := len(all) - 1; i >= 0; i-- {
		d := all[i]
		if i >= len(all)-7 {
			keep[d] = true
		}
		if !months[d.Month()] && len(months) < 2 {
			months[d.Month()] = true
			keep[d] = true
		}
	}
	var kept []string
	for _, d := range all {
		if keep[d] {
			kept = append(kept, dayName(e.a, d))
		}
	}
	if want := []string{dayName(e.a, all[11]), dayName(e.a, all[33])}; kept[0] != want[0] || kept[1] != want[1] || len(kept) != 8 {
		t.Fatalf("test's own rule computation: kept %v", kept) // Dec 31, then Jan 22..28
	}
	newest := dayName(e.a, all[len(all)-1])

	t.Run("dry-run prints the plan and changes nothing", func(t *testing.T) {
		e.t = t
		before := e.snapshotState()
		r := e.runWith(nil, "prune", "--dry-run")
		if r.code != 0 {
			t.Fatalf("prune --dry-run: exit %d: %s", r.code, r.stderr)
		}
		for _, want := range []string{
			"would upload bypass " + kept[0] + " (full)",
			"would upload bypass " + kept[0] + " -> " + kept[1],
			"would remove " + dayName(e.a, all[0]) + " (full) (" + dayName(e.a, all[0]) + " is kept by no rule of keep {daily: 7, monthly: 2})",
			"would remove " + dayName(e.a, all[10]) + " -> " + kept[0] + " (not needed: " + kept[0] + " stays restorable without it)",
		} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("dry run output lacks %q:\n%s", want, r.stdout)
			}
		}
		if n := strings.Count(r.stdout, "would remove"); n != 34 {
			t.Errorf("dry run removes %d edges, want 34", n)
		}
		if after := e.snapshotState(); after != before {
			t.Errorf("dry run changed state:\nbefore %s\nafter  %s", before, after)
		}
	})

	t.Run("kill -9 in the middle, then rerun", func(t *testing.T) {
		e.t = t
		p := testbed.StartProxy(t, bed.minio.Endpoint)
		// In the first bypass's upload, after the store completed it.
		e.killAt(p, "the bypass upload's completion", testbed.IsComplete, "prune")
		if n := len(e.stateFiles()); n != 1 {
			t.Fatalf("after the kill in the bypass upload: %d upload state files, want 1", n)
		}
		// In the first removal's DELETE, after the store deleted.
		// Not the delete permission probe, which comes first and deletes nothing.
		e.killAt(p, "a DELETE", func(r *http.Request) bool {
			return r.Method == http.MethodDelete && !strings.HasSuffix(r.URL.Path, "delete-permission-probe")
		}, "prune")
		removing := 0
		for _, ed := range e.ledger().Edges {
			if ed.Removing {
				removing++
			}
		}
		if removing != 1 {
			t.Fatalf("after the kill in a removal: %d edges marked as being removed, want 1", removing)
		}
		if r := e.runWith(nil, "prune"); r.code != 0 {
			t.Fatalf("prune after kills: exit %d: %s", r.code, r.stderr)
		}
	})

	t.Run("prune leaves exactly what the rules keep", func(t *testing.T) {
		e.t = t
		if d := cmp.Diff(chainEdges(kept), e.edges()); d != "" {
			t.Errorf("ledger after prune (-want +got):\n%s", d)
		}
		if !slices.Contains(e.edges(), kept[len(kept)-2]+" -> "+newest) {
			t.Errorf("the newest stored snapshot %s was pruned", newest)
		}
		if u := e.unknownObjects(); len(u) != 0 {
			t.Errorf("objects the ledger does not know: %v", u)
		}
		if n := e.multipartUploads(); n != 0 {
			t.Errorf("%d multipart uploads left", n)
		}
		if n := len(e.stateFiles()); n != 0 {
			t.Errorf("%d upload state files left", n)
		}
	})

	t.Run("second prune does nothing", func(t *testing.T) {
		e.t = t
		before := e.snapshotState()
		r := e.runWith(nil, "prune")
		if r.code != 0 || !strings.Contains(r.stdout, e.a+": nothing to prune") {
			t.Errorf("second prune: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
		}
		if after := e.snapshotState(); after != before {
			t.Errorf("second prune changed state:\nbefore %s\nafter  %s", before, after)
		}
	})

	t.Run("the oldest kept snapshot restores", func(t *testing.T) {
		e.t = t
		into := pool + "/" + filepath.Base(e.ds) + " restored"
		e.ok("restore", kept[0], "--into", into)
		src, err := testbed.Mountpoint(e.a)
		if err != nil {
			t.Fatal(err)
		}
		dst, err := testbed.Mountpoint(into)
		if err != nil {
			t.Fatal(err)
		}
		name := "daily-" + all[11].Format("2006-01-02") + ".bin"
		sameFile(t, filepath.Join(src, name), filepath.Join(dst, name))
		if _, err := os.Stat(filepath.Join(dst, "daily-"+all[12].Format("2006-01-02")+".bin")); err == nil {
			t.Errorf("restored %s holds a newer snapshot's file", kept[0])
		}
	})
}

func TestConsolidateAndChainsThatStay(t *testing.T) {
	e := pruneEnv(t, "consolidate", "{monthly: 2}")
	first := time.Date(2026, 1, 28, 0, 0, 0, 0, time.Local)
	var s []string
	for _, d := range e.dailies(first, first.AddDate(0, 0, 6)) { // Jan 28 .. Feb 3
		s = append(s, dayName(e.a, d))
	}
	if r := e.runWith(nil, "backup"); r.code != 0 {
		t.Fatalf("backup: exit %d: %s", r.code, r.stderr)
	}

	t.Run("consolidate --dry-run changes nothing", func(t *testing.T) {
		e.t = t
		before := e.snapshotState()
		r := e.runWith(nil, "consolidate", s[0], s[4], "--dry-run")
		if r.code != 0 {
			t.Fatalf("consolidate --dry-run: exit %d: %s", r.code, r.stderr)
		}
		if !strings.Contains(r.stdout, "would upload "+s[0]+" -> "+s[4]) || strings.Count(r.stdout, "would remove") != 4 {
			t.Errorf("dry run plan:\n%s", r.stdout)
		}
		if after := e.snapshotState(); after != before {
			t.Errorf("dry run changed state:\nbefore %s\nafter  %s", before, after)
		}
	})

	t.Run("consolidate stores the bypass and removes the middle", func(t *testing.T) {
		e.t = t
		if r := e.runWith(nil, "consolidate", s[0], s[4]); r.code != 0 {
			t.Fatalf("consolidate: exit %d: %s", r.code, r.stderr)
		}
		want := chainEdges([]string{s[0], s[4], s[5], s[6]})
		if d := cmp.Diff(want, e.edges()); d != "" {
			t.Errorf("ledger after consolidate (-want +got):\n%s", d)
		}
		if u := e.unknownObjects(); len(u) != 0 {
			t.Errorf("objects the ledger does not know: %v", u)
		}
		before := e.snapshotState()
		if r := e.runWith(nil, "consolidate", s[0], s[4]); r.code != 0 {
			t.Errorf("second consolidate: exit %d: %s", r.code, r.stderr)
		}
		if after := e.snapshotState(); after != before {
			t.Errorf("second consolidate changed state:\nbefore %s\nafter  %s", before, after)
		}
	})

	t.Run("a chain whose start is gone locally stays, and dry-run says for whom", func(t *testing.T) {
		e.t = t
		// monthly 2 keeps Jan 28 and Feb 3. Feb 3's chain runs through Feb 1
		// and 2; with Jan 28 gone locally no bypass can be sent.
		e.zfs("destroy", s[0])
		before := e.snapshotState()
		r := e.runWith(nil, "prune", "--dry-run")
		if r.code != 0 {
			t.Fatalf("prune --dry-run: exit %d: %s", r.code, r.stderr)
		}
		for _, st := range []string{s[4], s[5]} {
			if want := st + " stays: kept " + s[6] + " needs it"; !strings.Contains(r.stdout, want) {
				t.Errorf("dry run lacks %q:\n%s", want, r.stdout)
			}
		}
		if strings.Contains(r.stdout, "would remove") || strings.Contains(r.stdout, "would upload") {
			t.Errorf("dry run plans changes:\n%s", r.stdout)
		}
		if r := e.runWith(nil, "prune"); r.code != 0 {
			t.Fatalf("prune: exit %d: %s", r.code, r.stderr)
		}
		if after := e.snapshotState(); after != before {
			t.Errorf("prune changed state although the chain must stay:\nbefore %s\nafter  %s", before, after)
		}
		// status says why they stay, from the config's keep rule.
		r = e.runWith(nil, "status")
		for _, st := range []string{s[4], s[5]} {
			_, short, _ := strings.Cut(st, "@")
			if want := "@" + short + " stays: kept as a chain link of " + s[6] + ": the local snapshots for a bypass edge are gone\n"; r.code != 0 || !strings.Contains(r.stdout, want) {
				t.Errorf("status: exit %d, lacks %q:\n%s%s", r.code, want, r.stdout, r.stderr)
			}
		}
		r = e.runWith(nil, "status", "--json")
		var status backup.Status
		if err := json.Unmarshal([]byte(r.stdout), &status); err != nil || len(status.Datasets) != 1 {
			t.Fatalf("status --json: %v\n%s", err, r.stdout)
		}
		stays := map[string]string{}
		for _, ed := range status.Datasets[0].Edges {
			if ed.Stays != "" {
				stays[ed.Snapshot] = ed.Stays
			}
		}
		why := "kept as a chain link of " + s[6] + ": the local snapshots for a bypass edge are gone"
		if d := cmp.Diff(map[string]string{s[4]: why, s[5]: why}, stays); d != "" {
			t.Errorf("status --json stays (-want +got):\n%s", d)
		}
	})
}
