package metrics

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	dto "github.com/prometheus/client_model/go"

	"github.com/zfs2s3/zfs2s3/health"
)

var (
	night1 = time.Date(2026, 3, 10, 2, 0, 0, 0, time.UTC)
	night2 = night1.AddDate(0, 0, 1)
)

// read parses the file as node_exporter does and returns each family's
// values by dataset label ("" for none).
func read(t *testing.T, path string) map[string]map[string]float64 {
	t.Helper()
	mfs, err := Read(path)
	if err != nil {
		t.Fatalf("the written file does not parse: %v", err)
	}
	for name, mf := range mfs {
		if mf.GetType() != dto.MetricType_GAUGE {
			t.Errorf("%s is a %s, want a gauge", name, mf.GetType())
		}
		if mf.GetHelp() == "" {
			t.Errorf("%s has no help text", name)
		}
	}
	return ByDataset(mfs)
}

func names(m map[string]map[string]float64) []string {
	var s []string
	for n := range m {
		s = append(s, n)
	}
	sort.Strings(s)
	return s
}

func write(t *testing.T, path string, u Update) map[string]map[string]float64 {
	t.Helper()
	if err := Write(path, u); err != nil {
		t.Fatal(err)
	}
	return read(t, path)
}

func TestBackupThenPruneShareTheFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "zfs2s3.prom")
	stored := []health.Stored{
		{Dataset: "tank/a", Snapshots: 10, Bytes: 5 << 20, Newest: "tank/a@daily-2026-03-10", NewestTime: time.Date(2026, 3, 10, 0, 0, 0, 0, time.UTC)},
		{Dataset: "tank/my data", Unrestorable: 1},
	}
	got := write(t, path, Update{Command: Backup, Finished: night1, Stored: stored, Runs: []DatasetRun{
		{Dataset: "tank/a", Success: true, Seconds: 12.5, UploadedBytes: 4096, UploadedEdges: 2},
		{Dataset: "tank/my data", Success: false, Seconds: 0.25},
	}})
	want := map[string]map[string]float64{
		"zfs2s3_backup_last_run_timestamp_seconds":        {"": float64(night1.Unix())},
		"zfs2s3_backup_last_run_success":                  {"tank/a": 1, "tank/my data": 0},
		"zfs2s3_backup_last_success_timestamp_seconds":    {"tank/a": float64(night1.Unix()), "tank/my data": 0},
		"zfs2s3_backup_last_run_duration_seconds":         {"tank/a": 12.5, "tank/my data": 0.25},
		"zfs2s3_backup_last_run_uploaded_bytes":           {"tank/a": 4096, "tank/my data": 0},
		"zfs2s3_backup_last_run_uploaded_edges":           {"tank/a": 2, "tank/my data": 0},
		"zfs2s3_stored_newest_snapshot_timestamp_seconds": {"tank/a": float64(time.Date(2026, 3, 10, 0, 0, 0, 0, time.UTC).Unix()), "tank/my data": 0},
		"zfs2s3_stored_bytes":                             {"tank/a": 5 << 20, "tank/my data": 0},
		"zfs2s3_stored_snapshots":                         {"tank/a": 10, "tank/my data": 0},
		"zfs2s3_stored_unrestorable_snapshots":            {"tank/a": 0, "tank/my data": 1},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Fatalf("after backup (-want +got):\n%s", d)
	}

	// prune right after: its families join backup's, stored_* is replaced.
	stored[0].Bytes, stored[0].Snapshots = 3<<20, 7
	got = write(t, path, Update{Command: Prune, Finished: night1.Add(time.Minute), Stored: stored, Runs: []DatasetRun{
		{Dataset: "tank/a", Success: true, Seconds: 3, RemovedEdges: 3, FreedBytes: 2 << 20, BypassEdges: 1},
		{Dataset: "tank/my data", Success: true, Seconds: 0.5},
	}})
	for name, v := range want {
		if name == "zfs2s3_stored_bytes" || name == "zfs2s3_stored_snapshots" {
			continue
		}
		if d := cmp.Diff(v, got[name]); d != "" {
			t.Errorf("prune changed %s (-before +after):\n%s", name, d)
		}
	}
	if got["zfs2s3_stored_bytes"]["tank/a"] != 3<<20 || got["zfs2s3_stored_snapshots"]["tank/a"] != 7 {
		t.Errorf("stored after prune: %v %v", got["zfs2s3_stored_bytes"], got["zfs2s3_stored_snapshots"])
	}
	for name, v := range map[string]map[string]float64{
		"zfs2s3_prune_last_run_removed_edges":     {"tank/a": 3, "tank/my data": 0},
		"zfs2s3_prune_last_run_freed_bytes":       {"tank/a": 2 << 20, "tank/my data": 0},
		"zfs2s3_prune_last_run_bypass_edges":      {"tank/a": 1, "tank/my data": 0},
		"zfs2s3_prune_last_run_success":           {"tank/a": 1, "tank/my data": 1},
		"zfs2s3_prune_last_run_timestamp_seconds": {"": float64(night1.Add(time.Minute).Unix())},
	} {
		if d := cmp.Diff(v, got[name]); d != "" {
			t.Errorf("%s (-want +got):\n%s", name, d)
		}
	}

	// The next night's backup keeps prune's families and, for the
	// dataset that fails again, last night's... which was never: 0.
	// tank/a fails tonight: it keeps last night's success time.
	got = write(t, path, Update{Command: Backup, Finished: night2, Stored: stored, Runs: []DatasetRun{
		{Dataset: "tank/a", Success: false, Seconds: 1},
		{Dataset: "tank/my data", Success: true, Seconds: 2, UploadedBytes: 100, UploadedEdges: 1},
	}})
	if d := cmp.Diff(map[string]float64{"tank/a": float64(night1.Unix()), "tank/my data": float64(night2.Unix())}, got["zfs2s3_backup_last_success_timestamp_seconds"]); d != "" {
		t.Errorf("last success after the second night (-want +got):\n%s", d)
	}
	if got["zfs2s3_backup_last_run_success"]["tank/a"] != 0 || got["zfs2s3_prune_last_run_removed_edges"]["tank/a"] != 3 {
		t.Errorf("second night: success %v, prune's removed edges %v", got["zfs2s3_backup_last_run_success"], got["zfs2s3_prune_last_run_removed_edges"])
	}
}

