package config

import (
	"github.com/zfs2s3/zfs2s3/transform"
	"github.com/zfs2s3/zfs2s3/zfs"
)

// checkValue checks a top-level key's value as it is read, so that a bad
// one is named with the file and its line, like every other config error,
// rather than later as the flag it stands in for. (prefix is checked when
// it is expanded: a prefix with braces that an earlier release stored
// backups under stays readable.)
func (c *Config) checkValue(key string, line int) error {
	g := &c.Global
	switch key {
	case "compress":
		if _, err := transform.ParseCompress(g.Compress); err != nil {
			return c.Errorf(line, key, "%v", err)
		}
	case "recipients":
		for _, r := range g.Recipients {
			if _, err := transform.ParseRecipient(r); err != nil {
				return c.Errorf(line, key, "%v", err)
			}
		}
	case "send_flags":
		if _, err := zfs.ParseSendFlags(g.SendFlags); err != nil {
			return c.Errorf(line, key, "%v", err)
		}
	case "host":
		if err := CheckHostName(g.Host); g.Host != "" && err != nil {
			return c.Errorf(line, key, "%v", err)
		}
	}
	return c.checkLock(key, line)
}
