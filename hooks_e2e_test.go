package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/zfs2s3/zfs2s3/backup"
)

// hooksEnv is an env with two datasets, a (which the tests give create and
// hooks) and b (plain dailies), a config file and a hook log.
func hooksEnv(t *testing.T, name string) (*backupEnv, string) {
	e := &backupEnv{env: newEnv(t, name)}
	e.a = e.ds
	e.b = e.ds + "/b"
	e.zfs("create", e.b)
	e.config = filepath.Join(t.TempDir(), "config.yaml")
	return e, filepath.Join(t.TempDir(), "hooks.log")
}

// logHook is a hook command that appends "TAG DATASET exists|absent" to
// log, saying whether the snapshot the run takes exists at that moment,
// and prints a line on its own stdout (which must not reach zfs2s3's).
func logHook(tag, log string) string {
	return fmt.Sprintf(`echo hook-output-%s; if zfs list -H -o name -t snapshot "$ZFS2S3_SNAPSHOT" >/dev/null 2>&1; then s=exists; else s=absent; fi; echo "%s $ZFS2S3_DATASET $s" >> %s`, tag, tag, log)
}

func readLog(t *testing.T, log string) string {
	t.Helper()
	b, err := os.ReadFile(log)
	if os.IsNotExist(err) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// localSnaps lists ds's own snapshots, by name.
func (e *backupEnv) localSnaps(ds string) []string {
	e.t.Helper()
	var out []string
	for _, n := range strings.Split(strings.TrimSpace(e.zfs("list", "-H", "-o", "name", "-t", "snapshot", "-r", ds)), "\n") {
		if strings.HasPrefix(n, ds+"@") {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

// errorLines are the "zfs2s3: " lines of stderr (hooks write there too).
func errorLines(stderr string) []string {
	var out []string
	for _, l := range strings.Split(stderr, "\n") {
		if strings.HasPrefix(l, "zfs2s3: ") {
			out = append(out, l)
		}
	}
	return out
}

func TestBackupCreatesWithHooks(t *testing.T) {
	e, log := hooksEnv(t, "hk")
	e.daily(e.b, 1)
	// Each step creates names of its own (tag), since runs follow each
	// other within a second.
	writeHooks := func(tag, pre, post string) {
		e.writeDailyConfig(fmt.Sprintf(`
  %q:
    snapshots: "zfs2s3-*"
    create: "zfs2s3-%s-%%Y%%m%%d-%%H%%M%%S"
    pre: '%s'
    post: '%s'
    hook_timeout: 1m
  %q: {}
`, e.a, tag, pre, post, e.b))
	}
	writeHooks("a", logHook("pre", log), logHook("post", log))

	t.Run("dry run takes no snapshot and runs no hook", func(t *testing.T) {
		e.t = t
		before, snaps := e.snapshotState(), e.localSnaps(e.a)
		r := e.runWith(nil, "backup", "--dry-run")
		if r.code != 0 {
			t.Fatalf("backup --dry-run: exit %d\n%s", r.code, r.stderr)
		}
		for _, want := range []string{e.a + ": would create " + e.a + "@zfs2s3-", "(pre/post hooks around it)",
			e.a + ": would upload " + e.a + "@zfs2s3-"} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("dry run output lacks %q:\n%s", want, r.stdout)
			}
		}
		rep := e.report(0, nil, "--dry-run")
		if w := rep[e.a].WouldCreate; !strings.HasPrefix(w, e.a+"@zfs2s3-") || rep[e.a].Created != "" {
			t.Errorf("dry run report: would_create %q, created %q", w, rep[e.a].Created)
		}
		if p := rep[e.a].Planned; len(p) != 1 || p[0].Edge != rep[e.a].WouldCreate+" (full)" || p[0].Estimate <= 0 {
			t.Errorf("dry run plans %+v, want a full of %s with an estimate", p, rep[e.a].WouldCreate)
		}
		if got := readLog(t, log); got != "" {
			t.Errorf("a dry run ran hooks:\n%s", got)
		}
		if d := cmp.Diff(snaps, e.localSnaps(e.a)); d != "" || e.snapshotState() != before {
			t.Errorf("dry run changed snapshots (-before +after):\n%s", d)
		}
	})

	t.Run("pre, snapshot, post, then the upload", func(t *testing.T) {
		e.t = t
		r := e.runWith(nil, "backup", "--json")
		if r.code != 0 {
			t.Fatalf("backup: exit %d\n%s", r.code, r.stderr)
		}
		if strings.Contains(r.stdout, "hook-output") || !strings.Contains(r.stderr, "hook-output-pre") || !strings.Contains(r.stderr, "hook-output-post") {
			t.Errorf("hook output belongs on stderr only\nstdout: %s\nstderr: %s", r.stdout, r.stderr)
		}
		if want := fmt.Sprintf("pre %s absent\npost %s exists\n", e.a, e.a); readLog(t, log) != want {
			t.Errorf("hook log %q, want %q", readLog(t, log), want)
		}
		rep := reportOf(t, r)
		a := rep[e.a]
		if !strings.HasPrefix(a.Created, e.a+"@zfs2s3-") || !slices.Contains(e.localSnaps(e.a), a.Created) {
			t.Fatalf("created %q, local snapshots %v", a.Created, e.localSnaps(e.a))
		}
		if a.DowntimeSeconds == nil || *a.DowntimeSeconds <= 0 {
			t.Errorf("downtime_seconds %v, want the time from pre to post", a.DowntimeSeconds)
		}
		if d := cmp.Diff([]string{a.Created + " (full)"}, uploadedEdges(a)); d != "" {
			t.Errorf("%s uploaded (-want +got):\n%s", e.a, d)
		}
		if d := cmp.Diff([]string{e.b + "@daily-2026-01-01 (full)"}, uploadedEdges(rep[e.b])); d != "" {
			t.Errorf("%s uploaded (-want +got):\n%s", e.b, d)
		}
		if rep[e.b].Created != "" || rep[e.b].DowntimeSeconds != nil {
			t.Errorf("%s has no create, but its report says %+v", e.b, rep[e.b])
		}
		if !slices.Contains(e.edges(), a.Created+" (full)") {
			t.Errorf("ledger lacks %s: %v", a.Created, e.edges())
		}
	})

	t.Run("a failing pre means no snapshot; post runs; the other dataset is backed up", func(t *testing.T) {
		e.t = t
		os.Remove(log)
		writeHooks("b", "echo pre >> "+log+"; exit 3", logHook("post", log))
		snaps := e.localSnaps(e.a)
		e.daily(e.b, 2)
		r := e.runWith(nil, "backup")
		if r.code != 1 {
			t.Fatalf("backup with a failing pre: exit %d, want 1\n%s", r.code, r.stderr)
		}
		want := "zfs2s3: backup of " + e.a + " failed: pre hook for " + e.a + " failed: exit status 3; no snapshot taken"
		if d := cmp.Diff([]string{want}, errorLines(r.stderr)); d != "" {
			t.Errorf("error lines (-want +got):\n%s", d)
		}
		if want := fmt.Sprintf("pre\npost %s absent\n", e.a); readLog(t, log) != want {
			t.Errorf("hook log %q, want %q", readLog(t, log), want)
		}
		if d := cmp.Diff(snaps, e.localSnaps(e.a)); d != "" {
			t.Errorf("a snapshot was taken though pre failed (-before +after):\n%s", d)
		}
		if want := e.b + "@daily-2026-01-01 -> " + e.b + "@daily-2026-01-02"; !slices.Contains(e.edges(), want) {
			t.Errorf("the other dataset's edge %s was not stored: %v", want, e.edges())
		}
	})

	t.Run("post runs when the snapshot fails", func(t *testing.T) {
		e.t = t
		os.Remove(log)
		writeHooks("c", logHook("pre", log), logHook("post", log))
		snaps := e.localSnaps(e.a)
		wrapper := filepath.Join(t.TempDir(), "zfs")
		script := "#!/bin/sh\nif [ \"$1\" = snapshot ]; then echo \"cannot create snapshot: injected failure\" >&2; exit 1; fi\nexec zfs \"$@\"\n"
		if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
		r := e.runWith([]string{"ZFS2S3_ZFS=" + wrapper}, "backup", e.a)
		if r.code != 1 {
			t.Fatalf("backup with a failing snapshot: exit %d, want 1\n%s", r.code, r.stderr)
		}
		lines := errorLines(r.stderr)
		if len(lines) != 1 || !strings.Contains(lines[0], "backup of "+e.a+" failed: take snapshot "+e.a+"@zfs2s3-") || !strings.Contains(lines[0], "injected failure") {
			t.Errorf("error lines: %q", lines)
		}
		if want := fmt.Sprintf("pre %s absent\npost %s absent\n", e.a, e.a); readLog(t, log) != want {
			t.Errorf("hook log %q, want %q", readLog(t, log), want)
		}
		if d := cmp.Diff(snaps, e.localSnaps(e.a)); d != "" {
			t.Errorf("snapshots changed (-before +after):\n%s", d)
		}
	})

	t.Run("an interrupted pre is killed, and post still runs", func(t *testing.T) {
		e.t = t
		os.Remove(log)
		writeHooks("e", "echo pre >> "+log+"; sleep 120; echo pre-went-on >> "+log, logHook("post", log))
		snaps := e.localSnaps(e.a)
		c := e.cmd("backup", e.a)
		c.Env = append(c.Env, "ZFS2S3_CONFIG="+e.config)
		var stderr bytes.Buffer
		c.Stderr = &stderr
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- c.Wait() }()
		for !strings.Contains(readLog(t, log), "pre") {
			select {
			case err := <-done:
				t.Fatalf("backup ended (%v) before pre ran: %s", err, stderr.String())
			case <-time.After(20 * time.Millisecond):
			}
		}
		c.Process.Signal(syscall.SIGINT)
		err := <-done
		if code := c.ProcessState.ExitCode(); code != 1 {
			t.Errorf("exit %d (%v) after SIGINT during pre, want 1\n%s", code, err, stderr.String())
		}
		if !strings.Contains(stderr.String(), "pre hook for "+e.a+" was interrupted and killed") {
			t.Errorf("stderr does not say pre was interrupted:\n%s", stderr.String())
		}
		if want := fmt.Sprintf("pre\npost %s absent\n", e.a); readLog(t, log) != want {
			t.Errorf("hook log %q, want %q", readLog(t, log), want)
		}
		if d := cmp.Diff(snaps, e.localSnaps(e.a)); d != "" {
			t.Errorf("a snapshot was taken though pre was interrupted (-before +after):\n%s", d)
		}
	})

	t.Run("a snapshot name taken already: a clear error, no hook", func(t *testing.T) {
		e.t = t
		os.Remove(log)
		e.writeDailyConfig(fmt.Sprintf(`
  %q:
    snapshots: "zfs2s3-*"
    create: "zfs2s3-%%Y"
    pre: '%s'
    post: '%s'
`, e.a, logHook("pre", log), logHook("post", log)))
		taken := e.snapNamed(e.a, "zfs2s3-"+time.Now().UTC().Format("2006"))
		r := e.runWith(nil, "backup", e.a)
		if r.code != 1 {
			t.Fatalf("backup: exit %d, want 1\n%s", r.code, r.stderr)
		}
		lines := errorLines(r.stderr)
		if len(lines) != 1 || !strings.Contains(lines[0], "backup of "+e.a+" failed: snapshot "+taken+" already exists") {
			t.Errorf("error lines: %q", lines)
		}
		if got := readLog(t, log); got != "" {
			t.Errorf("hooks ran though the snapshot could not be taken:\n%s", got)
		}
	})

	t.Run("a config with hooks that others can change is refused", func(t *testing.T) {
		e.t = t
		os.Remove(log)
		writeHooks("d", logHook("pre", log), logHook("post", log))
		if err := os.Chmod(e.config, 0o664); err != nil {
			t.Fatal(err)
		}
		defer os.Chmod(e.config, 0o600)
		before, snaps := e.snapshotState(), e.localSnaps(e.a)
		r := e.runWith(nil, "backup")
		if r.code != 2 || !strings.Contains(r.stderr, e.config+": it runs hooks (pre/post) and is writable by group or others (mode 0664); run: chmod go-w "+e.config) ||
			strings.Count(strings.TrimSpace(r.stderr), "\n") > 0 {
			t.Errorf("exit %d, stderr %q; want exit 2 and one line saying chmod go-w %s", r.code, r.stderr, e.config)
		}
		if got := readLog(t, log); got != "" {
			t.Errorf("hooks ran:\n%s", got)
		}
		if d := cmp.Diff(snaps, e.localSnaps(e.a)); d != "" || e.snapshotState() != before {
			t.Errorf("a refused config changed something (-before +after):\n%s", d)
		}
	})
}

// reportOf parses the report a backup --json run printed.
func reportOf(t *testing.T, r result) map[string]backup.DatasetReport {
	t.Helper()
	var rep backup.RunReport
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("backup --json: %v\n%s", err, r.stdout)
	}
	out := map[string]backup.DatasetReport{}
	for _, d := range rep.Datasets {
		out[d.Dataset] = d
	}
	return out
}

