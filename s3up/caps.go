package s3up

import (
	"log/slog"
	"strings"
)

// Caps are what a client has learnt about its store's departures from S3:
// answers that would mislead zfs2s3 if taken at face value. Each is set when
// a cross-check proves it (a 412 on an object whose ETag still matches, an
// empty parts listing for an upload that had parts, a missing checksum echo)
// and stays set; the backup package keeps them in the state dir, so a store
// is probed once, not on every command.
type Caps struct {
	// Endpoint is the endpoint the caps were learnt on; a cache for another
	// endpoint is not used (the same bucket name, another store).
	Endpoint string `json:"endpoint"`
	// IfMatchUnquoted: a quoted If-Match ETag gets 412 although the object
	// has that ETag; the unquoted one works (Ceph RGW 16).
	IfMatchUnquoted bool `json:"if_match_unquoted,omitempty"`
	// NoConditionalWrites: conditional writes of an unchanged object get
	// 412 however the ETag is written: the store has no usable If-Match.
	NoConditionalWrites bool `json:"no_conditional_writes,omitempty"`
	// ListUploadsNotFound: ListMultipartUploads answers 404 NoSuchUpload
	// when there are none (rclone serve s3); read as an empty listing.
	ListUploadsNotFound bool `json:"list_uploads_not_found,omitempty"`
	// ETagNotMD5: a completed multipart object's ETag is not the MD5 of
	// its parts' MD5s (rclone, versitygw), so objects are checked by size
	// and SHA-256 instead.
	ETagNotMD5 bool `json:"etag_not_md5,omitempty"`
	// ListPartsEmptyWhenGone: ListParts on a completed or aborted upload
	// answers 200 with no parts instead of NoSuchUpload (SeaweedFS).
	ListPartsEmptyWhenGone bool `json:"list_parts_empty_when_gone,omitempty"`
	// ChecksumNotEchoed: x-amz-checksum-crc32c is accepted but not echoed,
	// so not checked (Ceph RGW, rclone); parts carry Content-MD5 as well.
	ChecksumNotEchoed bool `json:"checksum_not_echoed,omitempty"`
}

// String lists the quirks, "none" when the store behaved like S3.
func (c Caps) String() string {
	var q []string
	for _, f := range []struct {
		set  bool
		name string
	}{
		{c.IfMatchUnquoted, "if-match-unquoted"},
		{c.NoConditionalWrites, "no-conditional-writes"},
		{c.ListUploadsNotFound, "list-uploads-not-found"},
		{c.ETagNotMD5, "etag-not-md5"},
		{c.ListPartsEmptyWhenGone, "list-parts-empty-when-gone"},
		{c.ChecksumNotEchoed, "checksum-not-echoed"},
	} {
		if f.set {
			q = append(q, f.name)
		}
	}
	if len(q) == 0 {
		return "none"
	}
	return strings.Join(q, ",")
}

// Caps returns what the client knows about its store.
func (c *Client) Caps() Caps {
	c.capsMu.Lock()
	defer c.capsMu.Unlock()
	caps := c.caps
	caps.Endpoint = c.endpoint
	return caps
}

// SetCaps starts the client from caps learnt earlier (a cache); caps
// learnt on another endpoint are ignored.
func (c *Client) SetCaps(caps Caps) {
	if caps.Endpoint != c.endpoint {
		return
	}
	c.capsMu.Lock()
	c.caps = caps
	c.capsMu.Unlock()
}

// OnLearn, when set, is called with the new caps each time the client
// learns something about its store, for the caller to cache them.
func (c *Client) OnLearn(fn func(Caps)) {
	c.capsMu.Lock()
	c.onLearn = fn
	c.capsMu.Unlock()
}

// learn sets one capability and reports whether it was new; a new one is
// logged (seen with -v) and handed to the OnLearn callback.
func (c *Client) learn(set func(*Caps) *bool, why string) bool {
	c.capsMu.Lock()
	f := set(&c.caps)
	if *f {
		c.capsMu.Unlock()
		return false
	}
	*f = true
	caps, fn := c.caps, c.onLearn
	caps.Endpoint = c.endpoint
	c.capsMu.Unlock()
	slog.Info("learnt a store quirk", "bucket", c.bucket, "endpoint", c.endpoint, "quirk", why, "caps", caps.String())
	if fn != nil {
		fn(caps)
	}
	return true
}
