package zfs

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"strings"
)

// SendFlags are the OpenZFS "zfs send" options a user may ask for. They
// change what the stream holds, so they are recorded per edge: a chain
// must keep -L and -e as they were (switching -L zeroes files on receive,
// openzfs #6224), and a raw stream (-w) must be received raw.
type SendFlags struct {
	Compressed  bool // -c: blocks as compressed on disk; the receiving pool needs the same compression features
	LargeBlocks bool // -L: blocks over 128 KiB as they are
	Embedded    bool // -e: embedded (tiny) blocks as WRITE_EMBEDDED records
	Raw         bool // -w: a natively encrypted dataset as stored, never decrypted; received the same way
}

// sendFlagNames pairs each flag's name (in --send-flags, the config's
// send_flags and the ledger) with its zfs send option, in the order the
// names and the options are written.
var sendFlagNames = []struct {
	name   string
	letter byte
	field  func(*SendFlags) *bool
}{
	{"compressed", 'c', func(f *SendFlags) *bool { return &f.Compressed }},
	{"large-blocks", 'L', func(f *SendFlags) *bool { return &f.LargeBlocks }},
	{"embedded", 'e', func(f *SendFlags) *bool { return &f.Embedded }},
	{"raw", 'w', func(f *SendFlags) *bool { return &f.Raw }},
}

// ParseSendFlags reads a comma-separated list of flag names, such as
// "compressed,large-blocks". The empty string (and "none") is no flag.
func ParseSendFlags(s string) (SendFlags, error) {
	var f SendFlags
	s = strings.TrimSpace(s)
	if s == "" || s == "none" {
		return f, nil
	}
	for _, name := range strings.Split(s, ",") {
		name = strings.TrimSpace(name)
		known := false
		for _, n := range sendFlagNames {
			if n.name == name {
				*n.field(&f), known = true, true
			}
		}
		if !known {
			return SendFlags{}, fmt.Errorf("send flag %q: unknown; use a comma-separated list of compressed (-c), large-blocks (-L), embedded (-e), raw (-w)", name)
		}
	}
	return f, nil
}

// String is the canonical list ParseSendFlags reads back: names in a fixed
// order, "" for none.
func (f SendFlags) String() string {
	var names []string
	for _, n := range sendFlagNames {
		if *n.field(&f) {
			names = append(names, n.name)
		}
	}
	return strings.Join(names, ",")
}

// Args are the zfs send options for f, in a fixed order.
func (f SendFlags) Args() []string {
	var args []string
	for _, n := range sendFlagNames {
		if *n.field(&f) {
			args = append(args, "-"+string(n.letter))
		}
	}
	return args
}

// SendArgs is the argument vector of "zfs send [flags] [-i base] target".
func SendArgs(f SendFlags, target, base string) []string {
	args := sendArgs(target, base)
	return append(append(args[:1:1], f.Args()...), args[1:]...)
}

// SendSupport is what the installed zfs's send understands, read from its
// usage text.
type SendSupport struct {
	// Name says which zfs it is, for messages: "OpenZFS 2.2.2" from
	// "zfs version", else "zfs-fuse" or "this zfs".
	Name string
	// Options are the single-letter options "zfs send" lists.
	Options map[byte]bool
}

// usageOptions matches an option group such as "[-DLPbcehnpsVvw]" or
// "[-RDp]"; groups with arguments ("[-i|-I snapshot]", "[-[iI] snapshot]")
// do not match.
var usageOptions = regexp.MustCompile(`\[-([A-Za-z]+)\]`)

// ErrNoUsage means zfs did not print a "zfs send" usage: it failed for
// another reason (zfs-fuse's daemon not running, no permission).
var ErrNoUsage = errors.New("zfs send printed no usage text")

// ParseSendSupport reads the output of "zfs send" without arguments (its
// usage, on stderr, exit 2) and of "zfs version" (OpenZFS 0.8 and later;
// anything else when there is none).
func ParseSendSupport(usage, version string) (SendSupport, error) {
	s := SendSupport{Options: map[byte]bool{}}
	found := false
	for _, line := range strings.Split(usage, "\n") {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "send ")
		if !ok {
			continue
		}
		found = true
		for _, m := range usageOptions.FindAllStringSubmatch(rest, -1) {
			for i := 0; i < len(m[1]); i++ {
				s.Options[m[1][i]] = true
			}
		}
	}
	if !found {
		said := strings.ReplaceAll(strings.TrimSpace(usage), "\n", "; ")
		if len(said) > 300 {
			said = said[:300] + "..."
		}
		return SendSupport{}, fmt.Errorf("%w (it said: %s)", ErrNoUsage, said)
	}
	s.Name = "this zfs"
	if v, ok := openZFSVersion(version); ok {
		s.Name = "OpenZFS " + v
	} else if !s.Options['n'] {
		// Every OpenZFS has -n (dry run); zfs-fuse, which has no "zfs
		// version" either, does not.
		s.Name = "zfs-fuse"
	}
	return s, nil
}

