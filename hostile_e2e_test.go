package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/zfs2s3/zfs2s3/backup"
	"github.com/zfs2s3/zfs2s3/internal/testbed"
	"github.com/zfs2s3/zfs2s3/ledger"
	"github.com/zfs2s3/zfs2s3/s3up"
)

// Everything zfs2s3 reads from the bucket is input that whoever can write
// there (a compromised host sharing it, a careless script) controls. These
// tests tamper with ledger copies and manifests and check that zfs2s3
// never reads, restores from or deletes an object it did not write.

func (e *env) put(key string, data []byte) {
	e.t.Helper()
	if _, err := e.server().Client().PutObject(context.Background(), &s3.PutObjectInput{Bucket: &e.bucket, Key: &key, Body: bytes.NewReader(data)}); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) del(key string) {
	e.t.Helper()
	if _, err := e.server().Client().DeleteObject(context.Background(), &s3.DeleteObjectInput{Bucket: &e.bucket, Key: &key}); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) has(key string) bool {
	for _, k := range e.keys() {
		if k == key {
			return true
		}
	}
	return false
}

// ledgerKeys lists the objects of the tree's ledger under prefix in the
// bucket: ledger.yaml (the stub) and the journal entries, in order.
func (e *env) ledgerKeys(prefix string) []string {
	var keys []string
	for _, k := range e.keys() {
		if strings.HasPrefix(k, ledger.JournalDir(prefix)) {
			keys = append(keys, k)
		}
	}
	return keys
}

// dataKeys lists the bucket's objects other than the ledger's under the
// empty prefix: streams and manifests.
func (e *env) dataKeys() []string {
	var keys []string
	for _, k := range e.keys() {
		if !strings.HasPrefix(k, ledger.JournalDir("")) {
			keys = append(keys, k)
		}
	}
	return keys
}

// delLedger deletes the tree's ledger from the bucket: the stub and every
// journal entry.
func (e *env) delLedger(prefix string) {
	e.t.Helper()
	for _, k := range e.ledgerKeys(prefix) {
		e.del(k)
	}
}

// journalHead returns the key and SEQ of the newest entry of dataset's
// journal under prefix.
func (e *env) journalHead(prefix, dataset string) (string, uint64) {
	e.t.Helper()
	var key string
	var seq uint64
	for _, k := range e.ledgerKeys(prefix) {
		if ds, n, ok := ledger.ParseJournalKey(prefix, k); ok && ds == dataset && n > seq {
			key, seq = k, n
		}
	}
	if key == "" {
		e.t.Fatalf("no journal of %s under %q in %v", dataset, prefix, e.keys())
	}
	return key, seq
}

// bucketLedger reads the bucket's ledger under prefix from its journals
// (each dataset's newest full entry and the deltas after it), without the
// checks a tampered entry would fail.
func (e *env) bucketLedger(prefix string) *ledger.Ledger {
	e.t.Helper()
	byDS := map[string][]string{}
	for _, k := range e.ledgerKeys(prefix) {
		if ds, _, ok := ledger.ParseJournalKey(prefix, k); ok {
			byDS[ds] = append(byDS[ds], k)
		}
	}
	l := ledger.New(e.bucket, prefix)
	for _, ds := range slices.Sorted(maps.Keys(byDS)) {
		keys := byDS[ds]
		var entries []ledger.Entry
		for i := len(keys) - 1; i >= 0; i-- {
			var en ledger.Entry
			if err := json.Unmarshal(e.object(keys[i]), &en); err != nil {
				e.t.Fatalf("%s: %v", keys[i], err)
			}
			entries = append(entries, en)
			if en.Kind == ledger.EntryFull {
				break
			}
		}
		var edges []ledger.Edge
		for i := len(entries) - 1; i >= 0; i-- {
			edges = entries[i].Apply(edges)
		}
		l.Edges = append(l.Edges, edges...)
	}
	return l
}

// bucketInStep reports whether the bucket's ledger holds the same edges as
// this machine's.
func (e *env) bucketInStep() bool {
	e.t.Helper()
	return ledger.Digest(e.bucketLedger("").Edges) == ledger.Digest(e.ledger().Edges)
}

