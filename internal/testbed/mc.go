package testbed

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// MC drives MinIO's admin API with the mc client, to create users with
// IAM policies as an administrator would.
type MC struct {
	bin, dir, alias string
}

// NewMC sets up mc for the server s, as its root user, with a config dir
// of its own under dir.
func NewMC(s *S3, dir string) (*MC, error) {
	bin, err := CachedBinary("mc", "ZFS2S3_MC")
	if err != nil {
		return nil, err
	}
	m := &MC{bin: bin, dir: dir, alias: "zfs2s3test"}
	if _, err := m.Run("alias", "set", m.alias, s.Endpoint, s.User, s.Password); err != nil {
		return nil, err
	}
	return m, nil
}

// Run runs mc with args; the alias is m's.
func (m *MC) Run(args ...string) (string, error) {
	c := exec.Command(m.bin, append([]string{"--config-dir", m.dir, "--no-color"}, args...)...)
	c.Env = os.Environ()
	out, err := c.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("mc %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// AddUser creates user with secret and attaches policy JSON to it under
// the policy name user.
func (m *MC) AddUser(user, secret string, policy []byte) error {
	file := m.dir + "/" + user + ".json"
	if err := os.WriteFile(file, policy, 0o600); err != nil {
		return err
	}
	if _, err := m.Run("admin", "policy", "create", m.alias, user, file); err != nil {
		return err
	}
	if _, err := m.Run("admin", "user", "add", m.alias, user, secret); err != nil {
		return err
	}
	_, err := m.Run("admin", "policy", "attach", m.alias, user, "--user", user)
	return err
}
