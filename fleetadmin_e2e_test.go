package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/zfs2s3/zfs2s3/backup"
	"github.com/zfs2s3/zfs2s3/internal/testbed"
	"github.com/zfs2s3/zfs2s3/ledger"
)

// fleetHost is a backup host of a fleet: its own config, state dir,
// dataset and credentials (zfs2s3 policy host NAME, as a MinIO user).
type fleetHost struct {
	name, ds, config, stateDir string
	creds                      []string
}

// addFleetHost makes host name with dataset ds, a new full every 2 days
// of snapshot time and no keep rule of its own (the admin prunes).
func (e *fleetEnv) addFleetHost(name, ds string) *fleetHost {
	e.t.Helper()
	h := &fleetHost{name: name, ds: ds, config: filepath.Join(e.t.TempDir(), "config.yaml"), stateDir: e.t.TempDir()}
	cfg := fmt.Sprintf(`
prefix: "fleet/{host}"
host: %s
defaults:
  snapshots: "daily-*"
  time_format: "daily-%%Y-%%m-%%d"
datasets:
  %q:
    full_every: 2d
`, name, ds)
	if err := os.WriteFile(h.config, []byte(cfg), 0o600); err != nil {
		e.t.Fatal(err)
	}
	r := e.hostRun(h, nil, "policy", "host", name, "--store", "minio")
	if r.code != 0 {
		e.t.Fatalf("zfs2s3 policy host %s: exit %d: %s", name, r.code, r.stderr)
	}
	mc, err := testbed.NewMC(&bed.minio.S3, e.t.TempDir())
	testbed.Require(e.t, "mc (MinIO's client, make deps installs it)", err)
	user := fmt.Sprintf("%s-%s", name, e.bucket)
	if err := mc.AddUser(user, "secret-"+name, []byte(r.stdout)); err != nil {
		e.t.Fatal(err)
	}
	h.creds = creds(user, "secret-"+name)
	return h
}

// hostRun runs zfs2s3 as host h: its config, state dir and credentials
// (none given: the env's own, for policy).
func (e *fleetEnv) hostRun(h *fleetHost, role []string, args ...string) result {
	e.t.Helper()
	c := e.cmd(args...)
	c.Env = append(c.Env, "ZFS2S3_CONFIG="+h.config, "ZFS2S3_STATE_DIR="+h.stateDir)
	c.Env = append(c.Env, role...)
	return e.runCmd(c)
}

// adminRun runs zfs2s3 as the admin: the admin config, a state dir of
// its own and the admin's credentials.
func (e *fleetEnv) adminRun(config, stateDir string, args ...string) result {
	e.t.Helper()
	c := e.cmd(args...)
	c.Env = append(c.Env, "ZFS2S3_CONFIG="+config, "ZFS2S3_STATE_DIR="+stateDir)
	c.Env = append(c.Env, e.admin...)
	return e.runCmd(c)
}

// hostLedger is host h's local ledger, sorted.
func (e *fleetEnv) hostLedger(h *fleetHost) []string {
	e.t.Helper()
	p := "fleet/" + h.name + "/"
	l, err := ledger.OpenStore(h.stateDir, e.bucket, p).Load(e.bucket, p)
	if err != nil {
		e.t.Fatal(err)
	}
	var s []string
	for _, ed := range l.Edges {
		s = append(s, ed.String())
	}
	slices.Sort(s)
	return s
}

// checkHostConsistent runs status on host h and fails unless the
// bucket holds exactly its ledger: no unknown objects, every edge
// restorable, nothing pending.
func (e *fleetEnv) checkHostConsistent(h *fleetHost) backup.Status {
	e.t.Helper()
	r := e.hostRun(h, h.creds, "status", "--json")
	if r.code != 0 {
		e.t.Fatalf("status on %s: exit %d: %s", h.name, r.code, r.stderr)
	}
	var st backup.Status
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		e.t.Fatalf("status --json on %s: %v\n%s", h.name, err, r.stdout)
	}
	if len(st.UnknownObjects) > 0 || len(st.UntrackedUploads) > 0 || len(st.Pending) > 0 {
		e.t.Errorf("%s: bucket and ledger differ: unknown objects %v, untracked uploads %v, pending %v", h.name, st.UnknownObjects, st.UntrackedUploads, st.Pending)
	}
	for _, d := range st.Datasets {
		for _, ed := range d.Edges {
			if !ed.Restorable {
				e.t.Errorf("%s: %s is not restorable: %s", h.name, ed.Snapshot, ed.Why)
			}
		}
	}
	return st
}

