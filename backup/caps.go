package backup

import (
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

	"github.com/zfs2s3/zfs2s3/s3up"
	"github.com/zfs2s3/zfs2s3/statefile"
)

// The store's quirks (s3up.Caps) are learnt by cross-checking its answers,
// and kept in the state dir next to the ledger, so that each is learnt
// once per bucket and endpoint, not on every command: the next command
// sends the unquoted If-Match or the Content-MD5 from its first request.

// capsPath is the cache of what the client learnt about the store.
func (b *Backup) capsPath() string { return filepath.Join(b.store.Dir, "store-caps.json") }

// maxCapsFileBytes bounds the read of the caps file, a few hundred bytes.
const maxCapsFileBytes = 1 << 16

// loadCaps hands the cached caps to the client and has it report new
// ones. The cache is only an optimisation: a missing or unreadable one is
// learnt again (and said so with -v only, as the state dir's own checks
// report a bad dir).
func (b *Backup) loadCaps() {
	data, err := statefile.ReadFile(b.capsPath(), maxCapsFileBytes)
	var caps s3up.Caps
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		slog.Info("ignoring the cached store quirks", "error", err)
	case json.Unmarshal(data, &caps) != nil:
		slog.Info("ignoring the cached store quirks: not JSON", "file", b.capsPath())
	default:
		b.S3.SetCaps(caps)
	}
	slog.Info("store quirks", "bucket", b.S3.Bucket(), "caps", b.S3.Caps().String())
	b.S3.OnLearn(b.saveCaps)
}

var capsMu sync.Mutex

// saveCaps writes caps to the cache; failing that, the next command
// learns them again, so it is logged with -v only.
func (b *Backup) saveCaps(s3up.Caps) {
	capsMu.Lock() // parts in flight may learn at once; the last write has all
	defer capsMu.Unlock()
	caps := b.S3.Caps()
	if b.readOnly {
		return
	}
	if _, err := os.Lstat(b.store.Dir); err != nil {
		return // nothing of this bucket is kept here yet (or may be)
	}
	data, err := json.MarshalIndent(caps, "", "  ")
	if err == nil {
		err = statefile.WriteFile(b.capsPath(), append(data, '\n'))
	}
	if err != nil {
		slog.Info("cannot cache the store quirks", "error", err)
	}
}
