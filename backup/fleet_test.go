package backup

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/zfs2s3/zfs2s3/central"
	"github.com/zfs2s3/zfs2s3/config"
	"github.com/zfs2s3/zfs2s3/internal/testbed"
	"github.com/zfs2s3/zfs2s3/ledger"
	"github.com/zfs2s3/zfs2s3/retention"
	"github.com/zfs2s3/zfs2s3/s3up"
	"github.com/zfs2s3/zfs2s3/zfs"
)

func TestHostPrefixes(t *testing.T) {
	keys := []string{
		"fleet/web1/.zfs2s3/ledger/tank%2Fdata/000000000001.json",
		"fleet/web1/.zfs2s3/ledger/tank%2Fdata/000000000002.json",
		"fleet/web1/.zfs2s3/ledger.yaml",
		"fleet/web1/tank/data/a@000000000000007b.full.zfs",
		"fleet/web2/.zfs2s3/ledger/tank%2Fdata/000000000001.json",
		"fleet/old/.zfs2s3/ledger.yaml",                 // a tree of before the journal
		"fleet/web3/tank/data/x.zfs",                    // no ledger: not a host
		"fleet/webx.zfs2s3/ledger.yaml",                 // not a whole prefix
		"other/web4/.zfs2s3/ledger/d/000000000001.json", // outside the root
	}
	var objs []s3up.ObjectInfo
	for _, k := range keys {
		objs = append(objs, s3up.ObjectInfo{Key: k})
	}
	got := hostPrefixes("fleet/", objs)
	if want := []string{"fleet/old/", "fleet/web1/", "fleet/web2/"}; !slices.Equal(got, want) {
		t.Errorf("hostPrefixes = %v, want %v", got, want)
	}
	if got := hostPrefixes("", objs); !slices.Contains(got, "other/web4/") || len(got) != 4 {
		t.Errorf("hostPrefixes of the whole bucket = %v", got)
	}
}

func TestFleetRules(t *testing.T) {
	last2, last3 := &retention.Policy{Last: 2}, &retention.Policy{Last: 3}
	cfg := &config.Config{
		Defaults: config.Dataset{TimeFormat: "daily-%Y-%m-%d", Keep: last2},
		Datasets: []config.Dataset{
			{Name: "tank/db", Keep: last3},
			{Name: "tank/vm", Keep: last3, Recursive: true},
		},
	}
	rules := FleetRules(cfg)
	for _, tc := range []struct {
		ds   string
		keep *retention.Policy
		tf   string
	}{
		{"tank/data", last2, "daily-%Y-%m-%d"}, // the defaults
		{"tank/db", last3, ""},                 // its own entry
		{"tank/vm/one", last3, ""},             // covered by a recursive entry
		{"tank/dbx", last2, "daily-%Y-%m-%d"},
	} {
		d := rules(tc.ds)
		if d.Name != tc.ds || d.Keep != tc.keep || d.TimeFormat != tc.tf {
			t.Errorf("rules(%s) = %+v, want keep %v, time_format %q", tc.ds, d, tc.keep, tc.tf)
		}
	}
}

func TestUploadEdge(t *testing.T) {
	full := edgeIn("tank/da ta", 0x7b, 0)
	inc := edgeIn("tank/da ta", 0x7c, 0x7b)
	for _, tc := range []struct {
		key          string
		target, base uint64
		ok           bool
	}{
		{full.Key, 0x7b, 0, true},
		{inc.Key, 0x7c, 0x7b, true},
		{ledger.SegmentKey(inc.Key, 2), 0x7c, 0x7b, true},
		{"fleet/web1/tank/data/stray.bin", 0, 0, false},
		{"fleet/web1/tank/data/a@xyz.full.zfs", 0, 0, false},
	} {
		e, ok := uploadEdge(tc.key)
		if ok != tc.ok || (ok && (e.ID() != ledger.ID{BaseGUID: tc.base, TargetGUID: tc.target})) {
			t.Errorf("uploadEdge(%q) = %v, %v; want guids %x from %x, %v", tc.key, e.ID(), ok, tc.target, tc.base, tc.ok)
		}
	}
}

