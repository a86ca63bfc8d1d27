package backup

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zfs2s3/zfs2s3/config"
	"github.com/zfs2s3/zfs2s3/internal/testbed"
	"github.com/zfs2s3/zfs2s3/ledger"
	"github.com/zfs2s3/zfs2s3/s3up"
	"github.com/zfs2s3/zfs2s3/zfs"
)

// The scale of issue 9: a backup run over 200 datasets with 100 stored
// snapshots each and nothing new must take under 2 s and a handful of S3
// requests; recording an edge must write a few KB of bookkeeping at most.
// The pool is a recorded listing answered by internal/bench/fakezfs; the
// bucket is a real MinIO behind a proxy that counts requests.

// requestCounter counts the requests through a proxy, and the bytes of
// PUTs to the ledger's objects.
type requestCounter struct {
	mu        sync.Mutex
	byKind    map[string]int
	ledgerPut int64
}

func (c *requestCounter) rule(r *http.Request) testbed.Fault {
	kind := r.Method
	q := r.URL.Query()
	switch {
	case q.Get("list-type") == "2":
		kind = "LIST " + q.Get("prefix")
	case q.Has("uploads"):
		kind = "LIST uploads"
	case testbed.IsLedger(r, r.Method):
		kind += " ledger"
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.byKind[kind]++
	if r.Method == http.MethodPut && testbed.IsLedger(r, http.MethodPut) {
		c.ledgerPut += r.ContentLength
	}
	return testbed.Fault{}
}

func (c *requestCounter) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.byKind, c.ledgerPut = map[string]int{}, 0
}

func (c *requestCounter) total() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, v := range c.byKind {
		n += v
	}
	return n
}

func (c *requestCounter) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var parts []string
	for k, v := range c.byKind {
		parts = append(parts, fmt.Sprintf("%s=%d", k, v))
	}
	return strings.Join(parts, " ")
}

// scaleBed is a bucket, state dir, config and recorded pool of datasets
// datasets with snaps daily snapshots each, all stored.
type scaleBed struct {
	endpoint string
	stateDir string
	fakezfs  string
	cfg      *config.Config
	count    *requestCounter
	datasets int
	snaps    int
}

func scaleDataset(i int) string { return fmt.Sprintf("tank/ds%03d", i) }

func scaleSnap(ds, i int) ledger.Snapshot {
	day := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC).AddDate(0, 0, i)
	return ledger.Snapshot{Name: scaleDataset(ds) + "@daily-" + day.Format("2006-01-02"), GUID: uint64(ds*100_000 + i + 1)}
}

func newScaleBed(tb testing.TB, datasets, snaps int) *scaleBed {
	tb.Helper()
	m, err := testbed.StartMinIO()
	testbed.Require(tb, "MinIO", err)
	tb.Cleanup(m.Stop)
	ctx := context.Background()
	if err := m.CreateBucket(ctx, "bkt"); err != nil {
		tb.Fatal(err)
	}
	for _, kv := range [][2]string{{"AWS_ACCESS_KEY_ID", m.User}, {"AWS_SECRET_ACCESS_KEY", m.Password}, {"AWS_EC2_METADATA_DISABLED", "true"}} {
		tb.Setenv(kv[0], kv[1])
	}
	s := &scaleBed{stateDir: tb.TempDir(), count: &requestCounter{}, datasets: datasets, snaps: snaps}
	s.count.reset()
	proxy := testbed.StartProxy(tb, m.Endpoint)
	proxy.SetRule(s.count.rule)
	s.endpoint = proxy.URL

	dir := tb.TempDir()
	s.fakezfs = filepath.Join(dir, "fakezfs")
	if out, err := exec.Command("go", "build", "-o", s.fakezfs, "../internal/bench/fakezfs").CombinedOutput(); err != nil {
		tb.Fatalf("build fakezfs: %v: %s", err, out)
	}
	// The recorded pool: `zfs list -H -p -t all -o name,guid,createtxg,creation`.
	var listing, conf strings.Builder
	conf.WriteString("defaults:\n  snapshots: \"daily-*\"\n  time_format: \"daily-%Y-%m-%d\"\n  full_every: 1000d\ndatasets:\n")
	l := ledger.New("bkt", "")
	for d := 0; d < datasets; d++ {
		fmt.Fprintf(&listing, "%s\t%d\t1\t0\n", scaleDataset(d), 1_000_000_000+d)
		fmt.Fprintf(&conf, "  %s: {}\n", scaleDataset(d))
		for i := 0; i < snaps; i++ {
			sn := scaleSnap(d, i)
			day := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC).AddDate(0, 0, i)
			fmt.Fprintf(&listing, "%s\t%d\t%d\t%d\n", sn.Name, sn.GUID, i+2, day.Unix())
			e := ledger.Edge{Target: sn, StreamBytes: 1 << 20, StoredBytes: 1 << 20, SHA256: fmt.Sprintf("%064x", sn.GUID),
				Uploaded: day, StorageClass: "STANDARD"}
			if i > 0 {
				base := scaleSnap(d, i-1)
				e.Base = &base
			}
			e.Key = ledger.ObjectKey("", e.Target, e.Base)
			l.Edges = append(l.Edges, e)
		}
	}
	listingFile := filepath.Join(dir, "zfs-list.txt")
	if err := os.WriteFile(listingFile, []byte(listing.String()), 0o600); err != nil {
		tb.Fatal(err)
	}
	tb.Setenv("FAKEZFS_LISTING", listingFile)
	if s.cfg, err = config.Parse([]byte(conf.String()), "scale.yaml"); err != nil {
		tb.Fatal(err)
	}
	// The stored state: the local ledger and the bucket's journals, as
	// the runs that uploaded all this left them.
	b := s.machine(tb)
	if err := b.withLedger(ctx, func(cur *ledger.Ledger) (bool, error) { cur.Edges = l.Edges; return true, nil }); err != nil {
		tb.Fatal(err)
	}
	return s
}

