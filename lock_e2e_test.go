package main

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/zfs2s3/zfs2s3/backup"
	"github.com/zfs2s3/zfs2s3/internal/testbed"
	"github.com/zfs2s3/zfs2s3/ledger"
	"github.com/zfs2s3/zfs2s3/s3up"
)

// createLockedBucket makes a bucket with Object Lock enabled, as
// `aws s3api create-bucket --object-lock-enabled-for-bucket` does.
func (e *env) createLockedBucket(name string) {
	e.t.Helper()
	_, err := e.server().Client().CreateBucket(context.Background(), &s3.CreateBucketInput{
		Bucket: aws.String(name), ObjectLockEnabledForBucket: aws.Bool(true)})
	if err != nil {
		e.t.Fatal(err)
	}
}

// head is HeadObject on the test's bucket, with the lock headers.
func (e *env) head(key string) *s3.HeadObjectOutput {
	e.t.Helper()
	out, err := e.server().Client().HeadObject(context.Background(), &s3.HeadObjectInput{Bucket: &e.bucket, Key: &key})
	if err != nil {
		e.t.Fatalf("head %s: %v", key, err)
	}
	return out
}

// deleteMarkers counts the bucket's delete markers: a DELETE of a locked
// object on a versioned bucket succeeds by adding one, and hides the
// object while its bytes stay.
func (e *env) deleteMarkers() int {
	e.t.Helper()
	out, err := e.server().Client().ListObjectVersions(context.Background(), &s3.ListObjectVersionsInput{Bucket: &e.bucket})
	if err != nil {
		e.t.Fatal(err)
	}
	n := 0
	for _, m := range out.DeleteMarkers {
		if !strings.HasSuffix(aws.ToString(m.Key), "delete-permission-probe") {
			n++
		}
	}
	return n
}

