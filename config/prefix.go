package config

import (
	"errors"
	"fmt"
	"os"
	"strings"
)

// Placeholders a prefix may hold, so that one config file serves a fleet:
// each host expands them to its own name and so gets a prefix, a ledger copy
// and (with zfs2s3 policy host) credentials of its own. Two hosts then never
// share a ledger shard by accident.
const (
	// HostnamePlaceholder is this machine's hostname up to the first dot.
	HostnamePlaceholder = "{hostname}"
	// HostPlaceholder is the config's host key, or the hostname without it.
	HostPlaceholder = "{host}"
)

// HasPlaceholder reports whether prefix holds {hostname} or {host}.
func HasPlaceholder(prefix string) bool {
	return strings.Contains(prefix, HostnamePlaceholder) || strings.Contains(prefix, HostPlaceholder)
}

// ExpandPrefix replaces {hostname} with hostname and {host} with host in
// prefix. Any other brace is refused: a typo such as {hostnme} would
// otherwise become a literal folder shared by every host.
func ExpandPrefix(prefix, host, hostname string) (string, error) {
	if strings.Contains(prefix, HostPlaceholder) {
		if err := CheckHostName(host); err != nil {
			return "", fmt.Errorf("--prefix %q: {host}: %w", prefix, err)
		}
	}
	if strings.Contains(prefix, HostnamePlaceholder) {
		if err := CheckHostName(hostname); err != nil {
			return "", fmt.Errorf("--prefix %q: {hostname}: %w", prefix, err)
		}
	}
	out := strings.ReplaceAll(prefix, HostnamePlaceholder, hostname)
	out = strings.ReplaceAll(out, HostPlaceholder, host)
	if rest := strings.NewReplacer(HostnamePlaceholder, "", HostPlaceholder, "").Replace(prefix); strings.ContainsAny(rest, "{}") {
		return "", fmt.Errorf("--prefix %q: a prefix takes only the placeholders {hostname} and {host}; check the braces", prefix)
	}
	return out, nil
}

// StaticPrefix is the part of prefix before its first placeholder: what
// every host's prefix starts with, the admin's domain.
func StaticPrefix(prefix string) string {
	i := len(prefix)
	for _, p := range []string{HostnamePlaceholder, HostPlaceholder} {
		if j := strings.Index(prefix, p); j >= 0 && j < i {
			i = j
		}
	}
	return prefix[:i]
}

// CheckHostName refuses a host name that cannot stand as one folder of a
// prefix: empty, ".", "..", or holding '/', braces, spaces or control
// characters.
func CheckHostName(name string) error {
	switch {
	case name == "":
		return errors.New("the host name is empty; set host: in the config (or --host)")
	case name == "." || name == "..":
		return fmt.Errorf("the host name %q is not a folder name; set host: in the config (or --host)", name)
	case strings.ContainsFunc(name, func(r rune) bool { return r <= ' ' || r == 0x7f || r == '/' || r == '{' || r == '}' }):
		return fmt.Errorf("the host name %q holds '/', a brace, a space or a control character; set host: in the config (or --host) to a plain name such as web1", name)
	}
	return nil
}

// ShortHostname is this machine's hostname up to the first dot, as
// {hostname} expands: "web1.example.com" gives "web1".
func ShortHostname() (string, error) {
	h, err := os.Hostname()
	if err != nil {
		return "", fmt.Errorf("cannot read this machine's hostname for {hostname}: %w", err)
	}
	short, _, _ := strings.Cut(h, ".")
	return short, nil
}