// TestFleetPruneKeepsTheBaseOfAHostsUpload: fleet prune sees a host's
// multipart upload in flight from a snapshot the rules would drop, and
// leaves that snapshot's chain; once the upload is gone it prunes.
func TestFleetPruneKeepsTheBaseOfAHostsUpload(t *testing.T) {
	m := startMinIO(t)
	ctx := context.Background()
	host := machine(t, m.Endpoint)
	storeTwoChains(ctx, t, host)
	inflight := edgeIn("p/d", 5, 2)
	up, err := m.Client().CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: aws.String("bkt"), Key: aws.String(inflight.Key)})
	if err != nil {
		t.Fatal(err)
	}
	admin := machine(t, m.Endpoint)
	rules := FleetRules(&config.Config{Defaults: config.Dataset{Keep: &retention.Policy{Last: 2}}})
	_, err = admin.FleetPrune(ctx, "", rules, nil, PruneOptions{})
	if err == nil || !strings.Contains(err.Error(), "pending upload guid 2 -> "+inflight.Key) {
		t.Errorf("fleet prune with an upload in flight from s2: %v, want a refusal naming it", err)
	}
	if got := bucketKeys(t, admin); got != "k1 k2 k3 k4" {
		t.Errorf("bucket ledger after the refusal = %s, want every edge", got)
	}
	if _, err := m.Client().AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: aws.String("bkt"), Key: aws.String(inflight.Key), UploadId: up.UploadId}); err != nil {
		t.Fatal(err)
	}
	rep, err := admin.FleetPrune(ctx, "", rules, nil, PruneOptions{})
	if err != nil || len(rep.Hosts) != 1 || len(rep.Hosts[0].Datasets) != 1 || len(rep.Hosts[0].Datasets[0].Removed) != 2 {
		t.Fatalf("fleet prune after the upload went: %+v, %v", rep, err)
	}
	if got := bucketKeys(t, admin); got != "k3 k4" {
		t.Errorf("bucket ledger after the prune = %s, want k3 k4", got)
	}
	// The host takes the removals on its next change.
	if err := add(ctx, host, edgeIn("p/d", 6, 4)); err != nil {
		t.Fatal(err)
	}
	if l, err := host.store.Load("bkt", ""); err != nil || ids(l.Edges) != "0>3 3>4 4>6" {
		t.Errorf("the host's ledger = %v, %v", l, err)
	}
}

// TestFleetPruneTakesTheCentralKeepRules: where the fleet's central policy
// sets keep rules, fleet prune applies them over the admin config's.
func TestFleetPruneTakesTheCentralKeepRules(t *testing.T) {
	m := startMinIO(t)
	ctx := context.Background()
	host := machine(t, m.Endpoint)
	storeTwoChains(ctx, t, host)
	admin := machine(t, m.Endpoint)
	rules := FleetRules(&config.Config{Defaults: config.Dataset{Keep: &retention.Policy{Last: 4}}})
	pol, err := central.Parse([]byte("version: 1\ndefaults:\n  keep: {last: 1}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.FleetPrune(ctx, "", rules, pol, PruneOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := bucketKeys(t, admin); got != "k3 k4" {
		t.Errorf("bucket ledger after a prune with the central {last: 1} = %s, want k3 k4 (the config's {last: 4} keeps all)", got)
	}
}

// storeTwoChains stores, a day apart, the chains 1 -> 2 and 3 -> 4 of
// dataset p/d (objects and manifests of one byte) through host.
func storeTwoChains(ctx context.Context, t *testing.T, host *Backup) {
	t.Helper()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i, e := range []ledger.Edge{edgeIn("p/d", 1, 0), edgeIn("p/d", 2, 1), edgeIn("p/d", 3, 0), edgeIn("p/d", 4, 3)} {
		e.Uploaded = t0.Add(time.Duration(i) * 24 * time.Hour)
		for _, k := range []string{e.Key, s3up.ManifestKey(e.Key)} {
			if _, err := host.S3.PutIf(ctx, k, []byte("x"), nil, ""); err != nil {
				t.Fatal(err)
			}
		}
		if err := add(ctx, host, e); err != nil {
			t.Fatal(err)
		}
	}
}

// TestFleetPruneDryRunReadsAHostOnce: a dry run reads a host's journal
// entries once, not once more for every dataset, and plans the same
// removals in each dataset.
func TestFleetPruneDryRunReadsAHostOnce(t *testing.T) {
	m := startMinIO(t)
	proxy := testbed.StartProxy(t, m.Endpoint)
	ctx := context.Background()
	host := machine(t, m.Endpoint)
	dss := []string{"p/a", "p/b", "p/c"}
	for i, ds := range dss {
		for g := uint64(1); g <= 3; g++ {
			e := edgeIn(ds, 10*uint64(i)+g, 0)
			e.Uploaded = time.Date(2026, 1, int(g), 0, 0, 0, 0, time.UTC)
			for _, k := range []string{e.Key, s3up.ManifestKey(e.Key)} {
				if _, err := host.S3.PutIf(ctx, k, []byte("x"), nil, ""); err != nil {
					t.Fatal(err)
				}
			}
			if err := add(ctx, host, e); err != nil {
				t.Fatal(err)
			}
		}
	}
	var entryGets atomic.Int64
	proxy.SetRule(func(r *http.Request) testbed.Fault {
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, ".zfs2s3/ledger/") {
			entryGets.Add(1)
		}
		return testbed.Fault{}
	})
	admin := machine(t, proxy.URL)
	rules := FleetRules(&config.Config{Defaults: config.Dataset{Keep: &retention.Policy{Last: 1}}})
	rep, err := admin.FleetPrune(ctx, "", rules, nil, PruneOptions{DryRun: true})
	if err != nil || len(rep.Hosts) != 1 || len(rep.Hosts[0].Datasets) != len(dss) {
		t.Fatalf("fleet prune --dry-run: %+v, %v", rep, err)
	}
	for _, dr := range rep.Hosts[0].Datasets {
		if len(dr.Removed) != 2 {
			t.Errorf("dry run of %s would remove %v, want the 2 older fulls", dr.Dataset, dr.Removed)
		}
	}
	// Each dataset's journal has 3 entries (1 full, 2 deltas).
	if n := entryGets.Load(); n > int64(3*len(dss)) {
		t.Errorf("the dry run read %d journal entries of a host whose journals hold %d", n, 3*len(dss))
	}
	if got := bucketKeys(t, admin); strings.Count(got, "k") != 3*len(dss) {
		t.Errorf("bucket ledger after a dry run = %s, want every edge", got)
	}
}

