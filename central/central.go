// Package central reads and decides on a fleet's central policy: the object
// an admin writes at ROOT.zfs2s3-policy.yaml in the bucket, with the keep
// rules, storage quota and required encryption recipients that every host
// (or one host) must obey. Hosts may read it but not write it (their IAM
// policy allows writes only under their own prefix), so a host that is
// taken cannot lift its quota, its encryption or its retention.
//
// It is a pure package: parsing, which settings apply to a host, quota
// arithmetic and the recipient check are functions of plain data, tested
// on their own; backup/central.go reads the object and acts on the answers.
package central

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/zfs2s3/zfs2s3/config"
	"github.com/zfs2s3/zfs2s3/retention"
	"github.com/zfs2s3/zfs2s3/transform"
)

// Version is the format version this release writes and reads. The format
// outlives the program (README "Running a fleet"): a later release reads
// version 1 as it is; a newer version is refused, never half-understood.
const Version = 1

// KeyName is the policy object's name below the fleet's root.
const KeyName = ".zfs2s3-policy.yaml"

// MaxBytes bounds what a host reads of the object: it is input from the
// bucket, and a huge one must not exhaust memory.
const MaxBytes = 1 << 20

// Key is the policy object's key for a configured (unexpanded) prefix: the
// part before its first {host} or {hostname} placeholder, followed by
// .zfs2s3-policy.yaml ("fleet/{host}" gives "fleet/.zfs2s3-policy.yaml").
// A prefix without placeholder is taken whole, as a folder ("host1" gives
// "host1/.zfs2s3-policy.yaml"); "" gives the bucket's top level. This is
// the same root the admin's IAM policy (zfs2s3 policy admin) covers.
func Key(prefix string) string {
	root := config.StaticPrefix(prefix)
	if !config.HasPlaceholder(prefix) && root != "" && !strings.HasSuffix(root, "/") {
		root += "/"
	}
	return root + KeyName
}

// Policy is the parsed object.
type Policy struct {
	Version  int                 `yaml:"version"`
	Defaults Settings            `yaml:"defaults,omitempty"`
	Hosts    map[string]Settings `yaml:"hosts,omitempty"`
}

// Settings are what a policy sets for all hosts (defaults) or for one
// (hosts: NAME). A nil field is not set: a host's setting overrides the
// default field by field.
type Settings struct {
	// Keep replaces the host config's keep rules for every dataset.
	Keep *retention.Policy `yaml:"keep,omitempty"`
	// Quota bounds the bytes stored under the host's prefix.
	Quota *Size `yaml:"quota,omitempty"`
	// Recipients must all be among the recipients of every new upload.
	Recipients []string `yaml:"recipients,omitempty"`
}

// Size is a byte count written as 500GiB, 1.5TB, 800MiB or a plain number.
type Size int64

var units = []struct {
	suffix string
	mult   float64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40}, {"PiB", 1 << 50},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12}, {"PB", 1e15},
	{"B", 1},
}

// ParseSize reads a size such as 500GiB (powers of 1024), 2TB (powers of
// 1000) or 1048576 (bytes).
func ParseSize(s string) (Size, error) {
	t := strings.TrimSpace(s)
	mult := 1.0
	for _, u := range units {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
			break
		}
	}
	// Whole numbers exactly: a float64 would round sizes above 2^53.
	if i, err := strconv.ParseInt(t, 10, 64); err == nil && i >= 0 && (mult == 1 || i <= int64(math.MaxInt64/mult)) {
		return Size(i * int64(mult)), nil
	}
	f, err := strconv.ParseFloat(t, 64)
	if err != nil || f < 0 || math.IsNaN(f) || math.IsInf(f, 0) || f*mult >= math.MaxInt64 {
		return 0, fmt.Errorf("bad size %q: want e.g. 500GiB, 2TB or a number of bytes", s)
	}
	return Size(f * mult), nil
}

// UnmarshalYAML reads a size from a string or a number.
func (s *Size) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: quota: want a size such as 500GiB", n.Line)
	}
	v, err := ParseSize(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: quota: %w", n.Line, err)
	}
	*s = v
	return nil
}

// MarshalYAML writes a size exactly, which ParseSize reads back: in the
// largest binary unit that divides it, else in bytes.
func (s Size) MarshalYAML() (any, error) {
	n := int64(s)
	for i := 4; i >= 0; i-- {
		if m := int64(units[i].mult); n >= m && n%m == 0 {
			return strconv.FormatInt(n/m, 10) + units[i].suffix, nil
		}
	}
	return strconv.FormatInt(n, 10), nil
}

