package s3up

import "testing"

func TestIsStreamKey(t *testing.T) {
	for key, want := range map[string]bool{
		"p/tank/data/a@0000000000000001.full.zfs":                    true,
		"p/tank/data/b@0000000000000002.from.a@0000000000000001.zfs": true,
		"p/tank/data/a@0000000000000001.full.zfs.2":                  true,
		"p/tank/data/a@0000000000000001.full.zfs.13":                 true,
		"p/tank/data/a@0000000000000001.full.zfs.manifest.yaml":      false,
		"p/.zfs2s3/ledger.yaml":                                      false,
		"p/tank/data/a@0000000000000001.full.zfs.x":                  false,
		"stray.bin": false,
	} {
		if got := IsStreamKey(key); got != want {
			t.Errorf("IsStreamKey(%q) = %v, want %v", key, got, want)
		}
	}
}
