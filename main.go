// Command zfs2s3 backs ZFS snapshots up to S3 and S3-compatible stores,
// guarded by a ledger that never lets a stored snapshot become unrestorable.
//
// Exit codes: 0 success, 1 the operation failed, 2 bad usage, 3 refused by
// the ledger's safety rule, 128 + the signal's number (130 for SIGINT) when a
// second signal ended it at once.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/zfs2s3/zfs2s3/backup"
	"github.com/zfs2s3/zfs2s3/config"
	"github.com/zfs2s3/zfs2s3/health"
	"github.com/zfs2s3/zfs2s3/ledger"
	"github.com/zfs2s3/zfs2s3/s3up"
	"github.com/zfs2s3/zfs2s3/transform"
	"github.com/zfs2s3/zfs2s3/zfs"
)

// Exit codes, documented in README.md.
const (
	exitOK      = 0
	exitFailed  = 1
	exitUsage   = 2
	exitRefused = 3
)

// exitInterrupted is the exit code after a second interrupt: 128 plus the
// signal's number, as shells report a command a signal ended (130 for SIGINT).
const exitInterrupted = 128

func main() {
	ctx, cancel := context.WithCancelCause(context.Background())
	sigs := make(chan os.Signal, 2)
	// A signal the process started with ignored stays ignored: under
	// nohup, logging out must not stop a long upload.
	for _, sig := range []os.Signal{os.Interrupt, syscall.SIGTERM, syscall.SIGHUP} {
		if !signal.Ignored(sig) {
			signal.Notify(sigs, sig)
		}
	}
	go func() {
		// The first signal stops the command at its next safe point; a
		// second one exits at once, for a command that does not stop (a
		// hung zfs, an unreachable store). What it leaves is what a crash
		// leaves, which every command already recovers from.
		sig := <-sigs
		cancel(interrupt{sig})
		sig = <-sigs
		fmt.Fprintf(os.Stderr, "zfs2s3: %s again: exiting at once; run zfs2s3 status to see anything left unfinished\n", signalName(sig))
		code := exitInterrupted + 2 // SIGINT
		if n, ok := sig.(syscall.Signal); ok {
			code = exitInterrupted + int(n)
		}
		os.Exit(code)
	}()
	stop := cpuProfile(os.Getenv("ZFS2S3_CPUPROFILE"))
	code := run(ctx, os.Args)
	stop()
	os.Exit(code)
}

// cpuProfile writes a Go CPU profile of the command to path (none when
// empty), for `go tool pprof -top zfs2s3 PATH`; the returned func ends it.
// It is how README's Performance section tells where upload CPU goes.
func cpuProfile(path string) (stop func()) {
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err == nil {
		if err = pprof.StartCPUProfile(f); err != nil {
			f.Close()
		}
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "zfs2s3: ZFS2S3_CPUPROFILE: %v\n", err)
		return func() {}
	}
	return func() { pprof.StopCPUProfile(); f.Close() }
}

// interrupt is the cause of a context cancelled by a signal.
type interrupt struct{ sig os.Signal }

func (i interrupt) Error() string { return "interrupted by " + signalName(i.sig) }

func signalName(sig os.Signal) string {
	switch sig {
	case os.Interrupt:
		return "SIGINT"
	case syscall.SIGTERM:
		return "SIGTERM"
	case syscall.SIGHUP:
		return "SIGHUP"
	}
	return sig.String()
}

func run(ctx context.Context, args []string) int {
	app := newApp()
	args = hoistCommonFlags(app, args)
	if len(args) > 1 && !strings.HasPrefix(args[1], "-") && args[1] != "help" && app.Command(args[1]) == nil {
		fmt.Fprintf(os.Stderr, "zfs2s3: unknown command %q; run zfs2s3 --help for the list\n", args[1])
		return exitUsage
	}
	err := app.RunContext(ctx, reorderArgs(app, args))
	if err == nil {
		return exitOK
	}
	var re *backup.RunError
	if errors.As(err, &re) {
		// One line per dataset that failed, each naming it.
		for _, line := range re.Lines {
			fmt.Fprintln(os.Stderr, "zfs2s3: "+oneLine(line))
		}
		return exitFailed
	}
	msg := oneLine(err.Error())
	if errors.As(context.Cause(ctx), new(interrupt)) {
		msg = interruptedMessage(msg)
	}
	fmt.Fprintln(os.Stderr, "zfs2s3: "+msg)
	return exitCode(err)
}

// interruptedMessage words an error that a signal caused: "context
// canceled" means nothing to the user who pressed Ctrl-C.
func interruptedMessage(msg string) string {
	canceled := context.Canceled.Error()
	msg = strings.ReplaceAll(msg, ": "+canceled, "")
	msg = strings.ReplaceAll(msg, canceled, "interrupted")
	if !strings.Contains(msg, "interrupted") {
		msg = "interrupted: " + msg
	}
	return msg
}

func exitCode(err error) int {
	var ue usageErr
	switch {
	case errors.Is(err, ledger.ErrRefused), errors.Is(err, backup.ErrLocked):
		return exitRefused
	case errors.Is(err, backup.ErrUsage), errors.As(err, &ue), errors.As(err, new(*config.Error)):
		return exitUsage
	}
	return exitFailed
}

