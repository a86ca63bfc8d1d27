package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/zfs2s3/zfs2s3/backup"
	"github.com/zfs2s3/zfs2s3/internal/testbed"
	"github.com/zfs2s3/zfs2s3/ledger"
)

// twoDatasets stores one full stream of e.ds (good) and one of a second
// dataset (bad), and returns their snapshots and the second dataset.
func (e *env) twoDatasets() (a, x, bad string) {
	e.t.Helper()
	good := e.ds
	a = e.snap("a", 1)
	e.ok("upload", a)
	bad = pool + "/" + filepath.Base(good) + "-bad"
	e.zfs("create", bad)
	e.ds = bad
	x = e.snap("x", 1)
	e.ok("upload", x)
	e.ds = good
	return a, x, bad
}

// TestDamagedJournalOnNewMachineConcernsItsDatasetOnly: on a new machine
// (the disaster case), one dataset's damaged journal entry made status
// and restore of every dataset fail. The other datasets are read and
// restored; the damaged one is named with what to do, and nothing is
// saved locally that would later hide it.
func TestDamagedJournalOnNewMachineConcernsItsDatasetOnly(t *testing.T) {
	e := newEnv(t, "damaged journal")
	a, x, bad := e.twoDatasets()
	key, _ := e.journalHead("", bad)
	e.put(key, []byte(`{"version": 1, "kind": "full", "edges": [`))
	e.stateDir = t.TempDir() // the new machine

	status := func() {
		t.Helper()
		r := e.run("status", "--json")
		if r.code != 1 || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 ||
			!strings.Contains(r.stderr, "journal of "+bad) || !strings.Contains(r.stderr, "zfs2s3 ledger rebuild") {
			t.Fatalf("status on the new machine: exit %d, want 1 and one line naming %s and ledger rebuild:\n%s", r.code, bad, r.stderr)
		}
		var st backup.Status
		if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
			t.Fatalf("status --json: %v\n%s", err, r.stdout)
		}
		var shown []string
		for _, d := range st.Datasets {
			shown = append(shown, d.Dataset)
		}
		if !slices.Equal(shown, []string{e.ds}) || len(st.Datasets[0].Edges) != 1 || !st.Datasets[0].Edges[0].Restorable {
			t.Errorf("status shows datasets %v, want %s with its restorable edge:\n%s", shown, e.ds, r.stdout)
		}
		if len(st.Warnings) != 1 || !strings.Contains(st.Warnings[0], "journal of "+bad) || !strings.Contains(st.Warnings[0], key) {
			t.Errorf("status warnings %q do not name the damaged entry %s", st.Warnings, key)
		}
		if len(st.UnknownObjects) != 0 {
			t.Errorf("the damaged dataset's streams are listed as unknown objects: %v", st.UnknownObjects)
		}
	}
	status()
	r := e.run("status", "--max-age", "1d", "--json", bad)
	var st backup.Status
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || r.code != 1 || len(st.Datasets) != 1 || st.Datasets[0].Freshness == nil ||
		st.Datasets[0].Freshness.Fresh || !strings.Contains(strings.Join(st.Datasets[0].Freshness.Problems, "\n"), "journal of "+bad) {
		t.Errorf("status --max-age of the damaged dataset: exit %d (%v), want 1 and a problem naming its journal:\n%s", r.code, err, r.stdout)
	}
	if r := e.ok("status", e.ds); !strings.Contains(r.stdout, "warning: ") || !strings.HasPrefix(r.stdout, e.ds+"\n") {
		t.Errorf("status of the other dataset:\n%s", r.stdout)
	}

	into := pool + "/" + filepath.Base(t.Name())
	r = e.ok("restore", a, "--into", into)
	if !strings.Contains(r.stdout, "restored "+a) || !strings.Contains(r.stderr, "skipping dataset "+bad) || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
		t.Errorf("restore of the other dataset: stdout %q, stderr %q (want one notice naming %s)", r.stdout, r.stderr, bad)
	}
	e.ok("verify", e.ds)
	for _, args := range [][]string{
		{"restore", x, "--into", into + "-x"},
		{"restore", bad, "--into", into + "-x"},
		{"verify", bad},
		{"verify"},
		{"save", x, filepath.Join(t.TempDir(), "x.zfs")},
	} {
		r := e.fails(1, "zfs2s3 ledger rebuild", args...)
		if !strings.Contains(r.stderr, "journal of "+bad) {
			t.Errorf("zfs2s3 %s does not name the damaged journal: %s", strings.Join(args, " "), r.stderr)
		}
	}
	if _, err := testbed.Run("zfs", "list", "-H", into+"-x"); err == nil {
		t.Errorf("a failed restore created %s", into+"-x")
	}
	// Changes are refused on the new machine, naming the dataset.
	b := e.snap("b", 1)
	before := e.snapshotState()
	if r := e.fails(1, "journal of "+bad, "upload", b, "-i", a); !strings.Contains(r.stderr, "ledger rebuild") {
		t.Errorf("upload on the new machine: %s", r.stderr)
	}
	if after := e.snapshotState(); after != before {
		t.Errorf("the refused upload changed state:\nbefore %s\nafter  %s", before, after)
	}
	// Nothing local hides the damaged dataset: a later run says the same.
	if _, err := os.Stat(ledger.OpenStore(e.stateDir, e.bucket, "").Path()); err == nil {
		t.Error("a local ledger was saved without the damaged dataset")
	}
	status()

	// The advice works: a rebuild from the manifests brings it back.
	e.ok("ledger", "rebuild")
	e.ok("restore", x, "--into", into+"-x", "--dry-run")
	e.ok("status")
}