// TestFleetSkipsATreeWithTheOldCopy: a host tree that still has only the
// single ledger.yaml of before the journal is not migrated by fleet prune
// (the host would be refused afterwards): fleet prune skips it with the
// advice, as a failed host, and prunes the others; fleet status names it
// as a problem with the same advice.
func TestFleetSkipsATreeWithTheOldCopy(t *testing.T) {
	m := startMinIO(t)
	ctx := context.Background()
	admin := machine(t, m.Endpoint)
	old := ledger.New("bkt", "h1/")
	data, err := ledger.Marshal(old)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.S3.PutIf(ctx, LedgerKey("h1/"), data, nil, ""); err != nil {
		t.Fatal(err)
	}
	c, err := s3up.NewClient(ctx, s3up.Config{Bucket: "bkt", Endpoint: m.Endpoint, Region: "us-east-1"})
	if err != nil {
		t.Fatal(err)
	}
	h2 := New(zfs.Runner{}, c, Options{StateDir: t.TempDir(), Prefix: "h2/"}, func(string, ...any) {})
	for g := uint64(1); g <= 2; g++ {
		e := edgeIn("p/d", g, 0)
		e.Key = ledger.ObjectKey("h2/", e.Target, nil)
		e.Uploaded = time.Date(2026, 1, int(g), 0, 0, 0, 0, time.UTC)
		for _, k := range []string{e.Key, s3up.ManifestKey(e.Key)} {
			if _, err := h2.S3.PutIf(ctx, k, []byte("x"), nil, ""); err != nil {
				t.Fatal(err)
			}
		}
		if err := add(ctx, h2, e); err != nil {
			t.Fatal(err)
		}
	}
	advice := "host prefix h1/ still keeps the old single ledger copy: run any zfs2s3 command that changes the ledger on that host with this release first (e.g. its next backup)"
	rules := FleetRules(&config.Config{Defaults: config.Dataset{Keep: &retention.Policy{Last: 1}}})
	rep, err := admin.FleetPrune(ctx, "", rules, nil, PruneOptions{})
	var re *RunError
	if !errors.As(err, &re) || !strings.Contains(err.Error(), advice+", then fleet prune again") {
		t.Errorf("fleet prune with an old tree: %v, want a failed host with the advice", err)
	}
	if len(rep.Hosts) != 2 || len(rep.Hosts[0].Errors) != 1 || !strings.Contains(rep.Hosts[0].Errors[0], advice) ||
		len(rep.Hosts[1].Errors) != 0 || len(rep.Hosts[1].Datasets) != 1 || len(rep.Hosts[1].Datasets[0].Removed) != 1 {
		t.Errorf("report = %+v, want h1/ skipped with the advice and h2/ pruned", rep)
	}
	if got, _, err := admin.S3.ReadAll(ctx, LedgerKey("h1/"), ledger.MaxFileBytes); err != nil || string(got) != string(data) {
		t.Errorf("h1/'s ledger.yaml after fleet prune: %v, want it as it was", err)
	}
	if objs, err := admin.S3.List(ctx, ledger.JournalDir("h1/")+"ledger/"); err != nil || len(objs) != 0 {
		t.Errorf("h1/'s journal after fleet prune = %v, %v; want none (not migrated)", objs, err)
	}
	st, err := admin.FleetStatus(ctx, "", rules, time.Now())
	if err != nil || len(st.Hosts) != 2 || !slices.ContainsFunc(st.Hosts[0].Problems, func(p string) bool { return strings.Contains(p, advice) }) {
		t.Errorf("fleet status = %+v, %v; want h1/'s problem with the advice", st, err)
	}
}

