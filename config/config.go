// Package config reads zfs2s3's config file: the settings flags also set,
// and per-dataset rules for unattended backups (which snapshots, how
// incrementals chain, when a new full is due, what retention keeps, the
// snapshot zfs2s3 takes itself and the hooks around it).
//
// A config error names the file, the line and the key, so that a typo
// in a file run from a timer is found at once rather than silently
// ignored. Values are checked here as far as they can be without zfs;
// the caller checks that the datasets exist (Config.Errorf).
package config

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/itchyny/timefmt-go"
	"gopkg.in/yaml.v3"

	"github.com/zfs2s3/zfs2s3/retention"
	"github.com/zfs2s3/zfs2s3/transform"
	"github.com/zfs2s3/zfs2s3/zfs"
)

// DefaultPath is where the config is read from when neither --config
// nor ZFS2S3_CONFIG names one.
const DefaultPath = "/etc/zfs2s3/config.yaml"

// DefaultHookTimeout bounds a pre or post hook: a hook that hangs must not
// keep a service stopped, or a nightly run from finishing, for ever.
const DefaultHookTimeout = 10 * time.Minute

// Config is a parsed config file.
type Config struct {
	File   string
	Global Global
	// Datasets are the configured datasets in file order, each with the
	// defaults applied.
	Datasets []Dataset
	// Defaults are the rules of defaults: (with zfs2s3's own defaults),
	// for datasets the file does not name: fleet prune applies them to
	// every host's datasets.
	Defaults Dataset
}

// Global holds the settings the command line also sets; flags and
// environment override them. Empty means not set.
type Global struct {
	Bucket       string `yaml:"bucket"`
	Prefix       string `yaml:"prefix"`
	Endpoint     string `yaml:"endpoint"`
	Region       string `yaml:"region"`
	Profile      string `yaml:"profile"`
	StorageClass string `yaml:"storage_class"`
	Checksum     string `yaml:"checksum"`
	PartSize     string `yaml:"part_size"`
	Concurrency  int    `yaml:"concurrency"`
	StateDir     string `yaml:"state_dir"`
	// MetricsFile is where backup and prune write Prometheus metrics.
	MetricsFile string `yaml:"metrics_file"`
	// Host names this machine in a prefix's {host} (ExpandPrefix);
	// empty: its hostname.
	Host string `yaml:"host"`
	// LockDays, when more than 0, stores stream objects and manifests
	// with an S3 object lock of that many days, in LockMode (governance
	// or compliance; empty: governance).
	LockDays int    `yaml:"lock_days"`
	LockMode string `yaml:"lock_mode"`
	// Compress, Recipients and RecipientsFile transform new uploads
	// (--compress, --recipient, --recipients-file; transform/FORMAT.md).
	// Identity is the age key file that restore, save and verify
	// --read-data decrypt with (--identity).
	Compress       string   `yaml:"compress"`
	Recipients     []string `yaml:"recipients"`
	RecipientsFile string   `yaml:"recipients_file"`
	Identity       string   `yaml:"identity"`
	// SendFlags are zfs send's options for new uploads (--send-flags).
	SendFlags string `yaml:"send_flags"`
}

// Chain rules for incrementals.
const (
	ChainPrevious = "previous" // each incremental from the snapshot before it
	ChainFull     = "full"     // each incremental from the newest stored full
)

