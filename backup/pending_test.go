package backup

import (
	"os"
	"path/filepath"
	"testing"

	"gopkg.in/yaml.v3"
)

// TestReadsUploadStateOfThePreviousRelease: testdata/state/upload-v2.yaml
// is the state file the previous release (6e2822e) left when its upload
// was killed with kill -9 after some parts. An upgrade must not strand
// such an upload: this release reads it, its keys pass the checks, and a
// plain upload is saved back in the same version, so that the previous
// release could still resume it too.
func TestReadsUploadStateOfThePreviousRelease(t *testing.T) {
	p, err := readPending(filepath.Join("testdata", "state", "upload-v2.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Edge.CheckKeys(""); err != nil || p.Upload.Key != p.Edge.Key {
		t.Errorf("keys of the previous release's state file: %v (upload key %q, edge key %q)", err, p.Upload.Key, p.Edge.Key)
	}
	if len(p.Upload.Parts) == 0 || p.Upload.UploadID == "" || p.Upload.PartSize != 5<<20 || p.Upload.Transformed {
		t.Errorf("upload read from the previous release's state file: %+v", p.Upload)
	}
	p.path = filepath.Join(t.TempDir(), "state.yaml")
	if err := p.save(); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(p.path)
	if err != nil {
		t.Fatal(err)
	}
	var v struct{ Version int }
	if err := yaml.Unmarshal(data, &v); err != nil || v.Version != 2 {
		t.Errorf("a plain upload is saved as version %d (%v), want 2, which the previous release reads", v.Version, err)
	}
}
