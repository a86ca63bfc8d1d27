package config

import (
	"strings"
	"testing"
)

func TestExpandPrefix(t *testing.T) {
	for _, tc := range []struct {
		prefix, host, hostname, want, err string
	}{
		{prefix: "", host: "a", hostname: "b", want: ""},
		{prefix: "backups/", host: "", hostname: "", want: "backups/"}, // no placeholder: no name needed
		{prefix: "fleet/{hostname}", host: "x", hostname: "web1", want: "fleet/web1"},
		{prefix: "fleet/{host}/", host: "db2", hostname: "web1", want: "fleet/db2/"},
		{prefix: "{host}-{hostname}", host: "a", hostname: "b", want: "a-b"},
		{prefix: "fleet/{hostnme}", host: "a", hostname: "b", err: "only the placeholders"},
		{prefix: "fleet/{host", host: "a", hostname: "b", err: "check the braces"},
		{prefix: "fleet/{host}", host: "", hostname: "b", err: "empty"},
		{prefix: "fleet/{host}", host: "a/b", hostname: "b", err: "holds '/'"},
		{prefix: "fleet/{hostname}", host: "a", hostname: "..", err: "not a folder name"},
		{prefix: "fleet/{host}", host: "my host", hostname: "b", err: "a space"},
	} {
		got, err := ExpandPrefix(tc.prefix, tc.host, tc.hostname)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ExpandPrefix(%q, %q, %q) = %q, %v; want an error with %q", tc.prefix, tc.host, tc.hostname, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ExpandPrefix(%q, %q, %q) = %q, %v; want %q", tc.prefix, tc.host, tc.hostname, got, err, tc.want)
		}
	}
}

func TestStaticPrefix(t *testing.T) {
	for prefix, want := range map[string]string{
		"":                      "",
		"backups/":              "backups/",
		"fleet/{hostname}/":     "fleet/",
		"fleet/{host}/x":        "fleet/",
		"{hostname}":            "",
		"a-{host}/{hostname}/b": "a-",
	} {
		if got := StaticPrefix(prefix); got != want {
			t.Errorf("StaticPrefix(%q) = %q, want %q", prefix, got, want)
		}
	}
}

func TestHostKey(t *testing.T) {
	c, err := Parse([]byte("bucket: b\nprefix: fleet/{host}\nhost: web1\n"), "c.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Global.Host != "web1" || c.Global.Prefix != "fleet/{host}" {
		t.Errorf("host %q prefix %q, want web1 and fleet/{host}", c.Global.Host, c.Global.Prefix)
	}
}
