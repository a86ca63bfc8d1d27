package main

// End-to-end tests of restore, save, verify and status when the bucket or
// the destination is not what the ledger expects.

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/zfs2s3/zfs2s3/backup"
	"github.com/zfs2s3/zfs2s3/internal/testbed"
)

// deleteObject removes a stored object behind zfs2s3's back.
func (e *env) deleteObject(key string) {
	e.t.Helper()
	if _, err := bed.minio.Client().DeleteObject(context.Background(), &s3.DeleteObjectInput{Bucket: &e.bucket, Key: &key}); err != nil {
		e.t.Fatal(err)
	}
}

// snapshotsOf lists a dataset's snapshots, one name a line.
func snapshotsOf(t *testing.T, ds string) string {
	t.Helper()
	out, err := testbed.Run("zfs", "list", "-H", "-t", "snapshot", "-o", "name", "-r", ds)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(out)
}

// threeEdges stores a (full), a -> b and b -> c.
func threeEdges(e *env) (a, b, c string) {
	a, b, c = e.snap("a", 2), e.snap("b", 2), e.snap("c", 2)
	e.ok("upload", a)
	e.ok("upload", b, "-i", a)
	e.ok("upload", c, "-i", b)
	return a, b, c
}

func TestStatusAndVerifyCountMissingObjects(t *testing.T) {
	e := newEnv(t, "missing")
	a, b, c := threeEdges(e)
	e.deleteObject(e.edgeKey(b, a))

	var st backup.Status
	if err := json.Unmarshal([]byte(e.ok("status", "--json").stdout), &st); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		a: "",
		b: "its object is missing",
		c: "its chain needs " + a + " -> " + b + ", whose object is missing",
	}
	for _, es := range st.Datasets[0].Edges {
		if es.Restorable != (want[es.Snapshot] == "") || es.Why != want[es.Snapshot] {
			t.Errorf("status of %s: restorable %v, why %q; want why %q", es.Snapshot, es.Restorable, es.Why, want[es.Snapshot])
		}
	}
	if table := e.ok("status").stdout; !strings.Contains(table, "no: its chain needs "+a+" -> "+b) {
		t.Errorf("status table does not say why @c is not restorable:\n%s", table)
	}

	r := e.fails(1, "verify found 2 problem(s)", "verify")
	for _, line := range []string{
		"ok   " + a + " (full)",
		"BAD  " + a + " -> " + b + ": object missing",
		"BAD  " + b + " -> " + c + ": not restorable: its chain needs " + a + " -> " + b + ", whose object is missing",
	} {
		if !strings.Contains(r.stdout, line) {
			t.Errorf("verify stdout lacks %q:\n%s", line, r.stdout)
		}
	}
}

func TestRestoreChecksEveryObjectBeforeReceiving(t *testing.T) {
	e := newEnv(t, "check first")
	a, b, c := threeEdges(e)
	e.deleteObject(e.edgeKey(c, b))
	into := pool + "/" + filepath.Base(e.ds) + " restored"
	r := e.fails(1, "object "+e.edgeKey(c, b)+" of "+b+" -> "+c+" is missing from the bucket", "restore", c, "--into", into)
	if strings.Contains(r.stdout, "received") || !strings.Contains(r.stderr, "nothing was received") {
		t.Errorf("restore received streams before finding the missing object:\nstdout: %s\nstderr: %s", r.stdout, r.stderr)
	}
	if ok, _ := testbedExists(into); ok {
		t.Errorf("restore created %s", into)
	}
	e.fails(1, "is missing from the bucket", "restore", c, "--into", into, "--dry-run")
	e.ok("restore", a, "--into", into) // the intact part of the chain restores
}

func TestRestoreAvoidsAMissingBypass(t *testing.T) {
	e := newEnv(t, "bypass gone")
	s := bypassChain(t, e)
	e.deleteObject(e.edgeKey(s["D"], s["A"]))
	into := pool + "/" + filepath.Base(e.ds) + " restored"
	r := e.ok("restore", s["D"], "--into", into)
	if !strings.Contains(r.stdout, "received "+s["C"]+" -> "+s["D"]) {
		t.Errorf("restore did not take the long way round the missing bypass:\n%s", r.stdout)
	}
	src, _ := testbed.Mountpoint(e.ds)
	dst, _ := testbed.Mountpoint(into)
	sameTree(t, src, dst)
}

