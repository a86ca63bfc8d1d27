package main

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/zfs2s3/zfs2s3/internal/testbed"
	"github.com/zfs2s3/zfs2s3/ledger"
)

// fleetEnv is one bucket shared by a fleet: a config whose prefix holds
// {host}, MinIO users made with the policies zfs2s3 policy prints, and the
// environment of each role.
type fleetEnv struct {
	*backupEnv
	host, admin []string // credentials of host web1 and of the admin
}

const fleetPrefix = "fleet/web1/"

func newFleetEnv(t *testing.T) *fleetEnv {
	e := &fleetEnv{backupEnv: &backupEnv{env: newEnv(t, "fleet")}}
	e.a = e.ds
	e.config = filepath.Join(t.TempDir(), "config.yaml")
	// A new full every 2 days of snapshot time, keep the last 2: prune
	// then removes whole chains without needing a bypass.
	e.writeConfig(fmt.Sprintf(`
prefix: "fleet/{host}"
host: web1
defaults:
  snapshots: "daily-*"
  time_format: "daily-%%Y-%%m-%%d"
datasets:
  %q:
    full_every: 2d
    keep: {last: 2}
`, e.a))
	mc, err := testbed.NewMC(&bed.minio.S3, t.TempDir())
	testbed.Require(t, "mc (MinIO's client, make deps installs it)", err)
	for _, role := range []struct {
		user string
		args []string
	}{
		{"web1", []string{"policy", "host", "web1", "--store", "minio"}},
		{"fleetadmin", []string{"policy", "admin", "--store", "minio"}},
	} {
		r := e.runWith(nil, role.args...)
		if r.code != 0 {
			t.Fatalf("zfs2s3 %v: exit %d: %s", role.args, r.code, r.stderr)
		}
		if err := mc.AddUser(fmt.Sprintf("%s-%s", role.user, e.bucket), "secret-"+role.user, []byte(r.stdout)); err != nil {
			t.Fatal(err)
		}
	}
	e.host = creds(fmt.Sprintf("web1-%s", e.bucket), "secret-web1")
	e.admin = creds(fmt.Sprintf("fleetadmin-%s", e.bucket), "secret-fleetadmin")
	return e
}

func creds(user, secret string) []string {
	return []string{"AWS_ACCESS_KEY_ID=" + user, "AWS_SECRET_ACCESS_KEY=" + secret}
}

// as runs zfs2s3 with the config and the credentials of a role.
func (e *fleetEnv) as(role []string, args ...string) result {
	e.t.Helper()
	return e.runWith(role, args...)
}

// startAs starts zfs2s3 in the background, with the config, a role's
// credentials and the env's current endpoint.
func (e *fleetEnv) startAs(role []string, args ...string) (*bytesCmd, error) {
	c := e.cmd(args...)
	c.Env = append(c.Env, "ZFS2S3_CONFIG="+e.config)
	c.Env = append(c.Env, role...)
	bc := &bytesCmd{cmd: c}
	c.Stderr = &bc.stderr
	return bc, c.Start()
}