// TestFleetLostRaceSaysRunFleetPruneAgain: a fleet command's change that
// lost the race for a journal entry tells the admin to run fleet prune
// again, not to rebuild from a local ledger in a state dir deleted at
// exit.
func TestFleetLostRaceSaysRunFleetPruneAgain(t *testing.T) {
	m := startMinIO(t)
	ctx := context.Background()
	admin := machine(t, m.Endpoint)
	key := ledger.JournalKey("h1/", "p/d", 1)
	if _, err := admin.S3.PutIf(ctx, key, []byte("{}"), nil, ""); err != nil {
		t.Fatal(err)
	}
	for _, cw := range []string{"", "off"} {
		admin.Opt.ConditionalWrites = cw
		hb, done, err := admin.forHost("h1/")
		if err != nil {
			t.Fatal(err)
		}
		_, err = hb.putNew(ctx, key, []byte(`{"other":1}`))
		done()
		if err == nil || !strings.Contains(err.Error(), "run zfs2s3 fleet prune again") || strings.Contains(err.Error(), hb.Opt.StateDir) || strings.Contains(err.Error(), "ledger rebuild") {
			t.Errorf("a fleet write that lost the race (conditional writes %q): %v, want fleet prune again, not the temp dir", cw, err)
		}
	}
}

// TestFleetStatusShowsAHostWithADamagedJournal: one dataset journal of a
// host that is damaged is one of the host's problems, naming it and
// ledger rebuild; the host's other datasets are still shown.
func TestFleetStatusShowsAHostWithADamagedJournal(t *testing.T) {
	m := startMinIO(t)
	ctx := context.Background()
	admin := machine(t, m.Endpoint)
	c, err := s3up.NewClient(ctx, s3up.Config{Bucket: "bkt", Endpoint: m.Endpoint, Region: "us-east-1"})
	if err != nil {
		t.Fatal(err)
	}
	h := New(zfs.Runner{}, c, Options{StateDir: t.TempDir(), Prefix: "h1/"}, func(string, ...any) {})
	for i, ds := range []string{"p/d", "p/e"} {
		e := edgeIn(ds, uint64(i+1), 0)
		e.Key = ledger.ObjectKey("h1/", e.Target, nil)
		e.Uploaded = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		for _, k := range []string{e.Key, s3up.ManifestKey(e.Key)} {
			if _, err := h.S3.PutIf(ctx, k, []byte("x"), nil, ""); err != nil {
				t.Fatal(err)
			}
		}
		if err := add(ctx, h, e); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := admin.S3.PutIf(ctx, ledger.JournalKey("h1/", "p/e", 1), []byte(`{"version": 1, "kind": "full", "edges": [`), nil, s3up.AnyVersion); err != nil {
		t.Fatal(err)
	}
	rules := FleetRules(&config.Config{Defaults: config.Dataset{Keep: &retention.Policy{Last: 1}}})
	st, err := admin.FleetStatus(ctx, "", rules, time.Now())
	if err != nil || len(st.Hosts) != 1 {
		t.Fatalf("fleet status = %+v, %v; want one host", st, err)
	}
	hs := st.Hosts[0]
	if len(hs.Datasets) != 1 || hs.Datasets[0].Dataset != "p/d" {
		t.Errorf("h1/'s datasets = %+v, want p/d shown", hs.Datasets)
	}
	if !slices.ContainsFunc(hs.Problems, func(p string) bool { return strings.Contains(p, "p/e") && strings.Contains(p, "ledger rebuild") }) {
		t.Errorf("h1/'s problems = %q, want one naming p/e and ledger rebuild", hs.Problems)
	}
}
