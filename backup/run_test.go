package backup

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/zfs2s3/zfs2s3/config"
	"github.com/zfs2s3/zfs2s3/ledger"
)

func TestExpandRecursive(t *testing.T) {
	cfg, err := config.Parse([]byte(`datasets:
  tank/db: {recursive: true, keep_local: {last: 2}, create: "z-%Y%m%d%H%M%S"}
  tank/db/scratch: {}
`), "c.yaml")
	if err != nil {
		t.Fatal(err)
	}
	db := cfg.Datasets[0]
	got := expandRecursive(db, []string{"tank/db/b", "tank/db/a", "tank/db/scratch", "tank/db/a", "tank/db/a/x", "tank/dbx"})
	var names []string
	for _, d := range got {
		names = append(names, d.Name)
		if d.Name != "tank/db" && (d.Recursive || d.KeepLocal == nil || d.Create != db.Create) {
			t.Errorf("child %s: %+v; want the parent's rules, not recursive", d.Name, d)
		}
	}
	// Once each, in name order, without the child configured on its own.
	if d := cmp.Diff([]string{"tank/db", "tank/db/a", "tank/db/a/x", "tank/db/b"}, names); d != "" {
		t.Errorf("expandRecursive (-want +got):\n%s", d)
	}
	if got := expandRecursive(cfg.Datasets[1], []string{"tank/db/scratch/x"}); len(got) != 1 {
		t.Errorf("a dataset that is not recursive expands to %d", len(got))
	}
}

func TestStoredBelow(t *testing.T) {
	l := &ledger.Ledger{Edges: []ledger.Edge{
		{Target: ledger.Snapshot{Name: "tank/db@a", GUID: 1}},
		{Target: ledger.Snapshot{Name: "tank/db/gone@a", GUID: 2}},
		{Target: ledger.Snapshot{Name: "tank/dbx@a", GUID: 3}},
	}}
	if d := cmp.Diff([]string{"tank/db/gone"}, storedBelow(l, "tank/db")); d != "" {
		t.Errorf("storedBelow (-want +got):\n%s", d)
	}
}

// TestRunHook: a hook runs under sh with its environment and stdin
// closed, its output goes to HookOutput, and its failure, its timeout and
// an interruption each say which hook of which dataset.
func TestRunHook(t *testing.T) {
	var out bytes.Buffer
	b := &Backup{HookOutput: &out}
	d := config.Dataset{Name: "tank/my db", HookTimeout: time.Minute}
	d.Pre = `echo "$ZFS2S3_HOOK $ZFS2S3_DATASET $ZFS2S3_SNAPSHOT"; cat; echo stdin-ended`
	if err := b.runHook(context.Background(), "pre", d, "tank/my db@z-1"); err != nil {
		t.Fatal(err)
	}
	if want := "pre tank/my db tank/my db@z-1\nstdin-ended\n"; out.String() != want {
		t.Errorf("hook output %q, want %q", out.String(), want)
	}
	d.Post = "exit 3"
	if err := b.runHook(context.Background(), "post", d, "tank/my db@z-1"); err == nil || err.Error() != "post hook for tank/my db failed: exit status 3" {
		t.Errorf("failing hook: %v", err)
	}
	// A timeout kills the hook and what it started.
	pidFile := filepath.Join(t.TempDir(), "pid")
	d.HookTimeout = 300 * time.Millisecond
	d.Pre = "sleep 60 & echo $! > " + pidFile + "; wait"
	err := b.runHook(context.Background(), "pre", d, "tank/my db@z-1")
	if err == nil || !strings.Contains(err.Error(), "pre hook for tank/my db timed out after 300ms (hook_timeout) and was killed") {
		t.Errorf("hook past its timeout: %v", err)
	}
	pid, _ := os.ReadFile(pidFile)
	if strings.TrimSpace(string(pid)) == "" {
		t.Fatal("the hook wrote no pid")
	}
	if !gone(strings.TrimSpace(string(pid))) {
		t.Errorf("the hook's child %s outlived the timeout", pid)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	d.HookTimeout = time.Minute
	if err := b.runHook(ctx, "pre", d, "tank/my db@z-1"); err == nil || !strings.Contains(err.Error(), "interrupted") {
		t.Errorf("interrupted hook: %v", err)
	}
}

// gone waits until process pid has ended (or is a zombie no one reaps, as
// under a container's init), for at most a few seconds.
func gone(pid string) bool {
	for range 100 {
		st, err := os.ReadFile("/proc/" + pid + "/stat")
		if err != nil || strings.Contains(string(st), ") Z ") {
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}
