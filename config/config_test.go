package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

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
		{Name: "tank/data", Line: 12, Snapshots: "daily-*", TimeFormat: "daily-%Y-%m-%d", Chain: "previous", FullEvery: 30 * 24 * time.Hour, Keep: keep, HookTimeout: 10 * time.Minute},
		{Name: "tank/db", Line: 13, Snapshots: "zfs2s3-*", TimeFormat: "daily-%Y-%m-%d", Chain: "previous", FullEvery: 30 * 24 * time.Hour, Keep: keep, HookTimeout: 10 * time.Minute,
			Recursive: true, Create: "zfs2s3-%Y%m%d-%H%M%S", Pre: "systemctl stop postgresql", Post: "systemctl start postgresql",
			KeepLocal: &retention.Policy{Last: 10}},
	}}
	if d := cmp.Diff(want, c, cmpopts.IgnoreFields(Config{}, "Defaults")); d != "" { // TestParseKeepsDefaults
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
	db := c.Datasets[1]
	// Names are written in UTC whatever the zone of the time given.
	if got := db.CreateName(time.Date(2026, 11, 22, 7, 54, 31, 0, time.FixedZone("CET", 3600))); got != "zfs2s3-20261122-065431" {
		t.Errorf("CreateName = %q", got)
	}
	// The snapshots zfs2s3 created have their time in their name, in UTC,
	// even where time_format (inherited here) reads other names.
	if got, ok := db.SnapshotTime("zfs2s3-20261122-065431", time.Time{}); !ok || !got.Equal(time.Date(2026, 11, 22, 6, 54, 31, 0, time.UTC)) {
		t.Errorf("SnapshotTime of a created snapshot = %v, %v", got, ok)
	}
	if got, ok := db.NameTime("zfs2s3-20261122-065431"); !ok || !got.Equal(time.Date(2026, 11, 22, 6, 54, 31, 0, time.UTC)) {
		t.Errorf("NameTime of a created snapshot = %v, %v", got, ok)
	}
	for short, want := range map[string]bool{
		"zfs2s3-20261122-065431":  true,
		"zfs2s3-2026112-065431":   false, // parses, but zfs2s3 never writes it
		"zfs2s3-20261122-065431x": false,
		"zfs2s3-20261322-065431":  false,
		"zfs2s3-manual":           false,
		"daily-2026-11-22":        false,
	} {
		if got := db.Created(short); got != want {
			t.Errorf("Created(%q) = %v, want %v", short, got, want)
		}
	}
	if data.Created("zfs2s3-20261122-065431") {
		t.Error("a dataset without create claims a snapshot as created")
	}
	// Without time_format, a snapshot's creation counts, but for created ones.
	plain := Dataset{Create: "z-%Y%m%d%H%M%S"}
	creation := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if got, ok := plain.SnapshotTime("hand-made", creation); !ok || !got.Equal(creation) {
		t.Errorf("SnapshotTime of a hand-made snapshot = %v, %v", got, ok)
	}
	if _, ok := plain.NameTime("hand-made"); ok {
		t.Error("NameTime read a time from a name that has none")
	}
}

func TestParseHookTimeout(t *testing.T) {
	c, err := Parse([]byte("defaults:\n  hook_timeout: 90s\ndatasets:\n  tank/a:\n    create: \"z-%Y%m%d%H%M%S\"\n  tank/b:\n    hook_timeout: 2h\n"), "c.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if got := []time.Duration{c.Datasets[0].HookTimeout, c.Datasets[1].HookTimeout}; got[0] != 90*time.Second || got[1] != 2*time.Hour {
		t.Errorf("hook_timeout = %v, want [1m30s 2h0m0s]", got)
	}
}