// forge writes l into the bucket's ledger under prefix, unchecked, as a
// new full entry of each of its datasets' journals, and returns their keys.
func (e *env) forge(prefix string, l *ledger.Ledger) []string {
	e.t.Helper()
	var keys []string
	for ds, edges := range ledger.ByDataset(l.Edges) {
		_, seq := e.journalHead(prefix, ds)
		en := &ledger.Entry{Kind: ledger.EntryFull, Bucket: e.bucket, Prefix: prefix, Dataset: ds, Seq: seq + 1, Edges: edges}
		data, err := ledger.MarshalEntry(en)
		if err != nil {
			e.t.Fatal(err)
		}
		key := ledger.JournalKey(prefix, ds, seq+1)
		e.put(key, data)
		keys = append(keys, key)
	}
	return keys
}

// TestTamperedBucketLedgerNeverDeletesOtherObjects is the attack from
// issue 11: a ledger copy whose edge names an object outside the prefix
// (or another host's, or one reached through "..") made a new machine
// call it restorable and its remove delete that object.
func TestTamperedBucketLedgerNeverDeletesOtherObjects(t *testing.T) {
	e := newEnv(t, "tampered copy")
	a := e.snap("a", 1)
	e.ok("upload", a, "--prefix", "host1")
	honest := e.bucketLedger("host1/")
	// (Keys with ".." are refused by MinIO itself; ledger tests cover them.)
	for _, victim := range []string{"victim-outside", "host2/" + strings.TrimPrefix(honest.Edges[0].Key, "host1/")} {
		t.Run(victim, func(t *testing.T) {
			e.t = t
			e.put(victim, []byte("not zfs2s3's"))
			forged := e.bucketLedger("host1/")
			forged.Edges[0].Key = victim
			forgedKeys := e.forge("host1/", forged)

			admin := *e
			admin.stateDir = t.TempDir() // a new machine reads the bucket's copy
			admin.fails(1, "not the key zfs2s3 derives", "status", "--prefix", "host1")
			admin.fails(1, "not the key zfs2s3 derives", "remove", a, "--prefix", "host1")
			admin.fails(1, "not the key zfs2s3 derives", "restore", a, "--into", pool+"/never", "--dry-run", "--prefix", "host1")
			admin.fails(1, "not the key zfs2s3 derives", "verify", "--prefix", "host1")
			if !e.has(victim) {
				t.Fatalf("%s was deleted", victim)
			}
			// The machine that made the backups keeps its own ledger, says
			// what is wrong with the copy, and its next change replaces it.
			r := e.ok("status", "--prefix", "host1")
			if !strings.Contains(r.stdout, "warning: ") || !strings.Contains(r.stdout, "not the key zfs2s3 derives") {
				t.Errorf("status does not report the tampered copy:\n%s", r.stdout)
			}
			for _, k := range forgedKeys { // the journal as the honest machine left it
				e.del(k)
			}
			e.del(victim)
		})
	}
	e.t = t
	e.ok("remove", a, "--prefix", "host1")
	if e.has(honest.Edges[0].Key) {
		t.Error("remove left the real object")
	}
}

// TestEditedLocalLedgerKeyIsRefused: an edge whose key was edited to
// another edge's key made remove delete that other object.
func TestEditedLocalLedgerKeyIsRefused(t *testing.T) {
	e := newEnv(t, "edited key")
	a, b := e.snap("a", 1), e.snap("b", 1)
	e.ok("upload", a)
	e.ok("upload", b, "-i", a)
	st := ledger.OpenStore(e.stateDir, e.bucket, "")
	l := e.ledger()
	fullKey := l.Edges[0].Key
	l.Edges[1].Key = fullKey
	if err := st.Save(l); err != nil {
		t.Fatal(err)
	}
	e.fails(1, "not the key zfs2s3 derives", "remove", b, "-i", a)
	if !e.has(fullKey) {
		t.Fatal("remove deleted the full stream through an edited key")
	}
}

