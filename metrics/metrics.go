// Package metrics writes what backup and prune did, and what is stored,
// as a Prometheus text file for node_exporter's textfile collector. It
// turns plain data (a run's per-dataset results and the ledger's
// per-dataset summary) into a registry of gauges and writes it with
// prometheus.WriteToTextfile, which renames a complete temporary file into
// place, so the collector never reads half a file.
//
// backup and prune usually run one after the other from one timer and
// share one file: each command owns its own families (zfs2s3_backup_*,
// zfs2s3_prune_*) and both write zfs2s3_stored_*, the state after the
// run. A write keeps the other command's families from the file as they
// were, so neither erases the other's. What the file holds from an earlier
// run is also where a dataset's last success time comes from when it fails
// now, and where the series of configured datasets that a run did not
// cover (backup tank/a only) come from. The names and labels are a stable
// format documented in README.md.
package metrics

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/zfs2s3/zfs2s3/health"
)

// Command is the command whose results a write records.
type Command string

// The commands that write metrics.
const (
	Backup Command = "backup"
	Prune  Command = "prune"
)

// storedPrefix is the namespace both commands write: what is stored.
const storedPrefix = "zfs2s3_stored_"

func (c Command) prefix() string { return "zfs2s3_" + string(c) + "_" }

// DatasetRun is what one run did for one dataset. Backup fills the
// Uploaded fields, prune the others.
type DatasetRun struct {
	Dataset string
	Success bool
	Seconds float64
	// UploadedBytes and UploadedEdges count what backup stored.
	UploadedBytes int64
	UploadedEdges int
	// RemovedEdges, FreedBytes and BypassEdges count what prune removed
	// and the bypass edges it uploaded.
	RemovedEdges int
	FreedBytes   int64
	BypassEdges  int
}

// Update is one command's run to record.
type Update struct {
	Command  Command
	Finished time.Time
	Runs     []DatasetRun
	// Stored is what the ledger stores after the run, per configured
	// dataset; nil when it could not be read, and then the file's
	// zfs2s3_stored_* families are kept as they were.
	Stored []health.Stored
	// Keep names configured datasets this run did not cover, whose
	// series from earlier runs stay; the series of any other dataset
	// that is not in Runs (one no longer configured) are dropped.
	Keep []string
}

// gauge is one per-dataset metric family a command writes.
type gauge struct {
	name, help string
	// value is the dataset's value; old is its value in the file before,
	// ok false when there was none.
	value func(r DatasetRun, finished time.Time, old float64, ok bool) float64
}

func count[T int | int64](f func(DatasetRun) T) func(DatasetRun, time.Time, float64, bool) float64 {
	return func(r DatasetRun, _ time.Time, _ float64, _ bool) float64 { return float64(f(r)) }
}

// lastSuccess is the run's end for a dataset that succeeded; one that
// failed keeps the time from before, or 0 (never) when there is none, so
// that an alert on its age fires.
func lastSuccess(r DatasetRun, finished time.Time, old float64, ok bool) float64 {
	switch {
	case r.Success:
		return unix(finished)
	case ok:
		return old
	}
	return 0
}

func unix(t time.Time) float64 { return float64(t.UnixMilli()) / 1000 }

func success(r DatasetRun) int {
	if r.Success {
		return 1
	}
	return 0
}

// commandGauges are each command's per-dataset families, named by
// Prometheus conventions (base units, _timestamp_seconds for times).
func commandGauges(c Command) []gauge {
	p := c.prefix()
	common := []gauge{
		{p + "last_run_success", "1 when the last " + string(c) + " of the dataset succeeded, 0 when it failed.", count(success)},
		{p + "last_success_timestamp_seconds", "When " + string(c) + " last succeeded for the dataset (unix time; 0: never since the metrics file was started).", lastSuccess},
		{p + "last_run_duration_seconds", "How long the last " + string(c) + " of the dataset took.", func(r DatasetRun, _ time.Time, _ float64, _ bool) float64 { return r.Seconds }},
	}
	switch c {
	case Backup:
		return append(common,
			gauge{p + "last_run_uploaded_bytes", "Bytes the last backup of the dataset stored in the bucket.", count(func(r DatasetRun) int64 { return r.UploadedBytes })},
			gauge{p + "last_run_uploaded_edges", "Edges (zfs send streams) the last backup of the dataset stored.", count(func(r DatasetRun) int { return r.UploadedEdges })})
	case Prune:
		return append(common,
			gauge{p + "last_run_removed_edges", "Edges the last prune of the dataset removed from the bucket.", count(func(r DatasetRun) int { return r.RemovedEdges })},
			gauge{p + "last_run_freed_bytes", "Bytes the last prune of the dataset removed from the bucket.", count(func(r DatasetRun) int64 { return r.FreedBytes })},
			gauge{p + "last_run_bypass_edges", "Bypass edges the last prune of the dataset uploaded to keep kept snapshots restorable.", count(func(r DatasetRun) int { return r.BypassEdges })})
	}
	return common
}

