package transform

import (
	"strings"
	"testing"
)

func TestRecipientsFile(t *testing.T) {
	a, b := newKey(t), newKey(t)
	file := "# backup keys\n\n" + a.Recipient().String() + "\r\n  # offsite\n" + b.Recipient().String() + "\n"
	rs, err := ParseRecipientsFile(strings.NewReader(file), "keys.txt")
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 2 || rs[0].String() != a.Recipient().String() || rs[1].String() != b.Recipient().String() {
		t.Fatalf("got %v, want the two recipients in order", rs)
	}
}

// A recipients or identity file that is not what it should be is refused
// with the file and line, and never with a secret key in the message.
func TestKeyFileErrors(t *testing.T) {
	id := newKey(t)
	secret := id.String()
	for _, tc := range []struct {
		name, file, want string
		ids              bool // parse as identity file
	}{
		{"identity as recipients", "# x\n" + secret + "\n", "line 2: this is an age identity", false},
		{"empty recipients", "# nothing\n\n", "holds no recipient", false},
		{"typo", id.Recipient().String()[:20] + "\n", "line 1: malformed age recipient", false},
		{"post-quantum", "age1pq1qqqq\n", "post-quantum", false},
		{"ssh", "ssh-ed25519 AAAA\n", "SSH keys", false},
		{"recipient as identity", id.Recipient().String() + "\n", "line 1: this is a recipient", true},
		{"damaged identity", secret[:len(secret)-3] + "QQQ\n", "line 1: not an age identity", true},
		{"ssh identity", "-----BEGIN OPENSSH PRIVATE KEY-----\n", "not supported", true},
		{"passphrase identity", "age-encryption.org/v1\n", "not supported", true},
		{"empty identities", "\n", "holds no identity", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			if tc.ids {
				_, err = ParseIdentitiesFile(strings.NewReader(tc.file), "key.txt")
			} else {
				_, err = ParseRecipientsFile(strings.NewReader(tc.file), "keys.txt")
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one containing %q", err, tc.want)
			}
			if strings.Contains(err.Error(), secret[16:36]) || strings.Contains(strings.ToLower(err.Error()), strings.ToLower(secret[16:36])) {
				t.Fatalf("error shows key material: %v", err)
			}
		})
	}
	ids, err := ParseIdentitiesFile(strings.NewReader("# created: now\n# public key: "+id.Recipient().String()+"\n"+secret+"\n"), "key.txt")
	if err != nil || len(ids) != 1 || ids[0].String() != secret {
		t.Fatalf("an age-keygen file reads as %v, %v", ids, err)
	}
}
