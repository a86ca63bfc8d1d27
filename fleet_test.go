package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"

	"github.com/zfs2s3/zfs2s3/config"
)

// prefixWith resolves the prefix as commands do, under a config holding
// cfg, with env and args.
func prefixWith(t *testing.T, cfg string, env map[string]string, args ...string) (string, error) {
	return prefixFor(t, "x", cfg, env, args...)
}

// prefixFor is prefixWith for the command named command.
func prefixFor(t *testing.T, command, cfg string, env map[string]string, args ...string) (string, error) {
	t.Helper()
	for _, k := range []string{"ZFS2S3_PREFIX", "ZFS2S3_HOST", "ZFS2S3_CONFIG"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	file := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("ZFS2S3_CONFIG", file)
	for k, v := range env {
		t.Setenv(k, v)
	}
	var got string
	app := &cli.App{Commands: []*cli.Command{{Name: command, Flags: commonFlags(), Action: func(c *cli.Context) error {
		if _, err := loadConfig(c); err != nil {
			return err
		}
		var err error
		got, err = resolvePrefix(c)
		return err
	}}}}
	err := app.Run(append([]string{"zfs2s3", command}, args...))
	return got, err
}

// TestPrefixPlaceholders: one config file serves a fleet, each host
// expanding {hostname} and {host} to its own name; the flag and the
// environment override the config's host.
func TestPrefixPlaceholders(t *testing.T) {
	hostname, err := config.ShortHostname()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		cfg  string
		env  map[string]string
		args []string
		want string
	}{
		{cfg: "prefix: fleet/{hostname}\n", want: "fleet/" + hostname},
		{cfg: "prefix: fleet/{host}\n", want: "fleet/" + hostname}, // host defaults to the hostname
		{cfg: "prefix: fleet/{host}\nhost: web1\n", want: "fleet/web1"},
		{cfg: "prefix: fleet/{host}\nhost: web1\n", env: map[string]string{"ZFS2S3_HOST": "web2"}, want: "fleet/web2"},
		{cfg: "prefix: fleet/{host}\nhost: web1\n", args: []string{"--host", "web3"}, want: "fleet/web3"},
		{cfg: "prefix: fleet/{host}\n", args: []string{"--prefix", "fixed"}, want: "fixed"},
		{cfg: "host: web1\n", env: map[string]string{"ZFS2S3_PREFIX": "{host}/x"}, want: "web1/x"},
	} {
		got, err := prefixWith(t, tc.cfg, tc.env, tc.args...)
		if err != nil || got != tc.want {
			t.Errorf("config %q env %v args %v: prefix %q, %v; want %q", tc.cfg, tc.env, tc.args, got, err, tc.want)
		}
	}
	// A prefix with braces an earlier release stored backups under stays
	// readable: read-only commands take it as it is.
	if got, err := prefixWith(t, "prefix: old{1}\n", nil); err == nil {
		t.Errorf("a brace that is no placeholder: prefix %q for a command that changes things, want exit 2", got)
	}
	if got, err := prefixFor(t, "status", "prefix: old{1}\n", nil); err != nil || got != "old{1}" {
		t.Errorf("status under a prefix with a brace: %q, %v; want it read as it is", got, err)
	}
	for _, cfg := range []string{"prefix: fleet/{hots}\n", "prefix: fleet/{host}\nhost: a/b\n"} {
		if _, err := prefixWith(t, cfg, nil); err == nil || exitCode(err) != exitUsage {
			t.Errorf("config %q: err %v, exit %d; want exit %d", cfg, err, exitCode(err), exitUsage)
		}
	}
}

// TestPolicyCommand: policy host NAME names NAME's prefix, the admin's
// covers every host's; both are valid JSON; mistakes are exit 2.
func TestPolicyCommand(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(cfg, []byte("bucket: backups\nprefix: fleet/{hostname}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("ZFS2S3_CONFIG", cfg)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"policy", "host", "web1"}, `"arn:aws:s3:::backups/fleet/web1/*"`},
		{[]string{"policy", "host", "web1", "--store", "minio"}, `"fleet/web1/*"`},
		// The fleet's central policy: readable by the host (and listable
		// as that one key), never writable (central_e2e_test.go).
		{[]string{"policy", "host", "web1"}, `"arn:aws:s3:::backups/fleet/.zfs2s3-policy.yaml"`},
		{[]string{"policy", "host", "web1", "--store", "minio"}, `"fleet/.zfs2s3-policy.yaml"`},
		{[]string{"policy", "admin"}, `"arn:aws:s3:::backups/fleet/*"`},
	} {
		var out bytes.Buffer
		app := newApp()
		app.Writer = &out
		if err := app.Run(reorderArgs(app, append([]string{"zfs2s3"}, tc.args...))); err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		if !json.Valid(out.Bytes()) || !strings.Contains(out.String(), tc.want) {
			t.Errorf("%v: want valid JSON with %s:\n%s", tc.args, tc.want, out.String())
		}
		if strings.Contains(out.String(), "{hostname}") {
			t.Errorf("%v: placeholder left in the policy", tc.args)
		}
	}
	for _, args := range [][]string{{"policy", "host"}, {"policy", "host", "a/b"}, {"policy", "admin", "--store", "gcs"}, {"policy", "admin", "x"}} {
		app := newApp()
		app.Writer = &bytes.Buffer{}
		if err := app.Run(reorderArgs(app, append([]string{"zfs2s3"}, args...))); err == nil || exitCode(err) != exitUsage {
			t.Errorf("%v: err %v, exit %d; want exit %d", args, err, exitCode(err), exitUsage)
		}
	}
}

// TestFleetCommandUsage: the fleet commands take no arguments; a mistake
// is a usage error (exit 2) before the bucket is touched.
func TestFleetCommandUsage(t *testing.T) {
	t.Setenv("ZFS2S3_CONFIG", "")
	os.Unsetenv("ZFS2S3_CONFIG")
	t.Setenv("ZFS2S3_BUCKET", "b")
	t.Setenv("ZFS2S3_ENDPOINT", "http://127.0.0.1:1") // nothing listens: any S3 call would fail with exit 1
	for _, args := range [][]string{
		{"zfs2s3", "fleet", "status", "extra"},
		{"zfs2s3", "fleet", "prune", "web1"},
		{"zfs2s3", "fleet", "prune", "--no-such-flag"},
	} {
		if code := run(t.Context(), args); code != exitUsage {
			t.Errorf("%v: exit %d, want %d", args, code, exitUsage)
		}
	}
}
