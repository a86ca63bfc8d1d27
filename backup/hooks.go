package backup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/zfs2s3/zfs2s3/config"
	"github.com/zfs2s3/zfs2s3/zfs"
)

// hookWaitDelay is how long a hook's output may stay open after the hook
// was killed, before zfs2s3 stops waiting for it.
const hookWaitDelay = 5 * time.Second

// takeSnapshot takes the dataset's create snapshot at now, with its pre
// and post hooks around it, and returns its name after '@' ("" when none
// was taken). Order: pre, snapshot, post. A failing pre means no snapshot;
// post runs right after the snapshot whenever the run got that far (pre
// ran, or there is none), even when pre or the snapshot failed and even
// when the run is interrupted, since it typically restarts what pre
// stopped. members are the datasets the snapshot covers (d and, when it is
// recursive, the children it backs up); one "zfs snapshot -r" takes them
// all at once. The downtime, from pre's start to post's end, goes into
// dr. A dry run takes nothing, runs nothing and returns the name the
// snapshot would have.
func (b *Backup) takeSnapshot(ctx context.Context, d config.Dataset, members []config.Dataset, now time.Time, opt RunOptions, dr *DatasetReport) (string, error) {
	short := d.CreateName(now)
	name := d.Name + "@" + short
	if opt.DryRun {
		what := ""
		switch {
		case d.Pre != "" && d.Post != "":
			what = " (pre/post hooks around it)"
		case d.Pre != "":
			what = " (pre hook before it)"
		case d.Post != "":
			what = " (post hook after it)"
		}
		if d.Recursive {
			what += fmt.Sprintf(", with zfs snapshot -r (%d datasets)", len(members))
		}
		b.Out("%s: would create %s%s", d.Name, name, what)
		return short, nil
	}
	// A name taken already (two runs within the pattern's resolution) is
	// found before pre stops anything.
	for _, m := range members {
		n := m.Name + "@" + short
		_, err := b.ZFS.Snapshot(ctx, n)
		if err == nil {
			return "", fmt.Errorf("snapshot %s already exists (another run in the same second, or a create pattern that repeats: add %%H%%M%%S); no hook ran, nothing was taken", n)
		}
		if !errors.Is(err, zfs.ErrNotExist) {
			return "", fmt.Errorf("check that snapshot %s is free: %w", n, err)
		}
	}
	start := time.Now()
	var errs []string
	taken := false
	if d.Pre != "" {
		if err := b.runHook(ctx, "pre", d, name); err != nil {
			errs = append(errs, err.Error()+"; no snapshot taken")
		}
	}
	if len(errs) == 0 {
		if err := b.ZFS.CreateSnapshot(ctx, name, d.Recursive); errors.Is(err, zfs.ErrExist) {
			errs = append(errs, fmt.Sprintf("snapshot %s was taken meanwhile by someone else: %v", name, err))
		} else if err != nil {
			errs = append(errs, fmt.Sprintf("take snapshot %s: %v", name, err))
		} else {
			taken = true
		}
	}
	if d.Post != "" {
		// Not cancelled with the run: what pre stopped must start again.
		if err := b.runHook(context.WithoutCancel(ctx), "post", d, name); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if d.Pre != "" || d.Post != "" {
		secs := time.Since(start).Round(time.Millisecond).Seconds()
		dr.DowntimeSeconds = &secs
	}
	if taken {
		b.Out("%s: created %s", d.Name, name)
	} else {
		short = ""
	}
	if len(errs) > 0 {
		return short, errors.New(strings.Join(errs, "; "))
	}
	return short, nil
}

// runHook runs a pre or post hook: "sh -c COMMAND" (the one place zfs2s3
// runs a shell: the command is the user's own), stdin closed, its output on
// zfs2s3's stderr (stdout holds results and --json reports), with
// ZFS2S3_DATASET, ZFS2S3_SNAPSHOT and ZFS2S3_HOOK set. It runs in its own
// process group, which is killed as a whole when the hook outlives
// hook_timeout or the run is interrupted, so that nothing it started is
// left behind.
func (b *Backup) runHook(ctx context.Context, which string, d config.Dataset, snapshot string) error {
	command := d.Pre
	if which == "post" {
		command = d.Post
	}
	ctx, cancel := context.WithTimeout(ctx, d.HookTimeout)
	defer cancel()
	c := exec.CommandContext(ctx, "/bin/sh", "-c", command)
	out := b.HookOutput
	if out == nil {
		out = os.Stderr
	}
	c.Stdout, c.Stderr = out, out
	c.Env = append(os.Environ(), "ZFS2S3_DATASET="+d.Name, "ZFS2S3_SNAPSHOT="+snapshot, "ZFS2S3_HOOK="+which)
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	c.Cancel = func() error { return syscall.Kill(-c.Process.Pid, syscall.SIGKILL) }
	c.WaitDelay = hookWaitDelay
	slog.Info("running hook", "hook", which, "dataset", d.Name, "snapshot", snapshot)
	err := c.Run()
	switch {
	case err == nil:
		return nil
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return fmt.Errorf("%s hook for %s timed out after %v (hook_timeout) and was killed", which, d.Name, d.HookTimeout)
	case ctx.Err() != nil:
		return fmt.Errorf("%s hook for %s was interrupted and killed", which, d.Name)
	}
	return fmt.Errorf("%s hook for %s failed: %w", which, d.Name, err)
}
