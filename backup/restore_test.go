package backup

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"
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
