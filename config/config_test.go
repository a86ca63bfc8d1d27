package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/zfs2s3/zfs2s3/retention"
)

// example is issue 9's config, which must work as written.
const example = `bucket: backups
prefix: host1
defaults:
  snapshots: "daily-*"           # which snapshots are backed up: glob on the name after @
  time_format: "daily-%Y-%m-%d"  # optional: snapshot time read from its name (strftime);
                                 # otherwise the creation property
  chain: previous                # previous: each incremental from the one before;
                                 # full: each incremental from the newest stored full
  full_every: 30d                # a new full once this much snapshot time has passed
  keep: {last: 3, hourly: 0, daily: 7, weekly: 4, monthly: 12, yearly: 3}
datasets:
  tank/data: {}
  tank/db:
    recursive: true              # each child dataset is backed up on its own
    create: "zfs2s3-%Y%m%d-%H%M%S"   # take a snapshot with this name before uploading
    snapshots: "zfs2s3-*"
    pre: "systemctl stop postgresql" # run before the snapshot (sh -c)
    post: "systemctl start postgresql" # run right after it, whenever pre ran
    keep_local: {last: 10}       # destroy older snapshots that zfs2s3 itself created
`

func TestParseExample(t *testing.T) {
	c, err := Parse([]byte(example), "config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	keep := &retention.Policy{Last: 3, Daily: 7, Weekly: 4, Monthly: 12, Yearly: 3}
	want := &Config{File: "config.yaml", Global: Global{Bucket: "backups", Prefix: "host1"}, Datasets: []Dataset{
		{Name: "tank/data", Line: 12, Snapshots: "daily-*", TimeFormat: "daily-%Y-%m-%d", Chain: "previous", FullEvery: 30 * 24 * time.Hour, Keep: keep},
		{Name: "tank/db", Line: 13, Snapshots: "zfs2s3-*", TimeFormat: "daily-%Y-%m-%d", Chain: "previous", FullEvery: 30 * 24 * time.Hour, Keep: keep,
			Recursive: true, Create: "zfs2s3-%Y%m%d-%H%M%S", Pre: "systemctl stop postgresql", Post: "systemctl start postgresql",
			KeepLocal: &retention.Policy{Last: 10}},
	}}
	if d := cmp.Diff(want, c); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
	data := c.Datasets[0]
	if got, ok := data.SnapshotTime("daily-2026-11-22", time.Time{}); !ok || got.Format("2006-01-02") != "2026-11-22" {
		t.Errorf("SnapshotTime = %v, %v", got, ok)
	}
	if _, ok := data.SnapshotTime("weekly-x", time.Time{}); ok {
		t.Error("a name that does not fit the format has a time")
	}
	if !data.Selects("daily-2026-11-22") || data.Selects("hourly-1") {
		t.Error("Selects does not follow the glob")
	}
	if got := c.Datasets[1].CreateName(time.Date(2026, 11, 22, 6, 54, 31, 0, time.UTC)); got != "zfs2s3-20261122-065431" {
		t.Errorf("CreateName = %q", got)
	}
}

// TestParseRefusesBadConfigs: each mistake is one line naming the file,
// the line and the key.
func TestParseRefusesBadConfigs(t *testing.T) {
	for _, tt := range []struct {
		name, config, want string
	}{
		{"unknown top key", "bucket: b\nbukcet: c\n", "c.yaml:2: bukcet: unknown key"},
		{"unknown dataset key", "datasets:\n  tank/a:\n    snapshot: x\n", "c.yaml:3: datasets.tank/a.snapshot: unknown key"},
		{"unknown defaults key", "defaults:\n  keep_last: 3\n", "c.yaml:2: defaults.keep_last: unknown key"},
		{"bad duration", "defaults:\n  full_every: 30 days\n", "c.yaml:2: defaults.full_every: bad duration"},
		{"zero duration", "defaults:\n  full_every: 0d\n", "bad duration"},
		{"bad glob", "defaults:\n  snapshots: \"daily-[\"\n", "c.yaml:2: defaults.snapshots: bad glob"},
		{"time format without directive", "defaults:\n  time_format: daily\n", "c.yaml:2: defaults.time_format: \"daily\" has no strftime directive"},
		{"bad chain", "defaults:\n  chain: last\n", "c.yaml:2: defaults.chain: \"last\": want previous"},
		{"keep keeps nothing", "defaults:\n  keep: {daily: 0}\n", "c.yaml:2: defaults.keep: keeps nothing"},
		{"keep unknown rule", "defaults:\n  keep: {dayly: 3}\n", "c.yaml:2: defaults.keep: field dayly not found"},
		{"keep negative", "defaults:\n  keep: {daily: -1}\n", "counts cannot be negative"},
		{"concurrency not a number", "concurrency: many\n", "c.yaml:1: concurrency: cannot unmarshal"},
		{"bad dataset name", "datasets:\n  tank/a@b: {}\n", "c.yaml:2: datasets:"},
		{"hooks without create", "datasets:\n  tank/a:\n    pre: echo\n", "c.yaml:2: datasets.tank/a: pre and post run around the snapshot zfs2s3 takes"},
		{"keep_local without create", "datasets:\n  tank/a:\n    keep_local: {last: 3}\n", "keep_local destroys only snapshots zfs2s3 created"},
		{"create outside the glob", "datasets:\n  tank/a:\n    snapshots: \"daily-*\"\n    create: \"zfs2s3-%Y\"\n", "do not match its snapshots glob"},
		{"not yaml", "bucket: [\n", "c.yaml:"},
		{"duplicate key", "bucket: a\nbucket: b\n", "already defined"},
		{"datasets not a map", "datasets: [tank/a]\n", "c.yaml:1: datasets: want a map"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.config), "c.yaml")
			var ce *Error
			if !errors.As(err, &ce) || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") {
				t.Errorf("Parse = %v, want one line containing %q", err, tt.want)
			}
		})
	}
}

func TestLoadRefusesHooksOthersCanChange(t *testing.T) {
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	file := filepath.Join(dir, "config.yaml")
	hooks := "datasets:\n  tank/a:\n    create: \"z-%Y%m%d\"\n    pre: \"echo hi\"\n"
	os.WriteFile(file, []byte(hooks), 0o600)
	if _, err := Load(file); err != nil {
		t.Fatalf("private config refused: %v", err)
	}
	os.Chmod(file, 0o664)
	if _, err := Load(file); err == nil || !strings.Contains(err.Error(), "chmod go-w "+file) {
		t.Errorf("group-writable config with hooks: %v", err)
	}
	os.WriteFile(file, []byte("bucket: b\n"), 0o666)
	os.Chmod(file, 0o666)
	if _, err := Load(file); err != nil {
		t.Errorf("a world-writable config without hooks is only a risk to its settings: %v", err)
	}
}