func TestBackupRecursive(t *testing.T) {
	e, log := hooksEnv(t, "rec")
	c1, c2 := e.b, e.a+"/c2"
	e.zfs("create", c2)
	for _, ds := range []string{e.a, c1, c2} {
		e.snapNamed(ds, "data") // some data in each, and a snapshot not selected
	}
	e.writeDailyConfig(fmt.Sprintf(`
  %q:
    recursive: true
    snapshots: "zfs2s3-*"
    create: "zfs2s3-%%Y%%m%%d-%%H%%M%%S"
    pre: '%s'
    post: '%s'
    keep: {last: 1}
`, e.a, logHook("pre", log), logHook("post", log)))

	r := e.runWith(nil, "backup", "--json")
	if r.code != 0 {
		t.Fatalf("backup: exit %d\n%s", r.code, r.stderr)
	}
	rep := reportOf(t, r)
	if len(rep) != 3 {
		t.Fatalf("report has %d datasets, want %s and its two children: %+v", len(rep), e.a, rep)
	}
	_, short, _ := strings.Cut(rep[e.a].Created, "@")
	if short == "" {
		t.Fatalf("no snapshot created: %+v", rep[e.a])
	}
	// One snapshot log entry pair: the hooks ran once around all of them.
	if want := fmt.Sprintf("pre %s absent\npost %s exists\n", e.a, e.a); readLog(t, log) != want {
		t.Errorf("hook log %q, want %q", readLog(t, log), want)
	}
	var txgs []string
	for _, ds := range []string{e.a, c1, c2} {
		name := ds + "@" + short
		if rep[ds].Created != name {
			t.Errorf("%s: created %q, want %q", ds, rep[ds].Created, name)
		}
		if d := cmp.Diff([]string{name + " (full)"}, uploadedEdges(rep[ds])); d != "" {
			t.Errorf("%s uploaded (-want +got):\n%s", ds, d)
		}
		// zfs snapshot -r takes them in one transaction group: consistent.
		txgs = append(txgs, strings.TrimSpace(e.zfs("get", "-H", "-p", "-o", "value", "createtxg", name)))
	}
	if txgs[0] != txgs[1] || txgs[0] != txgs[2] {
		t.Errorf("the snapshots were taken in transaction groups %v, want one", txgs)
	}
	if rep[e.a].DowntimeSeconds == nil || rep[c1].DowntimeSeconds != nil {
		t.Errorf("downtime belongs on %s's report only: %v, %v", e.a, rep[e.a].DowntimeSeconds, rep[c1].DowntimeSeconds)
	}
	// prune covers the children too.
	pr := e.runWith(nil, "prune", "--dry-run", "--json")
	var prep backup.PruneReport
	if err := json.Unmarshal([]byte(pr.stdout), &prep); pr.code != 0 || err != nil {
		t.Fatalf("prune --dry-run: exit %d, %v\n%s\n%s", pr.code, err, pr.stdout, pr.stderr)
	}
	var pruned []string
	for _, d := range prep.Datasets {
		pruned = append(pruned, d.Dataset)
	}
	if d := cmp.Diff([]string{e.a, c1, c2}, pruned); d != "" {
		t.Errorf("prune covers (-want +got):\n%s", d)
	}
}