// usageErr is a command-line mistake caught before any work starts.
type usageErr struct{ error }

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func commonFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "config", EnvVars: []string{"ZFS2S3_CONFIG"}, Usage: "config `FILE` (default " + config.DefaultPath + ", used only if it exists)"},
		&cli.StringFlag{Name: "bucket", EnvVars: []string{"ZFS2S3_BUCKET"}, Usage: "S3 bucket (required)"},
		&cli.StringFlag{Name: "prefix", EnvVars: []string{"ZFS2S3_PREFIX"}, Usage: "key prefix inside the bucket; {hostname} and {host} stand for this machine (see Running a fleet in README.md)"},
		&cli.StringFlag{Name: "host", EnvVars: []string{"ZFS2S3_HOST"}, Usage: "this machine's name for {host} in the prefix (default its hostname up to the first dot)"},
		&cli.StringFlag{Name: "endpoint", EnvVars: []string{"ZFS2S3_ENDPOINT"}, Usage: "S3-compatible endpoint URL (path-style addressing)"},
		&cli.StringFlag{Name: "region", EnvVars: []string{"AWS_REGION"}, Usage: "AWS region"},
		&cli.StringFlag{Name: "profile", EnvVars: []string{"AWS_PROFILE"}, Usage: "AWS shared-config profile"},
		&cli.StringFlag{Name: "storage-class", EnvVars: []string{"ZFS2S3_STORAGE_CLASS"}, Value: "STANDARD", Usage: "S3 storage class of new objects"},
		&cli.StringFlag{Name: "state-dir", EnvVars: []string{"ZFS2S3_STATE_DIR"}, Usage: "where the ledger and upload state live (default $XDG_DATA_HOME/zfs2s3 or ~/.local/share/zfs2s3)"},
		&cli.StringFlag{Name: "zfs", EnvVars: []string{"ZFS2S3_ZFS"}, Value: "zfs", Usage: "the zfs command"},
		&cli.StringFlag{Name: "part-size", EnvVars: []string{"ZFS2S3_PART_SIZE"}, Usage: "multipart part size, e.g. 16MiB or 64M (default: planned from the stream's size)"},
		&cli.StringFlag{Name: "checksum", EnvVars: []string{"ZFS2S3_CHECKSUM"}, Value: "sha256", Usage: "checksum S3 verifies on every part: sha256 (the part digest zfs2s3 computes anyway), crc32c, md5 (for Backblaze B2, Ceph) or none"},
		&cli.StringFlag{Name: "conditional-writes", EnvVars: []string{"ZFS2S3_CONDITIONAL_WRITES"}, Value: "auto", Usage: "how the bucket's ledger copy is guarded: auto (If-Match) or off (compare generations; for stores without usable conditional writes)"},
		&cli.IntFlag{Name: "concurrency", EnvVars: []string{"ZFS2S3_CONCURRENCY"}, Value: 4, Usage: "parts uploaded in parallel"},
		&cli.IntFlag{Name: "lock-days", EnvVars: []string{"ZFS2S3_LOCK_DAYS"}, Usage: "store new stream objects and manifests with an S3 object lock of `N` days (the bucket must have been created with object lock; see Object Lock in README.md)"},
		&cli.StringFlag{Name: "lock-mode", EnvVars: []string{"ZFS2S3_LOCK_MODE"}, Value: "governance", Usage: "object lock mode of --lock-days: governance or compliance"},
		&cli.BoolFlag{Name: "verbose", Aliases: []string{"v"}, Usage: "log what is done on stderr"},
		&cli.BoolFlag{Name: "progress", Usage: "show upload progress on stderr even when it is not a terminal"},
		&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "no progress on stderr"},
		&cli.StringFlag{Name: "compress", EnvVars: []string{"ZFS2S3_COMPRESS"}, Value: "none", Usage: "compress new uploads: none, zstd or zstd:LEVEL (1 to 19)"},
		&cli.StringSliceFlag{Name: "recipient", Usage: "encrypt new uploads with age to this public key `age1...` (repeatable)"},
		&cli.StringFlag{Name: "recipients-file", EnvVars: []string{"ZFS2S3_RECIPIENTS_FILE"}, Usage: "encrypt new uploads to the age public keys in `FILE` (one a line)"},
		&cli.StringFlag{Name: "send-flags", EnvVars: []string{"ZFS2S3_SEND_FLAGS"}, Usage: "zfs send options of new uploads: a comma-separated list of compressed (-c), large-blocks (-L), embedded (-e), raw (-w)"},
		&cli.StringFlag{Name: "identity", EnvVars: []string{"ZFS2S3_IDENTITY"}, Usage: "age secret key `FILE` that restore, save and verify --read-data decrypt with"},
		// Tests lower S3's 10,000-part limit to see long streams continue in further objects.
		&cli.IntFlag{Name: "parts-per-object", Hidden: true},
		// Tests cut transformed streams into small segments (default 256 MiB).
		&cli.StringFlag{Name: "segment-size", Hidden: true},
	}
}

