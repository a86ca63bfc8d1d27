package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/zfs2s3/zfs2s3/backup"
	"github.com/zfs2s3/zfs2s3/central"
	"github.com/zfs2s3/zfs2s3/config"
	"github.com/zfs2s3/zfs2s3/ledger"
	"github.com/zfs2s3/zfs2s3/policy"
)

// resolvePrefix is the prefix this machine works under: --prefix (or
// ZFS2S3_PREFIX, or the config's prefix) with {hostname} and {host}
// expanded, so one config file serves a fleet. Expanded once, here, so
// every command and the ledger see the same prefix.
func resolvePrefix(c *cli.Context) (string, error) {
	prefix := c.String("prefix")
	if !config.HasPlaceholder(prefix) && !strings.ContainsAny(prefix, "{}") {
		return prefix, nil
	}
	hostname, err := config.ShortHostname()
	if err != nil && strings.Contains(prefix, config.HostnamePlaceholder) {
		return "", usageErr{err}
	}
	host := c.String("host")
	if host == "" {
		host = hostname
	}
	out, err := config.ExpandPrefix(prefix, host, hostname)
	if err != nil {
		if !config.HasPlaceholder(prefix) && readOnlyCommands[c.Command.Name] {
			// Backups an earlier release stored under a prefix with
			// braces in it stay readable; only changes are refused.
			slog.Warn(err.Error() + "; reading it as it is, changes are refused")
			return prefix, nil
		}
		return "", usageErr{err}
	}
	return out, nil
}

// policyCommand is zfs2s3 policy host NAME | admin: it prints the IAM
// policy of a fleet role for the bucket and prefix of the current config,
// and touches neither the bucket nor the state dir.
func policyCommand() *cli.Command {
	storeFlag := &cli.StringFlag{Name: "store", Value: string(policy.AWS),
		Usage: "the store the policy is for: aws (with the overwrite guard) or minio"}
	return &cli.Command{
		Name:  "policy",
		Usage: "print the IAM policy of a backup host or of the admin machine (see Running a fleet in README.md)",
		Subcommands: []*cli.Command{
			{
				Name: "host", ArgsUsage: "NAME",
				Usage: "the policy of host NAME: add and read backups under its own prefix, never delete",
				Flags: append(commonFlags(), storeFlag),
				Action: func(c *cli.Context) error {
					if c.NArg() != 1 {
						return usageErr{fmt.Errorf("policy host takes NAME, the host's name in the prefix, got %d argument(s); see zfs2s3 policy host --help", c.NArg())}
					}
					return printPolicy(c, c.Args().First())
				},
			},
			{
				Name:  "admin",
				Usage: "the policy of the admin machine: everything under the fleet's prefix, deleting included",
				Flags: append(commonFlags(), storeFlag),
				Action: func(c *cli.Context) error {
					if c.NArg() != 0 {
						return usageErr{fmt.Errorf("policy admin takes no arguments, got %d; see zfs2s3 policy admin --help", c.NArg())}
					}
					return printPolicy(c, "")
				},
			},
		},
	}
}

// printPolicy prints the host policy for host name, or the admin policy
// when name is "".
func printPolicy(c *cli.Context, name string) error {
	if _, err := loadConfig(c); err != nil {
		return err
	}
	store := c.String("store")
	if !slices.Contains(policy.Stores, store) {
		return usageErr{fmt.Errorf("--store %q: want one of %s", store, strings.Join(policy.Stores, ", "))}
	}
	bucket, prefix := c.String("bucket"), c.String("prefix")
	if bucket == "" {
		return usageErr{fmt.Errorf("no bucket: set --bucket, ZFS2S3_BUCKET or bucket: in the config")}
	}
	var doc policy.Document
	var err error
	if name == "" {
		root := config.StaticPrefix(prefix)
		if !config.HasPlaceholder(prefix) {
			root = ledger.NormalizePrefix(prefix)
		}
		doc, err = policy.Admin(bucket, root, policy.Store(store))
	} else {
		if err := config.CheckHostName(name); err != nil {
			return usageErr{fmt.Errorf("policy host %q: %w", name, err)}
		}
		expanded, xerr := config.ExpandPrefix(prefix, name, name)
		if xerr != nil {
			return usageErr{xerr}
		}
		if !config.HasPlaceholder(prefix) {
			fmt.Fprintf(os.Stderr, "zfs2s3: warning: the prefix %q has no {hostname} or {host}, so every host given this policy shares it; see Running a fleet in README.md\n", prefix)
		}
		if perr := ledger.CheckPrefix(expanded); perr != nil {
			return usageErr{perr}
		}
		doc, err = policy.Host(bucket, expanded, central.Key(prefix), policy.Store(store))
	}
	if err != nil {
		return usageErr{err}
	}
	out, err := doc.JSON()
	if err != nil {
		return err
	}
	_, err = c.App.Writer.Write(out)
	return err
}

