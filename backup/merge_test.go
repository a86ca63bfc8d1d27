package backup

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"pgregory.net/rapid"

	"github.com/zfs2s3/zfs2s3/ledger"
)

// ed is the edge base -> target of dataset p/d (base 0: a full).
func ed(target, base uint64) ledger.Edge {
	return edgeIn("p/d", target, base)
}

func removing(e ledger.Edge) ledger.Edge { e.Removing = true; return e }

func ids(edges []ledger.Edge) string {
	var out []string
	for _, e := range edges {
		s := fmt.Sprintf("%d>%d", e.ID().BaseGUID, e.ID().TargetGUID)
		if e.Removing {
			s += "!"
		}
		out = append(out, s)
	}
	slices.Sort(out)
	return strings.Join(out, " ")
}

func TestMergeEdges(t *testing.T) {
	e1, e2, e3, e4 := ed(1, 0), ed(2, 1), ed(3, 2), ed(4, 3)
	for _, tc := range []struct {
		name               string
		base, mine, theirs []ledger.Edge
		want               string // "" with conflict set: a conflict
		conflict           bool
	}{
		{"nothing changed here: theirs", []ledger.Edge{e1}, []ledger.Edge{e1}, []ledger.Edge{e1, e2}, "0>1 1>2", false},
		{"both added", []ledger.Edge{e1}, []ledger.Edge{e1, e2}, []ledger.Edge{e1, ed(5, 1)}, "0>1 1>2 1>5", false},
		{"they removed, I added on top of what stays", []ledger.Edge{e1, e2}, []ledger.Edge{e1, e2, e3}, []ledger.Edge{e1}, "0>1 2>3", false},
		{"they marked removing", []ledger.Edge{e1, e2}, []ledger.Edge{e1, e2, e3}, []ledger.Edge{e1, removing(e2)}, "0>1 1>2! 2>3", false},
		{"I removed, they added", []ledger.Edge{e1, e2, e3}, []ledger.Edge{e1, e3}, []ledger.Edge{e1, e2, e3, e4}, "0>1 2>3 3>4", false},
		{"I mark removing, they dropped it", []ledger.Edge{e1, e2}, []ledger.Edge{e1, removing(e2)}, []ledger.Edge{e1}, "0>1", false},
		{"both mark removing", []ledger.Edge{e1, e2}, []ledger.Edge{e1, removing(e2)}, []ledger.Edge{e1, removing(e2)}, "0>1 1>2!", false},
		{"same addition on both sides", []ledger.Edge{e1}, []ledger.Edge{e1, e2}, []ledger.Edge{e1, e2}, "0>1 1>2", false},
		{"different additions of one edge", []ledger.Edge{e1}, []ledger.Edge{e1, e2}, []ledger.Edge{e1, withKey(e2, "other")}, "", true},
		{"I changed an edge they dropped", []ledger.Edge{e1, e2}, []ledger.Edge{e1, withKey(e2, "other")}, []ledger.Edge{e1}, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := mergeEdges(tc.base, tc.mine, tc.theirs)
			var c *mergeConflict
			if tc.conflict {
				if !errors.As(err, &c) {
					t.Fatalf("merge = %s, %v; want a conflict", ids(got), err)
				}
				return
			}
			if err != nil || ids(got) != tc.want {
				t.Errorf("merge = %s, %v; want %s", ids(got), err, tc.want)
			}
		})
	}
}

func withKey(e ledger.Edge, key string) ledger.Edge { e.Key = key; return e }

// TestMergeGuard: a merge that would leave an edge or a pending upload of
// this machine without its base is refused, naming it; one that leaves
// every chain is taken.
func TestMergeGuard(t *testing.T) {
	e1, e2, e3 := ed(1, 0), ed(2, 1), ed(3, 2)
	// This machine added 2 -> 3; the other removed 1 -> 2.
	_, err := mergeDataset("bkt", "", []ledger.Edge{e1, e2, e3}, "p/d", []ledger.Edge{e1, e2}, []ledger.Edge{e1}, nil)
	if !errors.Is(err, ledger.ErrRefused) || !strings.Contains(err.Error(), e3.String()) {
		t.Errorf("merge that strands 2 -> 3: %v, want a refusal naming it", err)
	}
	// This machine's pending upload 2 -> 3; the other removed 1 -> 2.
	_, err = mergeDataset("bkt", "", []ledger.Edge{e1, e2}, "p/d", []ledger.Edge{e1, e2}, []ledger.Edge{e1}, []ledger.Edge{e3})
	if !errors.Is(err, ledger.ErrRefused) || !strings.Contains(err.Error(), "pending upload "+e3.String()) {
		t.Errorf("merge that strands a pending upload: %v, want a refusal naming it", err)
	}
	// The other removed 2 -> 3 and nothing here needs it.
	got, err := mergeDataset("bkt", "", []ledger.Edge{e1, e2, e3, edgeIn("p/e", 9, 0)}, "p/d", []ledger.Edge{e1, e2, e3}, []ledger.Edge{e1, e2}, []ledger.Edge{ed(4, 2)})
	if err != nil || ids(got) != "0>1 0>9 1>2" {
		t.Errorf("merge of a removal nothing needs = %s, %v", ids(got), err)
	}
}