func TestKeepLocal(t *testing.T) {
	e, _ := hooksEnv(t, "kl")
	// Snapshots named as create names them count as created by zfs2s3,
	// whoever took them: here, five older ones, and a hand-made one.
	var old []string
	for i := range 5 {
		old = append(old, e.snapNamed(e.a, fmt.Sprintf("zfs2s3-20260101-00000%d", i)))
	}
	manual := e.snapNamed(e.a, "manual-1")
	e.writeDailyConfig(fmt.Sprintf(`
  %q:
    snapshots: "*"
    time_format: ""
    create: "zfs2s3-%%Y%%m%%d-%%H%%M%%S"
    keep_local: {last: 2}
`, e.a))

	rep := e.report(0, nil, "--dry-run")
	// Six created (five old, the new one): the two newest stay.
	if d := cmp.Diff(old[:4], rep[e.a].WouldDestroy); d != "" {
		t.Errorf("dry run would destroy (-want +got):\n%s", d)
	}
	if len(e.localSnaps(e.a)) != 6 {
		t.Errorf("dry run changed the snapshots: %v", e.localSnaps(e.a))
	}

	r := e.runWith(nil, "backup", "--json")
	if r.code != 0 {
		t.Fatalf("backup: exit %d\n%s", r.code, r.stderr)
	}
	rep = reportOf(t, r)
	if d := cmp.Diff(old[:4], rep[e.a].Destroyed); d != "" {
		t.Errorf("destroyed (-want +got):\n%s", d)
	}
	want := []string{old[4], manual, rep[e.a].Created}
	slices.Sort(want)
	if d := cmp.Diff(want, e.localSnaps(e.a)); d != "" {
		t.Errorf("local snapshots left (-want +got):\n%s", d)
	}
	if n := len(rep[e.a].Uploaded); n != 7 {
		t.Errorf("uploaded %d edges, want all 7 snapshots: %v", n, uploadedEdges(rep[e.a]))
	}
}