func newApp() *cli.App {
	guidFlags := []cli.Flag{
		&cli.Uint64Flag{Name: "guid", Usage: "GUID of the target snapshot, when several stored edges share its name"},
		&cli.Uint64Flag{Name: "base-guid", Usage: "GUID of the base snapshot, when several stored edges share its name"},
	}
	baseFlag := &cli.StringFlag{Name: "i", Usage: "incremental from base `DATASET@BASE`"}
	app := &cli.App{
		Name:            "zfs2s3",
		Usage:           "back ZFS snapshots up to S3, guarded by a ledger",
		HideHelpCommand: true,
		ExitErrHandler:  func(*cli.Context, error) {}, // run() prints and exits
		OnUsageError: func(_ *cli.Context, err error, _ bool) error {
			return usageErr{err}
		},
		Commands: []*cli.Command{
			{
				Name: "upload", ArgsUsage: "DATASET@SNAP [-i DATASET@BASE]",
				Usage: "store a full or incremental zfs send stream",
				Flags: append(commonFlags(), baseFlag),
				Action: withBackup([]arg{snapArg}, func(ctx context.Context, c *cli.Context, b *backup.Backup) error {
					return b.Upload(ctx, c.Args().First(), c.String("i"))
				}),
			},
			{
				Name: "resume_upload", ArgsUsage: "[DATASET@SNAP]",
				Usage: "continue interrupted uploads (all of them, or those of one snapshot)",
				Flags: commonFlags(),
				Action: withBackup([]arg{optSnapArg}, func(ctx context.Context, c *cli.Context, b *backup.Backup) error {
					return b.Resume(ctx, c.Args().First())
				}),
			},
			{
				Name: "abort_upload", ArgsUsage: "[DATASET@SNAP]",
				Usage: "discard interrupted uploads and their multipart uploads in the bucket",
				Flags: commonFlags(),
				Action: withBackup([]arg{optSnapArg}, func(ctx context.Context, c *cli.Context, b *backup.Backup) error {
					return b.Abort(ctx, c.Args().First())
				}),
			},
			{
				Name: "remove", ArgsUsage: "DATASET@SNAP [-i DATASET@BASE]",
				Usage: "delete a stored edge, if no stored edge still needs it",
				Flags: append(append(commonFlags(), baseFlag), guidFlags...),
				Action: withBackup([]arg{snapArg}, func(ctx context.Context, c *cli.Context, b *backup.Backup) error {
					return b.Remove(ctx, backup.EdgeRef{Target: c.Args().First(), Base: c.String("i"),
						TargetGUID: c.Uint64("guid"), BaseGUID: c.Uint64("base-guid")})
				}),
			},
			{
				Name: "restore", ArgsUsage: "DATASET[@SNAP]",
				Usage: "receive a stored snapshot (DATASET alone: its newest restorable one) by the cheapest chain of stored streams",
				Flags: append(commonFlags(),
					&cli.StringFlag{Name: "into", Usage: "receive into `DATASET` instead of the original dataset"},
					&cli.BoolFlag{Name: "force", Aliases: []string{"F"}, Usage: "zfs receive -F: roll the destination back first"},
					&cli.BoolFlag{Name: "dry-run", Aliases: []string{"n"}, Usage: "print the chain and the commands, run nothing"},
					guidFlags[0]),
				Action: withBackup([]arg{snapOrDatasetArg}, runRestore),
			},
			{
				Name: "save", ArgsUsage: "DATASET@SNAP [-i DATASET@BASE] FILE|-",
				Usage: "write one stored stream, verified, to a file or stdout (for zfs receive elsewhere)",
				Flags: append(append(commonFlags(), baseFlag), guidFlags...),
				Action: withBackup([]arg{snapArg, fileArg}, func(ctx context.Context, c *cli.Context, b *backup.Backup) error {
					b.Reading(datasetOf(c.Args().Get(0)))
					return b.Save(ctx, backup.EdgeRef{Target: c.Args().Get(0), Base: c.String("i"),
						TargetGUID: c.Uint64("guid"), BaseGUID: c.Uint64("base-guid")}, c.Args().Get(1), c.App.Writer)
				}),
			},
			{
				Name: "verify", ArgsUsage: "[DATASET]",
				Usage: "check every stored edge against the bucket; exit 0 only when all is intact",
				Flags: append(commonFlags(),
					&cli.BoolFlag{Name: "read-data", Usage: "download every object and check its SHA-256"},
					&cli.BoolFlag{Name: "json", Usage: "print the report as JSON"}),
				Action: withBackup([]arg{optDatasetArg}, func(ctx context.Context, c *cli.Context, b *backup.Backup) error {
					b.Reading(c.Args().First())
					rep, err := b.Verify(ctx, c.Args().First(), c.Bool("read-data"))
					if err != nil {
						return err
					}
					return printVerify(c.App.Writer, rep, c.Bool("json"))
				}),
			},
			{
				Name: "status", ArgsUsage: "[DATASET]",
				Usage: "show stored edges, local snapshots not stored, pending uploads and strays in the bucket",
				Flags: append(commonFlags(), &cli.BoolFlag{Name: "json", Usage: "print JSON (a stable shape, see README.md)"},
					&cli.StringFlag{Name: "max-age", Usage: "check instead: exit 1 naming each configured dataset (or DATASET) whose newest restorable stored snapshot is older than `AGE` (e.g. 26h, 2d), or that has an unrestorable one or nothing stored"}),
				Action: withBackup([]arg{optDatasetArg}, runStatus),
			},
			{
				Name: "backup", ArgsUsage: "[DATASET...]",
				Usage: "back up the configured datasets (or the named ones): finish pending uploads, then store new snapshots as the config says",
				Flags: append(commonFlags(),
					&cli.BoolFlag{Name: "dry-run", Aliases: []string{"n"}, Usage: "print the plan (each edge, its base, why, the estimated size) and change nothing"},
					&cli.BoolFlag{Name: "json", Usage: "print one report as JSON (a stable shape, see README.md)"},
					metricsFlag()),
				Action: configAction("backup", func(ctx context.Context, b *backup.Backup, cfg *config.Config, ds []config.Dataset, dryRun bool) (any, error) {
					return b.Run(ctx, cfg, ds, backup.RunOptions{DryRun: dryRun})
				}),
			},
			{
				Name: "prune", ArgsUsage: "[DATASET...]",
				Usage: "apply each configured dataset's keep rule to its stored snapshots: upload bypasses, then remove what no kept snapshot needs",
				Flags: append(commonFlags(),
					&cli.BoolFlag{Name: "dry-run", Aliases: []string{"n"}, Usage: "print the plan (bypasses, removals and why, chain links that stay) and change nothing"},
					&cli.BoolFlag{Name: "json", Usage: "print one report as JSON"},
					metricsFlag()),
				Action: configAction("prune", func(ctx context.Context, b *backup.Backup, _ *config.Config, ds []config.Dataset, dryRun bool) (any, error) {
					return b.Prune(ctx, ds, backup.PruneOptions{DryRun: dryRun})
				}),
			},
			{
				Name: "consolidate", ArgsUsage: "DATASET@FROM DATASET@TO",
				Usage: "store FROM -> TO if missing, then remove the edges between them that nothing else needs",
				Flags: append(commonFlags(),
					&cli.BoolFlag{Name: "dry-run", Aliases: []string{"n"}, Usage: "print the plan and change nothing"},
					&cli.BoolFlag{Name: "json", Usage: "print one report as JSON"}),
				Action: runConsolidate,
			},
			{
				Name:  "ledger",
				Usage: "manage the ledger",
				Subcommands: []*cli.Command{{
					Name:  "rebuild",
					Usage: "reconstruct the ledger from the manifests in the bucket alone",
					Flags: commonFlags(),
					Action: withBackup(nil, func(ctx context.Context, c *cli.Context, b *backup.Backup) error {
						return b.Rebuild(ctx)
					}),
				}},
			},
			policyCommand(),
			fleetCommand(),
		},
	}
	for _, c := range app.Commands {
		c.OnUsageError = app.OnUsageError // one line and exit 2, not a page of help
		for _, sc := range c.Subcommands {
			sc.OnUsageError = app.OnUsageError
		}
	}
	return app
}

