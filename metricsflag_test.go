package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/urfave/cli/v2"
)

// TestMetricsFilePrecedence: --metrics-file, then ZFS2S3_METRICS_FILE,
// then the config's metrics_file, as for every other setting.
func TestMetricsFilePrecedence(t *testing.T) {
	dir := t.TempDir()
	fromConfig, fromEnv, fromFlag := filepath.Join(dir, "config.prom"), filepath.Join(dir, "env.prom"), filepath.Join(dir, "flag.prom")
	file := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(file, []byte("metrics_file: "+fromConfig+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("ZFS2S3_CONFIG", file)
	resolve := func(env string, args ...string) (string, error) {
		t.Helper()
		t.Setenv("ZFS2S3_METRICS_FILE", env)
		if env == "" {
			os.Unsetenv("ZFS2S3_METRICS_FILE")
		}
		var got string
		app := &cli.App{Commands: []*cli.Command{{Name: "x", Flags: append(commonFlags(), metricsFlag()), Action: func(c *cli.Context) error {
			cfg, err := loadConfig(c)
			if err != nil {
				return err
			}
			got, err = metricsFile(c, cfg)
			return err
		}}}}
		err := app.Run(append([]string{"zfs2s3", "x"}, args...))
		return got, err
	}
	for _, tc := range []struct {
		name, env string
		args      []string
		want      string
	}{
		{"config", "", nil, fromConfig},
		{"environment over config", fromEnv, nil, fromEnv},
		{"flag over environment", fromEnv, []string{"--metrics-file", fromFlag}, fromFlag},
	} {
		got, err := resolve(tc.env, tc.args...)
		if err != nil || got != tc.want {
			t.Errorf("%s: %q, %v; want %q", tc.name, got, err, tc.want)
		}
	}
	if _, err := resolve("", "--metrics-file", filepath.Join(dir, "missing", "m.prom")); err == nil || exitCode(err) != exitUsage {
		t.Errorf("a metrics file in a missing directory: %v, exit %d; want exit %d", err, exitCode(err), exitUsage)
	}
}
