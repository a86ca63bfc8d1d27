package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/urfave/cli/v2"

	"github.com/zfs2s3/zfs2s3/backup"
)

// TestLockSettings: lock_days and lock_mode come from the config unless a
// flag or the environment sets them, and a locked edge's refusal is exit 3.
func TestLockSettings(t *testing.T) {
	if got := exitCode(&backup.LockedError{Edge: "x"}); got != exitRefused {
		t.Errorf("exit code of a locked edge's refusal = %d, want %d", got, exitRefused)
	}
	file := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(file, []byte("lock_days: 30\nlock_mode: compliance\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"ZFS2S3_LOCK_DAYS", "ZFS2S3_LOCK_MODE"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	t.Setenv("ZFS2S3_CONFIG", file)
	for _, tt := range []struct {
		name string
		env  map[string]string
		args []string
		days int
		mode string
	}{
		{"config", nil, nil, 30, "compliance"},
		{"flag over config", nil, []string{"--lock-days", "7"}, 7, "compliance"},
		{"env over config", map[string]string{"ZFS2S3_LOCK_MODE": "governance"}, nil, 30, "governance"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			var days int
			var mode string
			app := &cli.App{Commands: []*cli.Command{{Name: "x", Flags: commonFlags(), Action: func(c *cli.Context) error {
				if _, err := loadConfig(c); err != nil {
					return err
				}
				days, mode = c.Int("lock-days"), c.String("lock-mode")
				return nil
			}}}}
			if err := app.Run(append([]string{"zfs2s3", "x"}, tt.args...)); err != nil {
				t.Fatal(err)
			}
			if days != tt.days || mode != tt.mode {
				t.Errorf("lock %d days %s, want %d days %s", days, mode, tt.days, tt.mode)
			}
		})
	}
}