// runStatus is the status command; with --max-age it is a monitoring
// check whose exit code says whether every checked dataset is fresh.
func runStatus(ctx context.Context, c *cli.Context, b *backup.Backup) error {
	cfg, err := loadConfig(c)
	if err != nil {
		return err
	}
	opt := backup.StatusOptions{Dataset: c.Args().First(), Configured: cfg.Datasets}
	if !c.IsSet("max-age") {
		st, err := b.StatusOf(ctx, opt)
		if err != nil {
			return err
		}
		if err := printStatus(c.App.Writer, st, c.Bool("json")); err != nil {
			return err
		}
		return st.Err() // a dataset journal a new machine cannot use: the rest is printed
	}
	maxAge, err := config.ParseDuration(c.String("max-age"))
	if err != nil {
		return usageErr{fmt.Errorf("--max-age: %w", err)}
	}
	opt.MaxAge, opt.Now = maxAge, time.Now()
	st, err := b.StatusOf(ctx, opt)
	if err != nil {
		return err
	}
	if c.Bool("json") {
		err = writeJSON(c.App.Writer, st)
	} else {
		err = st.WriteFreshness(c.App.Writer)
	}
	if err != nil {
		return err
	}
	if err := st.Err(); err != nil {
		return err
	}
	checked := st.Checked()
	if stale := health.Stale(checked); len(stale) > 0 {
		var names []string
		for _, v := range stale {
			names = append(names, v.Dataset)
		}
		return fmt.Errorf("%d of %d datasets not fresh (max age %s): %s", len(stale), len(checked), health.Age(maxAge), strings.Join(names, ", "))
	}
	return nil
}

// runRestore is the restore command. DATASET without @SNAP restores the
// newest restorable stored snapshot, dated by the dataset's time_format
// when it is configured; the line saying which comes first.
func runRestore(ctx context.Context, c *cli.Context, b *backup.Backup) error {
	o := backup.RestoreOptions{Target: c.Args().First(), GUID: c.Uint64("guid"),
		Into: c.String("into"), Force: c.Bool("force"), DryRun: c.Bool("dry-run")}
	b.Reading(datasetOf(o.Target))
	if !strings.Contains(o.Target, "@") {
		if c.IsSet("guid") {
			return usageErr{fmt.Errorf("--guid picks among snapshots of one name: give DATASET@SNAP with it, not %s alone", o.Target)}
		}
		cfg, err := loadConfig(c)
		if err != nil {
			return err
		}
		d := config.Dataset{Name: o.Target}
		for _, cd := range cfg.Datasets {
			if cd.Name == o.Target {
				d = cd
			}
		}
		snap, t, err := b.Newest(ctx, d)
		if err != nil {
			return err
		}
		b.Out("newest restorable stored snapshot of %s: %s (snapshot time %s)", o.Target, snap.Name, t.Local().Format("2006-01-02 15:04:05"))
		o.Target, o.GUID = snap.Name, snap.GUID
	}
	return b.Restore(ctx, o)
}

// datasetOf is the dataset of DATASET@SNAP, or DATASET itself.
func datasetOf(name string) string { ds, _, _ := strings.Cut(name, "@"); return ds }

// printStatus prints a status as tables, or as JSON for scripts.
func printStatus(w io.Writer, st backup.Status, asJSON bool) error {
	if asJSON {
		return writeJSON(w, st)
	}
	return st.WriteText(w)
}

