package backup

import (
	"os"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/zfs2s3/zfs2s3/ledger"
	"github.com/zfs2s3/zfs2s3/s3up"
)

// TestParseManifestsOfEarlierReleases reads manifests written by the
// release before manifests were checked (testdata, made with its code):
// existing buckets keep rebuilding.
func TestParseManifestsOfEarlierReleases(t *testing.T) {
	for name, key := range map[string]string{
		"manifest-v1.yaml": "host1/tank/my%20data/tue@83e742d3c709233a.from.mon@f553cdab2fc018e6.zfs",
		"manifest-v2.yaml": "host1/tank/db/big@0000000000000042.full.zfs",
		"manifest-v3.yaml": "host1/tank/secret/fri@00000000005eeded.full.zfs",
		"manifest-v4.yaml": "host1/tank/plain/mon@0000000000000051.from.sun@0000000000000050.zfs", // this release's: a part digest
	} {
		data, err := os.ReadFile("testdata/" + name)
		if err != nil {
			t.Fatal(err)
		}
		e, err := parseManifest(data, s3up.ManifestKey(key), "host1/")
		if err != nil || e.Key != key {
			t.Errorf("%s: parseManifest = %v, %v", name, e, err)
		}
		// The same manifest found under another prefix, or next to another
		// object, is not taken.
		if _, err := parseManifest(data, s3up.ManifestKey("host2/"+strings.TrimPrefix(key, "host1/")), "host2/"); err == nil {
			t.Errorf("%s: taken under another prefix", name)
		}
		if _, err := parseManifest(data, s3up.ManifestKey(key+"x"), "host1/"); err == nil {
			t.Errorf("%s: taken next to another object", name)
		}
		// Written back, it is the same bytes: the format is stable.
		if again, err := yaml.Marshal(manifest{Format: e.Format(), Edge: e}); err != nil || string(again) != string(data) {
			t.Errorf("%s: written back as\n%s", name, again)
		}
	}
}

// TestObjectMetadataRoundTrip: what an upload writes into its objects'
// metadata is what ledger rebuild reads back from an object that lost its
// manifest.
func TestObjectMetadataRoundTrip(t *testing.T) {
	mon := ledger.Snapshot{Name: "tank/my data@mon 1", GUID: 18446744073709551615}
	for _, e := range []ledger.Edge{
		{Target: mon},
		{Target: ledger.Snapshot{Name: "tank/my data@tue:2", GUID: 2}, Base: &mon},
	} {
		got, err := edgeFromMetadata(objectMetadata(e))
		if err != nil || got.Target != e.Target || (got.Base == nil) != (e.Base == nil) || got.Base != nil && *got.Base != *e.Base {
			t.Errorf("edgeFromMetadata(objectMetadata(%s)) = %s, %v", e, got, err)
		}
	}
}
