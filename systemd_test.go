package main

import (
	"bufio"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// unit is a systemd unit file: each key's values in order, by section.
type unit map[string]map[string][]string

func readUnit(t *testing.T, path string) unit {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u := unit{}
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = strings.Trim(line, "[]")
			u[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s: not a key=value line in a section: %q", path, line)
			}
			u[section][k] = append(u[section][k], v)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return u
}

func (u unit) one(t *testing.T, section, key string) string {
	t.Helper()
	v := u[section][key]
	if len(v) != 1 {
		t.Fatalf("[%s] %s is set %d times, want once", section, key, len(v))
	}
	return v[0]
}

// TestSystemdUnits checks the shipped service and timer against the
// command line and README.md, so that none drifts from the others.
// systemd-analyze verify checks the syntax (it wants the binary at its
// installed path, so it is not run here), but not that zfs2s3 takes
// these flags.
func TestSystemdUnits(t *testing.T) {
	svc := readUnit(t, filepath.Join("systemd", "zfs2s3-backup.service"))
	timer := readUnit(t, filepath.Join("systemd", "zfs2s3-backup.timer"))
	if got := svc.one(t, "Service", "Type"); got != "oneshot" {
		t.Errorf("Type=%s, want oneshot (two ExecStart lines, one after the other)", got)
	}
	exec := svc["Service"]["ExecStart"]
	if len(exec) != 2 {
		t.Fatalf("ExecStart lines: %q, want backup then prune", exec)
	}
	app := newApp()
	var metricsFile string
	for i, want := range []string{"backup", "prune"} {
		args := strings.Fields(exec[i])
		if len(args) < 2 || !filepath.IsAbs(args[0]) || filepath.Base(args[0]) != "zfs2s3" || args[1] != want {
			t.Fatalf("ExecStart %q: want /…/zfs2s3 %s …", exec[i], want)
		}
		cmd := app.Command(want)
		flags := flagArity(cmd.Flags)
		for j := 2; j < len(args); j++ {
			name := strings.TrimLeft(args[j], "-")
			takesValue, ok := flags[name]
			if !strings.HasPrefix(args[j], "-") || !ok {
				t.Errorf("ExecStart %q: zfs2s3 %s takes no %q", exec[i], want, args[j])
				continue
			}
			if takesValue {
				j++
				if name == "metrics-file" && j < len(args) {
					if metricsFile != "" && args[j] != metricsFile {
						t.Errorf("backup and prune write different metrics files: %s and %s", metricsFile, args[j])
					}
					metricsFile = args[j]
				}
			}
		}
		// The README shows the same command lines.
		if !strings.Contains(readme(t), "ExecStart="+exec[i]+"\n") {
			t.Errorf("README.md does not show ExecStart=%s", exec[i])
		}
	}
	if metricsFile == "" || !strings.HasSuffix(metricsFile, ".prom") {
		t.Fatalf("metrics file %q: want one ending in .prom, which node_exporter's textfile collector reads", metricsFile)
	}
	var writable []string
	for _, p := range svc["Service"]["ReadWritePaths"] {
		writable = append(writable, strings.Fields(strings.ReplaceAll(p, "-/", "/"))...)
	}
	if !slices.Contains(writable, filepath.Dir(metricsFile)) {
		t.Errorf("the metrics dir %s is not in ReadWritePaths %q", filepath.Dir(metricsFile), writable)
	}
	var stateDir string
	for _, env := range svc["Service"]["Environment"] {
		if v, ok := strings.CutPrefix(env, "ZFS2S3_STATE_DIR="); ok {
			stateDir = v
		}
	}
	if want := "/var/lib/" + svc.one(t, "Service", "StateDirectory"); stateDir != want {
		t.Errorf("ZFS2S3_STATE_DIR=%q, want the StateDirectory, %s, which ProtectSystem=strict leaves writable", stateDir, want)
	}
	if got := svc.one(t, "Service", "StateDirectoryMode"); got != "0700" {
		t.Errorf("StateDirectoryMode=%s: zfs2s3 refuses a state dir others can write or read", got)
	}
	for key, want := range map[string]string{"ProtectSystem": "strict", "EnvironmentFile": "-/etc/zfs2s3/env", "NoNewPrivileges": "yes"} {
		if got := svc.one(t, "Service", key); got != want {
			t.Errorf("%s=%s, want %s", key, got, want)
		}
	}
	if v := svc["Service"]["PrivateDevices"]; len(v) > 0 && v[0] != "no" {
		t.Errorf("PrivateDevices=%s hides /dev/zfs", v[0])
	}
	for key, want := range map[string]string{"Persistent": "true", "OnCalendar": "*-*-* 01:30:00", "RandomizedDelaySec": "30min"} {
		if got := timer.one(t, "Timer", key); got != want {
			t.Errorf("timer %s=%s, want %s (as README.md says)", key, got, want)
		}
	}
	if got := timer.one(t, "Install", "WantedBy"); got != "timers.target" {
		t.Errorf("timer WantedBy=%s", got)
	}
	for _, want := range []string{"systemd/zfs2s3-backup.service systemd/zfs2s3-backup.timer /etc/systemd/system/",
		"systemctl enable --now zfs2s3-backup.timer", "zfs2s3 status --max-age 26h", filepath.Dir(metricsFile), stateDir} {
		if !strings.Contains(readme(t), want) {
			t.Errorf("README.md's timer section lacks %q", want)
		}
	}
}

func readme(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