// TestRebuildTakesOnlyWhatItCanProve rebuilds a ledger, with an empty
// prefix, in a bucket that also holds another host's tree and hostile or
// damaged manifests, and where one manifest was lost.
func TestRebuildTakesOnlyWhatItCanProve(t *testing.T) {
	e := newEnv(t, "rebuild")
	a, b, c := e.snap("a", 1), e.snap("b", 1), e.snap("c", 1)
	e.ok("upload", a)
	e.ok("upload", b, "-i", a)
	e.ok("upload", c, "-i", b)
	host2 := *e
	host2.stateDir = t.TempDir()
	host2.ok("upload", a, "--prefix", "host2")
	keyA, keyB, keyC := e.edgeKey(a, ""), e.edgeKey(b, a), e.edgeKey(c, b)

	// Hostile: a manifest of ours naming host2's object, a huge manifest,
	// one with an absurd size, and a forged duplicate of a -> b under
	// another name, next to an object of the claimed size.
	host2Key := "host2/" + keyA
	stolen := bytes.Replace(e.object(s3up.ManifestKey(keyA)), []byte("key: "+keyA), []byte("key: "+host2Key), 1)
	e.put(strings.Replace(keyA, "@", "x@", 1)+".manifest.yaml", stolen)
	e.put(strings.Replace(keyC, "@", "y@", 1)+".manifest.yaml", bytes.Repeat([]byte("#"), 5<<20))
	absurd := bytes.Replace(e.object(s3up.ManifestKey(keyC)), []byte("stored_bytes: "), []byte("stored_bytes: -"), 1)
	e.put(s3up.ManifestKey(keyC), absurd)
	forged := strings.Replace(keyB, "/b@", "/b2@", 1)
	e.put(forged, e.object(keyB))
	forgedManifest := bytes.ReplaceAll(e.object(s3up.ManifestKey(keyB)), []byte("/b@"), []byte("/b2@"))
	e.put(s3up.ManifestKey(forged), bytes.Replace(forgedManifest, []byte("rebuild@b\n"), []byte("rebuild@b2\n"), 1))
	// The manifest of the full stream is lost: its object's metadata and
	// contents still say what it is.
	e.del(s3up.ManifestKey(keyA))
	e.delLedger("")

	e.stateDir = t.TempDir() // a new machine, with nothing but the bucket
	r := e.ok("ledger", "rebuild")
	for _, want := range []string{"recovered " + a + " (full) from its object's metadata", "rebuilt the ledger from the bucket: 3 edges",
		"it duplicates " + a + " -> " + b + " stored as " + keyB, "skipped object " + forged} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("rebuild output lacks %q:\n%s", want, r.stdout)
		}
	}
	for _, bad := range []string{host2Key + " ", "host2/.zfs2s3"} {
		if strings.Contains(r.stdout, "adopt") || strings.Contains(r.stdout, "recovered "+bad) {
			t.Errorf("rebuild took %s:\n%s", bad, r.stdout)
		}
	}
	if got := e.edges(); len(got) != 3 {
		t.Errorf("rebuilt edges = %v, want a, a->b, b->c", got)
	}
	if !e.has(s3up.ManifestKey(keyA)) {
		t.Error("the recovered edge's manifest was not written again")
	}
	for _, k := range []string{keyA, keyB, keyC, host2Key} {
		if !e.has(k) {
			t.Errorf("%s is gone", k)
		}
	}
	// The absurd manifest was skipped, but its object is recovered too.
	if !strings.Contains(r.stdout, "skipped manifest "+s3up.ManifestKey(keyC)) {
		t.Errorf("the absurd manifest was not reported:\n%s", r.stdout)
	}
	gen := e.ledger().Generation
	e.ok("ledger", "rebuild")
	if again := e.ledger().Generation; again <= gen {
		t.Errorf("a second rebuild wrote generation %d after %d", again, gen)
	}
	// host2's tree is not ours to call unknown; the hostile manifests are.
	st := e.run("status", "--json")
	if strings.Contains(st.stdout, "host2/") {
		t.Errorf("status lists host2's tree:\n%s", st.stdout)
	}
	e.ok("restore", c, "--into", pool+"/"+strings.ReplaceAll(t.Name(), "/", "-"))
}