// Dataset is one configured dataset's rules.
type Dataset struct {
	Name string
	Line int // where it is configured, for errors found later
	// Snapshots selects the snapshots backed up: a glob (path.Match) on
	// the name after '@'.
	Snapshots string
	// TimeFormat, when set, reads a snapshot's time from its name
	// (strftime); otherwise its creation property counts.
	TimeFormat string
	Chain      string
	// FullEvery is the snapshot time after which a new full is stored; 0:
	// never.
	FullEvery time.Duration
	// Keep is the retention of stored snapshots; nil: prune keeps all.
	Keep *retention.Policy
	// Recursive backs each child dataset up on its own, with these rules.
	Recursive bool
	// Create, when set, is the strftime name of a snapshot zfs2s3 takes
	// before uploading, written in UTC; Pre and Post are shell commands run
	// before and right after it, each for at most HookTimeout.
	Create      string
	Pre, Post   string
	HookTimeout time.Duration
	// KeepLocal, when set, destroys older snapshots zfs2s3 created itself.
	KeepLocal *retention.Policy
	// Compress and Recipients, when set, replace the global compress and
	// recipients for this dataset's uploads ("none" and an empty list
	// turn them off); nil: the global ones.
	Compress   *string
	Recipients *[]string
	// OwnEntries are the datasets below a recursive one that have their
	// own entry in the config (true when that entry is recursive too):
	// their own rules apply to them, not this one's (see Covers).
	OwnEntries map[string]bool
}

// Error is a config error: file, line, key and what is wrong.
type Error struct {
	File string
	Line int
	Key  string
	Msg  string
}

func (e *Error) Error() string {
	where := e.File
	if e.Line > 0 {
		where += ":" + strconv.Itoa(e.Line)
	}
	if e.Key != "" {
		where += ": " + e.Key
	}
	return where + ": " + e.Msg
}

// Errorf makes an Error at line for key, for checks done by the caller
// (a dataset that does not exist).
func (c *Config) Errorf(line int, key, format string, args ...any) error {
	return &Error{File: c.File, Line: line, Key: key, Msg: fmt.Sprintf(format, args...)}
}

// Load reads and checks the config file at file.
func Load(file string) (*Config, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, &Error{File: file, Msg: err.Error()}
	}
	defer f.Close()
	data, err := io.ReadAll(f)
	if err != nil {
		return nil, &Error{File: file, Msg: err.Error()}
	}
	c, err := Parse(data, file)
	if err != nil {
		return nil, err
	}
	if c.runsHooks() {
		if err := checkPrivate(file); err != nil {
			return nil, err
		}
		// The paths were checked by name: the file read must be the one
		// checked, not one a link pointed to a moment before.
		read, err := f.Stat()
		if err != nil {
			return nil, &Error{File: file, Msg: err.Error()}
		}
		if now, err := os.Stat(file); err != nil || !os.SameFile(read, now) {
			return nil, &Error{File: file, Msg: "it runs hooks (pre/post) and changed while it was read (a link pointed elsewhere?); run again, and keep the file and its links in directories only root can write"}
		}
	}
	return c, nil
}

// Parse checks a config file's contents; file names it in errors.
func Parse(data []byte, file string) (*Config, error) {
	c := &Config{File: file}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, c.yamlError(err)
	}
	if len(doc.Content) == 0 {
		return c, nil // an empty file: flags and environment only
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return nil, c.Errorf(root.Line, "", "want a mapping of keys, e.g. bucket: backups")
	}
	defaults := Dataset{Snapshots: "*", Chain: ChainPrevious, HookTimeout: DefaultHookTimeout}
	var datasets *yaml.Node
	if err := c.noDuplicates(root, ""); err != nil {
		return nil, err
	}
	for i := 0; i < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		switch k.Value {
		case "defaults":
			if err := c.dataset(&defaults, k.Value, v); err != nil {
				return nil, err
			}
		case "datasets":
			datasets = v
		default:
			if err := c.global(k, v); err != nil {
				return nil, err
			}
		}
	}
	c.Defaults = defaults
	if datasets == nil {
		return c, nil
	}
	if datasets.Kind != yaml.MappingNode {
		return nil, c.Errorf(datasets.Line, "datasets", "want a map of dataset names to their rules, e.g. tank/data: {}")
	}
	if err := c.noDuplicates(datasets, "datasets."); err != nil {
		return nil, err
	}
	for i := 0; i < len(datasets.Content); i += 2 {
		k, v := datasets.Content[i], datasets.Content[i+1]
		d := defaults
		d.Name, d.Line = k.Value, k.Line
		if err := zfs.CheckDatasetName(k.Value); err != nil {
			return nil, c.Errorf(k.Line, "datasets", "%v", err)
		}
		if err := c.dataset(&d, "datasets."+k.Value, v); err != nil {
			return nil, err
		}
		if err := c.checkDataset(d); err != nil {
			return nil, err
		}
		c.Datasets = append(c.Datasets, d)
	}
	for i, d := range c.Datasets {
		if !d.Recursive {
			continue
		}
		for _, o := range c.Datasets {
			if strings.HasPrefix(o.Name, d.Name+"/") {
				if c.Datasets[i].OwnEntries == nil {
					c.Datasets[i].OwnEntries = map[string]bool{}
				}
				c.Datasets[i].OwnEntries[o.Name] = o.Recursive
			}
		}
	}
	return c, nil
}