// openZFSVersion reads "zfs-2.2.2-1" (then "zfs-kmod-...") from zfs version.
func openZFSVersion(out string) (string, bool) {
	first, _, _ := strings.Cut(strings.TrimSpace(out), "\n")
	v, ok := strings.CutPrefix(first, "zfs-")
	if !ok || strings.HasPrefix(v, "kmod-") || v == "" || v[0] < '0' || v[0] > '9' {
		return "", false
	}
	v, _, _ = strings.Cut(v, "-")
	return v, true
}

// Check refuses flags the installed zfs send does not have, naming each:
// "zfs-fuse's zfs send has no -L (large-blocks); remove it from
// send_flags".
func (s SendSupport) Check(f SendFlags) error {
	var missing []string
	for _, n := range sendFlagNames {
		if *n.field(&f) && !s.Options[n.letter] {
			missing = append(missing, fmt.Sprintf("-%c (%s)", n.letter, n.name))
		}
	}
	switch len(missing) {
	case 0:
		return nil
	case 1:
		return fmt.Errorf("%s's zfs send has no %s; remove it from send_flags", s.Name, missing[0])
	}
	return fmt.Errorf("%s's zfs send has no %s; remove them from send_flags", s.Name, strings.Join(missing, ", "))
}

// SendSupport runs "zfs send" without arguments and "zfs version" and
// reads what zfs send supports.
func (r Runner) SendSupport(ctx context.Context) (SendSupport, error) {
	var usage bytes.Buffer
	c := exec.CommandContext(ctx, r.cmd(), "send")
	c.Stdout, c.Stderr = &usage, &usage
	// It exits 2 after printing its usage: the text, not the status, says
	// whether it worked.
	if err := c.Run(); err != nil && !isExit(err) {
		return SendSupport{}, &Error{Args: []string{"send"}, Err: err}
	}
	version, _ := exec.CommandContext(ctx, r.cmd(), "version").Output()
	s, err := ParseSendSupport(usage.String(), string(version))
	if err != nil {
		return SendSupport{}, fmt.Errorf("find out what zfs send supports: %w", err)
	}
	return s, nil
}

func isExit(err error) bool {
	var ee *exec.ExitError
	return errors.As(err, &ee)
}

// Stream feature bits of a BEGIN record (DMU_BACKUP_FEATURE_*), which say
// what a stored stream really holds whatever flags were asked for.
const (
	FeatureEmbedData   = 1 << 16
	FeatureLargeBlocks = 1 << 19
	FeatureCompressed  = 1 << 22
	FeatureRaw         = 1 << 24
)

// StreamFeatures are the feature bits of a stream's BEGIN record.
type StreamFeatures uint32

// Flags are the send flags whose features the stream has.
func (sf StreamFeatures) Flags() SendFlags {
	return SendFlags{
		Compressed:  sf&FeatureCompressed != 0,
		LargeBlocks: sf&FeatureLargeBlocks != 0,
		Embedded:    sf&FeatureEmbedData != 0,
		Raw:         sf&FeatureRaw != 0,
	}
}

// ReadStreamFeatures reads the feature bits from the first record of a
// stream (at least its first 312 bytes).
func ReadStreamFeatures(head []byte) (StreamFeatures, error) {
	if len(head) < recordSize {
		return 0, fmt.Errorf("%w: %d bytes, a BEGIN record is %d", ErrNotStream, len(head), recordSize)
	}
	var order binary.ByteOrder
	switch {
	case binary.LittleEndian.Uint64(head[8:]) == backupMagic:
		order = binary.LittleEndian
	case binary.BigEndian.Uint64(head[8:]) == backupMagic:
		order = binary.BigEndian
	default:
		return 0, fmt.Errorf("%w: no BEGIN record", ErrNotStream)
	}
	if t := order.Uint32(head); t != drrBegin {
		return 0, fmt.Errorf("%w: first record has type %d", ErrNotStream, t)
	}
	// drr_versioninfo: bits 0-1 the header type, bits 2-31 the features.
	vi := order.Uint64(head[16:])
	return StreamFeatures((vi >> 2) & (1<<30 - 1)), nil
}

// Features reads the feature bits of the stream written through c.
func (c *StreamCheck) Features() (StreamFeatures, error) { return ReadStreamFeatures(c.head) }
