package backup

import (
	"path/filepath"
	"reflect"
	"strings"
	"testing"
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
	if len(p.Upload.Parts) == 0 || p.Upload.UploadID == "" || p.Upload.PartSize != 5<<20 || p.Upload.Transformed || p.Upload.PartDigests || p.Upload.Parts[0].PrefixSHA256 == "" {
		t.Errorf("upload read from the previous release's state file: %+v", p.Upload)
	}
	if v := resaved(t, p).Version; v != 2 {
		t.Errorf("a plain upload is saved as version %d, want 2, which the previous release reads", v)
	}
}

// resaved saves p to a new file and reads it back.
func resaved(t *testing.T, p *pending) *pending {
	t.Helper()
	p.path = filepath.Join(t.TempDir(), "state.yaml")
	if err := p.save(); err != nil {
		t.Fatal(err)
	}
	q, err := readPending(p.path)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

// TestPlainUploadStateVersion4: a plain upload this release begins has
// part digests and is saved as version 4, which the release before
// refuses rather than resume it the old way; read back, it keeps them.
func TestPlainUploadStateVersion4(t *testing.T) {
	p, err := readPending(filepath.Join("testdata", "state", "upload-v2.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	p.Upload.PartDigests = true
	for i := range p.Upload.Parts {
		p.Upload.Parts[i].PrefixSHA256, p.Upload.Parts[i].SHA256 = "", strings.Repeat("ab", 32)
	}
	q := resaved(t, p)
	if q.Version != 4 {
		t.Errorf("a plain upload with part digests is saved as version %d, want 4", q.Version)
	}
	if !q.Upload.PartDigests || q.Upload.Parts[0].SHA256 != strings.Repeat("ab", 32) || q.Upload.Parts[0].PrefixSHA256 != "" {
		t.Errorf("read back: %+v", q)
	}
}

// TestReadsTransformedUploadStates: upload-v3.yaml is the state file this
// format's first release (64f921e) left when an encrypted upload was
// killed after two segments; upload-v4-finishing.yaml the one this
// release leaves after a kill between segment 0's CompleteMultipartUpload
// reaching the store and its answer (segment_finishing, what lets the
// resume adopt that object, is version 4: the release before would redo
// the segment over the completed object). Both read, pass the key checks,
// and save back in their version with nothing lost.
func TestReadsTransformedUploadStates(t *testing.T) {
	for _, tc := range []struct {
		file            string
		done, finishing int // finishing: the segment being completed, -1 none
		version         int
	}{
		{"upload-v3.yaml", 2, -1, 3},
		{"upload-v4-finishing.yaml", 0, 0, 4},
	} {
		t.Run(tc.file, func(t *testing.T) {
			p, err := readPending(filepath.Join("testdata", "state", tc.file))
			if err != nil {
				t.Fatal(err)
			}
			if err := p.Edge.CheckKeys(""); err != nil || p.Upload.Key != p.Edge.Key {
				t.Errorf("keys: %v (upload key %q, edge key %q)", err, p.Upload.Key, p.Edge.Key)
			}
			u := p.Upload
			if !u.Transformed || u.UploadID == "" || len(u.Done) != tc.done {
				t.Fatalf("upload read: transformed %v, upload id %q, %d segments done; want transformed, an upload id, %d done", u.Transformed, u.UploadID, len(u.Done), tc.done)
			}
			switch {
			case tc.finishing < 0 && u.Finishing != nil:
				t.Errorf("a segment is finishing in a state file that has none: %+v", u.Finishing)
			case tc.finishing >= 0 && (u.Finishing == nil || u.Finishing.Index != tc.finishing || u.Finishing.StoredSHA256 == "" || len(u.Parts) == 0):
				t.Errorf("segment %d finishing: %+v with %d parts; want its record with the stored digest, and its parts", tc.finishing, u.Finishing, len(u.Parts))
			}
			q := resaved(t, p)
			if q.Version != tc.version || !reflect.DeepEqual(q.Upload, p.Upload) {
				t.Errorf("saved back as version %d with upload\n%+v\nread\n%+v", q.Version, q.Upload, p.Upload)
			}
		})
	}
}

// TestTransformedUploadWithSHA256IsVersion4: the release before knows
// only crc32c and md5 checksums and would resume a transformed upload with
// checksum sha256 sending parts with none; saved as version 4, it refuses
// the file instead. With crc32c the file stays version 3, which it reads.
func TestTransformedUploadWithSHA256IsVersion4(t *testing.T) {
	for _, tc := range []struct {
		checksum string
		version  int
	}{{"sha256", 4}, {"crc32c", 3}} {
		p, err := readPending(filepath.Join("testdata", "state", "upload-v3.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		p.Upload.Checksum = tc.checksum
		if q := resaved(t, p); q.Version != tc.version || q.Upload.Checksum != tc.checksum {
			t.Errorf("checksum %s: saved as version %d with checksum %q, want version %d", tc.checksum, q.Version, q.Upload.Checksum, tc.version)
		}
	}
}