func TestObjectLock(t *testing.T) {
	e := pruneEnv(t, "lock", "{last: 1}")
	day := func(d int) string { return dayName(e.a, time.Date(2026, 1, d, 0, 0, 0, 0, time.Local)) }
	e.dailies(time.Date(2026, 1, 1, 0, 0, 0, 0, time.Local), time.Date(2026, 1, 3, 0, 0, 0, 0, time.Local))

	t.Run("a bucket without object lock: exit 2, nothing uploaded", func(t *testing.T) {
		e.t = t
		for _, args := range [][]string{{"backup", "--lock-days", "1"}, {"upload", day(1), "--lock-days", "1"}} {
			r := e.runWith(nil, args...)
			if r.code != 2 || !strings.Contains(r.stderr, "bucket "+e.bucket+" was not created with object lock") ||
				!strings.Contains(r.stderr, "nothing was uploaded") || strings.Count(strings.TrimSpace(r.stderr), "\n") > 0 {
				t.Errorf("%v: exit %d, want 2 with one line naming the bucket\nstderr: %s", args, r.code, r.stderr)
			}
		}
		// lock_days in the config is the same refusal.
		cfg := e.config
		e.config = cfg + ".lock"
		e.writeConfig("lock_days: 1\nlock_mode: compliance\ndatasets:\n  \"" + e.a + "\": {snapshots: \"daily-*\"}\n")
		if r := e.runWith(nil, "backup"); r.code != 2 || !strings.Contains(r.stderr, "was not created with object lock") {
			t.Errorf("backup with lock_days: 1: exit %d, want 2\nstderr: %s", r.code, r.stderr)
		}
		e.config = cfg
		if k := e.keys(); len(k) != 0 {
			t.Errorf("objects in the bucket after the refusals: %v", k)
		}
		if n := e.multipartUploads(); n != 0 {
			t.Errorf("%d multipart uploads after the refusals", n)
		}
		if n := len(e.stateFiles()); n != 0 {
			t.Errorf("%d upload state files after the refusals", n)
		}
	})

	e.bucket += "-locked"
	e.createLockedBucket(e.bucket)
	var until time.Time // d3 -> d4's retain-until date, as the store has it
	t.Run("backup --lock-days 1 stores objects and manifest with retention", func(t *testing.T) {
		e.t = t
		if r := e.runWith(nil, "backup"); r.code != 0 {
			t.Fatalf("backup: exit %d: %s", r.code, r.stderr)
		}
		e.snapNamed(e.a, "daily-2026-01-04")
		before := time.Now()
		if r := e.runWith(nil, "backup", "--lock-days", "1"); r.code != 0 {
			t.Fatalf("backup --lock-days 1: exit %d: %s", r.code, r.stderr)
		}
		after := time.Now()
		e.snapNamed(e.a, "daily-2026-01-05")
		if r := e.runWith(nil, "backup"); r.code != 0 {
			t.Fatalf("backup: exit %d: %s", r.code, r.stderr)
		}
		key := e.edgeKey(day(4), day(3))
		for _, k := range []string{key, s3up.ManifestKey(key)} {
			h := e.head(k)
			if h.ObjectLockMode != types.ObjectLockModeGovernance || h.ObjectLockRetainUntilDate == nil {
				t.Fatalf("%s: lock mode %q, until %v; want GOVERNANCE for a day", k, h.ObjectLockMode, h.ObjectLockRetainUntilDate)
			}
			u := h.ObjectLockRetainUntilDate.UTC()
			if u.Before(before.Add(24*time.Hour).Add(-time.Second)) || u.After(after.Add(24*time.Hour).Add(time.Second)) {
				t.Errorf("%s: retained until %v, want a day after the upload (%v to %v)", k, u, before, after)
			}
			if u.After(until) { // an edge's lock is its objects' and manifest's latest
				until = u
			}
		}
		for _, k := range []string{e.edgeKey(day(5), day(4)), s3up.ManifestKey(e.edgeKey(day(5), day(4))), e.edgeKey(day(3), day(2))} {
			if h := e.head(k); h.ObjectLockMode != "" || h.ObjectLockRetainUntilDate != nil {
				t.Errorf("%s was uploaded without --lock-days but is locked: %q until %v", k, h.ObjectLockMode, h.ObjectLockRetainUntilDate)
			}
		}
		for _, k := range e.keys() {
			if strings.HasPrefix(k, ".zfs2s3/") {
				if h := e.head(k); h.ObjectLockMode != "" {
					t.Errorf("the ledger copy %s is locked (%q): it must stay rewritable", k, h.ObjectLockMode)
				}
			}
		}
	})
	date := until.Format("2006-01-02 15:04:05Z")
	if until.Equal(until.Truncate(24 * time.Hour)) {
		date = until.Format("2006-01-02")
	}
	lockText := "locked until " + date + " (governance)"

	t.Run("verify shows the lock", func(t *testing.T) {
		e.t = t
		r := e.runWith(nil, "verify", "--json")
		if r.code != 0 {
			t.Fatalf("verify --json: exit %d: %s", r.code, r.stderr)
		}
		var rep backup.VerifyReport
		if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
			t.Fatalf("verify --json: %v\n%s", err, r.stdout)
		}
		locked := 0
		for _, c := range rep.Edges {
			switch {
			case c.Edge == day(3)+" -> "+day(4):
				locked++
				if c.Lock == nil || c.Lock.Mode != "governance" || !c.Lock.Until.Equal(until) || !c.Lock.Active {
					t.Errorf("verify --json: lock of %s is %+v, want governance until %v, active", c.Edge, c.Lock, until)
				}
			case c.Lock != nil:
				t.Errorf("verify --json: %s has lock %+v, it was uploaded without", c.Edge, c.Lock)
			}
		}
		if locked != 1 {
			t.Errorf("verify --json lists the locked edge %d times:\n%s", locked, r.stdout)
		}
		r = e.runWith(nil, "verify")
		if want := "ok   " + day(3) + " -> " + day(4) + " (" + lockText + ")"; r.code != 0 || !strings.Contains(r.stdout, want) {
			t.Errorf("verify: exit %d, output lacks %q:\n%s", r.code, want, r.stdout)
		}
	})

	// {last: 1} keeps d5 alone: prune uploads d5 (full) and would remove
	// every other edge. d3 -> d4 is locked, and the ledger's rule keeps
	// d3 restorable while it stays: d1 (full), d1 -> d2 and d2 -> d3 stay
	// too. d4 -> d5 goes.
	gone := day(4) + " -> " + day(5)
	stays := []string{day(3) + " -> " + day(4), day(2) + " -> " + day(3), day(1) + " -> " + day(2), day(1) + " (full)"}
	t.Run("prune keeps the locked edge and what it needs, and says until when", func(t *testing.T) {
		e.t = t
		r := e.runWith(nil, "prune", "--dry-run")
		if r.code != 0 {
			t.Fatalf("prune --dry-run: exit %d: %s", r.code, r.stderr)
		}
		for _, want := range []string{"kept " + stays[0] + ": " + lockText, "kept " + stays[1] + ": needed by " + stays[0], "would remove " + gone} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("prune --dry-run output lacks %q:\n%s", want, r.stdout)
			}
		}
		if n := strings.Count(r.stdout, "would remove"); n != 1 {
			t.Errorf("prune --dry-run would remove %d edges, want 1:\n%s", n, r.stdout)
		}
		r = e.runWith(nil, "prune", "--json")
		if r.code != 0 {
			t.Fatalf("prune --json: exit %d: %s", r.code, r.stderr)
		}
		var rep backup.PruneReport
		if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil || len(rep.Datasets) != 1 {
			t.Fatalf("prune --json: %v\n%s", err, r.stdout)
		}
		d := rep.Datasets[0]
		var kept, removed []string
		for _, k := range d.Locked {
			kept = append(kept, k.Edge)
			if k.Edge != stays[0] {
				if k.Lock != nil || !strings.HasPrefix(k.Why, "needed by ") {
					t.Errorf("prune --json: %s is kept for the locked edge, but its entry is %+v", k.Edge, k)
				}
				continue
			}
			if l := k.Lock; l == nil || l.Mode != "governance" || !l.Until.Equal(until) || !l.Active || k.Why != lockText {
				t.Errorf("prune --json: the locked edge's entry is %+v (lock %+v), want %q", k, l, lockText)
			}
		}
		for _, p := range d.Removed {
			removed = append(removed, p.Edge)
		}
		if strings.Join(sortedCopy(kept), "|") != strings.Join(sortedCopy(stays), "|") || strings.Join(removed, "|") != gone {
			t.Errorf("prune --json: locked %v removed %v; want locked %v removed [%s]", kept, removed, stays, gone)
		}
		want := append([]string{day(5) + " (full)"}, stays...)
		got := e.edges()
		if strings.Join(sortedCopy(want), "|") != strings.Join(got, "|") {
			t.Errorf("ledger after prune: %v, want %v", got, sortedCopy(want))
		}
		if n := e.deleteMarkers(); n != 1+1 { // d4 -> d5's object and manifest
			t.Errorf("%d delete markers after prune, want 2 (d4 -> d5's object and manifest)", n)
		}
	})

	t.Run("remove of a locked edge refuses with the date, nothing changed", func(t *testing.T) {
		e.t = t
		before, markers := e.snapshotState(), e.deleteMarkers()
		e.fails(3, "remove "+stays[0]+": refused, its objects are "+lockText, "remove", day(4), "-i", day(3))
		if after := e.snapshotState(); after != before {
			t.Errorf("the refused remove changed state:\nbefore %s\nafter  %s", before, after)
		}
		if n := e.deleteMarkers(); n != markers {
			t.Errorf("the refused remove left %d delete markers, there were %d", n, markers)
		}
		for _, ed := range e.ledger().Edges {
			if ed.Removing {
				t.Errorf("%s is marked as being removed", ed)
			}
		}
		// An edge without a lock on the same bucket still goes.
		key := e.edgeKey(day(5), "")
		e.ok("remove", day(5))
		if slices.Contains(e.keys(), key) {
			t.Errorf("remove %s (full), which has no lock, left its object", day(5))
		}
	})
}