// printVerify prints a verify report and fails when it found problems.
func printVerify(w io.Writer, rep backup.VerifyReport, asJSON bool) error {
	if asJSON {
		if err := writeJSON(w, rep); err != nil {
			return err
		}
	} else {
		for _, c := range rep.Edges {
			if len(c.Problems) == 0 {
				fmt.Fprintf(w, "ok   %s%s\n", c.Edge, c.Lock.Note())
			}
			for _, p := range c.Problems {
				fmt.Fprintf(w, "BAD  %s: %s\n", c.Edge, p)
			}
		}
		for _, k := range rep.Unknown {
			fmt.Fprintf(w, "BAD  unknown object %s: no ledger edge references it\n", k)
		}
	}
	if rep.OK {
		return nil
	}
	bad := len(rep.Unknown) // as many as the BAD lines
	for _, c := range rep.Edges {
		bad += len(c.Problems)
	}
	return fmt.Errorf("verify found %d problem(s), listed on stdout", bad)
}

// writeJSON prints v indented, with '<', '>' and '&' as they are: the
// output is for scripts and people, not for embedding in HTML, and an
// edge reads "a -> b", not "a -\u003e b".
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// arg is what one positional argument of a command is, for counting and
// checking it.
type arg int

const (
	snapArg          arg = iota // DATASET@SNAP, required
	optSnapArg                  // DATASET@SNAP, optional
	optDatasetArg               // DATASET, optional
	fileArg                     // FILE or -, required
	snapOrDatasetArg            // DATASET@SNAP or DATASET, required
)

// withBackup checks the arguments (count, and names by ZFS's rules), builds
// a Backup from the flags and runs fn. Everything the user typed is checked
// before anything runs, so a mistake is exit 2 with nothing touched.
func withBackup(args []arg, fn func(context.Context, *cli.Context, *backup.Backup) error) cli.ActionFunc {
	return func(c *cli.Context) error {
		required := 0
		for _, a := range args {
			if a == snapArg || a == fileArg || a == snapOrDatasetArg {
				required++
			}
		}
		if n := c.NArg(); n < required || n > len(args) {
			want := c.Command.ArgsUsage
			if want == "" {
				want = "no arguments"
			}
			return usageErr{fmt.Errorf("%s takes %s, got %d argument(s); see zfs2s3 %s --help", c.Command.FullName(), want, n, c.Command.FullName())}
		}
		if err := checkNames(c, args); err != nil {
			return usageErr{err}
		}
		if _, err := loadConfig(c); err != nil {
			return err
		}
		b, err := newBackup(c)
		if err != nil {
			return err
		}
		return fn(c.Context, c, b)
	}
}

// checkNames checks the dataset and snapshot names among a command's
// arguments and its -i and --into flags. A flag given with an empty value is
// refused rather than read as absent: "-i $BASE" with $BASE unset would
// otherwise turn an incremental into a full stream, or remove the full edge.
func checkNames(c *cli.Context, args []arg) error {
	for i, a := range args {
		if i >= c.NArg() {
			break
		}
		var err error
		switch a {
		case snapArg, optSnapArg:
			err = zfs.CheckSnapshotName(c.Args().Get(i))
		case optDatasetArg:
			err = zfs.CheckDatasetName(c.Args().Get(i))
		case snapOrDatasetArg:
			if v := c.Args().Get(i); strings.Contains(v, "@") {
				err = zfs.CheckSnapshotName(v)
			} else {
				err = zfs.CheckDatasetName(v)
			}
		}
		if err != nil {
			return err
		}
	}
	for _, f := range []struct {
		name, absent string
		check        func(string) error
	}{
		{"i", "leave -i out for a full stream", zfs.CheckSnapshotName},
		{"into", "leave --into out to restore into the original dataset", zfs.CheckDatasetName},
	} {
		if !c.IsSet(f.name) {
			continue
		}
		flag := "-" + f.name
		if len(f.name) > 1 {
			flag = "-" + flag
		}
		v := c.String(f.name)
		if v == "" {
			return fmt.Errorf("%s was given an empty name (an unset variable?); %s", flag, f.absent)
		}
		if err := f.check(v); err != nil {
			return fmt.Errorf("%s: %w", flag, err)
		}
	}
	return nil
}

// configAction makes a command over the configured datasets (backup,
// prune): names checked, config loaded and the datasets selected before
// anything runs; with --json the report replaces the result lines. A
// *backup.RunError (some datasets failed) still prints the report.
func configAction(command string, fn func(ctx context.Context, b *backup.Backup, cfg *config.Config, datasets []config.Dataset, dryRun bool) (report any, err error)) cli.ActionFunc {
	return func(c *cli.Context) error {
		names := c.Args().Slice()
		for _, n := range names {
			if err := zfs.CheckDatasetName(n); err != nil {
				return usageErr{err}
			}
		}
		cfg, err := loadConfig(c)
		if err != nil {
			return err
		}
		datasets, err := backup.SelectDatasets(cfg, command, names)
		if err != nil {
			return err
		}
		metricsPath, err := metricsFile(c, cfg)
		if err != nil {
			return err
		}
		b, err := newBackup(c)
		if err != nil {
			return err
		}
		quietForJSON(c, b)
		rep, err := fn(c.Context, b, cfg, datasets, c.Bool("dry-run"))
		var re *backup.RunError
		if err != nil && !errors.As(err, &re) {
			return err // nothing was done
		}
		if c.Bool("json") {
			if jerr := writeJSON(c.App.Writer, rep); jerr != nil {
				return jerr
			}
		}
		if metricsPath != "" && !c.Bool("dry-run") {
			if merr := b.WriteMetrics(c.Context, metricsPath, cfg.Datasets, rep, time.Now()); merr != nil {
				if re != nil {
					re.Lines = append(re.Lines, merr.Error())
					return re
				}
				return fmt.Errorf("%s done, but: %w", command, merr)
			}
		}
		return err
	}
}

