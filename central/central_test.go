package central

import (
	"strings"
	"testing"

	"filippo.io/age"
	"pgregory.net/rapid"

	"github.com/zfs2s3/zfs2s3/retention"
)

func recipient(t testing.TB) string {
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	return id.Recipient().String()
}

func TestKey(t *testing.T) {
	for _, tc := range []struct{ prefix, want string }{
		{"fleet/{host}", "fleet/.zfs2s3-policy.yaml"},
		{"fleet/{hostname}/", "fleet/.zfs2s3-policy.yaml"},
		{"backups/fleet-{host}", "backups/fleet-.zfs2s3-policy.yaml"},
		{"{host}", ".zfs2s3-policy.yaml"},
		{"host1", "host1/.zfs2s3-policy.yaml"},
		{"host1/", "host1/.zfs2s3-policy.yaml"},
		{"", ".zfs2s3-policy.yaml"},
	} {
		if got := Key(tc.prefix); got != tc.want {
			t.Errorf("Key(%q) = %q, want %q", tc.prefix, got, tc.want)
		}
	}
}

func TestParse(t *testing.T) {
	r1, r2 := recipient(t), recipient(t)
	good := "version: 1\ndefaults:\n  keep: {daily: 7, weekly: 4}\n  quota: 500GiB\n  recipients: [" + r1 + "]\nhosts:\n  web1:\n    quota: 1TiB\n  db1:\n    keep: {last: 30}\n    recipients: [" + r1 + ", " + r2 + "]\n"
	p, err := Parse([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	// Which settings apply to which host: the defaults, each field a host
	// sets replacing the default's.
	web1, db1, other := p.For("web1"), p.For("db1"), p.For("mail")
	if *web1.Quota != 1<<40 || *web1.Keep != (retention.Policy{Daily: 7, Weekly: 4}) || len(web1.Recipients) != 1 {
		t.Errorf("web1: %+v", web1)
	}
	if *db1.Quota != 500<<30 || *db1.Keep != (retention.Policy{Last: 30}) || len(db1.Recipients) != 2 {
		t.Errorf("db1: %+v", db1)
	}
	if *other.Quota != 500<<30 || *other.Keep != (retention.Policy{Daily: 7, Weekly: 4}) || other.Recipients[0] != r1 {
		t.Errorf("mail: %+v", other)
	}
	if s := (*Policy)(nil).For("web1"); s.Keep != nil || s.Quota != nil || s.Recipients != nil {
		t.Errorf("no policy sets %+v", s)
	}

	for _, tc := range []struct{ name, yaml, err string }{
		{"empty", "", "empty"},
		{"no version", "defaults: {quota: 1GiB}\n", "no version"},
		{"newer", "version: 2\n", "newer than this zfs2s3 reads"},
		{"unknown key", "version: 1\ndefaults: {qouta: 1GiB}\n", "qouta"},
		{"unknown top", "version: 1\nhost: {}\n", "host"},
		{"bad quota", "version: 1\ndefaults: {quota: lots}\n", "bad size"},
		{"zero quota", "version: 1\ndefaults: {quota: 0}\n", "above 0"},
		{"keeps nothing", "version: 1\ndefaults: {keep: {daily: 0}}\n", "keeps nothing"},
		{"negative keep", "version: 1\nhosts: {web1: {keep: {daily: -1}}}\n", "negative"},
		{"bad recipient", "version: 1\ndefaults: {recipients: [age1nope]}\n", "malformed age recipient"},
		{"a secret key for a recipient", "version: 1\ndefaults: {recipients: [AGE-SECRET-KEY-1QQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQ]}\n", "not a recipient"},
		{"bad host", "version: 1\nhosts: {\"a/b\": {quota: 1GiB}}\n", "a/b"},
		{"not yaml", "version: [1\n", "did not find"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yaml))
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("Parse: %v, want an error with %q", err, tc.err)
			}
			if err != nil && strings.Contains(err.Error(), "AGE-SECRET-KEY-") {
				t.Errorf("Parse's error shows a secret key: %v", err)
			}
		})
	}
}

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Size
	}{
		{"500GiB", 500 << 30}, {"1TiB", 1 << 40}, {"2TB", 2e12}, {"1.5GiB", 3 << 29}, {"1048576", 1 << 20}, {"10 MiB", 10 << 20}, {"7B", 7},
	} {
		if got, err := ParseSize(tc.in); err != nil || got != tc.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "GiB", "-1GiB", "1XB", "NaN", "1e30PiB"} {
		if _, err := ParseSize(bad); err == nil {
			t.Errorf("ParseSize(%q) accepted", bad)
		}
	}
}