// TestParseTransforms: compress and recipients set per dataset override
// the defaults; unset, the global flags apply (nil).
func TestParseTransforms(t *testing.T) {
	const key = "age1mcs7g47lc9lq9chqu4lnv5vs7hdtcjxfyk3hgz7hrpkcuv2kyg2s42t2l2"
	c, err := Parse([]byte("compress: zstd\nrecipients: ["+key+"]\ndefaults:\n  compress: zstd:9\ndatasets:\n  tank/a: {}\n  tank/b:\n    compress: none\n    recipients: []\n"), "c.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Global.Compress != "zstd" || len(c.Global.Recipients) != 1 {
		t.Errorf("global compress %q, recipients %v", c.Global.Compress, c.Global.Recipients)
	}
	a, b := c.Datasets[0], c.Datasets[1]
	if a.Compress == nil || *a.Compress != "zstd:9" || a.Recipients != nil {
		t.Errorf("tank/a: compress %v, recipients %v; want the default zstd:9 and the global recipients", a.Compress, a.Recipients)
	}
	if b.Compress == nil || *b.Compress != "none" || b.Recipients == nil || len(*b.Recipients) != 0 {
		t.Errorf("tank/b: compress %v, recipients %v; want none and no recipients", b.Compress, b.Recipients)
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
		{"create outside the glob", "datasets:\n  tank/a:\n    snapshots: \"daily-*\"\n    create: \"zfs2s3-%Y\"\n", "c.yaml:2: datasets.tank/a: the snapshots it creates (zfs2s3-%Y) do not match its snapshots glob \"daily-*\""},
		{"create makes names zfs refuses", "datasets:\n  tank/a:\n    create: \"z-%Y%m%d%z\"\n", "c.yaml:3: datasets.tank/a.create: \"z-%Y%m%d%z\" makes names ZFS refuses"},
		{"bad hook timeout", "defaults:\n  hook_timeout: soon\n", "c.yaml:2: defaults.hook_timeout: bad duration"},
		{"not yaml", "bucket: [\n", "c.yaml:"},
		{"duplicate key", "bucket: a\nbucket: b\n", "already defined"},
		{"datasets not a map", "datasets: [tank/a]\n", "c.yaml:1: datasets: want a map"},
		{"bad compress", "defaults:\n  compress: lz4\n", "c.yaml:2: defaults.compress: compress \"lz4\": unknown compression"},
		{"bad zstd level", "datasets:\n  tank/a:\n    compress: zstd:30\n", "c.yaml:3: datasets.tank/a.compress:"},
		{"bad recipient", "datasets:\n  tank/a:\n    recipients: [age1nope]\n", "c.yaml:3: datasets.tank/a.recipients:"},
		{"recipients not a list", "defaults:\n  recipients: {a: b}\n", "want a list of age public keys"},
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
	refused := func(what, want string) {
		t.Helper()
		_, err := Load(file)
		var ce *Error
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), want) || !strings.HasPrefix(err.Error(), file+": ") || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: Load = %v; want one line naming %s and containing %q", what, err, file, want)
		}
	}

	os.Chmod(file, 0o664)
	refused("group-writable config", "chmod go-w "+file)
	os.Chmod(file, 0o602)
	refused("world-writable config", "chmod go-w "+file)
	os.Chmod(file, 0o600)

	// Whoever can write the directory can replace the file.
	os.Chmod(dir, 0o775)
	refused("group-writable directory", "its directory "+dir+" is writable by group or others (mode 0775); run: chmod go-w "+dir)
	os.Chmod(dir, 0o755)
	// and so the directory above it.
	sub := filepath.Join(dir, "etc", "zfs2s3")
	os.MkdirAll(sub, 0o755)
	os.Chmod(filepath.Join(dir, "etc"), 0o777)
	deep := filepath.Join(sub, "config.yaml")
	os.WriteFile(deep, []byte(hooks), 0o600)
	if _, err := Load(deep); err == nil || !strings.Contains(err.Error(), "chmod go-w "+filepath.Join(dir, "etc")) {
		t.Errorf("world-writable grandparent directory: Load = %v", err)
	}
	// A sticky directory (like /tmp) lets nobody replace another's file.
	os.Chmod(filepath.Join(dir, "etc"), 0o777|os.ModeSticky)
	if _, err := Load(deep); err != nil {
		t.Errorf("config below a sticky directory refused: %v", err)
	}
	// A symbolic link is checked at both ends.
	open := t.TempDir()
	os.Chmod(open, 0o777)
	target := filepath.Join(open, "real.yaml")
	os.WriteFile(target, []byte(hooks), 0o600)
	os.Remove(file)
	if err := os.Symlink(target, file); err != nil {
		t.Fatal(err)
	}
	refused("link to a file in a world-writable directory", "chmod go-w "+open)
	os.Chmod(open, 0o755)
	if _, err := Load(file); err != nil {
		t.Errorf("link to a private config refused: %v", err)
	}
	os.Chmod(target, 0o666)
	refused("link to a world-writable file", "its target "+target+" is writable by group or others")
	os.Chmod(target, 0o600)
	// A link to a link: the middle one's directory is checked too, since
	// whoever can write it can point the chain elsewhere.
	middleDir := t.TempDir()
	os.Chmod(middleDir, 0o777)
	middle := filepath.Join(middleDir, "hop.yaml")
	if err := os.Symlink(target, middle); err != nil {
		t.Fatal(err)
	}
	os.Remove(file)
	if err := os.Symlink(middle, file); err != nil {
		t.Fatal(err)
	}
	refused("link through a world-writable directory", "chmod go-w "+middleDir)
	os.Chmod(middleDir, 0o755)
	if _, err := Load(file); err != nil {
		t.Errorf("a chain of links through private directories refused: %v", err)
	}
	os.Remove(file)
	os.WriteFile(file, []byte(hooks), 0o600)

	if os.Geteuid() == 0 { // only root can give a file away
		os.Chown(file, 4242, 4242)
		refused("config of another user", "is owned by user 4242, not by root or you")
		os.Chown(file, 0, 0)
		os.Chown(dir, 4242, 4242)
		refused("directory of another user", "its directory "+dir+" is owned by user 4242")
		os.Chown(dir, 0, 0)
	}

	os.WriteFile(file, []byte("bucket: b\n"), 0o666)
	os.Chmod(file, 0o666)
	if _, err := Load(file); err != nil {
		t.Errorf("a world-writable config without hooks is only a risk to its settings: %v", err)
	}
}