// TestNewerFormatBucketLedgerIsNeverOverwritten: an older zfs2s3 sharing
// the bucket with a newer one must not overwrite its ledger: neither a
// journal entry nor a ledger.yaml in a newer format.
func TestNewerFormatBucketLedgerIsNeverOverwritten(t *testing.T) {
	for _, where := range []string{"journal entry", "ledger.yaml"} {
		t.Run(strings.ReplaceAll(where, " ", "-"), func(t *testing.T) {
			e := newEnv(t, "newer format "+where)
			a, b := e.snap("a", 1), e.snap("b", 1)
			e.ok("upload", a)
			key := backup.LedgerKey("")
			newer := bytes.Replace(e.object(key), []byte(`{"version": 1000,`), []byte(`{"version": 9,`), 1) // the stub, ledger.StubFormat
			if where == "journal entry" {
				head, seq := e.journalHead("", e.ds)
				key = ledger.JournalKey("", e.ds, seq+1)
				newer = regexp.MustCompile(`^\{"version":[0-9]+,`).ReplaceAll(e.object(head), []byte(`{"version":9,`))
				newer = bytes.Replace(newer, fmt.Appendf(nil, `"seq":%d`, seq), fmt.Appendf(nil, `"seq":%d`, seq+1), 1)
			}
			if !bytes.Contains(newer, []byte("9,")) {
				t.Fatalf("no version to raise in %s", newer)
			}
			e.put(key, newer)
			e.fails(1, "written by a newer zfs2s3", "upload", b, "-i", a)
			e.fails(1, "written by a newer zfs2s3", "ledger", "rebuild")
			if r := e.ok("status"); !strings.Contains(r.stdout, "warning: ") {
				t.Errorf("status does not say the ledger is newer:\n%s", r.stdout)
			}
			if !bytes.Equal(e.object(key), newer) {
				t.Fatal("the newer ledger was overwritten")
			}
			// A new machine is told to upgrade, not to rebuild (which refuses).
			e.stateDir = t.TempDir()
			if r := e.fails(1, "written by a newer zfs2s3", "status"); strings.Contains(r.stderr, "rebuild") || strings.Contains(r.stderr, "damaged") {
				t.Errorf("status on a new machine: %q", r.stderr)
			}
		})
	}
}

// TestRolledBackLedgerCopyIsReported: a journal restored from an old
// version of the bucket (its newest entry gone) is named in status and
// blocks changes.
func TestRolledBackLedgerCopyIsReported(t *testing.T) {
	e := newEnv(t, "rolled back")
	a, b, c := e.snap("a", 1), e.snap("b", 1), e.snap("c", 1)
	e.ok("upload", a)
	e.ok("upload", b, "-i", a)
	head, _ := e.journalHead("", e.ds)
	e.del(head)
	if r := e.ok("status"); !strings.Contains(r.stdout, "rolled back") {
		t.Errorf("status does not report the rolled-back copy:\n%s", r.stdout)
	}
	e.fails(1, "rolled back", "upload", c, "-i", b)
	e.ok("ledger", "rebuild")
	e.ok("upload", c, "-i", b)
}

// TestLegacyPrefixStaysReadable: a prefix this release refuses for changes
// (a leading '/') may hold backups an earlier release stored; status still
// reads them, with a warning.
func TestLegacyPrefixStaysReadable(t *testing.T) {
	e := newEnv(t, "legacy prefix")
	r := e.ok("status", "--prefix", "/legacy")
	if !strings.Contains(r.stderr, "begins with '/'") {
		t.Errorf("status under /legacy does not warn: %q", r.stderr)
	}
	e.fails(2, "can still be read with status", "upload", e.snap("a", 1), "--prefix", "/legacy")
}

// TestKeysTooLongAreRefusedUpFront: S3 keys end at 1024 bytes; an edge
// whose manifest key would pass that is refused before anything is
// uploaded, not after the whole stream was.
func TestKeysTooLongAreRefusedUpFront(t *testing.T) {
	e := newEnv(t, "long keys")
	a := e.snap("a", 1)
	e.fails(2, "over S3's 1024", "upload", a, "--prefix", strings.Repeat("p", 1000))
	if len(e.keys()) != 0 || e.multipartUploads() != 0 {
		t.Errorf("the bucket holds %v and %d multipart uploads", e.keys(), e.multipartUploads())
	}
}

// TestRebuildStopsOnAManifestItCannotRead: a manifest the store fails to
// serve is not a manifest to skip: the rebuild stops and writes nothing,
// rather than a ledger without that edge over the bucket's copy.
func TestRebuildStopsOnAManifestItCannotRead(t *testing.T) {
	e := newEnv(t, "unreadable manifest")
	a, b := e.snap("a", 1), e.snap("b", 1)
	e.ok("upload", a)
	e.ok("upload", b, "-i", a)
	manifest := s3up.ManifestKey(e.edgeKey(a, ""))
	e.delLedger("")
	t.Setenv("AWS_MAX_ATTEMPTS", "2")
	p := testbed.StartProxy(t, bed.minio.Endpoint)
	p.SetRule(func(r *http.Request) testbed.Fault {
		if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/"+manifest) {
			return testbed.Fault{Status: http.StatusServiceUnavailable}
		}
		return testbed.Fault{}
	})
	e.endpoint = p.URL
	e.stateDir = t.TempDir()
	e.fails(1, "nothing was written", "ledger", "rebuild")
	if keys := e.ledgerKeys(""); len(keys) != 0 {
		t.Errorf("a ledger was written without the unreadable manifest's edge: %v", keys)
	}
}