// TestSizeRoundTrip: what show prints of a quota reads back as the same
// number of bytes.
func TestSizeRoundTrip(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		n := rapid.Int64Range(1, 1<<20).Draw(t, "n") << (10 * rapid.IntRange(0, 4).Draw(t, "unit"))
		n += rapid.Int64Range(0, 1).Draw(t, "odd")
		out, _ := Size(n).MarshalYAML()
		got, err := ParseSize(out.(string))
		if err != nil || int64(got) != n {
			t.Fatalf("Size(%d) is written %q, read back as %d, %v", n, out, got, err)
		}
	})
	if got := Format(3 << 29); got != "1.50GiB" {
		t.Errorf("Format(1.5GiB) = %q", got)
	}
}

func TestQuotaCheck(t *testing.T) {
	for _, tc := range []struct {
		stored, est int64
		quota       Size
		fits        bool
	}{
		{0, 100, 100, true},
		{50, 50, 100, true},
		{50, 51, 100, false},
		{150, 0, 100, false}, // already over: no new full, however small
		{0, 1 << 62, 1 << 62, true},
		{1 << 62, 1 << 62, 1<<63 - 1, false}, // no overflow
		{10, -1, 100, true},                  // unknown estimate counts as 0
		{1 << 40, 1 << 40, 0, true},          // no quota
	} {
		if got := QuotaCheck(tc.stored, tc.est, tc.quota); got != tc.fits {
			t.Errorf("QuotaCheck(%d, %d, %d) = %v, want %v", tc.stored, tc.est, tc.quota, got, tc.fits)
		}
	}
	// Property: a full fits exactly when stored+estimate <= quota (in
	// arbitrary precision).
	rapid.Check(t, func(t *rapid.T) {
		s := rapid.Int64Range(0, 1<<61).Draw(t, "stored")
		e := rapid.Int64Range(0, 1<<61).Draw(t, "estimate")
		q := rapid.Int64Range(1, 1<<62).Draw(t, "quota")
		if got, want := QuotaCheck(s, e, Size(q)), s+e <= q; got != want {
			t.Fatalf("QuotaCheck(%d, %d, %d) = %v, want %v", s, e, q, got, want)
		}
	})
}

func TestMissingRecipients(t *testing.T) {
	a, b, c := recipient(t), recipient(t), recipient(t)
	for _, tc := range []struct {
		required, have, missing []string
	}{
		{nil, nil, nil},
		{[]string{a}, []string{a, b}, nil},
		{[]string{a, b}, []string{b}, []string{a}},
		{[]string{a}, nil, []string{a}}, // an unencrypted upload
		{[]string{a, c}, []string{strings.ToUpper(a)}, []string{c}},
	} {
		got := MissingRecipients(tc.required, tc.have)
		if strings.Join(got, ",") != strings.Join(tc.missing, ",") {
			t.Errorf("MissingRecipients(%v, %v) = %v, want %v", tc.required, tc.have, got, tc.missing)
		}
	}
}

// TestMarshalParses: what show prints (the defaults and per-host
// settings) reads back as a policy with the same settings.
func TestMarshalParses(t *testing.T) {
	r := recipient(t)
	q := Size(3 << 29)
	p := &Policy{Version: 1, Defaults: Settings{Keep: &retention.Policy{Daily: 3}, Quota: &q, Recipients: []string{r}},
		Hosts: map[string]Settings{"web1": {Quota: &q}}}
	data, err := p.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	back, err := Parse(data)
	if err != nil {
		t.Fatalf("%v\n%s", err, data)
	}
	if got := back.For("web1"); *got.Quota != q || got.Keep.Daily != 3 || got.Recipients[0] != r {
		t.Errorf("read back %+v from\n%s", got, data)
	}
}
