package backup

import (
	"context"
	"strings"

	"github.com/zfs2s3/zfs2s3/ledger"
	"github.com/zfs2s3/zfs2s3/s3up"
)

// A bucket may hold several zfs2s3 trees: hosts under their own prefixes,
// possibly nested in ours (prefix "" and another host's "host2/"). A tree
// is marked by its ledger, PREFIX.zfs2s3/ledger.yaml (the stub, or the
// whole copy of before the journal) and PREFIX.zfs2s3/ledger/…, the
// journals, which are also ours and no object to list. What lies in
// another tree is that tree's business: never ours to list as unknown,
// adopt in a rebuild, or delete.

// listObjects lists the objects under the prefix that belong to this
// tree, and the prefixes of the other trees it saw there.
func (b *Backup) listObjects(ctx context.Context) (own []s3up.ObjectInfo, others []string, err error) {
	objs, err := b.S3.List(ctx, b.Opt.Prefix)
	if err != nil {
		return nil, nil, err
	}
	others = b.otherTrees(objs)
	for _, o := range objs {
		// The fleet's central policy object is the admin's, not a backup.
		if !inTree(o.Key, others) && !b.journalKnown(o.Key) && o.Key != b.Opt.PolicyKey {
			own = append(own, o)
		}
	}
	return own, others, nil
}

// listUploads lists the unfinished multipart uploads under the prefix
// that belong to this tree, given the other trees listObjects saw.
func (b *Backup) listUploads(ctx context.Context, others []string) ([]s3up.PendingUpload, error) {
	ups, err := b.S3.AllMultipartUploads(ctx, b.Opt.Prefix)
	if err != nil {
		return nil, err
	}
	own := ups[:0:0]
	for _, u := range ups {
		if !inTree(u.Key, others) {
			own = append(own, u)
		}
	}
	return own, nil
}

// otherTrees returns the prefixes of the other zfs2s3 trees among objs.
func (b *Backup) otherTrees(objs []s3up.ObjectInfo) []string {
	ours := ledger.JournalDir(b.Opt.Prefix)
	seen := map[string]bool{}
	var others []string
	for _, o := range objs {
		p, ok := strings.CutSuffix(o.Key, ledgerSuffix)
		if !ok {
			if i := strings.Index(o.Key, ".zfs2s3/ledger/"); i >= 0 {
				p, ok = o.Key[:i], true
			}
		}
		if ok && p+".zfs2s3/" != ours && (p == "" || strings.HasSuffix(p, "/")) && !seen[p] {
			seen[p] = true
			others = append(others, p)
		}
	}
	return others
}

func inTree(key string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(key, p) {
			return true
		}
	}
	return false
}