// TestCovers: a recursive dataset covers the datasets below it but those
// with their own entry (and, when that entry is recursive, theirs).
func TestCovers(t *testing.T) {
	c, err := Parse([]byte(`datasets:
  tank/db: {recursive: true}
  tank/db/scratch: {snapshots: "never-*"}
  tank/db/logs: {recursive: true}
  tank/data: {}
`), "c.yaml")
	if err != nil {
		t.Fatal(err)
	}
	db := c.Datasets[0]
	for name, want := range map[string]bool{
		"tank/db/a":           true,
		"tank/db/a/b":         true,
		"tank/db/scratch":     false, // its own entry
		"tank/db/scratch/sub": true,  // that entry is not recursive
		"tank/db/logs":        false,
		"tank/db/logs/old":    false, // below a recursive entry of its own
		"tank/db":             false, // not below itself
		"tank/dbx":            false,
		"tank/data":           false,
	} {
		if got := db.Covers(name); got != want {
			t.Errorf("Covers(%q) = %v, want %v", name, got, want)
		}
	}
	if c.Datasets[3].Covers("tank/data/x") {
		t.Error("a dataset that is not recursive covers a child")
	}
}

// TestTopLevelValuesNamedByLine: values that stand in for flags are checked
// as the config is read, and named by file, line and key like any other
// config error, not as the flag.
func TestTopLevelValuesNamedByLine(t *testing.T) {
	for _, tt := range []struct{ text, want string }{
		{"bucket: b\ncompress: brotli\n", "c.yaml:2: compress: "},
		{"bucket: b\nrecipients: [age1notakey]\n", "c.yaml:2: recipients: "},
		{"bucket: b\nsend_flags: turbo\n", "c.yaml:2: send_flags: "},
		{"bucket: b\nhost: \"a b/c\"\n", "c.yaml:2: host: "},
	} {
		_, err := Parse([]byte(tt.text), "c.yaml")
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Parse(%q) = %v, want an error starting %q", tt.text, err, tt.want)
		}
	}
	if _, err := Parse([]byte("bucket: b\ncompress: zstd:5\nsend_flags: large-blocks\nhost: web1\n"), "c.yaml"); err != nil {
		t.Errorf("good values: %v", err)
	}
}

// TestParseKeepsDefaults: the defaults are kept for datasets the file
// does not name (fleet prune applies them to every host's datasets).
func TestParseKeepsDefaults(t *testing.T) {
	c, err := Parse([]byte(`
defaults:
  time_format: "daily-%Y-%m-%d"
  keep: {last: 2}
datasets:
  tank/db: {keep: {last: 3}}
`), "admin.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Defaults.Keep == nil || c.Defaults.Keep.Last != 2 || c.Defaults.TimeFormat != "daily-%Y-%m-%d" || c.Defaults.Snapshots != "*" {
		t.Errorf("defaults = %+v, want keep last 2, the time format and snapshots *", c.Defaults)
	}
	if len(c.Datasets) != 1 || c.Datasets[0].Keep.Last != 3 {
		t.Errorf("datasets = %+v", c.Datasets)
	}
	empty, err := Parse([]byte("bucket: b\n"), "x.yaml")
	if err != nil || empty.Defaults.Keep != nil || empty.Defaults.Snapshots != "*" {
		t.Errorf("defaults of a file without any = %+v, %v", empty.Defaults, err)
	}
}
