// Package health decides whether each dataset's backups are fresh enough,
// as a pure function of what is stored and the time now, so that
// `status --max-age` (a monitoring check) and the metrics file agree on
// what "newest stored snapshot" means and the rule is tested on its own.
package health

import (
	"fmt"
	"strings"
	"time"
)

// Stored is what the ledger stores of one dataset.
type Stored struct {
	Dataset string
	// Snapshots counts the stored snapshots some chain of stored edges
	// restores; Unrestorable those that no chain restores any more.
	Snapshots, Unrestorable int
	// Bytes is what the dataset's stored edges take in the bucket.
	Bytes int64
	// Newest is the newest restorable stored snapshot, "" when there is
	// none; NewestTime is its snapshot time (see README.md: from the
	// name's time_format, else the local snapshot's creation, else the
	// time its first edge was uploaded).
	Newest     string
	NewestTime time.Time
}

// Verdict is the check of one dataset.
type Verdict struct {
	Dataset string `json:"dataset"`
	Fresh   bool   `json:"fresh"`
	// Newest and NewestTime repeat Stored's; AgeSeconds is now minus
	// NewestTime (0 when nothing is stored).
	Newest     string    `json:"newest,omitempty"`
	NewestTime time.Time `json:"newest_time,omitzero"`
	AgeSeconds float64   `json:"age_seconds"`
	// Problems say why the dataset is not fresh, one sentence each.
	Problems []string `json:"problems"`
}

// Check judges each dataset: fresh when something is stored, its newest
// restorable stored snapshot is at most maxAge older than now, and no
// stored snapshot is unrestorable. A snapshot time after now (a clock set
// back, a name from the future) counts as age 0.
func Check(stored []Stored, maxAge time.Duration, now time.Time) []Verdict {
	out := make([]Verdict, 0, len(stored))
	for _, s := range stored {
		v := Verdict{Dataset: s.Dataset, Newest: s.Newest, NewestTime: s.NewestTime, Problems: []string{}}
		if s.Newest == "" {
			v.Problems = append(v.Problems, "nothing restorable is stored")
		} else {
			age := max(now.Sub(s.NewestTime), 0)
			v.AgeSeconds = age.Seconds()
			if age > maxAge {
				v.Problems = append(v.Problems, fmt.Sprintf("newest restorable stored snapshot %s is %s old (max age %s)", s.Newest, Age(age), Age(maxAge)))
			}
		}
		if s.Unrestorable > 0 {
			v.Problems = append(v.Problems, fmt.Sprintf("%d stored snapshot(s) cannot be restored (see zfs2s3 status %s)", s.Unrestorable, s.Dataset))
		}
		v.Fresh = len(v.Problems) == 0
		out = append(out, v)
	}
	return out
}

// Stale returns the verdicts that are not fresh.
func Stale(vs []Verdict) []Verdict {
	var out []Verdict
	for _, v := range vs {
		if !v.Fresh {
			out = append(out, v)
		}
	}
	return out
}

// Age writes a duration the way people read an age: 2d3h, 26h is 1d2h,
// 45m, 30s; to the minute above an hour.
func Age(d time.Duration) string {
	if d < time.Minute {
		return d.Round(time.Second).String()
	}
	d = d.Round(time.Minute)
	days, d := d/(24*time.Hour), d%(24*time.Hour)
	hours, d := d/time.Hour, d%time.Hour
	mins := d / time.Minute
	var b strings.Builder
	if days > 0 {
		fmt.Fprintf(&b, "%dd", days)
	}
	if hours > 0 {
		fmt.Fprintf(&b, "%dh", hours)
	}
	if mins > 0 {
		fmt.Fprintf(&b, "%dm", mins)
	}
	return b.String()
}