func snapOf(ds string, day int) string { return fmt.Sprintf("%s@daily-2026-01-%02d", ds, day) }

// TestFleetStatusAndPrune: two hosts back up into one bucket under their
// own prefixes with their own credentials; the admin's fleet status lists
// both with their newest snapshots, fleet prune applies the admin's keep
// rules (defaults for one host, a dataset entry for the other) from the
// bucket alone, removing what the rules allow and keeping chain links,
// and each host's next backup works and sees the removals.
func TestFleetStatusAndPrune(t *testing.T) {
	e := newFleetEnv(t)
	w1 := e.addFleetHost("web1", e.a)
	b := e.a + "/w2"
	e.zfs("create", b)
	w2 := e.addFleetHost("web2", b)
	adminCfg := filepath.Join(t.TempDir(), "admin.yaml")
	if err := os.WriteFile(adminCfg, []byte(fmt.Sprintf(`
prefix: "fleet/{host}"
defaults:
  time_format: "daily-%%Y-%%m-%%d"
  keep: {last: 2}
datasets:
  %q:
    keep: {last: 3}
`, b)), 0o600); err != nil {
		t.Fatal(err)
	}
	adminState := t.TempDir()
	for d := 1; d <= 5; d++ {
		e.daily(w1.ds, d)
		e.daily(w2.ds, d)
	}
	for _, h := range []*fleetHost{w1, w2} {
		if r := e.hostRun(h, h.creds, "backup"); r.code != 0 {
			t.Fatalf("backup on %s: exit %d: %s", h.name, r.code, r.stderr)
		}
	}

	status := func() backup.FleetStatus {
		t.Helper()
		r := e.adminRun(adminCfg, adminState, "fleet", "status", "--json")
		if r.code != 0 {
			t.Fatalf("fleet status: exit %d: %s", r.code, r.stderr)
		}
		var st backup.FleetStatus
		if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
			t.Fatalf("fleet status --json: %v\n%s", err, r.stdout)
		}
		return st
	}
	checkStatus := func(st backup.FleetStatus, newest int, restorable map[string]int) {
		t.Helper()
		if st.Root != "fleet/" || len(st.Hosts) != 2 || st.Hosts[0].Prefix != "fleet/web1/" || st.Hosts[1].Prefix != "fleet/web2/" {
			t.Fatalf("fleet status lists %+v, want fleet/web1/ and fleet/web2/ under fleet/", st)
		}
		for i, h := range []*fleetHost{w1, w2} {
			got := st.Hosts[i]
			if len(got.Problems) > 0 {
				t.Errorf("fleet status: %s has problems %v", got.Prefix, got.Problems)
			}
			if len(got.Datasets) != 1 || got.Datasets[0].Dataset != h.ds || got.Datasets[0].Newest != snapOf(h.ds, newest) ||
				got.Datasets[0].Restorable != restorable[h.name] || got.StoredBytes <= 0 {
				t.Errorf("fleet status of %s: %+v, want %s with newest %s and %d restorable", got.Prefix, got, h.ds, snapOf(h.ds, newest), restorable[h.name])
			}
		}
	}
	checkStatus(status(), 5, map[string]int{"web1": 5, "web2": 5})
	// The text form names both hosts and their newest snapshots.
	if r := e.adminRun(adminCfg, adminState, "fleet", "status"); r.code != 0 || !strings.Contains(r.stdout, "fleet/web1/") ||
		!strings.Contains(r.stdout, snapOf(w2.ds, 5)) {
		t.Errorf("fleet status: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}

	// A dry run changes nothing.
	keys := e.keys()
	if r := e.adminRun(adminCfg, adminState, "fleet", "prune", "--dry-run"); r.code != 0 || !strings.Contains(r.stdout, "would remove") {
		t.Errorf("fleet prune --dry-run: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	if got := e.keys(); !slices.Equal(got, keys) {
		t.Errorf("fleet prune --dry-run changed the bucket")
	}
	// Hosts cannot run it: their credentials see their own prefix only.
	if r := e.hostRun(w1, w1.creds, "fleet", "prune"); r.code != 1 || !strings.Contains(r.stderr, "access denied") || !strings.Contains(r.stderr, "policy admin") {
		t.Errorf("fleet prune as a host: exit %d, stderr %q; want exit 1 and the admin side named", r.code, r.stderr)
	}
	if got := e.keys(); !slices.Equal(got, keys) {
		t.Errorf("fleet prune as a host changed the bucket")
	}

	r := e.adminRun(adminCfg, adminState, "fleet", "prune", "--json")
	if r.code != 0 {
		t.Fatalf("fleet prune: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	var rep backup.FleetPruneReport
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("fleet prune --json: %v\n%s", err, r.stdout)
	}
	// web1 keeps days 4 and 5 (defaults: last 2): days 1 and 2 go, and
	// day 3 stays as the base of 3 -> 4 (no pool here for a bypass).
	// web2 keeps days 3 to 5 (its own entry: last 3): days 1 and 2 go.
	want := map[string][]string{
		"web1": {snapOf(w1.ds, 3) + " (full)", snapOf(w1.ds, 3) + " -> " + snapOf(w1.ds, 4), snapOf(w1.ds, 5) + " (full)"},
		"web2": {snapOf(w2.ds, 3) + " (full)", snapOf(w2.ds, 3) + " -> " + snapOf(w2.ds, 4), snapOf(w2.ds, 5) + " (full)"},
	}
	if len(rep.Hosts) != 2 {
		t.Fatalf("fleet prune report has %d hosts, want 2: %s", len(rep.Hosts), r.stdout)
	}
	for i, h := range []*fleetHost{w1, w2} {
		hr := rep.Hosts[i]
		var removed []string
		for _, d := range hr.Datasets {
			for _, pe := range d.Removed {
				removed = append(removed, pe.Edge)
			}
			if len(d.Bypass) > 0 || len(d.Errors) > 0 {
				t.Errorf("fleet prune of %s: bypasses %v, errors %v; want none", hr.Prefix, d.Bypass, d.Errors)
			}
		}
		slices.Sort(removed)
		wantRemoved := []string{snapOf(h.ds, 1) + " (full)", snapOf(h.ds, 1) + " -> " + snapOf(h.ds, 2)}
		if !slices.Equal(removed, wantRemoved) {
			t.Errorf("fleet prune removed %v from %s, want %v", removed, hr.Prefix, wantRemoved)
		}
	}
	if st := rep.Hosts[0].Datasets[0].Stay; len(st) != 1 || st[0].Snapshot != snapOf(w1.ds, 3) || st[0].For != snapOf(w1.ds, 4) {
		t.Errorf("fleet prune of web1: stays %+v, want day 3 for day 4", st)
	}
	for _, k := range e.keys() {
		if strings.Contains(k, "@daily-2026-01-01") || strings.Contains(k, "@daily-2026-01-02") {
			t.Errorf("fleet prune left %s", k)
		}
	}
	checkStatus(status(), 5, map[string]int{"web1": 3, "web2": 3})

	// Each host's next backup works and takes the admin's removals.
	for _, h := range []*fleetHost{w1, w2} {
		e.daily(h.ds, 6)
		if r := e.hostRun(h, h.creds, "backup"); r.code != 0 {
			t.Fatalf("backup on %s after the fleet prune: exit %d\nstdout: %s\nstderr: %s", h.name, r.code, r.stdout, r.stderr)
		}
		wantNow := append(slices.Clone(want[h.name]), snapOf(h.ds, 5)+" -> "+snapOf(h.ds, 6))
		slices.Sort(wantNow)
		if got := e.hostLedger(h); !slices.Equal(got, wantNow) {
			t.Errorf("%s's ledger after its next backup: %v, want %v", h.name, got, wantNow)
		}
		e.checkHostConsistent(h)
	}
	checkStatus(status(), 6, map[string]int{"web1": 4, "web2": 4})
}

// TestFleetHostBackupRacesAdminPrune races a host's backup against the
// admin's fleet prune of the same prefix, round after round: both write
// the host's journal, and neither may lose the other's change. In the
// end no edge is lost, no object is stray, the host's ledger is the
// bucket's, and the host has picked up every removal.
func TestFleetHostBackupRacesAdminPrune(t *testing.T) {
	e := newFleetEnv(t)
	w1 := e.addFleetHost("web1", e.a)
	adminCfg := filepath.Join(t.TempDir(), "admin.yaml")
	if err := os.WriteFile(adminCfg, []byte(`
prefix: "fleet/{host}"
defaults:
  time_format: "daily-%Y-%m-%d"
  keep: {last: 2}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	adminState := t.TempDir()
	for d := 1; d <= 3; d++ {
		e.daily(w1.ds, d)
	}
	if r := e.hostRun(w1, w1.creds, "backup"); r.code != 0 {
		t.Fatalf("first backup: exit %d: %s", r.code, r.stderr)
	}
	const rounds = 5
	last, merges := 3, 0
	for round := 0; round < rounds; round++ {
		last++
		e.daily(w1.ds, last)
		var wg sync.WaitGroup
		var host, admin result
		wg.Add(2)
		go func() { defer wg.Done(); host = e.hostRun(w1, w1.creds, "backup", "-v") }()
		go func() { defer wg.Done(); admin = e.adminRun(adminCfg, adminState, "fleet", "prune", "-v") }()
		wg.Wait()
		if host.code != 0 {
			t.Errorf("round %d: host backup: exit %d\nstderr: %s", round, host.code, host.stderr)
		}
		if admin.code != 0 {
			t.Errorf("round %d: admin fleet prune: exit %d\nstdout: %s\nstderr: %s", round, admin.code, admin.stdout, admin.stderr)
		}
		if t.Failed() {
			t.FailNow()
		}
		for who, r := range map[string]result{"host": host, "admin": admin} {
			if strings.Contains(r.stderr, "merged another machine's change") {
				merges++
				t.Logf("round %d: the %s merged the other's journal entries", round, who)
			}
		}
	}
	t.Logf("%d merges in %d rounds", merges, rounds)
	// A last prune without a race, then the host's next run.
	if r := e.adminRun(adminCfg, adminState, "fleet", "prune"); r.code != 0 {
		t.Fatalf("final fleet prune: exit %d: %s", r.code, r.stderr)
	}
	if r := e.hostRun(w1, w1.creds, "backup"); r.code != 0 {
		t.Fatalf("host backup after the races: exit %d: %s", r.code, r.stderr)
	}
	// keep last 2 with a full every 2 days: the newest two days stay
	// restorable, with the chain links they need, and nothing older.
	st := e.checkHostConsistent(w1)
	stored := map[string]bool{}
	for _, d := range st.Datasets {
		for _, ed := range d.Edges {
			stored[ed.Snapshot] = true
		}
	}
	for _, d := range []int{last - 1, last} {
		if !stored[snapOf(w1.ds, d)] {
			t.Errorf("day %d, kept by the rules, is not stored after the races: %v", d, e.hostLedger(w1))
		}
	}
	for d := 1; d < last-2; d++ {
		if stored[snapOf(w1.ds, d)] {
			t.Errorf("day %d is still stored after the final prune: %v", d, e.hostLedger(w1))
		}
	}
	// The admin's view is the host's.
	r := e.adminRun(adminCfg, adminState, "fleet", "status", "--json")
	var fs backup.FleetStatus
	if err := json.Unmarshal([]byte(r.stdout), &fs); err != nil || len(fs.Hosts) != 1 || len(fs.Hosts[0].Datasets) != 1 ||
		fs.Hosts[0].Datasets[0].Newest != snapOf(w1.ds, last) || len(fs.Hosts[0].Problems) != 0 {
		t.Errorf("fleet status after the races: %v %+v\nstderr: %s", err, fs, r.stderr)
	}
	// Restoring the newest works from the host.
	if r := e.hostRun(w1, w1.creds, "restore", snapOf(w1.ds, last), "--into", e.a+"/restored"); r.code != 0 {
		t.Errorf("restore of day %d: exit %d: %s", last, r.code, r.stderr)
	}
}