func TestRestoreShowsWhyZfsReceiveFailed(t *testing.T) {
	e := newEnv(t, "modified")
	a := e.snap("a", 1)
	b := e.snap("b", 1)
	e.ok("upload", a)
	e.ok("upload", b, "-i", a)
	into := pool + "/" + filepath.Base(e.ds) + " restored"
	e.ok("restore", a, "--into", into)
	mnt, _ := testbed.Mountpoint(into)
	if err := os.WriteFile(filepath.Join(mnt, "local change"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := e.fails(1, "has been modified", "restore", b, "--into", into)
	if !strings.Contains(r.stderr, "--force") || strings.Contains(r.stderr, "broken pipe") {
		t.Errorf("restore into a modified dataset: %q; want zfs's reason and the --force hint", r.stderr)
	}
	e.ok("restore", b, "--into", into, "--force")
	if got := snapshotsOf(t, into); got != into+"@a\n"+into+"@b" {
		t.Errorf("after restore --force: snapshots %q", got)
	}
}

func TestFailedForcedRestoreLeavesDestinationAsItWas(t *testing.T) {
	e := newEnv(t, "forced")
	a, b, c := threeEdges(e)
	e.corrupt(e.edgeKey(c, b)) // found only when b -> c is read to its end

	// An existing dataset without snapshots, overwritten by --force.
	into := pool + "/" + filepath.Base(e.ds) + " mine"
	e.zfs("create", "-o", "org.zfs2s3:note=kept", into)
	mnt, _ := testbed.Mountpoint(into)
	if err := os.WriteFile(filepath.Join(mnt, "mine"), []byte("my own data"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := e.fails(1, "was left as it was", "restore", c, "--into", into, "--force")
	if !strings.Contains(r.stdout, "received "+a+" -> "+b) {
		t.Errorf("the restore did not get as far as b -> c:\n%s", r.stdout)
	}
	mnt, _ = testbed.Mountpoint(into)
	if got, err := os.ReadFile(filepath.Join(mnt, "mine")); err != nil || string(got) != "my own data" {
		t.Errorf("after a failed restore --force, %s/mine = %q, %v; want it unchanged", mnt, got, err)
	}
	if _, err := os.Stat(filepath.Join(mnt, "a.bin")); err == nil {
		t.Errorf("after a failed restore --force, %s holds part of the chain", into)
	}
	if got := snapshotsOf(t, into); got != "" {
		t.Errorf("after a failed restore --force, %s has snapshots %q", into, got)
	}
	if out := e.zfs("list", "-H", "-o", "name", "-r", pool); strings.Contains(out, "zfs2s3-") {
		t.Errorf("temporary datasets left behind:\n%s", out)
	}

	// A forced restore that succeeds replaces the data, keeps the properties.
	e.ok("restore", b, "--into", into, "--force")
	if got := snapshotsOf(t, into); got != into+"@a\n"+into+"@b" {
		t.Errorf("after restore --force: snapshots %q", got)
	}
	mnt, _ = testbed.Mountpoint(into)
	src, _ := testbed.Mountpoint(e.ds)
	sameFile(t, filepath.Join(src, "b.bin"), filepath.Join(mnt, "b.bin"))
	if _, err := os.Stat(filepath.Join(mnt, "mine")); err == nil {
		t.Error("restore --force kept the replaced data")
	}
	if got := strings.TrimSpace(e.zfs("get", "-H", "-o", "value", "org.zfs2s3:note", into)); got != "kept" {
		t.Errorf("property org.zfs2s3:note = %q after restore --force, want kept", got)
	}

	// Onto a's restored snapshot: the failure rolls back a -> b's data too.
	onto := pool + "/" + filepath.Base(e.ds) + " onto"
	e.ok("restore", a, "--into", onto)
	e.fails(1, "rolled back to "+onto+"@a", "restore", c, "--into", onto)
	if got := snapshotsOf(t, onto); got != onto+"@a" {
		t.Errorf("after a failed incremental restore %s has %q, want only @a", onto, got)
	}
	mnt, _ = testbed.Mountpoint(onto)
	if _, err := os.Stat(filepath.Join(mnt, "b.bin")); err == nil {
		t.Errorf("after a failed incremental restore %s holds b's data without its snapshot", onto)
	}
}
