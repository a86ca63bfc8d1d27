package main

import (
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"

	"github.com/urfave/cli/v2"

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
