package backup

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/zfs2s3/zfs2s3/ledger"
	"github.com/zfs2s3/zfs2s3/zfs"
)

func TestCarriedPropertiesLeaveStorageAndKeysBehind(t *testing.T) {
	props := map[string]string{
		"mountpoint": "/srv/data", "compression": "lz4", "org.zfs2s3:note": "kept",
		"volsize": "1073741824", "volblocksize": "16384", "reservation": "1G", "refreservation": "1G",
		"encryption": "aes-256-gcm", "keyformat": "passphrase", "keylocation": "prompt",
		"pbkdf2iters": "350000", "casesensitivity": "mixed",
	}
	got := carriedProperties(props)
	want := map[string]string{"mountpoint": "/srv/data", "compression": "lz4", "org.zfs2s3:note": "kept"}
	if len(got) != len(want) {
		t.Errorf("carried %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("carried %s=%q, want %q", k, got[k], v)
		}
	}
}

func TestRemoveStaleTempsSweepsOnlyOldOwnFilesOfDeadSaves(t *testing.T) {
	dir := t.TempDir()
	dead := 1 << 22 // above pid_max's default: no such process
	write := func(name string, age time.Duration) {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		m := time.Now().Add(-age)
		if err := os.Chtimes(p, m, m); err != nil {
			t.Fatal(err)
		}
	}
	prefix := saveTemp("a.zfs")
	write(prefix+strconv.Itoa(dead)+"-old", 11*time.Minute)      // swept
	write(prefix+strconv.Itoa(dead)+"-recent", time.Minute)      // its owner may be alive elsewhere
	write(prefix+strconv.Itoa(os.Getppid())+"-alive", time.Hour) // a running process
	write(prefix+strconv.Itoa(dead)+"-other", time.Hour)         // another user's
	if os.Geteuid() == 0 {
		if err := os.Chown(filepath.Join(dir, prefix+strconv.Itoa(dead)+"-other"), 65534, 65534); err != nil {
			t.Fatal(err)
		}
	}
	removeStaleTemps(dir, "a.zfs")
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, de := range entries {
		left = append(left, de.Name())
	}
	want := []string{prefix + strconv.Itoa(os.Getppid()) + "-alive", prefix + strconv.Itoa(dead) + "-recent"}
	if os.Geteuid() == 0 {
		want = append(want, prefix+strconv.Itoa(dead)+"-other")
	}
	slices.Sort(want)
	if !slices.Equal(left, want) {
		t.Errorf("after the sweep: %v, want %v", left, want)
	}
}

// TestCheckBeginRefusesAnotherStream: zfs receive gets only the stream of
// the edge's own GUIDs; another snapshot's, a full stream in an
// incremental's place and a compound stream are refused naming the object.
func TestCheckBeginRefusesAnotherStream(t *testing.T) {
	incr, err := os.ReadFile("../zfs/testdata/zfs-fuse-incremental.zfs")
	if err != nil {
		t.Fatal(err)
	}
	head := incr[:zfs.BeginSize]
	const a, b = 14743629485921276048, 1751617006636000446 // the recorded stream's GUIDs
	edge := func(to, from uint64) ledger.Edge {
		e := ledger.Edge{Key: "fxpool/ds/b.zfs", Target: ledger.Snapshot{Name: "fxpool/ds@b", GUID: to}, StoredBytes: 1}
		if from != 0 {
			e.Base = &ledger.Snapshot{Name: "fxpool/ds@a", GUID: from}
		}
		return e
	}
	if got, err := checkBegin(head, edge(b, a)); err != nil || got.ToShort() != "b" {
		t.Errorf("checkBegin of the edge's own stream = %+v, %v", got, err)
	}
	compound := append([]byte(nil), head...)
	compound[16] = compound[16]&^3 | 2
	for name, tc := range map[string]struct {
		head []byte
		e    ledger.Edge
	}{
		"another target":       {head, edge(a, 0)},
		"full in incr's place": {head, edge(b, 0)},
		"another base":         {head, edge(b, b)},
		"compound":             {compound, edge(b, a)},
		"not a stream":         {make([]byte, zfs.BeginSize), edge(b, a)},
	} {
		if _, err := checkBegin(tc.head, tc.e); err == nil || !strings.Contains(err.Error(), "object fxpool/ds/b.zfs") {
			t.Errorf("%s: checkBegin = %v, want a refusal naming the object", name, err)
		}
	}
}
