package ledger

import (
	"testing"

	"pgregory.net/rapid"
)

func TestObjectKey(t *testing.T) {
	base := &Snapshot{Name: "tank/my data@mon", GUID: 0xab}
	tests := []struct {
		prefix string
		target Snapshot
		base   *Snapshot
		want   string
	}{
		{"", Snapshot{Name: "tank/data@a", GUID: 1}, nil, "tank/data/a@0000000000000001.full.zfs"},
		{"host1", Snapshot{Name: "tank/my data@tue", GUID: 0xcd}, base,
			"host1/tank/my%20data/tue@00000000000000cd.from.mon@00000000000000ab.zfs"},
		{"b/", Snapshot{Name: "tank/x:y@2026-01-01 00:00", GUID: 2}, nil, "b/tank/x%3Ay/2026-01-01%2000%3A00@0000000000000002.full.zfs"},
		{"", Snapshot{Name: "tank/dätä@ü", GUID: 3}, nil, "tank/d%C3%A4t%C3%A4/%C3%BC@0000000000000003.full.zfs"},
	}
	for _, tt := range tests {
		if got := ObjectKey(tt.prefix, tt.target, tt.base); got != tt.want {
			t.Errorf("ObjectKey(%q, %v, %v) = %q, want %q", tt.prefix, tt.target, tt.base, got, tt.want)
		}
	}
}

// TestObjectKeysAreUnique checks that different edges, including edges of
// nested datasets and snapshots re-created under one name, never share a key.
func TestObjectKeysAreUnique(t *testing.T) {
	name := rapid.StringOfN(rapid.SampledFrom([]rune("ab/ .:_-%ü")), 1, 6, -1)
	rapid.Check(t, func(t *rapid.T) {
		seen := map[string]string{}
		for i := 0; i < 20; i++ {
			ds := "p/" + name.Filter(validDataset).Draw(t, "ds")
			snap := name.Filter(func(s string) bool { return !containsAny(s, "/@") }).Draw(t, "snap")
			tg := Snapshot{Name: ds + "@" + snap, GUID: rapid.Uint64Range(1, 4).Draw(t, "guid")}
			var b *Snapshot
			if rapid.Bool().Draw(t, "incremental") {
				b = &Snapshot{Name: ds + "@" + snap + "x", GUID: rapid.Uint64Range(1, 4).Draw(t, "bguid")}
			}
			id := tg.Name + "|" + string(rune(tg.GUID))
			if b != nil {
				id += "|" + b.Name + "|" + string(rune(b.GUID))
			}
			k := ObjectKey("", tg, b)
			if other, ok := seen[k]; ok && other != id {
				t.Fatalf("edges %q and %q share key %q", other, id, k)
			}
			seen[k] = id
		}
	})
}

func validDataset(s string) bool {
	return s[0] != '/' && s[len(s)-1] != '/' && !contains(s, "//") && !containsAny(s, "@")
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

func containsAny(s, chars string) bool {
	for _, c := range chars {
		if contains(s, string(c)) {
			return true
		}
	}
	return false
}

func TestCheckPrefix(t *testing.T) {
	for p, ok := range map[string]bool{
		"": true, "host1": true, "host1/": true, "backups/host1": true, "a.b/c..d/.e": true, "my host": true,
		"/": false, "/host1": false, "//": false, "a//b": false, "a/": true, "a//": false,
		".": false, "..": false, "./a": false, "a/../b": false, "a/.": false, "a/./": false, "a\nb": false,
	} {
		if err := CheckPrefix(p); (err == nil) != ok {
			t.Errorf("CheckPrefix(%q) = %v, want ok=%v", p, err, ok)
		}
	}
}
