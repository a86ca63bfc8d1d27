package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/urfave/cli/v2"
	"gopkg.in/yaml.v3"

	"github.com/zfs2s3/zfs2s3/backup"
	"github.com/zfs2s3/zfs2s3/central"
	"github.com/zfs2s3/zfs2s3/config"
)

// centralOptions tells the backup where the fleet's central policy is and
// which host this is in it: the policy key follows the configured prefix
// before expansion (central.Key), the host name is --host (config host:)
// or this machine's short hostname, as {host} expands.
func centralOptions(c *cli.Context, opt *backup.Options) {
	prefix := c.String("prefix")
	opt.PolicyKey = central.Key(prefix)
	opt.Host = c.String("host")
	// A prefix named by {hostname} alone is the host's own: its policy
	// entry is by that name too, so that a host: key cannot pick another
	// host's looser entry while writing under its own prefix.
	if opt.Host == "" || (strings.Contains(prefix, config.HostnamePlaceholder) && !strings.Contains(prefix, config.HostPlaceholder)) {
		opt.Host, _ = config.ShortHostname()
	}
}

// fleetPolicyCommand is zfs2s3 fleet policy set FILE | show [--host H]:
// the admin writes the central policy that every host reads and obeys.
func fleetPolicyCommand() *cli.Command {
	return &cli.Command{
		Name:  "policy",
		Usage: "write or show the fleet's central policy: keep rules, quota and required recipients (see Running a fleet in README.md)",
		Subcommands: []*cli.Command{
			{
				Name: "set", ArgsUsage: "FILE",
				Usage:  "check FILE and store it as the fleet policy (admin credentials)",
				Flags:  commonFlags(),
				Action: fleetPolicySet,
			},
			{
				Name:   "show",
				Usage:  "print the policy in force for host --for NAME, or for every host it names",
				Flags:  append(commonFlags(), &cli.StringFlag{Name: "for", Usage: "print only what applies to host `NAME`"}),
				Action: fleetPolicyShow,
			},
		},
	}
}

// fleetPolicySet checks FILE as a host would read it, then stores it: a
// policy no host can read would stop every upload in the fleet.
func fleetPolicySet(c *cli.Context) error {
	if c.NArg() != 1 {
		return usageErr{fmt.Errorf("fleet policy set takes FILE, the policy to store, got %d argument(s); see zfs2s3 fleet policy set --help", c.NArg())}
	}
	file := c.Args().First()
	if _, err := loadConfig(c); err != nil {
		return err
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return usageErr{fmt.Errorf("cannot read the policy: %w", err)}
	}
	if len(data) > central.MaxBytes {
		return usageErr{fmt.Errorf("%s has %d bytes; a fleet policy has at most %d", file, len(data), central.MaxBytes)}
	}
	if _, err := central.Parse(data); err != nil {
		return usageErr{fmt.Errorf("%s: %w; nothing was stored", file, err)}
	}
	b, err := newBackup(c)
	if err != nil {
		return err
	}
	if err := b.S3.Put(c.Context, b.Opt.PolicyKey, data, nil); err != nil {
		return fmt.Errorf("store the fleet policy at s3://%s/%s: %w", b.S3.Bucket(), b.Opt.PolicyKey, err)
	}
	fmt.Fprintf(c.App.Writer, "stored the fleet policy at s3://%s/%s\n", b.S3.Bucket(), b.Opt.PolicyKey)
	return nil
}

// shown is what fleet policy show prints: the policy's key and, per host,
// the settings in force (the defaults with the host's overrides).
type shown struct {
	Policy   string                      `yaml:"policy"`
	Defaults central.Settings            `yaml:"defaults"`
	Hosts    map[string]central.Settings `yaml:"hosts,omitempty"`
}

func fleetPolicyShow(c *cli.Context) error {
	if c.NArg() != 0 {
		return usageErr{fmt.Errorf("fleet policy show takes no arguments, got %d; use --for NAME for one host", c.NArg())}
	}
	if _, err := loadConfig(c); err != nil {
		return err
	}
	b, err := newBackup(c)
	if err != nil {
		return err
	}
	url := "s3://" + b.S3.Bucket() + "/" + b.Opt.PolicyKey
	p, err := backup.ReadCentralPolicy(c.Context, b.S3, b.Opt.PolicyKey)
	if err != nil {
		return err
	}
	if p == nil {
		fmt.Fprintf(c.App.Writer, "no fleet policy at %s: hosts follow their own configs\n", url)
		return nil
	}
	out := shown{Policy: url, Defaults: p.Defaults, Hosts: map[string]central.Settings{}}
	if h := c.String("for"); h != "" {
		out.Hosts[h] = p.For(h)
	} else {
		for _, h := range p.HostNames() {
			out.Hosts[h] = p.For(h)
		}
	}
	enc := yaml.NewEncoder(c.App.Writer)
	enc.SetIndent(2)
	if err := enc.Encode(out); err != nil {
		return err
	}
	return enc.Close()
}
