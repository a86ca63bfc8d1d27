package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"filippo.io/age"
	"github.com/google/go-cmp/cmp"
	"github.com/urfave/cli/v2"

	"github.com/zfs2s3/zfs2s3/backup"
	"github.com/zfs2s3/zfs2s3/ledger"
)

func TestParsePartSize(t *testing.T) {
	for in, want := range map[string]int64{
		"": 0, "8MiB": 8 << 20, "64M": 64 << 20, "64MB": 64 << 20, "1G": 1 << 30, "1GiB": 1 << 30,
		"16mib": 16 << 20, "5242880": 5 << 20, "5120K": 5 << 20,
	} {
		if got, err := parsePartSize(in); err != nil || got != want {
			t.Errorf("parsePartSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"lots", "4MiB", "6GiB", "-8M", "8T", "M", "5121M",
		"17592186044432M", "8796093022224G", "9223372036854775807K", "9223372036854775807"} { // 17592186044432M wrapped to 16 MiB
		if _, err := parsePartSize(in); err == nil {
			t.Errorf("parsePartSize(%q) accepted", in)
		}
	}
}

func TestReorderArgsPutsFlagsFirst(t *testing.T) {
	app := newApp()
	tests := []struct{ in, want []string }{
		{[]string{"zfs2s3", "upload", "tank/data@b", "-i", "tank/data@a"},
			[]string{"zfs2s3", "upload", "-i", "tank/data@a", "--", "tank/data@b"}},
		{[]string{"zfs2s3", "upload", "--verbose", "tank/my data@b", "--part-size=8M"},
			[]string{"zfs2s3", "upload", "--verbose", "--part-size=8M", "--", "tank/my data@b"}},
		{[]string{"zfs2s3", "remove", "t@x", "--guid", "42"},
			[]string{"zfs2s3", "remove", "--guid", "42", "--", "t@x"}},
		{[]string{"zfs2s3", "--help"}, []string{"zfs2s3", "--help"}},
	}
	for _, tt := range tests {
		if d := cmp.Diff(tt.want, reorderArgs(app, tt.in)); d != "" {
			t.Errorf("reorderArgs(%q) (-want +got):\n%s", tt.in, d)
		}
	}
}

func TestExitCodes(t *testing.T) {
	for err, want := range map[error]int{
		&ledger.RefusedError{Edge: "x"}:            exitRefused,
		fmt.Errorf("wrapped: %w", backup.ErrUsage): exitUsage,
		usageErr{fmt.Errorf("no bucket")}:          exitUsage,
		fmt.Errorf("network down"):                 exitFailed,
	} {
		if got := exitCode(err); got != want {
			t.Errorf("exitCode(%v) = %d, want %d", err, got, want)
		}
	}
}

func TestHoistCommonFlags(t *testing.T) {
	app := newApp()
	tests := []struct{ in, want []string }{
		{[]string{"zfs2s3", "-v", "upload", "t@b"}, []string{"zfs2s3", "upload", "-v", "t@b"}},
		{[]string{"zfs2s3", "--bucket", "b", "-q", "--prefix=h1", "remove", "t@b", "-i", "t@a"},
			[]string{"zfs2s3", "remove", "--bucket", "b", "-q", "--prefix=h1", "t@b", "-i", "t@a"}},
		{[]string{"zfs2s3", "-v", "ledger", "rebuild", "--prefix", "x"},
			[]string{"zfs2s3", "ledger", "rebuild", "-v", "--prefix", "x"}},
		// Left alone: nothing before the command, app flags, flags only
		// commands have, and a value with no command after it.
		{[]string{"zfs2s3", "upload", "-v", "t@b"}, []string{"zfs2s3", "upload", "-v", "t@b"}},
		{[]string{"zfs2s3", "--help"}, []string{"zfs2s3", "--help"}},
		{[]string{"zfs2s3", "-i", "t@a", "upload", "t@b"}, []string{"zfs2s3", "-i", "t@a", "upload", "t@b"}},
		{[]string{"zfs2s3", "--bucket", "b"}, []string{"zfs2s3", "--bucket", "b"}},
		{[]string{"zfs2s3", "-v", "--help"}, []string{"zfs2s3", "-v", "--help"}},
	}
	for _, tt := range tests {
		if d := cmp.Diff(tt.want, hoistCommonFlags(app, tt.in)); d != "" {
			t.Errorf("hoistCommonFlags(%q) (-want +got):\n%s", tt.in, d)
		}
	}
}

func TestInterruptedMessage(t *testing.T) {
	for in, want := range map[string]string{
		"upload of t@a (full) interrupted: part 3: context canceled; run zfs2s3 resume_upload to continue": "upload of t@a (full) interrupted: part 3; run zfs2s3 resume_upload to continue",
		"wait for the ledger lock: context canceled":                                                       "interrupted: wait for the ledger lock",
		"context canceled":                      "interrupted",
		"zfs get -H -p ... t@a: signal: killed": "interrupted: zfs get -H -p ... t@a: signal: killed",
	} {
		if got := interruptedMessage(in); got != want {
			t.Errorf("interruptedMessage(%q) = %q, want %q", in, got, want)
		}
	}
}

// settingsWith runs a command with args and env under a config file
// holding cfg and returns the settings it ends up with.
func settingsWith(t *testing.T, cfg string, env map[string]string, args ...string) (map[string]string, error) {
	t.Helper()
	for _, k := range []string{"ZFS2S3_BUCKET", "ZFS2S3_PREFIX", "ZFS2S3_ENDPOINT", "AWS_REGION", "AWS_PROFILE",
		"ZFS2S3_STORAGE_CLASS", "ZFS2S3_CHECKSUM", "ZFS2S3_PART_SIZE", "ZFS2S3_CONCURRENCY", "ZFS2S3_STATE_DIR", "ZFS2S3_CONFIG"} {
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
	got := map[string]string{}
	app := &cli.App{Commands: []*cli.Command{{Name: "x", Flags: commonFlags(), Action: func(c *cli.Context) error {
		if _, err := loadConfig(c); err != nil {
			return err
		}
		for _, f := range []string{"bucket", "prefix", "region", "storage-class", "checksum", "part-size", "concurrency", "state-dir"} {
			got[f] = c.String(f)
		}
		got["concurrency"] = strconv.Itoa(c.Int("concurrency"))
		return nil
	}}}}
	err := app.Run(append([]string{"zfs2s3", "x"}, args...))
	return got, err
}

func TestConfigPrecedenceFlagEnvConfigDefault(t *testing.T) {
	cfg := "bucket: from-config\nprefix: cfgprefix\nregion: cfg-region\nstorage_class: STANDARD_IA\npart_size: 32MiB\nconcurrency: 2\nstate_dir: /cfg/state\n"
	got, err := settingsWith(t, cfg, map[string]string{"ZFS2S3_BUCKET": "from-env", "AWS_REGION": "env-region"},
		"--bucket", "from-flag", "--concurrency", "8")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"bucket":        "from-flag",   // flag over env over config
		"region":        "env-region",  // env over config
		"prefix":        "cfgprefix",   // config over default
		"storage-class": "STANDARD_IA", // config over the flag's default
		"part-size":     "32MiB",
		"concurrency":   "8", // flag over config
		"state-dir":     "/cfg/state",
		"checksum":      "sha256", // default: neither set
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("settings (-want +got):\n%s", d)
	}
	got, err = settingsWith(t, cfg, map[string]string{"ZFS2S3_BUCKET": "from-env", "ZFS2S3_CONCURRENCY": "3"})
	if err != nil {
		t.Fatal(err)
	}
	if got["bucket"] != "from-env" || got["concurrency"] != "3" {
		t.Errorf("env under config: bucket %q concurrency %q, want from-env and 3", got["bucket"], got["concurrency"])
	}
	got, err = settingsWith(t, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got["bucket"] != "from-config" || got["concurrency"] != "2" {
		t.Errorf("config alone: bucket %q concurrency %q, want from-config and 2", got["bucket"], got["concurrency"])
	}
}

func TestConfigErrorIsOneLineExit2(t *testing.T) {
	_, err := settingsWith(t, "bucket: b\nfrobnicate: 1\n", nil)
	if err == nil || exitCode(err) != exitUsage {
		t.Fatalf("unknown key: err %v, exit %d; want exit %d", err, exitCode(err), exitUsage)
	}
	if msg := err.Error(); !strings.Contains(msg, "config.yaml:2: frobnicate: unknown key") || strings.Contains(msg, "\n") {
		t.Errorf("error %q: want one line naming FILE:2 and the key", msg)
	}
	_, err = settingsWith(t, "", map[string]string{"ZFS2S3_CONFIG": "/nonexistent/zfs2s3.yaml"})
	if err == nil || exitCode(err) != exitUsage || !strings.Contains(err.Error(), "/nonexistent/zfs2s3.yaml") {
		t.Errorf("missing named config: err %v, exit %d; want exit %d naming the file", err, exitCode(err), exitUsage)
	}
}

// TestConfigRecipientsAndFileBoth: a config with recipients: and
// recipients_file: encrypts to both (an off-site recovery key listed
// beside a file must not be dropped); a --recipient flag replaces both.
func TestConfigRecipientsAndFileBoth(t *testing.T) {
	keys := make([]string, 3)
	for i := range keys {
		id, err := age.GenerateX25519Identity()
		if err != nil {
			t.Fatal(err)
		}
		keys[i] = id.Recipient().String()
	}
	file := filepath.Join(t.TempDir(), "recipients.txt")
	if err := os.WriteFile(file, []byte(keys[1]+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf("bucket: b\nrecipients: [%s]\nrecipients_file: %s\n", keys[0], file)
	run := func(args ...string) []string {
		t.Helper()
		var got []string
		t.Setenv("ZFS2S3_CONFIG", filepath.Join(t.TempDir(), "c.yaml"))
		if err := os.WriteFile(os.Getenv("ZFS2S3_CONFIG"), []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		app := &cli.App{Commands: []*cli.Command{{Name: "x", Flags: commonFlags(), Action: func(c *cli.Context) error {
			if _, err := loadConfig(c); err != nil {
				return err
			}
			var opt backup.Options
			if err := transformOptions(c, &opt); err != nil {
				return err
			}
			for _, r := range opt.Transform.Recipients {
				got = append(got, r.String())
			}
			return nil
		}}}}
		if err := app.Run(append([]string{"zfs2s3", "x"}, args...)); err != nil {
			t.Fatal(err)
		}
		slices.Sort(got)
		return got
	}
	want := []string{keys[0], keys[1]}
	slices.Sort(want)
	if got := run(); !slices.Equal(got, want) {
		t.Errorf("config recipients and recipients_file: encrypting to %v, want both %v", got, want)
	}
	if got := run("--recipient", keys[2]); !slices.Equal(got, []string{keys[2]}) {
		t.Errorf("--recipient with a config: encrypting to %v, want only the flag's %v", got, keys[2])
	}
}
