package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestFleetPolicySetRefusesBadInput: a policy no host could read is
// refused before any S3 call (the bucket here does not exist), exit 2,
// with the file and the wrong key named.
func TestFleetPolicySetRefusesBadInput(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfg, []byte("bucket: backups\nprefix: fleet/{host}\nendpoint: http://127.0.0.1:1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("ZFS2S3_CONFIG", cfg)
	bad := filepath.Join(dir, "policy.yaml")
	os.WriteFile(bad, []byte("version: 1\nhosts:\n  web1: {quota: 1GiB, keep: {dayly: 7}}\n"), 0o600)
	newer := filepath.Join(dir, "newer.yaml")
	os.WriteFile(newer, []byte("version: 2\n"), 0o600)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"fleet", "policy", "set"}, "takes FILE"},
		{[]string{"fleet", "policy", "set", filepath.Join(dir, "missing.yaml")}, "cannot read the policy"},
		{[]string{"fleet", "policy", "set", bad}, "dayly"},
		{[]string{"fleet", "policy", "set", newer}, "upgrade zfs2s3"},
		{[]string{"fleet", "policy", "show", "web1"}, "--for NAME"},
	} {
		app := newApp()
		app.Writer = &bytes.Buffer{}
		err := app.Run(reorderArgs(app, append([]string{"zfs2s3"}, tc.args...)))
		if err == nil || exitCode(err) != exitUsage || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: err %v, exit %d; want exit %d and %q", tc.args, err, exitCode(err), exitUsage, tc.want)
		}
	}
}
