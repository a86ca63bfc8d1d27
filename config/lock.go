package config

import "slices"

// checkLock checks lock_days and lock_mode as they are read, so that a
// typo names its line instead of failing the first upload.
func (c *Config) checkLock(key string, line int) error {
	switch {
	case key == "lock_days" && c.Global.LockDays < 0:
		return c.Errorf(line, key, "%d: want 0 (no object lock) or a number of days each object stays locked", c.Global.LockDays)
	case key == "lock_mode" && !slices.Contains([]string{"governance", "compliance"}, c.Global.LockMode):
		return c.Errorf(line, key, "%q: want governance (lifted only with s3:BypassGovernanceRetention) or compliance (lifted by no one until the date)", c.Global.LockMode)
	}
	return nil
}