// Format writes n bytes in the largest binary unit that divides it, or
// with two decimals when none does: 500GiB, 1.50GiB, 512B.
func Format(n int64) string {
	for i := 4; i >= 0; i-- {
		u := units[i]
		m := int64(u.mult)
		if n >= m && n%m == 0 {
			return strconv.FormatInt(n/m, 10) + u.suffix
		}
		if n >= m {
			return strconv.FormatFloat(float64(n)/u.mult, 'f', 2, 64) + u.suffix
		}
	}
	return strconv.FormatInt(n, 10) + "B"
}

// Parse reads a policy object strictly: an unknown key, a missing or newer
// version, a keep rule that keeps nothing, a bad recipient or host name is
// an error naming what is wrong, since a host must never silently ignore a
// policy it cannot understand.
func Parse(data []byte) (*Policy, error) {
	var p Policy
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&p); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("the policy is empty; want version: 1 and defaults: or hosts:")
		}
		return nil, errors.New(strings.ReplaceAll(strings.TrimPrefix(err.Error(), "yaml: "), "unmarshal errors:\n  ", ""))
	}
	switch {
	case p.Version == 0:
		return nil, errors.New("no version: the first line of a policy is version: 1")
	case p.Version > Version:
		return nil, fmt.Errorf("version %d is newer than this zfs2s3 reads (%d): upgrade zfs2s3", p.Version, Version)
	case p.Version < 0:
		return nil, fmt.Errorf("version %d: want version: 1", p.Version)
	}
	if err := p.Defaults.check("defaults"); err != nil {
		return nil, err
	}
	for name, s := range p.Hosts {
		if err := config.CheckHostName(name); err != nil {
			return nil, fmt.Errorf("hosts: %q: %w", name, err)
		}
		if err := s.check("hosts: " + name); err != nil {
			return nil, err
		}
	}
	return &p, nil
}

func (s Settings) check(where string) error {
	if k := s.Keep; k != nil {
		if k.Last < 0 || k.Hourly < 0 || k.Daily < 0 || k.Weekly < 0 || k.Monthly < 0 || k.Yearly < 0 {
			return fmt.Errorf("%s: keep: counts cannot be negative", where)
		}
		if k.KeepsNothing() {
			return fmt.Errorf("%s: keep: keeps nothing; give at least one count above 0 (leave keep out to leave the hosts' own rules)", where)
		}
	}
	if s.Quota != nil && *s.Quota <= 0 {
		return fmt.Errorf("%s: quota: must be above 0", where)
	}
	for _, r := range s.Recipients {
		// transform's parser never echoes what it was given: a secret
		// key pasted here by mistake must not reach every host's log.
		if _, err := transform.ParseRecipient(r); err != nil {
			return fmt.Errorf("%s: recipients: %w", where, err)
		}
	}
	return nil
}

// For is what applies to host: the defaults, with each field the host's
// entry sets replacing the default's. Recipients are replaced too, not
// added: an admin who wants both lists them both.
func (p *Policy) For(host string) Settings {
	if p == nil {
		return Settings{}
	}
	s := p.Defaults
	if h, ok := p.Hosts[host]; ok {
		if h.Keep != nil {
			s.Keep = h.Keep
		}
		if h.Quota != nil {
			s.Quota = h.Quota
		}
		if h.Recipients != nil {
			s.Recipients = h.Recipients
		}
	}
	return s
}

// HostNames are the hosts the policy names, sorted.
func (p *Policy) HostNames() []string {
	var names []string
	for n := range p.Hosts {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// MissingRecipients returns the required recipients that are not among
// have, in the policy's order. Recipients compare as age parses them, so
// that spelling differences in case do not count.
func MissingRecipients(required, have []string) []string {
	var missing []string
	for _, r := range required {
		if !slices.ContainsFunc(have, func(h string) bool { return strings.EqualFold(strings.TrimSpace(h), strings.TrimSpace(r)) }) {
			missing = append(missing, r)
		}
	}
	return missing
}

// QuotaCheck says whether a new full stream of about estimate bytes fits
// in quota when stored bytes are already under the host's prefix: it does
// when stored+estimate stays within quota. A quota of 0 (none) always fits.
// Only new fulls are checked: an incremental continues a chain that a
// refusal would break, and is small next to a full.
func QuotaCheck(stored, estimate int64, quota Size) (fits bool) {
	if quota <= 0 {
		return true
	}
	if estimate < 0 {
		estimate = 0
	}
	return stored <= int64(quota) && estimate <= int64(quota)-stored
}

// Marshal writes the policy back as YAML, for fleet policy show.
func (p *Policy) Marshal() ([]byte, error) {
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(p); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}
