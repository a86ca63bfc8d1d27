package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/zfs2s3/zfs2s3/backup"
	"github.com/zfs2s3/zfs2s3/internal/testbed"
	"github.com/zfs2s3/zfs2s3/metrics"
)

// readMetrics parses a metrics file as node_exporter does: each family's
// values by dataset label ("" for none).
func readMetrics(t *testing.T, path string) map[string]map[string]float64 {
	t.Helper()
	mfs, err := metrics.Read(path)
	if err != nil {
		t.Fatalf("metrics file %s: %v", path, err)
	}
	return metrics.ByDataset(mfs)
}

// creation is a snapshot's creation property in unix seconds.
func (e *backupEnv) creation(snap string) float64 {
	e.t.Helper()
	v, err := strconv.ParseFloat(strings.TrimSpace(e.zfs("get", "-Hp", "-o", "value", "creation", snap)), 64)
	if err != nil {
		e.t.Fatal(err)
	}
	return v
}

// storedBytes sums the ledger's stored bytes of ds's edges.
func (e *backupEnv) storedBytes(ds string) float64 {
	var n int64
	for _, ed := range e.ledger().Edges {
		if ed.Target.Dataset() == ds {
			n += ed.StoredBytes
		}
	}
	return float64(n)
}

// failingSendsOf writes a zfs whose sends of ds fail; everything else is
// the real zfs.
func failingSendsOf(t *testing.T, ds string) string {
	wrapper := filepath.Join(t.TempDir(), "zfs")
	script := fmt.Sprintf("#!/bin/sh\nif [ \"$1\" = send ]; then for a in \"$@\"; do case \"$a\" in '%s@'*) echo \"cannot send $a: injected failure\" >&2; exit 1;; esac; done; fi\nexec zfs \"$@\"\n", ds)
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return wrapper
}