func TestDatasetsNotInTheRun(t *testing.T) {
	path := filepath.Join(t.TempDir(), "zfs2s3.prom")
	write(t, path, Update{Command: Backup, Finished: night1, Stored: []health.Stored{{Dataset: "a"}, {Dataset: "b"}, {Dataset: "gone"}}, Runs: []DatasetRun{
		{Dataset: "a", Success: true, UploadedBytes: 1}, {Dataset: "b", Success: true, UploadedBytes: 2}, {Dataset: "gone", Success: true, UploadedBytes: 3},
	}})
	// backup a: b is configured and keeps its series; "gone" left the
	// config and its series go.
	got := write(t, path, Update{Command: Backup, Finished: night2, Stored: []health.Stored{{Dataset: "a"}, {Dataset: "b"}}, Keep: []string{"b"}, Runs: []DatasetRun{
		{Dataset: "a", Success: true, UploadedBytes: 10},
	}})
	if d := cmp.Diff(map[string]float64{"a": 10, "b": 2}, got["zfs2s3_backup_last_run_uploaded_bytes"]); d != "" {
		t.Errorf("uploaded bytes (-want +got):\n%s", d)
	}
	if d := cmp.Diff(map[string]float64{"a": float64(night2.Unix()), "b": float64(night1.Unix())}, got["zfs2s3_backup_last_success_timestamp_seconds"]); d != "" {
		t.Errorf("last success (-want +got):\n%s", d)
	}
	if _, ok := got["zfs2s3_stored_bytes"]["gone"]; ok {
		t.Errorf("a dataset no longer configured keeps its stored series: %v", got["zfs2s3_stored_bytes"])
	}
}

func TestStoredUnknownKeepsTheFilesStoredFamilies(t *testing.T) {
	path := filepath.Join(t.TempDir(), "zfs2s3.prom")
	write(t, path, Update{Command: Backup, Finished: night1, Stored: []health.Stored{{Dataset: "a", Snapshots: 4, Bytes: 99}}, Runs: []DatasetRun{{Dataset: "a", Success: true}}})
	got := write(t, path, Update{Command: Prune, Finished: night2, Runs: []DatasetRun{{Dataset: "a", Success: false}}})
	if got["zfs2s3_stored_snapshots"]["a"] != 4 || got["zfs2s3_stored_bytes"]["a"] != 99 {
		t.Errorf("stored families not kept: %v", got)
	}
}

func TestAnUnreadableFileIsReplaced(t *testing.T) {
	path := filepath.Join(t.TempDir(), "zfs2s3.prom")
	if err := os.WriteFile(path, []byte("this is { not prometheus\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	got := write(t, path, Update{Command: Backup, Finished: night1, Runs: []DatasetRun{{Dataset: "a", Success: true}}})
	want := []string{"zfs2s3_backup_last_run_duration_seconds", "zfs2s3_backup_last_run_success", "zfs2s3_backup_last_run_timestamp_seconds",
		"zfs2s3_backup_last_run_uploaded_bytes", "zfs2s3_backup_last_run_uploaded_edges", "zfs2s3_backup_last_success_timestamp_seconds"}
	if d := cmp.Diff(want, names(got)); d != "" {
		t.Errorf("families (-want +got):\n%s", d)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("metrics file mode %v (%v), want 0644 for node_exporter", fi.Mode(), err)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("temporary files left beside the metrics file: %v", entries)
	}
}

func TestAMissingDirectoryIsAnError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "no such dir", "zfs2s3.prom")
	err := Write(path, Update{Command: Backup, Finished: night1, Runs: []DatasetRun{{Dataset: "a", Success: true}}})
	if err == nil {
		t.Fatal("writing into a missing directory succeeded")
	}
	if want := "cannot write the metrics file " + path; !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not name the file", err)
	}
}