// fleetLedger is the host's local ledger under its prefix.
func (e *fleetEnv) fleetLedger(stateDir string) []string {
	e.t.Helper()
	l, err := ledger.OpenStore(stateDir, e.bucket, fleetPrefix).Load(e.bucket, fleetPrefix)
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

// killUpload starts an upload as role through a proxy that slows parts,
// and kill -9s it once its state file records one part.
func (e *fleetEnv) killUpload(role []string, args ...string) {
	e.t.Helper()
	p := testbed.StartProxy(e.t, bed.minio.Endpoint)
	p.SetRule(func(r *http.Request) testbed.Fault {
		if testbed.IsUploadPart(r) {
			return testbed.Fault{Delay: 300 * time.Millisecond}
		}
		return testbed.Fault{}
	})
	e.endpoint = p.URL
	defer func() { e.endpoint = bed.minio.Endpoint }()
	bc, err := e.startAs(role, args...)
	if err != nil {
		e.t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- bc.cmd.Wait() }()
	for {
		select {
		case err := <-done:
			e.t.Fatalf("%v ended (%v) before it could be killed: %s", args, err, bc.stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
		if st := e.stateFiles(); len(st) == 1 && partsDone(st[0]) >= 1 {
			bc.cmd.Process.Signal(syscall.SIGKILL)
			<-done
			return
		}
	}
}

// TestFleetHostAndAdminRoles: a backup host holding the credentials of
// zfs2s3 policy host adds backups, resumes and aborts uploads, but cannot
// delete (remove and prune refuse up front and change nothing) nor touch
// another host's prefix; the admin's credentials prune the host's prefix.
func TestFleetHostAndAdminRoles(t *testing.T) {
	e := newFleetEnv(t)
	for d := 1; d <= 4; d++ {
		e.daily(e.a, d)
	}
	// backup from the config, as host web1: its keys go under fleet/web1/.
	r := e.as(e.host, "backup")
	if r.code != 0 {
		t.Fatalf("host backup: exit %d: %s", r.code, r.stderr)
	}
	want := chainOf(e.a, days(1, 4), 3)
	slices.Sort(want)
	if got := e.fleetLedger(e.stateDir); !slices.Equal(got, want) {
		t.Fatalf("after the host's backup the ledger has %v, want %v", got, want)
	}
	for _, k := range e.keys() {
		if !strings.HasPrefix(k, fleetPrefix) {
			t.Errorf("key %s outside the host's prefix %s", k, fleetPrefix)
		}
	}

	// resume_upload after a kill -9, as the host.
	e.writeBig(e.a, "big5.bin", 20)
	d5 := e.snapNamed(e.a, "daily-2026-01-05")
	e.writeBig(e.a, "big6.bin", 20)
	d6 := e.snapNamed(e.a, "daily-2026-01-06")
	d4 := e.a + "@daily-2026-01-04"
	e.killUpload(e.host, "upload", d5, "-i", d4, "--part-size", "5MiB", "--concurrency", "1")
	if r := e.as(e.host, "resume_upload"); r.code != 0 || !strings.Contains(r.stdout, "stored "+d4+" -> "+d5) {
		t.Fatalf("host resume_upload: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	// abort_upload after a kill -9, as the host: nothing left behind.
	e.killUpload(e.host, "upload", d6, "-i", d5, "--part-size", "5MiB", "--concurrency", "1")
	if r := e.as(e.host, "abort_upload", d6); r.code != 0 || !strings.Contains(r.stdout, "aborted upload of "+d5+" -> "+d6) {
		t.Fatalf("host abort_upload: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	if n := e.multipartUploads(); n != 0 {
		t.Errorf("%d multipart uploads left after the host's abort_upload", n)
	}
	if n := len(e.stateFiles()); n != 0 {
		t.Errorf("%d upload state files left after the host's abort_upload", n)
	}

	// Reading needs no delete either: status, verify (reading the data)
	// and restore, as the host.
	for _, args := range [][]string{{"status"}, {"verify", "--read-data"},
		{"restore", d5, "--into", e.a + "/restored"}} {
		if r := e.as(e.host, args...); r.code != 0 {
			t.Errorf("host %v: exit %d\nstderr: %s", args, r.code, r.stderr)
		}
	}

	// abort_upload of an upload the store completed but never recorded:
	// its object cannot be deleted with host credentials, which is a
	// warning, not a failure; the object stays for the admin side.
	p := testbed.StartProxy(t, bed.minio.Endpoint)
	p.SetRule(func(r *http.Request) testbed.Fault { return testbed.Fault{Hang: testbed.IsComplete(r)} })
	e.endpoint = p.URL
	bc, err := e.startAs(e.host, "upload", d6, "-i", d5, "--part-size", "5MiB")
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Hung:
	case <-time.After(time.Minute):
		t.Fatalf("CompleteMultipartUpload never happened: %s", bc.stderr.String())
	}
	bc.cmd.Process.Signal(syscall.SIGKILL)
	bc.cmd.Wait()
	p.SetRule(nil)
	e.endpoint = bed.minio.Endpoint
	r = e.as(e.host, "abort_upload", d6)
	if r.code != 0 || !strings.Contains(r.stderr, "cannot delete (AccessDenied), so it stays in the bucket") {
		t.Errorf("host abort_upload after a completion: exit %d, stderr %q; want exit 0 and the warning", r.code, r.stderr)
	}
	if n := len(e.stateFiles()); n != 0 {
		t.Errorf("%d upload state files left after the host's abort_upload", n)
	}
	stray := 0
	for _, k := range e.keys() {
		if strings.Contains(k, "/daily-2026-01-06@") {
			stray++
		}
	}
	if stray != 1 {
		t.Errorf("%d objects of the aborted 5 -> 6 upload in the bucket, want the 1 the host could not delete", stray)
	}

	// remove and prune, as the host: refused before anything changes.
	edgesBefore, keysBefore := e.fleetLedger(e.stateDir), e.keys()
	ledgerFile := e.ledgerBytes()
	for _, args := range [][]string{
		{"remove", e.a + "@daily-2026-01-02", "-i", e.a + "@daily-2026-01-01"},
		{"prune"},
		{"consolidate", e.a + "@daily-2026-01-03", e.a + "@daily-2026-01-05"},
	} {
		r := e.as(e.host, args...)
		wantMsg := fmt.Sprintf("these credentials cannot delete objects under s3://%s/%s (AccessDenied): run %s from the admin side with credentials that may delete (see zfs2s3 policy admin)", e.bucket, fleetPrefix, args[0])
		if r.code != 1 || !strings.Contains(r.stderr, wantMsg) {
			t.Errorf("host %v: exit %d, stderr %q; want exit 1 and %q", args, r.code, r.stderr, wantMsg)
		}
		if n := strings.Count(strings.TrimSpace(r.stderr), "\n"); n > 0 {
			t.Errorf("host %v: error is %d lines, want one: %s", args, n+1, r.stderr)
		}
	}
	if got := e.fleetLedger(e.stateDir); !slices.Equal(got, edgesBefore) {
		t.Errorf("the host's refused remove/prune changed the ledger: %v, was %v", got, edgesBefore)
	}
	if got := e.keys(); !slices.Equal(got, keysBefore) {
		t.Errorf("the host's refused remove/prune changed the bucket: %v, was %v", got, keysBefore)
	}
	if !bytes.Equal(e.ledgerBytes(), ledgerFile) {
		t.Error("the host's refused remove/prune rewrote the ledger file")
	}

	// Another host's prefix, with web1's credentials: access denied, and
	// nothing written there.
	other := t.TempDir()
	r = e.as(append(e.host, "ZFS2S3_HOST=web2", "ZFS2S3_STATE_DIR="+other), "backup")
	if r.code != 1 || !strings.Contains(r.stderr, "access denied") || !strings.Contains(r.stderr, "fleet/web2/") {
		t.Errorf("host web1 backing up as web2: exit %d, stderr %q; want exit 1 and access denied on fleet/web2/", r.code, r.stderr)
	}
	for _, k := range e.keys() {
		if strings.HasPrefix(k, "fleet/web2/") {
			t.Errorf("web1's credentials wrote %s under another host's prefix", k)
		}
	}
	// Nor overwrite the web2 tree by naming its keys through --prefix.
	r = e.as(append(e.host, "ZFS2S3_STATE_DIR="+other), "upload", d4, "--prefix", "fleet/web2")
	if r.code != 1 || !strings.Contains(r.stderr, "access denied") {
		t.Errorf("host web1 uploading under fleet/web2: exit %d, stderr %q; want exit 1, access denied", r.code, r.stderr)
	}

	// The admin prunes the host's prefix from a machine of its own (an
	// empty state dir: the bucket's ledger copy is what it reads).
	adminState := t.TempDir()
	r = e.as(append(e.admin, "ZFS2S3_STATE_DIR="+adminState, "ZFS2S3_HOST=web1"), "prune")
	if r.code != 0 {
		t.Fatalf("admin prune: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	// keep last 2 keeps days 4 and 5; the admin's machine here sees the
	// pool, so prune stores a full of day 4 as the bypass that frees
	// days 1 to 3.
	got := e.fleetLedger(adminState)
	wantAfter := []string{d4 + " (full)", d4 + " -> " + d5}
	if !slices.Equal(got, wantAfter) {
		t.Errorf("after the admin's prune the ledger has %v, want %v", got, wantAfter)
	}
	for _, k := range e.keys() {
		for _, gone := range []string{"/daily-2026-01-01@", "/daily-2026-01-02@", "/daily-2026-01-03@"} {
			if strings.Contains(k, gone) {
				t.Errorf("admin prune left %s", k)
			}
		}
	}

	// The host picks up the prune on its next backup: the admin's
	// journal entries are merged into its ledger.
	r = e.as(e.host, "backup")
	if r.code != 0 {
		t.Errorf("host backup after the admin's prune: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	got = e.fleetLedger(e.stateDir)
	for _, w := range wantAfter {
		if !slices.Contains(got, w) {
			t.Errorf("after the host's next backup its ledger has %v, want the admin's %s", got, w)
		}
	}
	for _, ed := range got {
		if strings.Contains(ed, "2026-01-01") || strings.Contains(ed, "2026-01-02") || strings.Contains(ed, "2026-01-03") {
			t.Errorf("after the host's next backup its ledger still has %s, which the admin pruned", ed)
		}
	}
	// A ledger rebuild with host credentials gives the same, and backups
	// go on.
	afterBackup := got
	r = e.as(e.host, "ledger", "rebuild")
	if r.code != 0 {
		t.Fatalf("host ledger rebuild: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	// The rebuild also recovers 5 -> 6 from the object the host could not
	// delete: its bytes prove a complete stream.
	wantRebuilt := append(slices.Clone(afterBackup), d5+" -> "+d6)
	slices.Sort(wantRebuilt)
	if got := e.fleetLedger(e.stateDir); !slices.Equal(got, wantRebuilt) {
		t.Errorf("after the host's rebuild its ledger has %v, want the admin's and the recovered edge %v", got, wantRebuilt)
	}
	e.daily(e.a, 7)
	if r = e.as(e.host, "backup"); r.code != 0 || !strings.Contains(r.stdout, "daily-2026-01-07") {
		t.Errorf("host backup after its rebuild: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
}

// writeBig adds mb MiB of random data to ds, so that its next incremental
// takes several parts.
func (e *fleetEnv) writeBig(ds, name string, mb int) {
	e.t.Helper()
	mnt, err := testbed.Mountpoint(ds)
	if err != nil {
		e.t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(mnt, name))
	if err != nil {
		e.t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for i := 0; i < mb; i++ {
		for j := range buf {
			buf[j] = byte(i*7919 + j*31 + j>>8)
		}
		if _, err := f.Write(buf); err != nil {
			e.t.Fatal(err)
		}
	}
}

// ledgerBytes is the host's ledger file as it is on disk.
func (e *fleetEnv) ledgerBytes() []byte {
	e.t.Helper()
	b, err := os.ReadFile(ledger.OpenStore(e.stateDir, e.bucket, fleetPrefix).Path())
	if err != nil {
		e.t.Fatal(err)
	}
	return b
}

// bytesCmd is a zfs2s3 process started in the background.
type bytesCmd struct {
	cmd    *exec.Cmd
	stderr bytes.Buffer
}