// metricsFlag is --metrics-file, of the commands that write metrics.
func metricsFlag() cli.Flag {
	return &cli.StringFlag{Name: "metrics-file", EnvVars: []string{"ZFS2S3_METRICS_FILE"},
		Usage: "write Prometheus metrics to `FILE` (e.g. in node_exporter's textfile directory; see README.md); not in a dry run"}
}

// metricsFile returns where to write metrics ("" for nowhere): the flag,
// the environment, or the config's metrics_file. Its directory must
// exist, so that a typo is found before the run rather than after it.
func metricsFile(c *cli.Context, cfg *config.Config) (string, error) {
	path, where := c.String("metrics-file"), "--metrics-file"
	if c.IsSet("metrics-file") && path == "" {
		return "", usageErr{errors.New("--metrics-file or ZFS2S3_METRICS_FILE names no file (an unset variable?); leave both out to write no metrics")}
	}
	if !c.IsSet("metrics-file") {
		path, where = cfg.Global.MetricsFile, cfg.File+": metrics_file"
	}
	if path == "" {
		return "", nil
	}
	dir := filepath.Dir(path)
	switch fi, err := os.Stat(dir); {
	case errors.Is(err, fs.ErrNotExist):
		return "", usageErr{fmt.Errorf("%s %s: directory %s does not exist; create it or name another file", where, path, dir)}
	case err != nil:
		return "", usageErr{fmt.Errorf("%s %s: %w", where, path, err)}
	case !fi.IsDir():
		return "", usageErr{fmt.Errorf("%s %s: %s is not a directory", where, path, dir)}
	}
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		return "", usageErr{fmt.Errorf("%s %s is a directory; name a file in it, e.g. %s", where, path, filepath.Join(path, "zfs2s3.prom"))}
	}
	return path, nil
}

// quietForJSON drops the result lines when --json prints a report that
// says it all.
func quietForJSON(c *cli.Context, b *backup.Backup) {
	if c.Bool("json") {
		b.Out = func(string, ...any) {}
	}
}

// runConsolidate is the consolidate command. The dataset need not be
// configured; when it is, its time_format orders the stored snapshots.
func runConsolidate(c *cli.Context) error {
	if n := c.NArg(); n != 2 {
		return usageErr{fmt.Errorf("consolidate takes DATASET@FROM DATASET@TO, got %d argument(s); see zfs2s3 consolidate --help", n)}
	}
	for _, a := range c.Args().Slice() {
		if err := zfs.CheckSnapshotName(a); err != nil {
			return usageErr{err}
		}
	}
	cfg, err := loadConfig(c)
	if err != nil {
		return err
	}
	from, to := c.Args().Get(0), c.Args().Get(1)
	ds, _, _ := strings.Cut(from, "@")
	d := config.Dataset{Name: ds}
	for _, cd := range cfg.Datasets {
		if cd.Name == ds {
			d = cd
		}
	}
	b, err := newBackup(c)
	if err != nil {
		return err
	}
	quietForJSON(c, b)
	rep, err := b.Consolidate(c.Context, d, from, to, backup.PruneOptions{DryRun: c.Bool("dry-run")})
	if err != nil {
		return err
	}
	if c.Bool("json") {
		return writeJSON(c.App.Writer, rep)
	}
	return nil
}

// configKeys pairs each config.Global setting with its flag.
func configKeys(g config.Global) []struct{ flag, key, value string } {
	conc, lockDays := "", ""
	if g.Concurrency != 0 {
		conc = strconv.Itoa(g.Concurrency)
	}
	if g.LockDays != 0 {
		lockDays = strconv.Itoa(g.LockDays)
	}
	return []struct{ flag, key, value string }{
		{"bucket", "bucket", g.Bucket}, {"prefix", "prefix", g.Prefix}, {"endpoint", "endpoint", g.Endpoint},
		{"region", "region", g.Region}, {"profile", "profile", g.Profile}, {"storage-class", "storage_class", g.StorageClass},
		{"checksum", "checksum", g.Checksum}, {"part-size", "part_size", g.PartSize}, {"concurrency", "concurrency", conc},
		{"state-dir", "state_dir", g.StateDir}, {"host", "host", g.Host},
		{"lock-days", "lock_days", lockDays}, {"lock-mode", "lock_mode", g.LockMode},
		{"compress", "compress", g.Compress}, {"send-flags", "send_flags", g.SendFlags}, {"recipients-file", "recipients_file", g.RecipientsFile}, {"identity", "identity", g.Identity},
	}
}

// loadConfig reads the config file (--config, ZFS2S3_CONFIG, or the
// default path if it exists) and fills in each global setting that neither
// a flag nor the environment set, so that what follows sees one value per
// setting: flags, then environment, then config, then defaults. A config
// error is exit 2 before anything runs.
func loadConfig(c *cli.Context) (*config.Config, error) {
	file := c.String("config")
	if c.IsSet("config") && file == "" {
		return nil, usageErr{errors.New("--config or ZFS2S3_CONFIG names no file (an unset variable?); leave both out for " + config.DefaultPath)}
	}
	if !c.IsSet("config") {
		file = config.DefaultPath
		if _, err := os.Stat(file); errors.Is(err, fs.ErrNotExist) {
			return &config.Config{}, nil // no config: flags and environment only
		}
	}
	cfg, err := config.Load(file)
	if err != nil {
		return nil, usageErr{err}
	}
	// Recipients given by flag or environment replace the config's, both
	// its list and its file; decided before the config's file is applied
	// below, which would count as set.
	recipientsGiven := c.IsSet("recipient") || c.IsSet("recipients-file")
	for _, k := range configKeys(cfg.Global) {
		if k.value == "" || c.IsSet(k.flag) || (k.flag == "recipients-file" && recipientsGiven) {
			continue
		}
		if err := c.Set(k.flag, k.value); err != nil {
			return nil, usageErr{cfg.Errorf(0, k.key, "%v", err)}
		}
	}
	if !recipientsGiven {
		for _, r := range cfg.Global.Recipients {
			if err := c.Set("recipient", r); err != nil {
				return nil, usageErr{cfg.Errorf(0, "recipients", "%v", err)}
			}
		}
	}
	return cfg, nil
}

