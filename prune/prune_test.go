package prune

import (
	"fmt"
	"slices"
	"testing"

	"pgregory.net/rapid"

	"github.com/zfs2s3/zfs2s3/ledger"
)

func snap(g uint64) ledger.Snapshot {
	return ledger.Snapshot{Name: fmt.Sprintf("tank/d@s%d", g), GUID: g}
}

func edge(base, target uint64, bytes int64) ledger.Edge {
	e := ledger.Edge{Target: snap(target), StoredBytes: bytes}
	if base != 0 {
		b := snap(base)
		e.Base = &b
	}
	e.Key = ledger.ObjectKey("", e.Target, e.Base)
	return e
}

func names(es []ledger.Edge) []string {
	var s []string
	for _, e := range es {
		s = append(s, fmt.Sprintf("%d->%d", e.ID().BaseGUID, e.ID().TargetGUID))
	}
	return s
}

func set(gs ...uint64) map[uint64]bool {
	m := map[uint64]bool{}
	for _, g := range gs {
		m[g] = true
	}
	return m
}

func TestMake(t *testing.T) {
	daily := []ledger.Edge{edge(0, 1, 100), edge(1, 2, 10), edge(2, 3, 10), edge(3, 4, 10), edge(4, 5, 10)}
	order := []uint64{1, 2, 3, 4, 5}
	for _, tt := range []struct {
		name       string
		edges      []ledger.Edge
		keep       map[uint64]bool
		local      map[uint64]bool
		wantBypass []string
		wantRemove []string
		wantStay   []uint64
	}{
		{"keep all", daily, set(1, 2, 3, 4, 5), set(), nil, nil, nil},
		{"keep 1 and 5 with local snapshots: bypass 1->5, dailies go newest first",
			daily, set(1), set(1, 2, 3, 4, 5), []string{"1->5"}, []string{"4->5", "3->4", "2->3", "1->2"}, nil},
		{"keep 1 and 5, 1 gone locally: chain stays",
			daily, set(1), set(2, 3, 4, 5), nil, nil, []uint64{2, 3, 4}},
		{"keep only the newest: a new full",
			daily, set(), set(5), []string{"0->5"}, []string{"4->5", "3->4", "2->3", "1->2", "0->1"}, nil},
		{"an existing bypass is used, not uploaded again",
			append(slices.Clone(daily), edge(1, 5, 30)), set(1), set(), nil, []string{"4->5", "3->4", "2->3", "1->2"}, nil},
		{"keep 3 and 5, both local: a full of 3 and 3->5 are sent, the rest goes",
			daily, set(3), set(3, 5), []string{"0->3", "3->5"}, []string{"4->5", "3->4", "2->3", "1->2", "0->1"}, nil},
		{"keep 3 and 5, only 5 local: 1->2->3 stays for 3, 3->4->5 for 5",
			daily, set(3), set(5), nil, nil, []uint64{1, 2, 4}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := Make(Input{Edges: tt.edges, Order: order, Keep: tt.keep, Local: tt.local})
			var bypass []string
			for _, b := range p.Bypass {
				base := uint64(0)
				if b.Base != nil {
					base = b.Base.GUID
				}
				bypass = append(bypass, fmt.Sprintf("%d->%d", base, b.Target.GUID))
			}
			if !slices.Equal(bypass, tt.wantBypass) {
				t.Errorf("bypass %v, want %v", bypass, tt.wantBypass)
			}
			if got := names(p.Remove); !slices.Equal(got, tt.wantRemove) {
				t.Errorf("remove %v, want %v", got, tt.wantRemove)
			}
			var stay []uint64
			for g := range p.Stay {
				stay = append(stay, g)
			}
			slices.Sort(stay)
			if !slices.Equal(stay, tt.wantStay) {
				t.Errorf("stay %v, want %v", stay, tt.wantStay)
			}
		})
	}
}

// TestMakeOnRandomHistories carries plans out on random restorable
// histories through the ledger's own Add and CheckRemove: no removal is
// refused, every kept snapshot stays restorable, and every edge left is on
// the chain of a kept snapshot.
func TestMakeOnRandomHistories(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		n := rapid.IntRange(1, 12).Draw(t, "snapshots")
		l := ledger.New("b", "")
		order := []uint64{}
		for g := uint64(1); g <= uint64(n); g++ {
			order = append(order, g)
			// Each snapshot is stored from a full stream and/or from earlier
			// stored snapshots; the first is always a full.
			bases := []uint64{0}
			if g > 1 {
				bases = rapid.SliceOfNDistinct(rapid.Uint64Range(0, g-1), 1, 3, rapid.ID).Draw(t, fmt.Sprintf("bases%d", g))
			}
			for _, b := range bases {
				e := edge(b, g, rapid.Int64Range(1, 100).Draw(t, "bytes"))
				e.StreamBytes, e.SHA256 = e.StoredBytes, fmt.Sprintf("%064x", g)
				if err := l.Add(e); err != nil {
					t.Fatal(err)
				}
			}
		}
		keep, local := map[uint64]bool{}, map[uint64]bool{}
		for _, g := range order {
			keep[g] = rapid.Bool().Draw(t, fmt.Sprintf("keep%d", g))
			local[g] = rapid.Bool().Draw(t, fmt.Sprintf("local%d", g))
		}
		p := Make(Input{Edges: slices.Clone(l.Edges), Order: order, Keep: keep, Local: local})
		for _, b := range p.Bypass {
			if !local[b.Target.GUID] || b.Base != nil && !local[b.Base.GUID] {
				t.Fatalf("bypass to %s needs a snapshot that is not local", b.Target.Name)
			}
			e := ledger.Edge{Target: b.Target, Base: b.Base, StoredBytes: 1}
			e.Key = ledger.ObjectKey("", e.Target, e.Base)
			if err := l.Add(e); err != nil {
				t.Fatalf("bypass %s: %v", e, err)
			}
		}
		for i, e := range p.Remove {
			if err := l.CheckRemove(e.ID(), nil); err != nil {
				t.Fatalf("removal %d of %v refused: %v", i, names(p.Remove), err)
			}
			l.Drop(e.ID())
		}
		keep[order[len(order)-1]] = true
		for g, k := range keep {
			if k {
				if _, err := l.Chain(0, g); err != nil {
					t.Fatalf("kept s%d is not restorable after the prune: %v", g, err)
				}
			}
		}
		// Nothing stays that no kept snapshot's chain needs: each edge
		// left ends in a kept snapshot or in one Stay names.
		for _, e := range l.Edges {
			if g := e.Target.GUID; !keep[g] {
				if _, ok := p.Stay[g]; !ok {
					t.Fatalf("%s stays although no rule or chain needs s%d", e, g)
				}
			}
		}
	})
}
