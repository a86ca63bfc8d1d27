package main

import (
	"errors"
	"io"
	"testing"

	"github.com/zfs2s3/zfs2s3/zfs"
)

// On the real zfs-fuse: send flag detection runs zfs and names it, refuses
// what its zfs send lacks with the message a user sees, and a real
// stream's BEGIN record carries none of the OpenZFS feature bits.
func TestSendFlagDetectionLive(t *testing.T) {
	e := newEnv(t, "sendflags")
	snap := e.snap("a", 1)
	ctx := t.Context()
	s, err := zfs.Runner{}.SendSupport(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if s.Name != "zfs-fuse" || !s.Options['R'] {
		t.Fatalf("detected %q with options %v, want zfs-fuse with -R", s.Name, s.Options)
	}
	if err := s.Check(zfs.SendFlags{LargeBlocks: true}); err == nil || err.Error() != "zfs-fuse's zfs send has no -L (large-blocks); remove it from send_flags" {
		t.Fatalf("-L on zfs-fuse: %v", err)
	}
	if err := s.Check(zfs.SendFlags{}); err != nil {
		t.Fatalf("no flags: %v", err)
	}
	st, err := zfs.Runner{}.Send(ctx, snap, "")
	if err != nil {
		t.Fatal(err)
	}
	var c zfs.StreamCheck
	if _, err := io.Copy(&c, st); err != nil {
		t.Fatal(err)
	}
	if err := st.Wait(); err != nil {
		t.Fatal(err)
	}
	f, err := c.Features()
	if err != nil || f.Flags() != (zfs.SendFlags{}) {
		t.Fatalf("features of a plain zfs-fuse stream: %#x (%+v), %v", uint32(f), f.Flags(), err)
	}
	if _, err := zfs.ReadStreamFeatures(nil); !errors.Is(err, zfs.ErrNotStream) {
		t.Fatalf("no bytes: %v", err)
	}
}