// TestMergeProperty: for any base, any change here and any change there,
// the merge keeps every edge either side added (unless the other side
// changed it differently: a conflict), drops every edge either side
// removed, and never brings one back.
func TestMergeProperty(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		n := rapid.IntRange(0, 8).Draw(t, "base")
		var base []ledger.Edge
		for i := 1; i <= n; i++ {
			base = append(base, ed(uint64(i), uint64(i-1)))
		}
		side := func(name string, first uint64) []ledger.Edge {
			var out []ledger.Edge
			for _, e := range base {
				switch rapid.IntRange(0, 3).Draw(t, name+"-fate") {
				case 0: // removed
				case 1:
					out = append(out, removing(e))
				default:
					out = append(out, e)
				}
			}
			for k := rapid.IntRange(0, 3).Draw(t, name+"-adds"); k > 0; k-- {
				g := first + uint64(k)
				out = append(out, ed(g, uint64(rapid.IntRange(0, n).Draw(t, name+"-from"))))
			}
			return out
		}
		mine, theirs := side("mine", 100), side("theirs", 200)
		got, err := mergeEdges(base, mine, theirs)
		if err != nil {
			var c *mergeConflict
			if !errors.As(err, &c) {
				t.Fatalf("merge: %v", err)
			}
			return
		}
		in := func(es []ledger.Edge) map[ledger.ID]ledger.Edge {
			m := map[ledger.ID]ledger.Edge{}
			for _, e := range es {
				m[e.ID()] = e
			}
			return m
		}
		b, m, th, g := in(base), in(mine), in(theirs), in(got)
		if len(g) != len(got) {
			t.Fatalf("merge holds an edge twice: %s", ids(got))
		}
		for _, side := range []map[ledger.ID]ledger.Edge{m, th} {
			for id := range side {
				if _, was := b[id]; !was {
					if _, ok := g[id]; !ok {
						t.Fatalf("added edge %v lost: base %s mine %s theirs %s merged %s", id, ids(base), ids(mine), ids(theirs), ids(got))
					}
				}
			}
		}
		for id, e := range b {
			_, inM := m[id]
			_, inT := th[id]
			ge, inG := g[id]
			if (!inM || !inT) && inG {
				t.Fatalf("removed edge %v resurrected: base %s mine %s theirs %s merged %s", id, ids(base), ids(mine), ids(theirs), ids(got))
			}
			if inG && !ge.Removing && (m[id].Removing || th[id].Removing) {
				t.Fatalf("edge %v marked as being removed came back: merged %s", id, ids(got))
			}
			_ = e
		}
	})
}

// TestMergeAllIsMergingOneDatasetAtATime: merging all datasets' edges and
// then checking the result once gives the ledger, or the refusal (naming
// the same dataset), that merging a dataset at a time gives.
func TestMergeAllIsMergingOneDatasetAtATime(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		var l, pending []ledger.Edge
		var merges []journalMerge
		for d, ds := range []string{"p/a", "p/b", "p/c"} {
			first := uint64(100 * (d + 1))
			n := rapid.IntRange(0, 4).Draw(t, ds+"-base")
			var base []ledger.Edge
			for i := 1; i <= n; i++ {
				prev := uint64(0)
				if i > 1 {
					prev = first + uint64(i-1)
				}
				base = append(base, edgeIn(ds, first+uint64(i), prev))
			}
			side := func(name string, adds uint64) []ledger.Edge {
				var out []ledger.Edge
				for _, e := range base {
					switch rapid.IntRange(0, 3).Draw(t, name+"-fate") {
					case 0: // removed
					case 1:
						out = append(out, removing(e))
					default:
						out = append(out, e)
					}
				}
				for k := rapid.IntRange(0, 2).Draw(t, name+"-adds"); k > 0; k-- {
					from := uint64(rapid.IntRange(0, n).Draw(t, name+"-from"))
					if from > 0 {
						from += first
					}
					out = append(out, edgeIn(ds, adds+uint64(k), from))
				}
				return out
			}
			mine := side(ds+"-mine", first+10)
			l = append(l, mine...)
			if rapid.Bool().Draw(t, ds+"-pending") && n > 0 {
				pending = append(pending, edgeIn(ds, first+30, first+uint64(n)))
			}
			if rapid.Bool().Draw(t, ds+"-merged") {
				merges = append(merges, journalMerge{ds: ds, base: base, theirs: side(ds+"-theirs", first+20), mark: journalMark{Seq: uint64(d + 7)}})
			}
		}
		// The reference: a dataset at a time, as before mergeAll.
		want, wantErr := l, error(nil)
		for _, mg := range merges {
			var err error
			if want, err = mergeDataset("bkt", "", want, mg.ds, mg.base, mg.theirs, pending); err != nil {
				want, wantErr = nil, fmt.Errorf("the bucket's ledger journal of %s (entry %d) was changed by another machine, and the change cannot be merged: %w; run zfs2s3 ledger rebuild to merge both from the manifests", mg.ds, mg.mark.Seq, err)
				break
			}
		}
		got, err := mergeAll("bkt", "", l, merges, pending, func(journalMerge) error { return nil })
		if fmt.Sprint(err) != fmt.Sprint(wantErr) || ids(got) != ids(want) {
			t.Fatalf("mergeAll = %s, %v\nwant %s, %v", ids(got), err, ids(want), wantErr)
		}
	})
}
