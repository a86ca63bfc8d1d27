package main

// End-to-end tests of a restore from a bucket someone else wrote to: a
// stored object replaced by a complete, valid zfs send stream of another
// snapshot. age encrypts to public keys, so whoever can write the bucket
// can make such an object for the recipient; zfs receive reads a stream up
// to its END record and commits it before zfs2s3 has read the rest of the
// object and found its digest wrong. The restore must fail naming the
// object and leave nothing received behind.

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"filippo.io/age"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/zfs2s3/zfs2s3/internal/testbed"
	"github.com/zfs2s3/zfs2s3/ledger"
)

// zfsSend returns what zfs send prints for target (incremental from base
// when base is not empty).
func zfsSend(t *testing.T, target, base string) []byte {
	t.Helper()
	args := []string{"send", target}
	if base != "" {
		args = []string{"send", "-i", base, target}
	}
	var out, stderr bytes.Buffer
	c := exec.Command("zfs", args...)
	c.Stdout, c.Stderr = &out, &stderr
	if err := c.Run(); err != nil {
		t.Fatalf("zfs %s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	return out.Bytes()
}

// claimGUIDs rewrites a zfs send stream (little-endian, one snapshot) so
// that its BEGIN record claims to be the stream of toGUID from fromGUID,
// and fixes the END record's checksum (fletcher-4 of everything before
// it) so that zfs receive accepts it: what a forger who read the GUIDs in
// the bucket's keys would do.
func claimGUIDs(t *testing.T, s []byte, toGUID, fromGUID uint64) []byte {
	t.Helper()
	const rec = 312
	s = bytes.Clone(s)
	le := binary.LittleEndian
	if len(s) < 2*rec || le.Uint64(s[8:]) != 0x2F5bacbac || le.Uint32(s) != 0 {
		t.Fatalf("not a little-endian zfs send stream (%d bytes)", len(s))
	}
	end := len(s) - rec
	if le.Uint32(s[end:]) != 5 {
		t.Fatal("the stream does not end with an END record")
	}
	oldTo := le.Uint64(s[40:])
	le.PutUint64(s[40:], toGUID)
	le.PutUint64(s[48:], fromGUID)
	if fromGUID != 0 {
		// An incremental from a clone's origin is flagged as a clone
		// stream (DRR_FLAG_CLONE), which zfs receive takes as a new
		// dataset: make it a plain incremental.
		le.PutUint32(s[36:], le.Uint32(s[36:])&^1)
	}
	if le.Uint64(s[end+40:]) == oldTo { // drr_end.drr_toguid, where the stream has it
		le.PutUint64(s[end+40:], toGUID)
	}
	var a, b, c, d uint64
	for i := 0; i+4 <= end; i += 4 {
		a += uint64(le.Uint32(s[i:]))
		b += a
		c += b
		d += c
	}
	for i, v := range []uint64{a, b, c, d} {
		le.PutUint64(s[end+8+8*i:], v)
	}
	return s
}

// forgeSegment replaces object i of edge ed with an age file to recipient
// whose plaintext is stream followed by filler up to the segment's
// recorded plaintext size, so that the object has the recorded size and
// passes restore's check of the bucket (HEAD) before anything is received.
func (e *env) forgeSegment(ed ledger.Edge, i int, recipient string, stream []byte) string {
	e.t.Helper()
	rec := ed.Records[i]
	if int64(len(stream)) > rec.PlainBytes/2 {
		e.t.Fatalf("forged stream of %d bytes does not fit well in a segment of %d", len(stream), rec.PlainBytes)
	}
	plain := append(bytes.Clone(stream), make([]byte, rec.PlainBytes-int64(len(stream)))...)
	r, err := age.ParseX25519Recipient(recipient)
	if err != nil {
		e.t.Fatal(err)
	}
	var enc bytes.Buffer
	w, err := age.Encrypt(&enc, r)
	if err != nil {
		e.t.Fatal(err)
	}
	w.Write(plain)
	if err := w.Close(); err != nil {
		e.t.Fatal(err)
	}
	if int64(enc.Len()) != rec.StoredBytes {
		e.t.Fatalf("forged object has %d bytes, the ledger recorded %d", enc.Len(), rec.StoredBytes)
	}
	key := ledger.SegmentKey(ed.Key, i)
	e.putLike(key, enc.Bytes())
	return key
}

// putLike replaces the object key with data, keeping its metadata.
func (e *env) putLike(key string, data []byte) {
	e.t.Helper()
	ctx := context.Background()
	head, err := bed.minio.Client().HeadObject(ctx, &s3.HeadObjectInput{Bucket: &e.bucket, Key: &key})
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := bed.minio.Client().PutObject(ctx, &s3.PutObjectInput{Bucket: &e.bucket, Key: &key,
		Body: bytes.NewReader(data), Metadata: head.Metadata}); err != nil {
		e.t.Fatal(err)
	}
}

// allUnder lists ds and everything below it (datasets and snapshots),
// one name a line; "" when ds does not exist.
func allUnder(ds string) string {
	out, err := exec.Command("zfs", "list", "-H", "-t", "all", "-o", "name,guid", "-r", ds).Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// otherSnapshot makes a small snapshot NAME of a new dataset beside e.ds,
// with a file the forged restore must not bring.
func (e *env) otherSnapshot(name string) string {
	e.t.Helper()
	other := e.ds + " other"
	e.zfs("create", other)
	mnt, _ := testbed.Mountpoint(other)
	if err := os.WriteFile(filepath.Join(mnt, "forged"), []byte("not yours"), 0o644); err != nil {
		e.t.Fatal(err)
	}
	e.zfs("snapshot", other+"@"+name)
	return other + "@" + name
}

// TestForgedSegmentLeavesNothingReceived replaces the first of several
// segments of an encrypted full stream with a complete stream of another
// snapshot, as it is and claiming the edge's GUID: both restores fail
// naming the edge and the object, and nothing under the destination
// remains.
func TestForgedSegmentLeavesNothingReceived(t *testing.T) {
	key, rcpt := ageKey(t)
	e := newEnv(t, "forged full")
	a := e.textSnap("a", 3)
	// 2 MiB segments: more than the MiB restore holds back of each, so
	// zfs receive gets the whole forged stream before the digest is known.
	e.ok("upload", a, "--segment-size", "2MiB", "--recipient", rcpt)
	ed, err := e.ledger().Find(a, "", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(ed.Records) < 2 {
		t.Fatalf("%s has %d segments, want 2 or more", ed, len(ed.Records))
	}
	other := zfsSend(t, e.otherSnapshot("x"), "")
	for i, tc := range []struct {
		name   string
		stream []byte
	}{
		{"as it is", other},
		{"claiming the edge's GUID", claimGUIDs(t, other, ed.Target.GUID, 0)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			into := fmt.Sprintf("%s/%s restored %d", pool, filepath.Base(e.ds), i)
			k := e.forgeSegment(ed, 0, rcpt, tc.stream)
			r := e.run("restore", a, "--into", into, "--identity", key)
			t.Logf("restore: exit %d: %s", r.code, r.stderr)
			if r.code != 1 || !strings.Contains(r.stderr, ed.String()) || !strings.Contains(r.stderr, k) {
				t.Errorf("restore of a forged segment: exit %d, stderr %q; want 1 naming %s and %s", r.code, r.stderr, ed, k)
			}
			if left := allUnder(into); left != "" {
				t.Errorf("a failed restore of a forged segment left:\n%s", left)
			}
		})
	}
}

// TestForgedIncrementalLeavesDestinationAsItWas: onto a dataset restored
// to a, the first segment of a -> b replaced by a real incremental from a
// (of a clone of a) that claims b's GUID. The restore fails naming the
// object; the dataset keeps a, with a's GUID and data, and nothing else.
func TestForgedIncrementalLeavesDestinationAsItWas(t *testing.T) {
	key, rcpt := ageKey(t)
	e := newEnv(t, "forged incr")
	a := e.textSnap("a", 1)
	b := e.textSnap("b", 3)
	e.ok("upload", a, "--segment-size", "2MiB", "--recipient", rcpt)
	e.ok("upload", b, "-i", a, "--segment-size", "2MiB", "--recipient", rcpt)
	ed, err := e.ledger().Find(b, a, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(ed.Records) < 2 {
		t.Fatalf("%s has %d segments, want 2 or more", ed, len(ed.Records))
	}
	onto := pool + "/" + filepath.Base(e.ds) + " onto"
	e.ok("restore", a, "--into", onto, "--identity", key)
	before := allUnder(onto)

	clone := e.ds + " clone"
	e.zfs("clone", a, clone)
	mnt, _ := testbed.Mountpoint(clone)
	if err := os.WriteFile(filepath.Join(mnt, "forged"), []byte("not yours"), 0o644); err != nil {
		t.Fatal(err)
	}
	e.zfs("snapshot", clone+"@x")
	forged := claimGUIDs(t, zfsSend(t, clone+"@x", a), ed.Target.GUID, ed.Base.GUID)
	k := e.forgeSegment(ed, 0, rcpt, forged)

	r := e.run("restore", b, "--into", onto, "--identity", key)
	t.Logf("restore: exit %d: %s", r.code, r.stderr)
	if r.code != 1 || !strings.Contains(r.stderr, ed.String()) || !strings.Contains(r.stderr, k) {
		t.Errorf("restore of a forged segment: exit %d, stderr %q; want 1 naming %s and %s", r.code, r.stderr, ed, k)
	}
	if after := allUnder(onto); after != before {
		t.Errorf("a failed restore changed %s:\nbefore:\n%s\nafter:\n%s", onto, before, after)
	}
	mnt, _ = testbed.Mountpoint(onto)
	if _, err := os.Stat(filepath.Join(mnt, "forged")); err == nil {
		t.Errorf("%s holds the forged stream's file after the failed restore", onto)
	}
	if _, err := os.Stat(filepath.Join(mnt, "b.txt")); err == nil {
		t.Errorf("%s holds b's data after the failed restore", onto)
	}
	src, _ := testbed.Mountpoint(e.ds) // a's files are unchanged since a
	sameFile(t, filepath.Join(src, "a.bin"), filepath.Join(mnt, "a.bin"))
}

// TestForgedPlainObjectLeavesNothingReceived: a plain (untransformed)
// object replaced by a stream claiming its GUID, followed by filler to the
// recorded size; the SHA-256 is known only at its end, a MiB after zfs
// receive has the forged END.
func TestForgedPlainObjectLeavesNothingReceived(t *testing.T) {
	e := newEnv(t, "forged plain")
	a := e.snap("a", 3)
	e.ok("upload", a)
	ed, err := e.ledger().Find(a, "", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	forged := claimGUIDs(t, zfsSend(t, e.otherSnapshot("x"), ""), ed.Target.GUID, 0)
	e.putLike(ed.Key, append(forged, make([]byte, ed.StoredBytes-int64(len(forged)))...))
	into := pool + "/" + filepath.Base(e.ds) + " restored"
	r := e.run("restore", a, "--into", into)
	t.Logf("restore: exit %d: %s", r.code, r.stderr)
	if r.code != 1 || !strings.Contains(r.stderr, ed.String()) || !strings.Contains(r.stderr, ed.Key) {
		t.Errorf("restore of a forged object: exit %d, stderr %q; want 1 naming %s and %s", r.code, r.stderr, ed, ed.Key)
	}
	if left := allUnder(into); left != "" {
		t.Errorf("a failed restore of a forged object left:\n%s", left)
	}
}