// machine is a zfs2s3 process of the bed: a new Backup on its state dir.
func (s *scaleBed) machine(tb testing.TB) *Backup {
	c, err := s3up.NewClient(context.Background(), s3up.Config{Bucket: "bkt", Endpoint: s.endpoint, Region: "us-east-1"})
	if err != nil {
		tb.Fatal(err)
	}
	return New(zfs.Runner{Cmd: s.fakezfs}, c, Options{StateDir: s.stateDir}, func(string, ...any) {})
}

// runNothingNew runs a backup of every dataset and checks that it found
// nothing to upload.
func (s *scaleBed) runNothingNew(tb testing.TB) time.Duration {
	tb.Helper()
	start := time.Now()
	b := s.machine(tb)
	rep, err := b.Run(context.Background(), s.cfg, s.cfg.Datasets, RunOptions{})
	elapsed := time.Since(start)
	if err != nil {
		tb.Fatal(err)
	}
	for _, d := range rep.Datasets {
		if len(d.Uploaded) > 0 || len(d.Errors) > 0 {
			tb.Fatalf("%s: uploaded %v, errors %v; want nothing new", d.Dataset, d.Uploaded, d.Errors)
		}
	}
	return elapsed
}

// recordOneEdgeEach records one new edge per dataset, as the uploads of a
// run do (a change of the ledger each), and returns the bytes written to
// the ledger's objects per edge.
func (s *scaleBed) recordOneEdgeEach(tb testing.TB) float64 {
	tb.Helper()
	ctx := context.Background()
	b := s.machine(tb)
	s.count.reset()
	for d := 0; d < s.datasets; d++ {
		base, target := scaleSnap(d, s.snaps-1), scaleSnap(d, s.snaps)
		e := ledger.Edge{Target: target, Base: &base, StreamBytes: 4096, StoredBytes: 4096, SHA256: fmt.Sprintf("%064x", target.GUID),
			Uploaded: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), StorageClass: "STANDARD"}
		e.Key = ledger.ObjectKey("", e.Target, e.Base)
		if err := b.withLedger(ctx, func(l *ledger.Ledger) (bool, error) { return true, l.Add(e) }); err != nil {
			tb.Fatal(err)
		}
	}
	return float64(s.count.ledgerPut) / float64(s.datasets)
}

// TestScaleRequestBudget: a run with nothing new makes the same few
// requests whatever the number of datasets (one LIST of the journals, the
// multipart uploads, ...), fetches no journal entry, and recording an edge
// writes one small entry of its dataset's journal.
func TestScaleRequestBudget(t *testing.T) {
	s := newScaleBed(t, 20, 10)
	s.runNothingNew(t) // the first run records what it learnt
	s.count.reset()
	s.runNothingNew(t)
	n20 := s.count.total()
	if n20 > 6 || s.count.byKind["GET ledger"] != 0 {
		t.Errorf("a run over 20 datasets with nothing new made %d requests (%s), want at most 6 and no GET of the ledger", n20, s.count)
	}
	perEdge := s.recordOneEdgeEach(t)
	if perEdge > 2048 {
		t.Errorf("recording one edge wrote %.0f bytes of ledger, want a small delta entry", perEdge)
	}
	s.count.reset()
	s.runNothingNew(t)
	if n := s.count.total(); n != n20 || s.count.byKind["GET ledger"] != 0 {
		t.Errorf("after this machine's own changes a run made %d requests (%s), want %d as before", n, s.count, n20)
	}
}

// BenchmarkScaleNothingNew is issue 9's figure: 200 datasets, 100 stored
// snapshots each, nothing new. It reports the S3 requests of one run.
func BenchmarkScaleNothingNew(b *testing.B) {
	s := newScaleBed(b, 200, 100)
	s.runNothingNew(b)
	var requests int
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		s.count.reset()
		s.runNothingNew(b)
		requests = s.count.total()
	}
	b.StopTimer()
	b.ReportMetric(float64(requests), "requests/run")
	b.Logf("200 datasets x 100 snapshots, nothing new: %d S3 requests per run (%s)", requests, s.count)
}

// BenchmarkScaleBookkeeping is issue 9's other figure: the bytes written
// to the bucket's ledger per edge recorded, beyond the stream and its
// manifest, with 200 datasets of 100 edges.
func BenchmarkScaleBookkeeping(b *testing.B) {
	s := newScaleBed(b, 200, 100)
	var perEdge float64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		perEdge = s.recordOneEdgeEach(b)
		s.snaps++ // the next round records the edge after
	}
	b.StopTimer()
	b.ReportMetric(perEdge, "ledger-bytes/edge")
	b.Logf("200 datasets x 100 edges: %.0f bytes written to the bucket's ledger per edge recorded (%s)", perEdge, s.count)
}