// noDuplicates refuses a mapping that sets a key twice: YAML forbids it,
// and which one wins would be a guess.
func (c *Config) noDuplicates(m *yaml.Node, where string) error {
	seen := map[string]bool{}
	for i := 0; i < len(m.Content); i += 2 {
		k := m.Content[i]
		if seen[k.Value] {
			return c.Errorf(k.Line, where+k.Value, "already defined above")
		}
		seen[k.Value] = true
	}
	return nil
}

// global reads one top-level key.
func (c *Config) global(k, v *yaml.Node) error {
	dec := map[string]any{
		"bucket": &c.Global.Bucket, "prefix": &c.Global.Prefix, "endpoint": &c.Global.Endpoint,
		"region": &c.Global.Region, "profile": &c.Global.Profile, "storage_class": &c.Global.StorageClass,
		"checksum": &c.Global.Checksum, "part_size": &c.Global.PartSize, "concurrency": &c.Global.Concurrency,
		"state_dir": &c.Global.StateDir, "metrics_file": &c.Global.MetricsFile, "host": &c.Global.Host,
		"lock_days": &c.Global.LockDays, "lock_mode": &c.Global.LockMode,
		"compress": &c.Global.Compress, "recipients": &c.Global.Recipients, "recipients_file": &c.Global.RecipientsFile,
		"identity": &c.Global.Identity, "send_flags": &c.Global.SendFlags,
	}
	dst, ok := dec[k.Value]
	if !ok {
		return c.Errorf(k.Line, k.Value, "unknown key; the top level takes %s, defaults and datasets", known(dec))
	}
	if err := v.Decode(dst); err != nil {
		return c.Errorf(v.Line, k.Value, "%v", decodeMsg(err))
	}
	return c.checkValue(k.Value, v.Line)
}

