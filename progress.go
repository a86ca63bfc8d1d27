package main

import (
	"fmt"
	"io"
	"sync"

	"github.com/schollz/progressbar/v3"

	"github.com/zfs2s3/zfs2s3/s3up"
)

// progress draws one bar per upload on stderr: bytes, rate, ETA from the
// size estimate, and parts in flight.
type progress struct {
	w    io.Writer
	mu   sync.Mutex
	bar  *progressbar.ProgressBar
	edge string
}

func newProgress(w io.Writer) *progress { return &progress{w: w} }

func (p *progress) update(edge string, pr s3up.Progress, estimate int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bar == nil || p.edge != edge {
		if p.bar != nil {
			p.bar.Finish()
			fmt.Fprintln(p.w)
		}
		total := estimate
		if total <= 0 {
			total = -1 // unknown: a spinner with bytes and rate
		}
		p.edge = edge
		p.bar = progressbar.NewOptions64(total,
			progressbar.OptionSetWriter(p.w),
			progressbar.OptionShowBytes(true),
			progressbar.OptionShowTotalBytes(true),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionThrottle(250e6),
			progressbar.OptionClearOnFinish(),
			progressbar.OptionSetSpinnerChangeInterval(0), // its spinner goroutine races in v3.19
		)
	}
	if estimate > 0 && pr.Done > p.bar.GetMax64() {
		p.bar.ChangeMax64(pr.Done) // the stream outgrew its estimate
	}
	p.bar.Describe(fmt.Sprintf("%s (%d parts in flight)", edge, pr.InFlight))
	p.bar.Set64(pr.Done)
}

// finish clears the bar of the upload that just stopped.
func (p *progress) finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bar != nil {
		p.bar.Finish()
		p.bar = nil
	}
}
