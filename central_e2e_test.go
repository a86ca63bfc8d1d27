package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/zfs2s3/zfs2s3/backup"
	"github.com/zfs2s3/zfs2s3/central"
	"github.com/zfs2s3/zfs2s3/ledger"
)

const centralKey = "fleet/.zfs2s3-policy.yaml"

// setPolicy stores text as the fleet policy with the admin's credentials.
func (e *fleetEnv) setPolicy(text string) {
	e.t.Helper()
	file := filepath.Join(e.t.TempDir(), "policy.yaml")
	if err := os.WriteFile(file, []byte(text), 0o600); err != nil {
		e.t.Fatal(err)
	}
	if r := e.as(e.admin, "fleet", "policy", "set", file); r.code != 0 || !strings.Contains(r.stdout, "stored the fleet policy at s3://"+e.bucket+"/"+centralKey) {
		e.t.Fatalf("admin fleet policy set: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
}

// streamKeys are the bucket's keys under the host's prefix other than its
// ledger: what an upload leaves.
func (e *fleetEnv) streamKeys() []string {
	var s []string
	for _, k := range e.keys() {
		if strings.HasPrefix(k, fleetPrefix) && !strings.Contains(k, ".zfs2s3/") {
			s = append(s, k)
		}
	}
	return s
}

// TestCentralPolicy: the admin stores a fleet policy that host web1 reads
// and obeys but cannot overwrite: a host without the required recipient
// uploads nothing, with it uploads encrypted; over its quota it refuses a
// new full with a clear message while an incremental still goes; prune
// takes the central keep rules over the host config's.
func TestCentralPolicy(t *testing.T) {
	e := newFleetEnv(t)
	identity, rcpt := ageKey(t)
	for d := 1; d <= 2; d++ {
		e.daily(e.a, d)
	}

	// No policy object: hosts follow their configs, and show says so.
	if r := e.as(e.admin, "fleet", "policy", "show"); r.code != 0 || !strings.Contains(r.stdout, "no fleet policy at s3://"+e.bucket+"/"+centralKey) {
		t.Errorf("show without a policy: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	// A damaged file is refused before anything is stored.
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte("version: 1\ndefaults: {qouta: 1GiB}\n"), 0o600)
	if r := e.as(e.admin, "fleet", "policy", "set", bad); r.code != 2 || !strings.Contains(r.stderr, "qouta") || !strings.Contains(r.stderr, "nothing was stored") {
		t.Errorf("set of a damaged policy: exit %d, stderr %q; want exit 2 naming qouta", r.code, r.stderr)
	}
	if slices.Contains(e.keys(), centralKey) {
		t.Fatal("a refused policy was stored")
	}

	policy := fmt.Sprintf("version: 1\ndefaults:\n  keep: {last: 1}\n  recipients: [%s]\nhosts:\n  web1:\n    quota: 1GiB\n", rcpt)
	e.setPolicy(policy)
	r := e.as(e.admin, "fleet", "policy", "show", "--for", "web1")
	if r.code != 0 || !strings.Contains(r.stdout, "quota: 1GiB") || !strings.Contains(r.stdout, rcpt) || !strings.Contains(r.stdout, "last: 1") {
		t.Errorf("show --for web1: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}

	// The host cannot overwrite the policy object: AccessDenied, and it
	// stays as the admin wrote it.
	lax := filepath.Join(t.TempDir(), "lax.yaml")
	os.WriteFile(lax, []byte("version: 1\n"), 0o600)
	r = e.as(e.host, "fleet", "policy", "set", lax)
	if r.code != 1 || !strings.Contains(strings.ToLower(r.stderr), "access denied") {
		t.Errorf("host fleet policy set: exit %d, stderr %q; want exit 1, access denied", r.code, r.stderr)
	}
	if got := e.object(centralKey); string(got) != policy {
		t.Fatalf("the host changed the policy object to %q", got)
	}

	// Without the required recipient: refused before any upload, by
	// backup (exit 1, as any dataset that fails) and upload (exit 2).
	want := fmt.Sprintf("the fleet policy (s3://%s/%s) requires encryption to %s; this upload would be unencrypted", e.bucket, centralKey, rcpt)
	r = e.as(e.host, "backup")
	if r.code != 1 || !strings.Contains(r.stderr, want) || !strings.Contains(r.stderr, "nothing was uploaded") {
		t.Errorf("host backup without the recipient: exit %d, stderr %q; want exit 1 and %q", r.code, r.stderr, want)
	}
	r = e.as(e.host, "upload", e.a+"@daily-2026-01-01")
	if r.code != 2 || !strings.Contains(r.stderr, want) {
		t.Errorf("host upload without the recipient: exit %d, stderr %q; want exit 2 and %q", r.code, r.stderr, want)
	}
	// Another recipient is not enough.
	_, other := ageKey(t)
	r = e.as(e.host, "upload", e.a+"@daily-2026-01-01", "--recipient", other)
	if r.code != 2 || !strings.Contains(r.stderr, "requires encryption to "+rcpt+"; add them to recipients:") {
		t.Errorf("host upload to another recipient: exit %d, stderr %q", r.code, r.stderr)
	}
	if k := e.streamKeys(); len(k) != 0 || e.multipartUploads() != 0 || len(e.stateFiles()) != 0 {
		t.Fatalf("refused uploads left %v, %d multipart uploads, %d state files", k, e.multipartUploads(), len(e.stateFiles()))
	}

	// With it: the host's backups are encrypted to it.
	e.writeConfig(fmt.Sprintf(`
prefix: "fleet/{host}"
host: web1
recipients: [%s]
defaults:
  snapshots: "daily-*"
  time_format: "daily-%%Y-%%m-%%d"
datasets:
  %q:
    full_every: 2d
    keep: {last: 2}
`, rcpt, e.a))
	if r := e.as(e.host, "backup"); r.code != 0 {
		t.Fatalf("host backup with the recipient: exit %d\nstderr: %s", r.code, r.stderr)
	}
	l := e.web1Ledger()
	if len(l.Edges) != 2 {
		t.Fatalf("ledger after backup: %v", e.fleetLedger(e.stateDir))
	}
	for _, ed := range l.Edges {
		if !strings.Contains(ed.Transform, "age") || !slices.Contains(ed.Recipients, rcpt) {
			t.Errorf("%s stored with transform %q to %v, want age to %s", ed, ed.Transform, ed.Recipients, rcpt)
		}
	}

	// Quota: what the host stores now, and not a byte more. A new full
	// is refused, an incremental goes.
	stored := backup.StoredBytes(l)
	e.setPolicy(fmt.Sprintf("version: 1\ndefaults:\n  keep: {last: 1}\n  recipients: [%s]\nhosts:\n  web1:\n    quota: %d\n", rcpt, stored))
	d3 := e.daily(e.a, 3) // full_every 2d: the plan's next upload is a full
	keysBefore := e.streamKeys()
	wantQuota := fmt.Sprintf("host web1 stores %s of its %s quota (s3://%s/%s); a new full of about", central.Format(stored), central.Format(stored), e.bucket, centralKey)
	r = e.as(e.host, "backup")
	if r.code != 1 || !strings.Contains(r.stderr, wantQuota) || !strings.Contains(r.stderr, "would exceed it: prune, or ask the admin for more quota; nothing was uploaded") {
		t.Errorf("host backup over quota: exit %d, stderr %q; want exit 1 and %q", r.code, r.stderr, wantQuota)
	}
	r = e.as(e.host, "upload", d3)
	if r.code != 1 || !strings.Contains(r.stderr, wantQuota) {
		t.Errorf("host upload of a full over quota: exit %d, stderr %q", r.code, r.stderr)
	}
	if k := e.streamKeys(); !slices.Equal(k, keysBefore) || e.multipartUploads() != 0 || len(e.stateFiles()) != 0 {
		t.Fatalf("refused fulls left %v (was %v), %d multipart uploads, %d state files", k, keysBefore, e.multipartUploads(), len(e.stateFiles()))
	}
	d2 := e.a + "@daily-2026-01-02"
	if r := e.as(e.host, "upload", d3, "-i", d2); r.code != 0 || !strings.Contains(r.stdout, "stored "+d2+" -> "+d3) {
		t.Fatalf("host incremental over quota: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}

	// Keep rules: the central last: 1 replaces the config's last: 2, with
	// a notice. The host may plan (a dry run) but not delete.
	r = e.as(e.host, "prune", "--dry-run", "--json")
	if r.code != 0 || !strings.Contains(r.stderr, "the fleet policy sets the keep rules of host web1; the config's keep {last: 2} of "+e.a+" is ignored") {
		t.Fatalf("host prune --dry-run: exit %d\nstderr: %s", r.code, r.stderr)
	}
	var rep backup.PruneReport
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil || len(rep.Datasets) != 1 {
		t.Fatalf("prune --json: %v\n%s", err, r.stdout)
	}
	// last: 1 keeps day 3 alone; a full of day 3 is the bypass, and the
	// chain 1 -> 2 -> 3 goes.
	dr := rep.Datasets[0]
	if !slices.Equal(dr.Bypass, []string{d3 + " (full)"}) || len(dr.Removed) != 3 {
		t.Errorf("host dry run: bypass %v, removed %v; want the full of day 3 and the 3 edges of the chain", dr.Bypass, dr.Removed)
	}
	for _, p := range dr.Removed {
		if strings.HasSuffix(p.Edge, " -> "+d3) {
			continue // into the kept day 3, which the bypass restores
		}
		if !strings.Contains(p.Why, "kept by no rule of keep {last: 1}") {
			t.Errorf("%s goes because %q, want the central keep {last: 1}", p.Edge, p.Why)
		}
	}

	// The admin prunes web1 from its own machine under the same policy:
	// the bypass full is a new full too, so the admin raises the quota
	// first; the result is what the central rules keep.
	e.setPolicy(fmt.Sprintf("version: 1\ndefaults:\n  keep: {last: 1}\n  recipients: [%s]\n  quota: 1GiB\n", rcpt))
	adminState := t.TempDir()
	r = e.as(append(e.admin, "ZFS2S3_STATE_DIR="+adminState, "ZFS2S3_HOST=web1", "ZFS2S3_IDENTITY="+identity), "prune")
	if r.code != 0 {
		t.Fatalf("admin prune: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	if got, want := e.fleetLedger(adminState), []string{d3 + " (full)"}; !slices.Equal(got, want) {
		t.Errorf("after the admin's prune the ledger has %v, want %v", got, want)
	}

	// A damaged policy stops uploads: never silently ignored.
	if _, err := e.server().Client().PutObject(context.Background(), &s3.PutObjectInput{Bucket: &e.bucket, Key: aws.String(centralKey),
		Body: strings.NewReader("version: 1\ndefaults: {quota: lots}\n")}); err != nil {
		t.Fatal(err)
	}
	e.daily(e.a, 4)
	r = e.as(e.host, "upload", e.a+"@daily-2026-01-04", "-i", d3)
	if r.code != 1 || !strings.Contains(r.stderr, "the fleet policy s3://"+e.bucket+"/"+centralKey+" is damaged") || !strings.Contains(r.stderr, "bad size") {
		t.Errorf("host upload under a damaged policy: exit %d, stderr %q", r.code, r.stderr)
	}
}

// web1Ledger is web1's local ledger.
func (e *fleetEnv) web1Ledger() *ledger.Ledger {
	e.t.Helper()
	l, err := ledger.OpenStore(e.stateDir, e.bucket, fleetPrefix).Load(e.bucket, fleetPrefix)
	if err != nil {
		e.t.Fatal(err)
	}
	return l
}

// TestCentralPolicyWithoutPlaceholder: with a prefix that has no
// placeholder the policy sits in the prefix itself (here the bucket's top,
// .zfs2s3-policy.yaml); it is obeyed, and status does not count it as an
// unknown object of the tree it lies in.
func TestCentralPolicyWithoutPlaceholder(t *testing.T) {
	e := newBackupEnv(t)
	_, rcpt := ageKey(t)
	file := filepath.Join(t.TempDir(), "policy.yaml")
	os.WriteFile(file, []byte(fmt.Sprintf("version: 1\ndefaults: {recipients: [%s]}\n", rcpt)), 0o600)
	if r := e.runWith(nil, "fleet", "policy", "set", file); r.code != 0 || !strings.Contains(r.stdout, "s3://"+e.bucket+"/.zfs2s3-policy.yaml") {
		t.Fatalf("fleet policy set: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	e.daily(e.a, 1)
	if r := e.runWith(nil, "backup", e.a); r.code != 1 || !strings.Contains(r.stderr, "requires encryption to "+rcpt) {
		t.Errorf("plain backup under the policy: exit %d, stderr %q", r.code, r.stderr)
	}
	if r := e.runWith([]string{"ZFS2S3_CONFIG=" + e.config}, "backup", e.a, "--recipient", rcpt); r.code != 0 {
		t.Fatalf("encrypted backup: exit %d, stderr %s", r.code, r.stderr)
	}
	if u := e.unknownObjects(); len(u) != 0 {
		t.Errorf("status lists %v as unknown", u)
	}
}