// readOnlyCommands change nothing in the ledger or the bucket.
var readOnlyCommands = map[string]bool{"status": true, "verify": true, "restore": true, "save": true}

// maxConcurrency caps --concurrency: each part in flight holds a part-size
// buffer, and beyond a few dozen parallel requests no link gets faster.
const maxConcurrency = 64

func newBackup(c *cli.Context) (*backup.Backup, error) {
	level := slog.LevelWarn
	if c.Bool("verbose") {
		level = slog.LevelInfo
	}
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})))
	bucket := c.String("bucket")
	if bucket == "" {
		return nil, usageErr{errors.New("no bucket: set --bucket or ZFS2S3_BUCKET")}
	}
	partSize, err := parsePartSize(c.String("part-size"))
	if err != nil {
		return nil, usageErr{err}
	}
	if n := c.Int("concurrency"); n < 1 || n > maxConcurrency {
		return nil, usageErr{fmt.Errorf("--concurrency %d: want 1 to %d parts in flight (each holds a part in memory)", n, maxConcurrency)}
	}
	prefix, err := resolvePrefix(c)
	if err != nil {
		return nil, err
	}
	if err := ledger.CheckPrefix(prefix); err != nil {
		// Backups stored under such a prefix by an earlier release stay
		// readable; only changes are refused.
		if !readOnlyCommands[c.Command.Name] {
			return nil, usageErr{fmt.Errorf("%w (backups already stored under it can still be read with status, verify, restore and save)", err)}
		}
		slog.Warn(err.Error() + "; reading anyway, changes are refused")
	}
	if err := s3up.CheckEndpoint(c.String("endpoint")); err != nil {
		return nil, usageErr{err}
	}
	if !slices.Contains(s3up.Checksums, c.String("checksum")) {
		return nil, usageErr{fmt.Errorf("--checksum %q: want one of %s", c.String("checksum"), strings.Join(s3up.Checksums, ", "))}
	}
	if !slices.Contains(backup.ConditionalWriteModes, c.String("conditional-writes")) {
		return nil, usageErr{fmt.Errorf("--conditional-writes %q: want one of %s", c.String("conditional-writes"), strings.Join(backup.ConditionalWriteModes, ", "))}
	}
	lock, err := s3up.CheckLock(c.Int("lock-days"), c.String("lock-mode"))
	if err != nil {
		return nil, usageErr{fmt.Errorf("--lock-days, --lock-mode: %w", err)}
	}
	if lock != nil && c.String("checksum") == "none" {
		return nil, usageErr{errors.New("--lock-days with --checksum none: S3 requires a checksum on every write with object lock; use --checksum sha256, crc32c or md5")}
	}
	stateDir, err := defaultStateDir(c.String("state-dir"))
	if err != nil {
		return nil, err
	}
	client, err := s3up.NewClient(c.Context, s3up.Config{Bucket: bucket, Endpoint: c.String("endpoint"),
		Region: c.String("region"), Profile: c.String("profile")})
	if err != nil {
		return nil, err
	}
	opt := backup.Options{StateDir: stateDir, Prefix: prefix, StorageClass: c.String("storage-class"),
		PartSize: partSize, Concurrency: c.Int("concurrency"), Checksum: c.String("checksum"), PartsPerObject: c.Int("parts-per-object"),
		ConditionalWrites: c.String("conditional-writes"), Lock: lock}
	centralOptions(c, &opt)
	if err := transformOptions(c, &opt); err != nil {
		return nil, err
	}
	b := backup.New(zfs.Runner{Cmd: c.String("zfs")}, client, opt, func(format string, args ...any) {
		fmt.Fprintf(c.App.Writer, format+"\n", args...)
	})
	if (isTerminal(os.Stderr) || c.Bool("progress")) && !c.Bool("quiet") {
		pr := newProgress(os.Stderr)
		b.Progress, b.ProgressDone = pr.update, pr.finish
	}
	return b, nil
}