// TestDamagedJournalNeverResurrectsRemovedEdges: another machine removed
// an edge after this machine's last entry, and its entry is damaged. The
// full entry this machine wrote from its own ledger brought the removed
// edge back, and its guard then let it remove the only remaining path to
// a snapshot (d's chain needed b -> c once a -> c was gone). Now changes of that dataset are refused, naming the gone
// object and ledger rebuild, while other datasets' changes go on.
func TestDamagedJournalNeverResurrectsRemovedEdges(t *testing.T) {
	e := newEnv(t, "resurrect")
	good := e.ds
	other := pool + "/" + filepath.Base(good) + "-other"
	e.zfs("create", other)
	e.ds = other
	y := e.snap("y", 1)
	e.ok("upload", y)
	e.ds = good
	a, b, c, d := e.snap("a", 1), e.snap("b", 1), e.snap("c", 1), e.snap("d", 1)
	e.ok("upload", a)
	e.ok("upload", b, "-i", a)
	e.ok("upload", c, "-i", b)
	e.ok("upload", c, "-i", a)
	e.ok("upload", d, "-i", c)
	bypass := e.edgeKey(c, a)

	first := e.stateDir
	e.stateDir = t.TempDir() // another machine (an admin) removes the bypass
	e.ok("remove", c, "-i", a)
	key, _ := e.journalHead("", good)
	damaged := []byte(`{"version": 1, "kind": "delta", "dropped": [`)
	e.put(key, damaged)
	e.stateDir = first

	r := e.ok("status")
	if !strings.Contains(r.stdout, "warning: ") || !strings.Contains(r.stdout, bypass) {
		t.Errorf("status does not say that the damaged journal's edge %s is gone:\n%s", bypass, r.stdout)
	}
	before := e.snapshotState()
	r = e.fails(1, "zfs2s3 ledger rebuild", "remove", c, "-i", b)
	for _, want := range []string{"journal of " + good, bypass} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("the refusal does not name %q: %s", want, r.stderr)
		}
	}
	if after := e.snapshotState(); after != before {
		t.Errorf("the refused remove changed state:\nbefore %s\nafter  %s", before, after)
	}
	// Another dataset's change is written; the damaged journal stays.
	e.ds = other
	y2 := e.snap("y2", 1)
	r = e.ok("upload", y2, "-i", y)
	e.ds = good
	if !strings.Contains(r.stderr, "left as it is") || !slices.Equal(e.object(key), damaged) {
		t.Errorf("upload of another dataset: stderr %q; the damaged entry %s was overwritten or not named", r.stderr, key)
	}
	// An upload of the blocked dataset is refused before it sends
	// anything, changing nothing.
	f := e.snap("f", 1)
	before = e.snapshotState()
	if r := e.run("upload", f, "-i", d); r.code != 1 || !strings.Contains(r.stderr, "ledger rebuild") || !strings.Contains(r.stderr, bypass) {
		t.Errorf("upload into the blocked dataset: exit %d, stderr %s", r.code, r.stderr)
	}
	if after := e.snapshotState(); after != before {
		t.Errorf("the refused upload changed state:\nbefore %s\nafter  %s", before, after)
	}
	// The advice works: the rebuilt ledger lacks the removed edge, and
	// the guard keeps d's only path; the upload then goes through.
	e.ok("ledger", "rebuild")
	e.ok("upload", f, "-i", d)
	if got := e.edges(); !slices.Contains(got, d+" -> "+f) || len(e.stateFiles()) != 0 {
		t.Errorf("after the rebuild and upload: edges %v, %d upload state files", got, len(e.stateFiles()))
	}
	if slices.Contains(e.edges(), a+" -> "+c) {
		t.Errorf("the rebuilt ledger has the removed edge: %v", e.edges())
	}
	e.fails(3, d, "remove", c, "-i", b)
	e.ok("verify")
}
