package backup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"filippo.io/age"

	"github.com/zfs2s3/zfs2s3/ledger"
	"github.com/zfs2s3/zfs2s3/s3up"
	"github.com/zfs2s3/zfs2s3/transform"
	"github.com/zfs2s3/zfs2s3/zfs"
)

// copyEdge writes e's stream to w, verified: a plain edge's object(s) as
// stored, a transformed edge's objects decrypted and decompressed. The last
// bytes are written only once everything was verified, so a zfs receive
// fed by it keeps nothing of a damaged genuine stream, whose END record is
// in those bytes. An object can also hold a whole stream of its own, with
// its END early (forged); no hold-back keeps that from zfs receive, and
// restore undoes what it committed (see receiveEdge).
func (b *Backup) copyEdge(ctx context.Context, w io.Writer, e ledger.Edge) error {
	if !e.Transformed() {
		body := b.S3.OpenObjects(ctx, e.Objects(), b.Opt.Concurrency)
		defer body.Close()
		return copyVerified(w, body, e)
	}
	spec, err := transform.ParseSpec(e.Transform)
	if err != nil {
		return err
	}
	ids := b.identities()
	for i, rec := range e.Records {
		key := ledger.SegmentKey(e.Key, i)
		if err := b.copySegment(ctx, w, e, spec, ids, rec, i == len(e.Records)-1); err != nil {
			return fmt.Errorf("object %s (segment %d of %d): %w", key, i+1, len(e.Records), err)
		}
	}
	return nil
}

// copySegment writes one segment's plaintext; the last one holds back its
// final bytes until its digests were checked. Holding back the end of
// every segment would not help: a genuine stream's END is in the last one,
// and a forged END can be anywhere in a segment.
func (b *Backup) copySegment(ctx context.Context, w io.Writer, e ledger.Edge, spec transform.Spec, ids []age.Identity, rec transform.Record, last bool) error {
	body := b.S3.OpenParallel(ctx, ledger.SegmentKey(e.Key, rec.Index), rec.StoredBytes, s3up.DownloadChunk, b.Opt.Concurrency)
	defer body.Close()
	sr, err := transform.NewSegmentReader(body, spec, ids, transform.Expect{Record: rec, PartSize: e.PartSize})
	if err != nil {
		return err
	}
	defer sr.Close()
	if !last {
		_, err := io.Copy(w, sr)
		return err
	}
	head := max(rec.PlainBytes-holdBack, 0)
	if _, err := io.Copy(w, io.LimitReader(sr, head)); err != nil {
		return err
	}
	rest := rec.PlainBytes - head
	tail, err := io.ReadAll(io.LimitReader(sr, rest+1))
	if err != nil {
		return err
	}
	if int64(len(tail)) != rest {
		return fmt.Errorf("%w: it decodes to more than the %d bytes uploaded", transform.ErrDamaged, rec.PlainBytes)
	}
	_, err = w.Write(tail)
	return err
}

// identities are the age identities given with --identity.
func (b *Backup) identities() []age.Identity {
	return transform.Identities(b.Opt.Identities)
}

// checkIdentity refuses, before anything is read or received, a chain with
// an encrypted edge when no identity was given or none of the given ones
// is a recipient of that edge.
func (b *Backup) checkIdentity(chain []ledger.Edge) error {
	for _, e := range chain {
		if len(e.Recipients) == 0 {
			continue
		}
		if len(b.Opt.Identities) == 0 {
			return usagef("%s is encrypted (%s, to %s): give --identity FILE (or ZFS2S3_IDENTITY) with the matching age secret key; nothing was read", e, e.Transform, strings.Join(e.Recipients, ", "))
		}
		ok := false
		for _, id := range b.Opt.Identities {
			ok = ok || slices.Contains(e.Recipients, id.Recipient().String())
		}
		if !ok {
			return usagef("%s is encrypted to %s, and none of the --identity keys is one of them (wrong key file?); nothing was read", e, strings.Join(e.Recipients, ", "))
		}
	}
	return nil
}

// identityError turns transform's identity errors into the one line a user
// acts on.
func identityError(err error) error {
	switch {
	case errors.Is(err, transform.ErrNoIdentity), errors.Is(err, transform.ErrWrongIdentity):
		return usagef("%v", err)
	}
	return err
}

// dryRunScript prints a restore of chain as a POSIX shell script that uses
// only aws s3 cp, age, zstd and zfs receive (transform/FORMAT.md, "Restore
// by hand"): what zfs2s3 would do, and a way to do it without zfs2s3.
func (b *Backup) dryRunScript(chain []ledger.Edge, into string, force bool) {
	identity := `"$ZFS2S3_IDENTITY"` // quoted: a path with spaces
	if len(b.Opt.IdentityFiles) > 0 {
		identity = shellQuote(b.Opt.IdentityFiles[0])
	}
	endpoint := ""
	if ep := b.S3.Endpoint(); ep != "" {
		endpoint = " --endpoint-url " + shellQuote(ep)
	}
	b.Out("#!/bin/sh")
	b.Out("# zfs2s3 restore: %d stream(s) into %s, oldest first. Needs aws, and age and zstd where listed.", len(chain), into)
	if identity == "$ZFS2S3_IDENTITY" {
		b.Out("# Set ZFS2S3_IDENTITY to the age key file of encrypted streams.")
	}
	b.Out("set -e")
	var args []string
	for _, a := range zfs.ReceiveArgs(into, force) {
		if strings.ContainsAny(a, " '\"$`\\*?[]#~=%;&|<>(){}") {
			a = shellQuote(a)
		}
		args = append(args, a)
	}
	recv := strings.Join(args, " ")
	for _, e := range chain {
		spec := transform.Spec{}
		if e.Transformed() {
			spec, _ = transform.ParseSpec(e.Transform)
		}
		b.Out("# %s: %s, %d bytes stored", e, orElse(e.Transform, "plain"), e.StoredBytes)
		b.Out("{ set -e")
		for _, o := range e.Objects() {
			line := fmt.Sprintf("  aws s3 cp%s %s -", endpoint, shellQuote("s3://"+b.S3.Bucket()+"/"+o.Key))
			if spec.Encrypt {
				line += " | age -d -i " + identity
			}
			b.Out("%s", line)
		}
		tail := "} | "
		if spec.Compress == transform.CompressZstd {
			tail += "zstd -d -c | "
		}
		b.Out("%szfs %s", tail, recv)
	}
}

// orElse is a, or b when a is empty.
func orElse(a, b string) string {
	if a == "" {
		return b
	}
	return a
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
