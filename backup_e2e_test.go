package main

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/zfs2s3/zfs2s3/backup"
	"github.com/zfs2s3/zfs2s3/internal/testbed"
)

// backupEnv is an env with a config file and two configured datasets.
type backupEnv struct {
	*env
	a, b   string // the datasets
	config string // the config file
}

func newBackupEnv(t *testing.T) *backupEnv {
	e := &backupEnv{env: newEnv(t, "bk a")}
	e.a = e.ds
	e.b = e.ds + "/b"
	e.zfs("create", e.b)
	e.config = filepath.Join(t.TempDir(), "config.yaml")
	// a: a new full every 4 days of snapshot time (from the names); b:
	// times from the creation property, all within a day, so one full
	// then incrementals.
	e.writeDailyConfig(fmt.Sprintf(`
  %q:
    full_every: 4d
  %q: {time_format: "", full_every: 1d}
`, e.a, e.b))
	return e
}

// writeDailyConfig writes a config whose defaults select daily snapshots
// named by date, with the given datasets section.
func (e *backupEnv) writeDailyConfig(datasets string) {
	e.t.Helper()
	e.writeConfig(`
defaults:
  snapshots: "daily-*"
  time_format: "daily-%Y-%m-%d"
datasets:` + datasets)
}

func (e *backupEnv) writeConfig(text string) {
	e.t.Helper()
	if err := os.WriteFile(e.config, []byte(text), 0o600); err != nil {
		e.t.Fatal(err)
	}
}

// daily writes a little data into ds and takes ds@daily-2026-01-DD.
func (e *backupEnv) daily(ds string, day int) string {
	e.t.Helper()
	return e.snapNamed(ds, fmt.Sprintf("daily-2026-01-%02d", day))
}

func (e *backupEnv) snapNamed(ds, name string) string {
	e.t.Helper()
	mnt, err := testbed.Mountpoint(ds)
	if err != nil {
		e.t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(mnt, name+".bin"))
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := io.CopyN(f, rand.Reader, 64<<10); err != nil {
		e.t.Fatal(err)
	}
	f.Close()
	e.zfs("snapshot", ds+"@"+name)
	return ds + "@" + name
}

// runWith runs zfs2s3 with the config and extra environment.
func (e *backupEnv) runWith(env []string, args ...string) result {
	e.t.Helper()
	c := e.cmd(args...)
	c.Env = append(c.Env, "ZFS2S3_CONFIG="+e.config)
	c.Env = append(c.Env, env...)
	return e.runCmd(c)
}

// report runs backup --json and returns its report by dataset.
func (e *backupEnv) report(wantCode int, env []string, args ...string) map[string]backup.DatasetReport {
	e.t.Helper()
	r := e.runWith(env, append([]string{"backup", "--json"}, args...)...)
	if r.code != wantCode {
		e.t.Fatalf("backup --json %v: exit %d, want %d\nstderr: %s", args, r.code, wantCode, r.stderr)
	}
	var rep backup.RunReport
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		e.t.Fatalf("backup --json: %v\n%s", err, r.stdout)
	}
	out := map[string]backup.DatasetReport{}
	for _, d := range rep.Datasets {
		out[d.Dataset] = d
	}
	return out
}

func uploadedEdges(d backup.DatasetReport) []string {
	s := []string{}
	for _, u := range d.Uploaded {
		s = append(s, u.Edge)
	}
	return s
}

// chainOf lists the expected edges: full on the days in fulls, else an
// incremental from the day before.
func chainOf(ds string, days []int, fulls ...int) []string {
	var s []string
	for i, d := range days {
		to := fmt.Sprintf("%s@daily-2026-01-%02d", ds, d)
		if i == 0 || slices.Contains(fulls, d) {
			s = append(s, to+" (full)")
			continue
		}
		s = append(s, fmt.Sprintf("%s@daily-2026-01-%02d -> %s", ds, days[i-1], to))
	}
	return s
}

func days(from, to int) []int {
	var d []int
	for i := from; i <= to; i++ {
		d = append(d, i)
	}
	return d
}