// transformOptions reads --compress, --recipient, --recipients-file and
// --identity (or their config keys) into opt. A bad value is a usage error
// naming the flag.
func transformOptions(c *cli.Context, opt *backup.Options) error {
	spec, err := transform.ParseCompress(c.String("compress"))
	if err != nil {
		return usageErr{fmt.Errorf("--compress: %w", err)}
	}
	opt.Transform.Compress = spec
	for _, r := range c.StringSlice("recipient") {
		rec, err := transform.ParseRecipient(r)
		if err != nil {
			return usageErr{fmt.Errorf("--recipient: %w", err)}
		}
		opt.Transform.Recipients = append(opt.Transform.Recipients, rec)
	}
	if f := c.String("recipients-file"); f != "" {
		recs, err := transform.ReadRecipientsFile(f)
		if err != nil {
			return usageErr{fmt.Errorf("--recipients-file: %w", err)}
		}
		opt.Transform.Recipients = append(opt.Transform.Recipients, recs...)
	}
	if s := c.String("segment-size"); s != "" {
		mib, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSuffix(s, "MiB"), "M"), 10, 64)
		n := mib << 20
		if err == nil {
			err = transform.CheckSegmentSize(n)
		} else {
			err = fmt.Errorf("%q: want a whole number of MiB, e.g. 256MiB", s)
		}
		if err != nil {
			return usageErr{fmt.Errorf("--segment-size: %w", err)}
		}
		opt.Transform.SegmentSize = n
	}
	flags, err := zfs.ParseSendFlags(c.String("send-flags"))
	if err != nil {
		return usageErr{fmt.Errorf("--send-flags: %w", err)}
	}
	opt.SendFlags = flags
	if f := c.String("identity"); f != "" {
		ids, err := transform.ReadIdentitiesFile(f)
		if err != nil {
			return usageErr{fmt.Errorf("--identity: %w", err)}
		}
		opt.Identities, opt.IdentityFiles = ids, []string{f}
	}
	return nil
}

func defaultStateDir(flag string) (string, error) {
	if flag != "" {
		return flag, nil
	}
	if x := os.Getenv("XDG_DATA_HOME"); x != "" {
		return filepath.Join(x, "zfs2s3"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", usageErr{fmt.Errorf("no home directory for the state dir: set --state-dir or ZFS2S3_STATE_DIR")}
	}
	return filepath.Join(home, ".local", "share", "zfs2s3"), nil
}

// parsePartSize reads sizes like 8MiB, 64M, 1G or a byte count. K, M and G
// are binary (1024-based), as part sizes are; "" means plan automatically.
func parsePartSize(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	num := strings.TrimRight(s, "KMGiBkmgb")
	unit := strings.TrimSuffix(strings.TrimSuffix(strings.ToUpper(s[len(num):]), "B"), "I")
	shift, ok := map[string]uint{"": 0, "K": 10, "M": 20, "G": 30}[unit]
	n, err := strconv.ParseInt(strings.TrimSpace(num), 10, 64)
	if !ok || err != nil || n <= 0 {
		return 0, fmt.Errorf("--part-size %q: want a size like 16MiB, 64M or 1G", s)
	}
	if n > s3up.MaxPartSize>>shift { // also keeps n << shift from overflowing
		return 0, fmt.Errorf("--part-size %s: S3 parts must be between 5MiB and 5GiB", s)
	}
	size := n << shift
	if size < s3up.MinPartSize || size > s3up.MaxPartSize {
		return 0, fmt.Errorf("--part-size %s: S3 parts must be between 5MiB and 5GiB", s)
	}
	return size, nil
}

func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// flagArity maps each flag name to whether it takes a value.
func flagArity(flags []cli.Flag) map[string]bool {
	takesValue := map[string]bool{}
	for _, f := range flags {
		_, isBool := f.(*cli.BoolFlag)
		for _, name := range f.Names() {
			takesValue[name] = !isBool
		}
	}
	return takesValue
}

// hoistCommonFlags moves the flags every command shares from before the
// command to just behind it ("zfs2s3 -v upload ..." becomes "zfs2s3 upload
// -v ..."), where the command's flag set parses them. Anything else before
// the command is left for the parser to refuse.
func hoistCommonFlags(app *cli.App, args []string) []string {
	common := flagArity(commonFlags())
	i := 1
	for ; i < len(args) && strings.HasPrefix(args[i], "-") && len(args[i]) > 1 && args[i] != "--"; i++ {
		name, _, inline := strings.Cut(strings.TrimLeft(args[i], "-"), "=")
		takesValue, ok := common[name]
		if !ok {
			return args
		}
		if takesValue && !inline {
			i++
		}
	}
	if i == 1 || i >= len(args) || strings.HasPrefix(args[i], "-") {
		return args
	}
	end := i + 1 // the command, and its subcommand if there is one
	if cmd := app.Command(args[i]); cmd != nil && end < len(args) && cmd.Command(args[end]) != nil {
		end++
	}
	out := append([]string{args[0]}, args[i:end]...)
	out = append(out, args[1:i]...)
	return append(out, args[end:]...)
}

// reorderArgs moves a command's positional arguments behind its flags, so
// that "upload tank/data@b -i tank/data@a" parses as users type it.
func reorderArgs(app *cli.App, args []string) []string {
	if len(args) < 2 {
		return args
	}
	cmd := app.Command(args[1])
	if cmd == nil {
		return args
	}
	if len(cmd.Subcommands) > 0 && len(args) > 2 {
		if sub := cmd.Command(args[2]); sub != nil {
			return append(args[:2:2], reorderArgs(&cli.App{Commands: []*cli.Command{sub}}, append([]string{args[0]}, args[2:]...))[1:]...)
		}
	}
	takesValue := flagArity(cmd.Flags)
	var flags, pos []string
	rest := args[2:]
	for i := 0; i < len(rest); i++ {
		a := rest[i]
		switch {
		case a == "--":
			pos = append(pos, rest[i+1:]...)
			i = len(rest)
		case strings.HasPrefix(a, "-") && len(a) > 1:
			flags = append(flags, a)
			name := strings.TrimLeft(a, "-")
			if !strings.Contains(name, "=") && takesValue[name] && i+1 < len(rest) {
				i++
				flags = append(flags, rest[i])
			}
		default:
			pos = append(pos, a)
		}
	}
	out := append([]string{args[0], args[1]}, flags...)
	if len(pos) > 0 {
		out = append(append(out, "--"), pos...)
	}
	return out
}
