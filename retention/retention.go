// Package retention decides which snapshots a keep policy keeps. It is a
// pure function of the snapshots' names and times, so that prune's
// decisions can be tested on their own and shown before anything is
// removed.
//
// The semantics are restic's (forget --keep-*): times are the snapshots'
// own, never the wall clock; "last N" keeps the newest N; "daily N" keeps
// the newest snapshot of each of the N newest days that have one, and
// likewise hourly, weekly (ISO weeks), monthly and yearly; the rules are
// OR'd, and a snapshot kept by several rules counts for each.
package retention

import (
	"sort"
	"time"
)

// Policy says how many snapshots each rule keeps; 0 turns a rule off.
type Policy struct {
	Last    int `yaml:"last"`
	Hourly  int `yaml:"hourly"`
	Daily   int `yaml:"daily"`
	Weekly  int `yaml:"weekly"`
	Monthly int `yaml:"monthly"`
	Yearly  int `yaml:"yearly"`
}

// KeepsNothing reports whether no rule keeps anything: such a policy would
// prune every snapshot but the newest, and is refused as a config error.
func (p Policy) KeepsNothing() bool {
	return p.Last <= 0 && p.Hourly <= 0 && p.Daily <= 0 && p.Weekly <= 0 && p.Monthly <= 0 && p.Yearly <= 0
}

// Snapshot is what a policy looks at.
type Snapshot struct {
	Name string
	Time time.Time
}

// Decision is the verdict on one snapshot: the rules that keep it, by
// name ("last", "hourly", "daily", "weekly", "monthly", "yearly"); none
// when it may go.
type Decision struct {
	Snapshot
	Reasons []string
}

// Kept reports whether any rule keeps the snapshot.
func (d Decision) Kept() bool { return len(d.Reasons) > 0 }

// rule is one of a policy's rules: how many periods it keeps and which
// period a time falls in, in loc.
type rule struct {
	name   string
	count  int
	period func(t time.Time) int
}

func (p Policy) rules() []rule {
	return []rule{
		{"last", p.Last, nil}, // every snapshot is its own period
		{"hourly", p.Hourly, func(t time.Time) int { return ((t.Year()*100+int(t.Month()))*100+t.Day())*100 + t.Hour() }},
		{"daily", p.Daily, func(t time.Time) int { return (t.Year()*100+int(t.Month()))*100 + t.Day() }},
		{"weekly", p.Weekly, func(t time.Time) int { y, w := t.ISOWeek(); return y*100 + w }},
		{"monthly", p.Monthly, func(t time.Time) int { return t.Year()*100 + int(t.Month()) }},
		{"yearly", p.Yearly, func(t time.Time) int { return t.Year() }},
	}
}

// Apply decides on every snapshot, newest first; loc is the time zone
// whose hours, days and weeks the rules count (the machine's, normally).
// The order of snaps does not matter; snapshots with equal times are
// ordered by name.
func (p Policy) Apply(snaps []Snapshot, loc *time.Location) []Decision {
	ds := make([]Decision, len(snaps))
	for i, s := range snaps {
		ds[i] = Decision{Snapshot: s}
	}
	sort.SliceStable(ds, func(i, j int) bool {
		if !ds[i].Time.Equal(ds[j].Time) {
			return ds[i].Time.After(ds[j].Time)
		}
		return ds[i].Name > ds[j].Name
	})
	for _, r := range p.rules() {
		left, last := r.count, 0
		for i := range ds {
			if left <= 0 {
				break
			}
			if r.period != nil {
				period := r.period(ds[i].Time.In(loc))
				if i > 0 && period == last {
					continue // an older snapshot of a period already kept
				}
				last = period
			}
			ds[i].Reasons = append(ds[i].Reasons, r.name)
			left--
		}
	}
	return ds
}