func TestBackupFromConfig(t *testing.T) {
	e := newBackupEnv(t)
	for day := 1; day <= 10; day++ {
		e.daily(e.a, day)
		e.daily(e.b, day)
	}
	e.snapNamed(e.a, "manual-1")     // not selected by the glob
	e.snapNamed(e.a, "daily-latest") // selected, but its name has no time: skipped

	t.Run("dry-run changes nothing", func(t *testing.T) {
		e.t = t
		before := e.snapshotState()
		r := e.runWith(nil, "backup", "--dry-run")
		if r.code != 0 {
			t.Fatalf("backup --dry-run: exit %d: %s", r.code, r.stderr)
		}
		if n := strings.Count(r.stdout, "would upload"); n != 20 {
			t.Errorf("dry run plans %d edges, want 20:\n%s", n, r.stdout)
		}
		for _, want := range []string{e.a + "@daily-2026-01-05 (full) (full: 4d since the last full)",
			e.a + "@daily-2026-01-05 -> " + e.a + "@daily-2026-01-06 (incremental from the newest stored snapshot here)",
			e.b + "@daily-2026-01-01 (full) (full: nothing stored to start from), about "} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("dry run output lacks %q:\n%s", want, r.stdout)
			}
		}
		if !strings.Contains(r.stderr, "daily-latest") {
			t.Errorf("no warning for the snapshot whose name does not fit time_format: %q", r.stderr)
		}
		rep := e.report(0, nil, "--dry-run")
		if got := len(rep[e.a].Planned); got != 10 || rep[e.a].Planned[0].Estimate <= 0 || len(rep[e.a].Uploaded) != 0 {
			t.Errorf("dry run report for %s: %+v", e.a, rep[e.a])
		}
		if after := e.snapshotState(); after != before {
			t.Errorf("dry run changed state:\nbefore %s\nafter  %s", before, after)
		}
	})

	t.Run("backup stores all in order", func(t *testing.T) {
		e.t = t
		rep := e.report(0, nil)
		if d := cmp.Diff(chainOf(e.a, days(1, 10), 5, 9), uploadedEdges(rep[e.a])); d != "" {
			t.Errorf("%s uploaded (-want +got):\n%s", e.a, d)
		}
		if d := cmp.Diff(chainOf(e.b, days(1, 10)), uploadedEdges(rep[e.b])); d != "" {
			t.Errorf("%s uploaded (-want +got):\n%s", e.b, d)
		}
		for _, u := range rep[e.a].Uploaded {
			if u.Bytes <= 0 || u.Seconds <= 0 {
				t.Errorf("uploaded %+v: want bytes and seconds", u)
			}
		}
		want := append(chainOf(e.a, days(1, 10), 5, 9), chainOf(e.b, days(1, 10))...)
		slices.Sort(want)
		if d := cmp.Diff(want, e.edges()); d != "" {
			t.Errorf("ledger (-want +got):\n%s", d)
		}
	})

	t.Run("second backup uploads nothing", func(t *testing.T) {
		e.t = t
		before := e.snapshotState()
		rep := e.report(0, nil)
		if n := len(rep[e.a].Uploaded) + len(rep[e.b].Uploaded); n != 0 {
			t.Errorf("second run uploaded %d edges: %+v", n, rep)
		}
		if after := e.snapshotState(); after != before {
			t.Errorf("second run changed state:\nbefore %s\nafter  %s", before, after)
		}
		// On a new machine a dry run plans from the bucket's ledger copy
		// and does not adopt it into the state dir.
		fresh := t.TempDir()
		r := e.runWith([]string{"ZFS2S3_STATE_DIR=" + fresh}, "backup", "--dry-run")
		if r.code != 0 || strings.Count(r.stdout, "nothing new to upload") != 2 {
			t.Errorf("dry run on a new machine: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
		}
		if left, _ := os.ReadDir(fresh); len(left) != 0 {
			t.Errorf("dry run on a new machine wrote %d entries into the state dir", len(left))
		}
		if after := e.snapshotState(); after != before {
			t.Errorf("dry run on a new machine changed state:\nbefore %s\nafter  %s", before, after)
		}
	})

	t.Run("destroyed newest stored starts from the newest still here", func(t *testing.T) {
		e.t = t
		e.daily(e.a, 11)
		e.daily(e.a, 12)
		e.zfs("destroy", e.a+"@daily-2026-01-10")
		rep := e.report(0, nil, e.a)
		want := []string{e.a + "@daily-2026-01-09 -> " + e.a + "@daily-2026-01-11", e.a + "@daily-2026-01-11 -> " + e.a + "@daily-2026-01-12"}
		if d := cmp.Diff(want, uploadedEdges(rep[e.a])); d != "" {
			t.Errorf("uploaded (-want +got):\n%s", d)
		}
		if _, ok := rep[e.b]; ok {
			t.Errorf("backup %s also ran %s", e.a, e.b)
		}
	})

	t.Run("one dataset failing does not stop the other", func(t *testing.T) {
		e.t = t
		e.daily(e.a, 13)
		e.daily(e.b, 11)
		// A zfs whose sends of b fail; everything else is the real zfs.
		wrapper := filepath.Join(t.TempDir(), "zfs")
		script := fmt.Sprintf("#!/bin/sh\nif [ \"$1\" = send ]; then for a in \"$@\"; do case \"$a\" in '%s@'*) echo \"cannot send $a: injected failure\" >&2; exit 1;; esac; done; fi\nexec zfs \"$@\"\n", e.b)
		if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
		r := e.runWith([]string{"ZFS2S3_ZFS=" + wrapper}, "backup")
		if r.code != 1 {
			t.Fatalf("backup with a failing dataset: exit %d, want 1\nstderr: %s", r.code, r.stderr)
		}
		var errLines []string // the warning about daily-latest aside
		for _, l := range strings.Split(r.stderr, "\n") {
			if strings.HasPrefix(l, "zfs2s3: ") {
				errLines = append(errLines, l)
			}
		}
		if len(errLines) != 1 || !strings.Contains(errLines[0], "backup of "+e.b+" failed") {
			t.Errorf("stderr: want one error line naming %s, got:\n%s", e.b, r.stderr)
		}
		edges := e.edges()
		if want := e.a + "@daily-2026-01-13 (full)"; !slices.Contains(edges, want) { // 4 days after the full of the 9th
			t.Errorf("the other dataset's edge %s was not stored: %v", want, edges)
		}
		// The next run finishes b's interrupted upload first.
		rep := e.report(0, nil)
		if d := cmp.Diff([]string{e.b + "@daily-2026-01-10 -> " + e.b + "@daily-2026-01-11"}, uploadedEdges(rep[e.b])); d != "" {
			t.Errorf("%s after the failure (-want +got):\n%s", e.b, d)
		}
		if n := len(rep[e.a].Uploaded); n != 0 {
			t.Errorf("%s uploaded %d edges again", e.a, n)
		}
	})

	t.Run("config errors exit 2 and change nothing", func(t *testing.T) {
		e.t = t
		good, _ := os.ReadFile(e.config)
		defer e.writeConfig(string(good))
		tests := []struct {
			name, config, want string
			args               []string
		}{
			{"unknown key", "bucket: x\nfrobnicate: 1\n", e.config + ":2: frobnicate: unknown key", nil},
			{"missing dataset", fmt.Sprintf("datasets:\n  %q: {}\n  %q: {}\n", e.a, pool+"/nope"), e.config + ":3: datasets." + pool + "/nope: dataset " + pool + "/nope does not exist", nil},
			{"create outside the glob", fmt.Sprintf("datasets:\n  %q:\n    create: \"zfs2s3-%%Y%%m%%d\"\n    snapshots: \"daily-*\"\n", e.a), e.config + ":2: datasets." + e.a + ": the snapshots it creates (zfs2s3-%Y%m%d) do not match its snapshots glob", nil},
			{"not configured", string(good), "dataset " + pool + "/other is not configured", []string{pool + "/other"}},
			{"no datasets", "bucket: x\n", "configures no datasets", nil},
			{"bad duration", fmt.Sprintf("defaults:\n  full_every: 30x\ndatasets:\n  %q: {}\n", e.a), e.config + ":2: defaults.full_every: bad duration \"30x\"", nil},
			{"bad glob", fmt.Sprintf("defaults:\n  snapshots: \"daily-[\"\ndatasets:\n  %q: {}\n", e.a), e.config + ":2: defaults.snapshots: bad glob", nil},
			{"bad time format", fmt.Sprintf("defaults:\n  time_format: \"daily-%%Q\"\ndatasets:\n  %q: {}\n", e.a), e.config + ":2: defaults.time_format: bad time format", nil},
			{"keep keeps nothing", fmt.Sprintf("defaults:\n  keep: {daily: 0}\ndatasets:\n  %q: {}\n", e.a), e.config + ":2: defaults.keep: keeps nothing", nil},
			{"bad chain", fmt.Sprintf("defaults:\n  chain: sideways\ndatasets:\n  %q: {}\n", e.a), e.config + ":2: defaults.chain: \"sideways\"", nil},
			{"unknown dataset key", fmt.Sprintf("datasets:\n  %q:\n    snapshot: \"x*\"\n", e.a), e.config + ":3: datasets." + e.a + ".snapshot: unknown key", nil},
			{"unknown keep rule", fmt.Sprintf("datasets:\n  %q:\n    keep: {fortnightly: 2}\n", e.a), e.config + ":3: datasets." + e.a + ".keep: ", nil},
			{"negative keep", fmt.Sprintf("datasets:\n  %q:\n    keep: {daily: -1}\n", e.a), e.config + ":3: datasets." + e.a + ".keep: counts cannot be negative", nil},
			{"keep_local without create", fmt.Sprintf("datasets:\n  %q:\n    keep_local: {last: 3}\n", e.a), e.config + ":2: datasets." + e.a + ": keep_local destroys only snapshots zfs2s3 created", nil},
			{"bad hook timeout", fmt.Sprintf("datasets:\n  %q:\n    hook_timeout: soon\n", e.a), e.config + ":3: datasets." + e.a + ".hook_timeout: bad duration", nil},
			{"bad compress", fmt.Sprintf("compress: brotli\ndatasets:\n  %q: {}\n", e.a), e.config + ":1: compress: ", nil},
			{"bad recipient", fmt.Sprintf("recipients: [age1notakey]\ndatasets:\n  %q: {}\n", e.a), e.config + ":1: recipients: ", nil},
			{"bad lock mode", fmt.Sprintf("lock_mode: forever\ndatasets:\n  %q: {}\n", e.a), e.config + ":1: lock_mode: ", nil},
			{"dataset twice", fmt.Sprintf("datasets:\n  %q: {}\n  %q: {}\n", e.a, e.a), e.config + ":3: datasets." + e.a + ": already defined above", nil},
			{"a snapshot for a dataset", fmt.Sprintf("datasets:\n  %q: {}\n", e.a+"@x"), e.config + ":2: datasets: ", nil},
			{"broken YAML", fmt.Sprintf("datasets:\n  %q: {\n", e.a), e.config + ":", nil},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				e.t = t
				e.writeConfig(tt.config)
				before := e.snapshotState()
				r := e.runWith(nil, append([]string{"backup"}, tt.args...)...)
				if r.code != 2 || !strings.Contains(r.stderr, tt.want) || strings.Count(strings.TrimSpace(r.stderr), "\n") > 0 {
					t.Errorf("exit %d, stderr %q; want exit 2 and one line with %q", r.code, r.stderr, tt.want)
				}
				if after := e.snapshotState(); after != before {
					t.Errorf("state changed:\nbefore %s\nafter  %s", before, after)
				}
			})
		}
		e.t = t
		r := e.runWith([]string{"ZFS2S3_CONFIG=" + e.config + ".missing"}, "status")
		if r.code != 2 || !strings.Contains(r.stderr, e.config+".missing") {
			t.Errorf("a missing config named explicitly: exit %d, stderr %q; want exit 2 naming it", r.code, r.stderr)
		}
	})
}