// fleetCommand is zfs2s3 fleet status | prune: the admin side of a fleet,
// over every host prefix under the configured prefix's part before its
// first placeholder (see Running a fleet in README.md).
func fleetCommand() *cli.Command {
	jsonFlag := &cli.BoolFlag{Name: "json", Usage: "print one report as JSON (a stable shape, see README.md)"}
	return &cli.Command{
		Name:  "fleet",
		Usage: "the admin side of a fleet: status and prune of every host prefix in the bucket, and its central policy (see Running a fleet in README.md)",
		Subcommands: []*cli.Command{
			{
				Name:   "status",
				Usage:  "list every host prefix with its datasets, newest restorable snapshots, stored bytes and problems",
				Flags:  append(commonFlags(), jsonFlag),
				Action: fleetAction(runFleetStatus),
			},
			{
				Name:  "prune",
				Usage: "apply the config's keep rules to every host prefix, from the bucket's ledgers alone (no bypass edges: chain links stay)",
				Flags: append(commonFlags(), jsonFlag,
					&cli.BoolFlag{Name: "dry-run", Aliases: []string{"n"}, Usage: "print the plan (removals and why, chain links that stay) and change nothing"}),
				Action: fleetAction(runFleetPrune),
			},
			fleetPolicyCommand(),
		},
	}
}

// fleetAction checks that the command takes no arguments, loads the config,
// works out the fleet's root and runs fn.
func fleetAction(fn func(c *cli.Context, b *backup.Backup, cfg *config.Config, root string) error) cli.ActionFunc {
	return func(c *cli.Context) error {
		if c.NArg() != 0 {
			return usageErr{fmt.Errorf("%s takes no arguments, got %d; see zfs2s3 %s --help", c.Command.FullName(), c.NArg(), c.Command.FullName())}
		}
		cfg, err := loadConfig(c)
		if err != nil {
			return err
		}
		prefix := c.String("prefix")
		root := ledger.NormalizePrefix(prefix)
		if config.HasPlaceholder(prefix) {
			root = config.StaticPrefix(prefix)
		}
		b, err := newBackup(c)
		if err != nil {
			return err
		}
		quietForJSON(c, b)
		return fn(c, b, cfg, root)
	}
}

func runFleetStatus(c *cli.Context, b *backup.Backup, cfg *config.Config, root string) error {
	st, err := b.FleetStatus(c.Context, root, backup.FleetRules(cfg), time.Now())
	if err != nil {
		return err
	}
	if c.Bool("json") {
		return writeJSON(c.App.Writer, st)
	}
	w := c.App.Writer
	if len(st.Hosts) == 0 {
		fmt.Fprintf(w, "no host prefixes under s3://%s/%s\n", c.String("bucket"), root)
		return nil
	}
	for _, h := range st.Hosts {
		fmt.Fprintf(w, "%s  %d dataset(s), %s stored\n", h.Prefix, len(h.Datasets), humanBytes(h.StoredBytes))
		for _, d := range h.Datasets {
			newest := "nothing restorable"
			if d.Newest != "" {
				newest = d.Newest + " (" + d.NewestTime.UTC().Format(time.RFC3339) + ")"
			}
			fmt.Fprintf(w, "  %s  newest %s, %d restorable, %s\n", d.Dataset, newest, d.Restorable, humanBytes(d.StoredBytes))
		}
		for _, p := range h.Problems {
			fmt.Fprintf(w, "  problem: %s\n", oneLine(p))
		}
	}
	return nil
}

func runFleetPrune(c *cli.Context, b *backup.Backup, cfg *config.Config, root string) error {
	pol, err := backup.ReadCentralPolicy(c.Context, b.S3, central.Key(c.String("prefix")))
	if err != nil {
		return err
	}
	rep, err := b.FleetPrune(c.Context, root, backup.FleetRules(cfg), pol, backup.PruneOptions{DryRun: c.Bool("dry-run")})
	var re *backup.RunError
	if err != nil && !errors.As(err, &re) {
		return err
	}
	if c.Bool("json") {
		if jerr := writeJSON(c.App.Writer, rep); jerr != nil {
			return jerr
		}
	}
	return err
}

// humanBytes prints a byte count for people.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