// storedGauges are the families of what is stored, per dataset.
var storedGauges = []struct {
	name, help string
	value      func(health.Stored) float64
}{
	{storedPrefix + "newest_snapshot_timestamp_seconds", "Snapshot time of the newest restorable stored snapshot (unix time; 0: nothing restorable is stored).",
		func(s health.Stored) float64 {
			if s.Newest == "" {
				return 0
			}
			return unix(s.NewestTime)
		}},
	{storedPrefix + "bytes", "Bytes the dataset's stored edges take in the bucket.", func(s health.Stored) float64 { return float64(s.Bytes) }},
	{storedPrefix + "snapshots", "Stored snapshots that a chain of stored edges restores.", func(s health.Stored) float64 { return float64(s.Snapshots) }},
	{storedPrefix + "unrestorable_snapshots", "Stored snapshots that no chain of stored edges restores any more.", func(s health.Stored) float64 { return float64(s.Unrestorable) }},
}

// Write records u in the metrics file at path, keeping what the file
// holds for the other command. The caller serializes writes (backup and
// prune hold the ledger lock). A file that cannot be parsed is replaced,
// with a warning: it is this program's file.
func Write(path string, u Update) error {
	old, err := Read(path)
	if err != nil {
		slog.Warn("the metrics file cannot be read; it is written anew", "file", path, "error", err)
		old = nil
	}
	g, err := Gatherer(u, old)
	if err != nil {
		return fmt.Errorf("metrics for %s: %w", path, err)
	}
	if err := prometheus.WriteToTextfile(path, g); err != nil {
		return fmt.Errorf("cannot write the metrics file %s: %w", path, err)
	}
	return nil
}

// Read parses a metrics file; a missing file is an empty one.
func Read(path string) (map[string]*dto.MetricFamily, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return map[string]*dto.MetricFamily{}, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	return p.TextToMetricFamilies(f)
}

// Gatherer makes the families to write: u's, with the series kept from
// old (the file's families before).
func Gatherer(u Update, old map[string]*dto.MetricFamily) (prometheus.Gatherer, error) {
	if u.Command != Backup && u.Command != Prune {
		return nil, fmt.Errorf("no metrics for command %q", u.Command)
	}
	reg := prometheus.NewRegistry()
	lastRun := prometheus.NewGauge(prometheus.GaugeOpts{Name: u.Command.prefix() + "last_run_timestamp_seconds",
		Help: "When the last " + string(u.Command) + " run ended (unix time)."})
	lastRun.Set(unix(u.Finished))
	reg.MustRegister(lastRun)
	for _, g := range commandGauges(u.Command) {
		vec := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: g.name, Help: g.help}, []string{"dataset"})
		reg.MustRegister(vec)
		for _, ds := range u.Keep {
			if v, ok := value(old, g.name, ds); ok {
				vec.WithLabelValues(ds).Set(v)
			}
		}
		for _, r := range u.Runs {
			v, ok := value(old, g.name, r.Dataset)
			vec.WithLabelValues(r.Dataset).Set(g.value(r, u.Finished, v, ok))
		}
	}
	var carried []*dto.MetricFamily
	if u.Stored != nil {
		for _, g := range storedGauges {
			vec := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: g.name, Help: g.help}, []string{"dataset"})
			reg.MustRegister(vec)
			for _, s := range u.Stored {
				vec.WithLabelValues(s.Dataset).Set(g.value(s))
			}
		}
	}
	for name, mf := range old {
		other := strings.HasPrefix(name, "zfs2s3_") && !strings.HasPrefix(name, u.Command.prefix()) && !strings.HasPrefix(name, storedPrefix)
		if other || (u.Stored == nil && strings.HasPrefix(name, storedPrefix)) {
			carried = append(carried, mf)
		}
	}
	return prometheus.Gatherers{reg, prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) { return carried, nil })}, nil
}

// ByDataset is each family's gauge values in mfs (as Read returns them) by
// their dataset label ("" for a family without one): how a check or a
// test reads the file.
func ByDataset(mfs map[string]*dto.MetricFamily) map[string]map[string]float64 {
	out := map[string]map[string]float64{}
	for name, mf := range mfs {
		out[name] = map[string]float64{}
		for _, m := range mf.GetMetric() {
			ds := ""
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "dataset" {
					ds = lp.GetValue()
				}
			}
			out[name][ds] = m.GetGauge().GetValue()
		}
	}
	return out
}

// value is the gauge value of family name for dataset in mfs.
func value(mfs map[string]*dto.MetricFamily, name, dataset string) (float64, bool) {
	mf, ok := mfs[name]
	if !ok {
		return 0, false
	}
	for _, m := range mf.GetMetric() {
		for _, lp := range m.GetLabel() {
			if lp.GetName() == "dataset" && lp.GetValue() == dataset && m.GetGauge() != nil {
				return m.GetGauge().GetValue(), true
			}
		}
	}
	return 0, false
}