func TestMonitoring(t *testing.T) {
	e := newBackupEnv(t) // a: times from the names (January 2026); b: from creation (now)
	prom := filepath.Join(t.TempDir(), "zfs2s3.prom")
	for day := 1; day <= 3; day++ {
		e.daily(e.a, day)
		e.daily(e.b, day)
	}
	var firstSuccess float64

	t.Run("backup --metrics-file records a real run", func(t *testing.T) {
		e.t = t
		start := float64(time.Now().Unix())
		rep := e.report(0, nil, "--metrics-file", prom)
		end := float64(time.Now().Unix() + 1)
		m := readMetrics(t, prom)
		var upA, upB float64
		for _, u := range rep[e.a].Uploaded {
			upA += float64(u.Bytes)
		}
		for _, u := range rep[e.b].Uploaded {
			upB += float64(u.Bytes)
		}
		for name, want := range map[string]map[string]float64{
			"zfs2s3_backup_last_run_success":        {e.a: 1, e.b: 1},
			"zfs2s3_backup_last_run_uploaded_edges": {e.a: 3, e.b: 3},
			"zfs2s3_backup_last_run_uploaded_bytes": {e.a: upA, e.b: upB},
			"zfs2s3_stored_snapshots":               {e.a: 3, e.b: 3},
			"zfs2s3_stored_unrestorable_snapshots":  {e.a: 0, e.b: 0},
			"zfs2s3_stored_bytes":                   {e.a: e.storedBytes(e.a), e.b: e.storedBytes(e.b)},
			"zfs2s3_stored_newest_snapshot_timestamp_seconds": {
				e.a: float64(time.Date(2026, 1, 3, 0, 0, 0, 0, time.Local).Unix()), // from the name
				e.b: e.creation(e.b + "@daily-2026-01-03"),                         // time_format "": creation
			},
		} {
			if d := cmp.Diff(want, m[name]); d != "" {
				t.Errorf("%s (-want +got):\n%s", name, d)
			}
		}
		if upA <= 0 {
			t.Errorf("uploaded bytes %v", upA)
		}
		for _, ds := range []string{e.a, e.b} {
			if s := m["zfs2s3_backup_last_success_timestamp_seconds"][ds]; s < start || s > end {
				t.Errorf("last success of %s at %v, want between %v and %v", ds, s, start, end)
			}
			if s := m["zfs2s3_backup_last_run_duration_seconds"][ds]; s <= 0 {
				t.Errorf("duration of %s: %v", ds, s)
			}
		}
		if s := m["zfs2s3_backup_last_run_timestamp_seconds"][""]; s < start || s > end {
			t.Errorf("last run at %v, want between %v and %v", s, start, end)
		}
		firstSuccess = m["zfs2s3_backup_last_success_timestamp_seconds"][e.b]
		if r := e.runWith(nil, "backup", "--metrics-file", prom+".dry", "--dry-run"); r.code != 0 {
			t.Fatalf("backup --dry-run: exit %d: %s", r.code, r.stderr)
		}
		if _, err := os.Stat(prom + ".dry"); err == nil {
			t.Errorf("a dry run wrote a metrics file")
		}
	})

	t.Run("a failed dataset keeps its last success time", func(t *testing.T) {
		e.t = t
		e.daily(e.a, 4)
		e.daily(e.b, 4)
		// from the config's metrics_file this time
		good, _ := os.ReadFile(e.config)
		defer e.writeConfig(string(good))
		e.writeConfig("metrics_file: " + prom + "\n" + string(good))
		r := e.runWith([]string{"ZFS2S3_ZFS=" + failingSendsOf(t, e.b)}, "backup")
		if r.code != 1 {
			t.Fatalf("backup with a failing dataset: exit %d, want 1\nstderr: %s", r.code, r.stderr)
		}
		m := readMetrics(t, prom)
		if d := cmp.Diff(map[string]float64{e.a: 1, e.b: 0}, m["zfs2s3_backup_last_run_success"]); d != "" {
			t.Errorf("last run success (-want +got):\n%s", d)
		}
		if got := m["zfs2s3_backup_last_success_timestamp_seconds"]; got[e.b] != firstSuccess || got[e.a] <= firstSuccess {
			t.Errorf("last success %v: want %s kept at %v and %s later", got, e.b, firstSuccess, e.a)
		}
		if got := m["zfs2s3_backup_last_run_uploaded_edges"]; got[e.a] != 1 || got[e.b] != 0 {
			t.Errorf("uploaded edges %v", got)
		}
		if r := e.runWith(nil, "backup"); r.code != 0 { // finishes b's upload
			t.Fatalf("backup: exit %d: %s", r.code, r.stderr)
		}
		if got := readMetrics(t, prom)["zfs2s3_backup_last_run_success"]; got[e.b] != 1 {
			t.Errorf("after the next run: %v", got)
		}
	})

	t.Run("prune adds its metrics and keeps backup's", func(t *testing.T) {
		e.t = t
		before := readMetrics(t, prom)
		if r := e.runWith(nil, "prune", "--metrics-file", prom); r.code != 0 {
			t.Fatalf("prune: exit %d: %s", r.code, r.stderr)
		}
		m := readMetrics(t, prom)
		for name, v := range before {
			if strings.HasPrefix(name, "zfs2s3_backup_") {
				if d := cmp.Diff(v, m[name]); d != "" {
					t.Errorf("prune changed %s:\n%s", name, d)
				}
			}
		}
		if d := cmp.Diff(map[string]float64{e.a: 1, e.b: 1}, m["zfs2s3_prune_last_run_success"]); d != "" {
			t.Errorf("prune success (-want +got):\n%s", d)
		}
		if d := cmp.Diff(map[string]float64{e.a: 0, e.b: 0}, m["zfs2s3_prune_last_run_removed_edges"]); d != "" {
			t.Errorf("prune removed (-want +got):\n%s", d)
		}
	})

	t.Run("status --max-age", func(t *testing.T) {
		e.t = t
		r := e.runWith(nil, "status", "--max-age", "26h")
		if r.code != 1 {
			t.Fatalf("status --max-age 26h: exit %d, want 1\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
		}
		want := e.a + ": newest restorable stored snapshot " + e.a + "@daily-2026-01-04 is "
		if !strings.HasPrefix(r.stdout, want) || strings.Count(r.stdout, "\n") != 1 {
			t.Errorf("stdout %q, want one line starting %q", r.stdout, want)
		}
		if want := "zfs2s3: 1 of 2 datasets not fresh (max age 1d2h): " + e.a + "\n"; r.stderr != want {
			t.Errorf("stderr %q, want %q", r.stderr, want)
		}
		r = e.runWith(nil, "status", "--max-age", "26h", e.b)
		if r.code != 0 || r.stdout != "all 1 datasets fresh\n" {
			t.Errorf("status --max-age 26h %s: exit %d, stdout %q, stderr %q", e.b, r.code, r.stdout, r.stderr)
		}
		r = e.runWith(nil, "status", "--max-age", "1000d")
		if r.code != 0 || r.stdout != "all 2 datasets fresh\n" {
			t.Errorf("status --max-age 1000d: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
		}
		r = e.runWith(nil, "status", "--max-age", "26h", "--json")
		var st backup.Status
		if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || r.code != 1 {
			t.Fatalf("status --max-age --json: exit %d: %v\n%s", r.code, err, r.stdout)
		}
		fresh := map[string]bool{}
		for _, d := range st.Datasets {
			if d.Freshness == nil {
				t.Fatalf("no freshness for %s", d.Dataset)
			}
			fresh[d.Dataset] = d.Freshness.Fresh
		}
		if d := cmp.Diff(map[string]bool{e.a: false, e.b: true}, fresh); d != "" {
			t.Errorf("fresh (-want +got):\n%s", d)
		}

		// A configured dataset with nothing stored is named.
		c := e.ds + "/c"
		e.zfs("create", c)
		good, _ := os.ReadFile(e.config)
		defer e.writeConfig(string(good))
		e.writeConfig(string(good) + fmt.Sprintf("  %q: {}\n", c))
		r = e.runWith(nil, "status", "--max-age", "1000d")
		if r.code != 1 || r.stdout != c+": nothing restorable is stored\n" {
			t.Errorf("with %s: exit %d, stdout %q, stderr %q", c, r.code, r.stdout, r.stderr)
		}
		e.fails(2, "--max-age: bad duration \"soon\"", "status", "--max-age", "soon")
		r = e.runWith([]string{"ZFS2S3_CONFIG=/dev/null"}, "status", "--max-age", "26h")
		if r.code != 2 || !strings.Contains(r.stderr, "none is configured") {
			t.Errorf("no configured datasets: exit %d, stderr %q", r.code, r.stderr)
		}
	})

	t.Run("restore DATASET restores the newest", func(t *testing.T) {
		e.t = t
		into := e.ds + "-newest"
		r := e.runWith(nil, "restore", e.a, "--into", into, "--dry-run")
		want := "newest restorable stored snapshot of " + e.a + ": " + e.a + "@daily-2026-01-04 (snapshot time 2026-01-04 00:00:00)\n"
		if r.code != 0 || !strings.HasPrefix(r.stdout, want) || strings.Count(r.stdout, "| zfs receive") != 4 {
			t.Fatalf("restore --dry-run: exit %d, stdout %q, want it to start %q and list a chain of 4\nstderr: %s", r.code, r.stdout, want, r.stderr)
		}
		if ok, _ := testbedExists(into); ok {
			t.Fatalf("a dry run created %s", into)
		}
		r = e.runWith(nil, "restore", e.a, "--into", into)
		if r.code != 0 || !strings.Contains(r.stdout, "restored "+e.a+"@daily-2026-01-04 as "+into+"@daily-2026-01-04") {
			t.Fatalf("restore: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
		}
		src, _ := testbed.Mountpoint(e.a)
		dst, _ := testbed.Mountpoint(into)
		for day := 1; day <= 4; day++ { // a's own files; b and c are child datasets
			name := fmt.Sprintf("daily-2026-01-%02d.bin", day)
			sameFile(t, filepath.Join(src, name), filepath.Join(dst, name))
		}
		r = e.runWith(nil, "restore", e.ds+"/nothing")
		if r.code != 2 || !strings.Contains(r.stderr, "nothing of "+e.ds+"/nothing is stored") {
			t.Errorf("restore of a dataset with nothing stored: exit %d, stderr %q", r.code, r.stderr)
		}
	})

	t.Run("an unrestorable stored snapshot fails the check", func(t *testing.T) {
		e.t = t
		var key string
		for _, ed := range e.ledger().Edges {
			if ed.Target.Name == e.b+"@daily-2026-01-03" {
				key = ed.Key
			}
		}
		e.del(key) // b@3 and b@4 lose their chain
		r := e.runWith(nil, "status", "--max-age", "1000d", e.b)
		want := e.b + ": 2 stored snapshot(s) cannot be restored (see zfs2s3 status " + e.b + ")\n"
		if r.code != 1 || r.stdout != want {
			t.Errorf("exit %d, stdout %q, want %q\nstderr: %s", r.code, r.stdout, want, r.stderr)
		}
	})
}

func TestPruneMetrics(t *testing.T) {
	e := pruneEnv(t, "prune metrics", "{last: 2}")
	first := time.Date(2026, 1, 1, 0, 0, 0, 0, time.Local)
	days := e.dailies(first, first.AddDate(0, 0, 4))
	if r := e.runWith(nil, "backup"); r.code != 0 {
		t.Fatalf("backup: exit %d: %s", r.code, r.stderr)
	}
	before := e.storedBytes(e.a)
	prom := filepath.Join(t.TempDir(), "zfs2s3.prom")
	r := e.runWith(nil, "prune", "--json", "--metrics-file", prom)
	if r.code != 0 {
		t.Fatalf("prune: exit %d: %s", r.code, r.stderr)
	}
	var rep backup.PruneReport
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil || len(rep.Datasets) != 1 {
		t.Fatalf("prune --json: %v\n%s", err, r.stdout)
	}
	// last 2 keeps the 4th and 5th: the 4th gets a full bypass, the full
	// of the 1st and the edges to the 4th go.
	var bypassBytes float64
	for _, ed := range e.ledger().Edges {
		if ed.Target.Name == dayName(e.a, days[3]) && ed.Base == nil {
			bypassBytes = float64(ed.StoredBytes)
		}
	}
	after := e.storedBytes(e.a)
	m := readMetrics(t, prom)
	for name, want := range map[string]float64{
		"zfs2s3_prune_last_run_success":                   1,
		"zfs2s3_prune_last_run_removed_edges":             4,
		"zfs2s3_prune_last_run_bypass_edges":              1,
		"zfs2s3_prune_last_run_freed_bytes":               before + bypassBytes - after,
		"zfs2s3_stored_snapshots":                         2,
		"zfs2s3_stored_bytes":                             after,
		"zfs2s3_stored_unrestorable_snapshots":            0,
		"zfs2s3_stored_newest_snapshot_timestamp_seconds": float64(days[4].Unix()),
	} {
		if got, ok := m[name][e.a]; !ok || got != want {
			t.Errorf("%s = %v (present %v), want %v", name, got, ok, want)
		}
	}
	if len(rep.Datasets[0].Removed) != 4 || bypassBytes == 0 {
		t.Errorf("report: %+v; bypass of %v bytes", rep.Datasets[0], bypassBytes)
	}
	for name := range m {
		if strings.HasPrefix(name, "zfs2s3_backup_") {
			t.Errorf("prune wrote backup's family %s", name)
		}
	}
}