// dataset applies the keys of mapping v (the defaults, or one dataset's
// entry) over d; where names the section for errors.
func (c *Config) dataset(d *Dataset, where string, v *yaml.Node) error {
	if v.Kind == yaml.ScalarNode && v.Tag == "!!null" {
		return nil // "tank/data:" with nothing after it
	}
	if v.Kind != yaml.MappingNode {
		return c.Errorf(v.Line, where, "want a map of rules, e.g. {snapshots: \"daily-*\"} or {}")
	}
	if err := c.noDuplicates(v, where+"."); err != nil {
		return err
	}
	for i := 0; i < len(v.Content); i += 2 {
		k, val := v.Content[i], v.Content[i+1]
		key := where + "." + k.Value
		str := func(dst *string) error {
			if val.Kind != yaml.ScalarNode {
				return c.Errorf(val.Line, key, "want a string")
			}
			*dst = val.Value
			return nil
		}
		var err error
		switch k.Value {
		case "snapshots":
			if err = str(&d.Snapshots); err == nil {
				if _, merr := path.Match(d.Snapshots, ""); merr != nil {
					err = c.Errorf(val.Line, key, "bad glob %q: %v", d.Snapshots, merr)
				}
			}
		case "time_format":
			if err = str(&d.TimeFormat); err == nil && d.TimeFormat != "" {
				err = c.checkTimeFormat(val.Line, key, d.TimeFormat)
			}
		case "chain":
			if err = str(&d.Chain); err == nil && d.Chain != ChainPrevious && d.Chain != ChainFull {
				err = c.Errorf(val.Line, key, "%q: want previous (each incremental from the one before) or full (each from the newest stored full)", d.Chain)
			}
		case "full_every", "hook_timeout":
			var s string
			if err = str(&s); err == nil {
				dst := &d.FullEvery
				if k.Value == "hook_timeout" {
					dst = &d.HookTimeout
				}
				*dst, err = parseDuration(s)
				if err != nil {
					err = c.Errorf(val.Line, key, "%v", err)
				}
			}
		case "keep", "keep_local":
			var p retention.Policy
			if derr := decodeStrict(val, &p); derr != nil {
				err = c.Errorf(val.Line, key, "%v; want e.g. {last: 3, daily: 7, weekly: 4, monthly: 12, yearly: 3}", derr)
				break
			}
			if p.Last < 0 || p.Hourly < 0 || p.Daily < 0 || p.Weekly < 0 || p.Monthly < 0 || p.Yearly < 0 {
				err = c.Errorf(val.Line, key, "counts cannot be negative")
				break
			}
			if p.KeepsNothing() {
				err = c.Errorf(val.Line, key, "keeps nothing; give at least one count above 0 (leave %s out to keep everything)", k.Value)
				break
			}
			if k.Value == "keep" {
				d.Keep = &p
			} else {
				d.KeepLocal = &p
			}
		case "compress":
			var v string
			if err = str(&v); err == nil {
				if _, perr := transform.ParseCompress(v); perr != nil {
					err = c.Errorf(val.Line, key, "%v", perr)
				}
				d.Compress = &v
			}
		case "recipients":
			var v []string
			if derr := val.Decode(&v); derr != nil {
				err = c.Errorf(val.Line, key, "want a list of age public keys (age1...), or [] for none")
				break
			}
			for _, r := range v {
				if _, perr := transform.ParseRecipient(r); perr != nil {
					err = c.Errorf(val.Line, key, "%v", perr)
					break
				}
			}
			d.Recipients = &v
		case "recursive":
			if derr := val.Decode(&d.Recursive); derr != nil {
				err = c.Errorf(val.Line, key, "want true or false")
			}
		case "create":
			if err = str(&d.Create); err == nil && d.Create != "" {
				err = c.checkTimeFormat(val.Line, key, d.Create)
				if err == nil && strings.ContainsAny(d.Create, "@/ ") {
					err = c.Errorf(val.Line, key, "%q: a snapshot name cannot hold '@', '/' or spaces here", d.Create)
				}
				if err == nil {
					if nerr := zfs.CheckSnapshotName("pool@" + timefmt.Format(sampleTime, d.Create)); nerr != nil {
						err = c.Errorf(val.Line, key, "%q makes names ZFS refuses: %v", d.Create, nerr)
					}
				}
			}
		case "pre":
			err = str(&d.Pre)
		case "post":
			err = str(&d.Post)
		default:
			err = c.Errorf(k.Line, key, "unknown key; a dataset takes snapshots, time_format, chain, full_every, keep, recursive, create, pre, post, hook_timeout, keep_local")
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// checkDataset checks what only makes sense together.
func (c *Config) checkDataset(d Dataset) error {
	key := "datasets." + d.Name
	switch {
	case (d.Pre != "" || d.Post != "") && d.Create == "":
		return c.Errorf(d.Line, key, "pre and post run around the snapshot zfs2s3 takes: set create too")
	case d.KeepLocal != nil && d.Create == "":
		return c.Errorf(d.Line, key, "keep_local destroys only snapshots zfs2s3 created: set create too")
	case d.Create != "" && !d.Selects(d.CreateName(sampleTime)):
		return c.Errorf(d.Line, key, "the snapshots it creates (%s) do not match its snapshots glob %q", d.Create, d.Snapshots)
	}
	return nil
}

// sampleTime is the time names are made for when a format is checked.
var sampleTime = time.Date(2026, 11, 22, 6, 54, 31, 0, time.UTC)

// checkTimeFormat accepts a strftime format that names some part of a
// time and reads back what it writes.
func (c *Config) checkTimeFormat(line int, key, format string) error {
	if !strings.Contains(format, "%") {
		return c.Errorf(line, key, "%q has no strftime directive such as %%Y-%%m-%%d", format)
	}
	if _, err := timefmt.Parse(timefmt.Format(sampleTime, format), format); err != nil {
		return c.Errorf(line, key, "bad time format %q: %v", format, err)
	}
	return nil
}

// Covers reports whether a recursive dataset's rules apply to the
// dataset name below it: not when name has its own entry, nor when it is
// below one with its own recursive entry.
func (d Dataset) Covers(name string) bool {
	if !d.Recursive || !strings.HasPrefix(name, d.Name+"/") {
		return false
	}
	if _, own := d.OwnEntries[name]; own {
		return false
	}
	for o, recursive := range d.OwnEntries {
		if recursive && strings.HasPrefix(name, o+"/") {
			return false
		}
	}
	return true
}

// Selects reports whether the snapshot named short (after '@') is one the
// dataset backs up.
func (d Dataset) Selects(short string) bool {
	ok, _ := path.Match(d.Snapshots, short)
	return ok
}

// SnapshotTime reads a snapshot's time. A snapshot zfs2s3 created (see
// Created) has it in its name, in UTC; otherwise it is read from the name
// when TimeFormat is set (in local time, as people name snapshots), else
// creation counts. ok is false when the name does not fit TimeFormat.
func (d Dataset) SnapshotTime(short string, creation time.Time) (time.Time, bool) {
	if d.TimeFormat == "" && !d.Created(short) {
		return creation, true
	}
	return d.NameTime(short)
}

// NameTime is the time a snapshot's name gives, for a stored snapshot that
// is gone locally: from Create's pattern (UTC) or TimeFormat (local time);
// ok is false when neither reads it.
func (d Dataset) NameTime(short string) (time.Time, bool) {
	if t, ok := d.createdAt(short); ok {
		return t, true
	}
	if d.TimeFormat == "" {
		return time.Time{}, false
	}
	t, err := timefmt.ParseInLocation(short, d.TimeFormat, time.Local)
	return t, err == nil
}

// CreateName is the name (after '@') of the snapshot taken at now, which
// is written in UTC so that names do not jump or repeat when the clocks
// change.
func (d Dataset) CreateName(now time.Time) string { return timefmt.Format(now.UTC(), d.Create) }

// Created reports whether the snapshot named short (after '@') is one
// zfs2s3 took for this dataset: its name is exactly what Create writes for
// some time. Only such snapshots are ever destroyed by keep_local.
func (d Dataset) Created(short string) bool {
	_, ok := d.createdAt(short)
	return ok
}

// createdAt reads the time from a name Create wrote. The parser accepts
// more than the formatter writes (a one-digit month), so the name must
// also be what formatting its time gives back.
func (d Dataset) createdAt(short string) (time.Time, bool) {
	if d.Create == "" {
		return time.Time{}, false
	}
	t, err := timefmt.ParseInLocation(short, d.Create, time.UTC)
	if err != nil || timefmt.Format(t, d.Create) != short {
		return time.Time{}, false
	}
	return t, true
}

func (c *Config) runsHooks() bool {
	for _, d := range c.Datasets {
		if d.Pre != "" || d.Post != "" {
			return true
		}
	}
	return false
}

// checkPrivate refuses a config that runs hooks (as root, from a timer)
// when anyone but its owner and root could change it: the file must not be
// writable by group or others nor belong to another user, and neither may
// any directory above it, as given or with symbolic links resolved, since
// whoever can write a directory can replace what is in it. A directory
// with the sticky bit (/tmp) lets nobody replace another user's file.
func checkPrivate(file string) error {
	abs, err := filepath.Abs(file)
	if err != nil {
		return &Error{File: file, Msg: err.Error()}
	}
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return &Error{File: file, Msg: err.Error()}
	}
	paths := []string{real}
	seen := map[string]bool{real: true}
	// Every link on the way to the file, and its directory: whoever can
	// write a directory holding a link can point it elsewhere.
	hops := []string{abs, real}
	for p, i := abs, 0; i < 40; i++ {
		target, err := os.Readlink(p)
		if err != nil {
			break // not a link (or gone: EvalSymlinks above would have said)
		}
		if !filepath.IsAbs(target) {
			target = filepath.Join(filepath.Dir(p), target)
		}
		p = filepath.Clean(target)
		hops = append(hops, p)
	}
	for _, p := range hops {
		for dir := filepath.Dir(p); !seen[dir]; dir = filepath.Dir(dir) {
			seen[dir] = true
			paths = append(paths, dir)
		}
	}
	for _, p := range paths {
		if err := private(file, p, p == real); err != nil {
			return err
		}
	}
	return nil
}

// private checks one path of checkPrivate.
func private(file, p string, isFile bool) error {
	st, err := os.Stat(p)
	if err != nil {
		return &Error{File: file, Msg: err.Error()}
	}
	what := "its directory " + p + " is"
	switch {
	case isFile && p == file:
		what = "is"
	case isFile:
		what = "its target " + p + " is"
	}
	mode := st.Mode().Perm()
	if mode&0o022 != 0 && (isFile || st.Mode()&os.ModeSticky == 0) {
		return &Error{File: file, Msg: fmt.Sprintf("it runs hooks (pre/post) and %s writable by group or others (mode %04o); run: chmod go-w %s", what, mode, p)}
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && sys.Uid != 0 && int(sys.Uid) != os.Geteuid() {
		return &Error{File: file, Msg: fmt.Sprintf("it runs hooks (pre/post) and %s owned by user %d, not by root or you (user %d); run: chown root %s", what, sys.Uid, os.Geteuid(), p)}
	}
	return nil
}

// ParseDuration reads a duration as the config writes them: 30d, 2w,
// 36h, for flags that take one (status --max-age).
func ParseDuration(s string) (time.Duration, error) { return parseDuration(s) }

// parseDuration reads Go durations and days and weeks: 30d, 2w, 36h.
func parseDuration(s string) (time.Duration, error) {
	for unit, d := range map[string]time.Duration{"d": 24 * time.Hour, "w": 7 * 24 * time.Hour} {
		if n, ok := strings.CutSuffix(s, unit); ok {
			v, err := strconv.ParseFloat(n, 64)
			if err != nil || v <= 0 {
				break
			}
			return time.Duration(v * float64(d)), nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("bad duration %q: want e.g. 30d, 2w or 36h", s)
	}
	return d, nil
}

// decodeStrict decodes a mapping refusing unknown keys.
func decodeStrict(n *yaml.Node, dst any) error {
	b, err := yaml.Marshal(n)
	if err != nil {
		return err
	}
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	return decodeMsg(dec.Decode(dst))
}

// decodeMsg strips yaml.v3's "yaml: unmarshal errors:\n  line N:" framing,
// since errors here carry the file's own line.
func decodeMsg(err error) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	msg = strings.TrimPrefix(msg, "yaml: unmarshal errors:\n")
	msg = strings.TrimSpace(msg)
	if _, rest, ok := strings.Cut(msg, ": "); ok && strings.HasPrefix(msg, "line ") {
		msg = rest
	}
	return errors.New(msg)
}

func (c *Config) yamlError(err error) error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	line := 0
	if l, rest, ok := strings.Cut(msg, ": "); ok && strings.HasPrefix(l, "line ") {
		line, _ = strconv.Atoi(strings.TrimPrefix(l, "line "))
		msg = rest
	}
	return &Error{File: c.File, Line: line, Msg: msg}
}

func known(m map[string]any) string {
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return strings.Join(keys, ", ")
}
