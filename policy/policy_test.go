package policy

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// TestGolden pins the JSON that zfs2s3 policy prints: users paste it into
// IAM and MinIO, and a change to it is a change to what hosts may do.
func TestGolden(t *testing.T) {
	for _, tc := range []struct {
		file string
		doc  func() (Document, error)
	}{
		{"host-aws.json", func() (Document, error) { return Host("backups", "fleet/web1", "fleet/.zfs2s3-policy.yaml", AWS) }},
		{"host-minio.json", func() (Document, error) { return Host("backups", "fleet/web1/", "fleet/.zfs2s3-policy.yaml", MinIO) }},
		{"admin-aws.json", func() (Document, error) { return Admin("backups", "fleet/", AWS) }},
		{"admin-minio.json", func() (Document, error) { return Admin("backups", "fleet/", MinIO) }},
	} {
		t.Run(tc.file, func(t *testing.T) {
			doc, err := tc.doc()
			if err != nil {
				t.Fatal(err)
			}
			got, err := doc.JSON()
			if err != nil {
				t.Fatal(err)
			}
			if !json.Valid(got) {
				t.Fatalf("invalid JSON:\n%s", got)
			}
			again, _ := doc.JSON()
			if !bytes.Equal(got, again) {
				t.Fatal("the JSON differs between two runs")
			}
			path := filepath.Join("testdata", tc.file)
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s changed (go test ./policy -update to accept):\n%s", path, got)
			}
		})
	}
}

// TestHostCannotDelete checks the properties the host role exists for,
// whatever the store: no delete action, every object resource inside the
// host's own prefix, and on AWS the overwrite guard on stream keys only.
func TestHostCannotDelete(t *testing.T) {
	for _, store := range []Store{AWS, MinIO} {
		doc, err := Host("b", "fleet/web1", "fleet/.zfs2s3-policy.yaml", store)
		if err != nil {
			t.Fatal(err)
		}
		var deny *Statement
		for i, st := range doc.Statement {
			for _, a := range st.Action {
				if st.Effect == "Allow" && (strings.Contains(a, "Delete") || a == "s3:*") {
					t.Errorf("%s: statement %s allows %s", store, st.Sid, a)
				}
			}
			for _, r := range st.Resource {
				if r == "arn:aws:s3:::b/fleet/.zfs2s3-policy.yaml" {
					// The fleet policy: read only, so the host cannot lift it.
					if st.Effect != "Allow" || !slices.Equal(st.Action, []string{"s3:GetObject"}) {
						t.Errorf("%s: statement %s grants %v on the fleet policy, want s3:GetObject alone", store, st.Sid, st.Action)
					}
					continue
				}
				if r != "arn:aws:s3:::b" && !strings.HasPrefix(r, "arn:aws:s3:::b/fleet/web1/") {
					t.Errorf("%s: statement %s names %s, outside the host's prefix", store, st.Sid, r)
				}
			}
			if st.Effect == "Deny" {
				deny = &doc.Statement[i]
			}
		}
		if (deny != nil) != (store == AWS) {
			t.Errorf("%s: overwrite guard present %v, want %v", store, deny != nil, store == AWS)
		}
		if deny != nil {
			streams := []string{"fleet/web1/tank/data/a@000000000000007b.full.zfs", "fleet/web1/tank/data/b@00000000000000c8.from.a@000000000000007b.zfs",
				"fleet/web1/tank/data/b@00000000000000c8.from.a@000000000000007b.zfs.2",
				"fleet/web1/tank/data/a@000000000000007b.full.zfs.manifest.yaml"}
			ledgerKeys := []string{"fleet/web1/.zfs2s3/ledger.yaml", "fleet/web1/.zfs2s3/ledger/tank/data.yaml"}
			for _, k := range streams {
				if !slices.ContainsFunc(deny.Resource, func(r string) bool { return arnMatch(r, "arn:aws:s3:::b/"+k) }) {
					t.Errorf("overwrite guard misses stream key %s", k)
				}
			}
			for _, k := range ledgerKeys {
				if slices.ContainsFunc(deny.Resource, func(r string) bool { return arnMatch(r, "arn:aws:s3:::b/"+k) }) {
					t.Errorf("overwrite guard covers ledger key %s, which hosts must rewrite", k)
				}
			}
		}
	}
}

// arnMatch matches an ARN against a pattern with IAM's wildcards: '*' any
// run of characters ('/' included), '?' one character.
func arnMatch(pattern, s string) bool {
	if pattern == "" {
		return s == ""
	}
	switch pattern[0] {
	case '*':
		for i := 0; i <= len(s); i++ {
			if arnMatch(pattern[1:], s[i:]) {
				return true
			}
		}
		return false
	case '?':
		return s != "" && arnMatch(pattern[1:], s[1:])
	}
	return s != "" && s[0] == pattern[0] && arnMatch(pattern[1:], s[1:])
}

func TestRefused(t *testing.T) {
	for _, tc := range []struct {
		bucket, prefix string
		store          Store
		err            string
	}{
		{"b", "x", "gcs", "--store"},
		{"", "x", AWS, "no bucket"},
		{"b", "fleet/*", AWS, "wildcards"},
		{"b", "a${aws:username}", MinIO, "wildcards"},
	} {
		if _, err := Host(tc.bucket, tc.prefix, "", tc.store); err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("Host(%q, %q, %q): %v, want an error with %q", tc.bucket, tc.prefix, tc.store, err, tc.err)
		}
		if _, err := Admin(tc.bucket, tc.prefix, tc.store); err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("Admin(%q, %q, %q): %v, want an error with %q", tc.bucket, tc.prefix, tc.store, err, tc.err)
		}
	}
}
