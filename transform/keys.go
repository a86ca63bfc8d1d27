package transform

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"filippo.io/age"
)

// Only X25519 keys are taken, on both sides: the promise is that a backup
// can be restored by hand with the age CLI a distribution ships (Debian's is
// 1.1.1), which reads X25519 files but not the post-quantum hybrid ones of
// age 1.3. SSH keys, plugins and passphrase-protected identity files (all of
// which the age CLI also takes) are refused with a message saying so.
//
// Errors never include a key file's lines: a recipients file may be an
// identity file given by mistake, and identity lines are secrets.

// ParseRecipient reads one recipient as age -r takes it: "age1...".
func ParseRecipient(s string) (*age.X25519Recipient, error) {
	s = strings.TrimSpace(s)
	switch {
	case strings.HasPrefix(s, "AGE-SECRET-KEY-"):
		return nil, errors.New("recipient: this is an age identity (a secret key), not a recipient: give its public key (age-keygen -y KEYFILE prints it) and keep the identity off the backup host")
	case strings.HasPrefix(s, "age1pq1"):
		return nil, errors.New("recipient: post-quantum age recipients (age1pq1...) are not supported: a restore by hand must work with the age CLI of distributions (age 1.1), which cannot read them; use an X25519 recipient (age-keygen)")
	case strings.HasPrefix(s, "ssh-"), strings.HasPrefix(s, "ecdsa-"), strings.HasPrefix(s, "sk-"):
		return nil, errors.New("recipient: SSH keys are not supported as recipients; use an X25519 age recipient (age-keygen)")
	case !strings.HasPrefix(s, "age1"):
		return nil, errors.New("recipient: not an age recipient: it must start with age1 (the public key age-keygen prints)")
	}
	r, err := age.ParseX25519Recipient(s)
	if err != nil {
		// A public key: safe to show, and the user needs to see which.
		return nil, fmt.Errorf("recipient %q: malformed age recipient (a typo or a truncated copy?)", s)
	}
	return r, nil
}

// ParseRecipientsFile reads a recipients file as age -R does: one recipient
// a line, blank lines and lines starting with # ignored. name is used in
// errors only.
func ParseRecipientsFile(r io.Reader, name string) ([]*age.X25519Recipient, error) {
	var out []*age.X25519Recipient
	err := eachLine(r, name, func(n int, line string) error {
		rc, err := ParseRecipient(line)
		if err != nil {
			if strings.HasPrefix(line, "age1") && !strings.HasPrefix(line, "age1pq1") {
				return fmt.Errorf("recipients file %s line %d: malformed age recipient (a typo or a truncated copy?)", name, n)
			}
			// ParseRecipient's message, without the line.
			msg, _ := strings.CutPrefix(err.Error(), "recipient: ")
			return fmt.Errorf("recipients file %s line %d: %s", name, n, msg)
		}
		out = append(out, rc)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("recipients file %s holds no recipient (one age1... public key a line)", name)
	}
	return out, nil
}

// ReadRecipientsFile opens and reads a recipients file (ParseRecipientsFile).
func ReadRecipientsFile(path string) ([]*age.X25519Recipient, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("recipients file: %w", err)
	}
	defer f.Close()
	return ParseRecipientsFile(f, path)
}

// ParseIdentitiesFile reads an identity file as age -i does for the files
// age-keygen writes: one AGE-SECRET-KEY-1... a line, blank lines and lines
// starting with # ignored. name is used in errors only.
func ParseIdentitiesFile(r io.Reader, name string) ([]*age.X25519Identity, error) {
	var out []*age.X25519Identity
	err := eachLine(r, name, func(n int, line string) error {
		switch {
		case strings.HasPrefix(line, "AGE-SECRET-KEY-PQ-"):
			return fmt.Errorf("identity file %s line %d: post-quantum age identities are not supported (zfs2s3 encrypts to X25519 recipients only)", name, n)
		case strings.HasPrefix(line, "age1"):
			return fmt.Errorf("identity file %s line %d: this is a recipient (a public key), not an identity: restore needs the secret key file that age-keygen wrote", name, n)
		case strings.HasPrefix(line, "-----BEGIN"), strings.HasPrefix(line, "age-encryption.org/"):
			return fmt.Errorf("identity file %s: SSH keys and passphrase-protected identity files are not supported; give the plain age-keygen key file", name)
		}
		id, err := age.ParseX25519Identity(line)
		if err != nil {
			// age's own error may quote part of the line: a secret.
			return fmt.Errorf("identity file %s line %d: not an age identity (AGE-SECRET-KEY-1... as age-keygen writes)", name, n)
		}
		out = append(out, id)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("identity file %s holds no identity (AGE-SECRET-KEY-1... as age-keygen writes)", name)
	}
	return out, nil
}

// ReadIdentitiesFile opens and reads an identity file (ParseIdentitiesFile).
func ReadIdentitiesFile(path string) ([]*age.X25519Identity, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("identity file: %w", err)
	}
	defer f.Close()
	return ParseIdentitiesFile(f, path)
}

// maxKeyFile bounds a key file as age does (16 MiB): a wrong path to a big
// file fails fast instead of filling memory.
const maxKeyFile = 1 << 24

// eachLine calls fn with each line of r that is not blank or a comment,
// trimmed of surrounding spaces and a CR (files edited on Windows).
func eachLine(r io.Reader, name string, fn func(n int, line string) error) error {
	lr := &io.LimitedReader{R: r, N: maxKeyFile + 1}
	sc := bufio.NewScanner(lr)
	sc.Buffer(make([]byte, 0, 4096), maxKeyFile)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if err := fn(n, line); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read %s: %w", name, err)
	}
	if lr.N == 0 {
		return fmt.Errorf("%s is over 16 MiB: not a key file", name)
	}
	return nil
}

// Recipients turns X25519 recipients into what age.Encrypt takes.
func Recipients(rs []*age.X25519Recipient) []age.Recipient {
	out := make([]age.Recipient, len(rs))
	for i, r := range rs {
		out[i] = r
	}
	return out
}

// Identities turns X25519 identities into what age.Decrypt takes.
func Identities(ids []*age.X25519Identity) []age.Identity {
	out := make([]age.Identity, len(ids))
	for i, id := range ids {
		out[i] = id
	}
	return out
}