func sortedCopy(s []string) []string {
	c := slices.Clone(s)
	slices.Sort(c)
	return c
}

// TestObjectLockFleet: with the policies zfs2s3 policy prints, a backup
// host stores locked objects, and the admin's prune, whose HEADs would not
// show the lock without s3:GetObjectRetention, keeps the locked edge.
func TestObjectLockFleet(t *testing.T) {
	e := &fleetEnv{backupEnv: &backupEnv{env: newEnv(t, "lockfleet")}}
	e.a = e.ds
	e.bucket += "-locked"
	e.createLockedBucket(e.bucket)
	e.config = filepath.Join(t.TempDir(), "config.yaml")
	e.writeConfig(fmt.Sprintf(`
prefix: "fleet/{host}"
host: web1
defaults:
  snapshots: "daily-*"
  time_format: "daily-%%Y-%%m-%%d"
datasets:
  %q:
    keep: {last: 1}
`, e.a))
	mc, err := testbed.NewMC(&bed.minio.S3, t.TempDir())
	testbed.Require(t, "mc (MinIO's client, make deps installs it)", err)
	for _, role := range []struct{ user, kind string }{{"web1", "host"}, {"fleetadmin", "admin"}} {
		args := []string{"policy", role.kind, "--store", "minio"}
		if role.kind == "host" {
			args = []string{"policy", "host", "web1", "--store", "minio"}
		}
		r := e.runWith(nil, args...)
		if r.code != 0 {
			t.Fatalf("zfs2s3 %v: exit %d: %s", args, r.code, r.stderr)
		}
		if err := mc.AddUser(role.user+"-"+e.bucket, "secret-"+role.user, []byte(r.stdout)); err != nil {
			t.Fatal(err)
		}
	}
	e.host = creds("web1-"+e.bucket, "secret-web1")
	e.admin = creds("fleetadmin-"+e.bucket, "secret-fleetadmin")
	day := func(d int) string { return fmt.Sprintf("%s@daily-2026-01-%02d", e.a, d) }

	e.daily(e.a, 1)
	if r := e.as(e.host, "backup", "--lock-days", "1"); r.code != 0 {
		t.Fatalf("host: backup --lock-days 1: exit %d: %s", r.code, r.stderr)
	}
	e.daily(e.a, 2)
	e.daily(e.a, 3)
	if r := e.as(e.host, "backup"); r.code != 0 {
		t.Fatalf("host: backup: exit %d: %s", r.code, r.stderr)
	}
	l, err := ledger.OpenStore(e.stateDir, e.bucket, fleetPrefix).Load(e.bucket, fleetPrefix)
	if err != nil {
		t.Fatal(err)
	}
	var key string
	for _, ed := range l.Edges {
		if ed.Target.Name == day(1) {
			key = ed.Key
		}
	}
	if h := e.head(key); h.ObjectLockMode != types.ObjectLockModeGovernance {
		t.Fatalf("the host's locked upload %s has lock mode %q, want GOVERNANCE", key, h.ObjectLockMode)
	}
	if r := e.as(e.host, "verify"); r.code != 0 || !strings.Contains(r.stdout, "ok   "+day(1)+" (full) (locked until ") {
		t.Errorf("host: verify: exit %d, the locked edge's line lacks its lock:\n%s\n%s", r.code, r.stdout, r.stderr)
	}

	// The admin prunes from a machine of its own: keep last 1 keeps day 3
	// (a bypass full of it, since this machine sees the pool) and would
	// remove day 1 (full), which is locked.
	r := e.as(append(e.admin, "ZFS2S3_STATE_DIR="+t.TempDir(), "ZFS2S3_HOST=web1"), "prune")
	if r.code != 0 || !strings.Contains(r.stdout, "kept "+day(1)+" (full): locked until ") {
		t.Fatalf("admin: prune: exit %d, want the locked edge kept\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	if !slices.Contains(e.keys(), key) {
		t.Errorf("the locked object %s is gone from the listing after the admin's prune", key)
	}
	if n := e.deleteMarkers(); n != 4 { // d1 -> d2 and d2 -> d3: object and manifest each
		t.Errorf("%d delete markers after the admin's prune, want 4 (two edges' objects and manifests)", n)
	}
}
