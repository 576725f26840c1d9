package queue

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"time"

	"github.com/nixipfs/nixipfs/internal/backoff"
	"github.com/nixipfs/nixipfs/internal/metrics"
	"github.com/nixipfs/nixipfs/internal/nixstore"
	"github.com/nixipfs/nixipfs/internal/publish"
)

// PublishFunc publishes the closures of paths; publish.Publisher.Publish is
// one. It must be idempotent (publishing what is published is a no-op) and
// must have made the manifest update durable when it returns nil.
type PublishFunc func(ctx context.Context, paths ...string) ([]publish.Result, error)

// Worker publishes queued entries in the background.
type Worker struct {
	Queue   *Queue
	Publish PublishFunc
	// Interval is how often the queue directory is looked at (default
	// 250 ms): entries written by other processes are noticed that fast.
	Interval time.Duration
	// MaxBatch bounds the store paths published in one call (default 1024):
	// entries ready together share one manifest update and one IPNS
	// publish.
	MaxBatch int
	// Backoff is the wait before the next attempt after n failed ones
	// (default: 1 s doubling, at most 5 min).
	Backoff func(n int) time.Duration
	// GiveUpAfter is how many attempts a path Nix says is not valid gets
	// before the entry is set aside (default 3): a path is valid once its
	// build registered it, so a later attempt rarely helps, but a hook may
	// queue a moment before Nix registers.
	GiveUpAfter int
	Metrics     *metrics.Metrics
	// OnPublished, if set, is called with each successful publish's results.
	OnPublished func([]publish.Result)

	now func() time.Time
	// notBefore keeps the backoff in memory too, for when the entry file
	// cannot be rewritten (a full disk): no hot retry loop then either.
	notBefore map[string]time.Time
}

// DefaultBackoff doubles from 1 s up to 5 min.
func DefaultBackoff(n int) time.Duration { return backoff.Doubling(time.Second, 5*time.Minute, n) }

func (w *Worker) defaults() {
	if w.Interval <= 0 {
		w.Interval = 250 * time.Millisecond
	}
	if w.MaxBatch <= 0 {
		w.MaxBatch = 1024
	}
	if w.Backoff == nil {
		w.Backoff = DefaultBackoff
	}
	if w.GiveUpAfter <= 0 {
		w.GiveUpAfter = 3
	}
	if w.now == nil {
		w.now = time.Now
	}
	if w.notBefore == nil {
		w.notBefore = map[string]time.Time{}
	}
}

// Run works through the queue until ctx ends.
func (w *Worker) Run(ctx context.Context) {
	w.defaults()
	for {
		wait := w.Round(ctx)
		select {
		case <-ctx.Done():
			return
		case <-time.After(min(wait, w.Interval)):
		}
	}
}

// Round publishes one batch of ready entries, if any, and returns how long
// until the next entry is due.
func (w *Worker) Round(ctx context.Context) time.Duration {
	w.defaults()
	entries, err := w.Queue.List()
	if err != nil {
		slog.Warn("queue", "err", err)
		return w.Interval
	}
	w.gauges(len(entries))
	now := w.now()
	var batch []Entry
	var paths []string
	wait := time.Duration(1<<63 - 1)
	for _, e := range entries {
		if e.bad != nil {
			slog.Error("queue: setting aside an unreadable entry", "entry", e.ID, "err", e.bad)
			w.setAside(e, e.bad)
			continue
		}
		next := e.NextTry
		if t := w.notBefore[e.ID]; t.After(next) {
			next = t
		}
		if next.After(now) {
			wait = min(wait, next.Sub(now))
			continue
		}
		if len(batch) > 0 && len(paths)+len(e.Paths) > w.MaxBatch {
			wait = 0
			break
		}
		batch = append(batch, e)
		for _, p := range e.Paths {
			if !slices.Contains(paths, p) {
				paths = append(paths, p)
			}
		}
	}
	if len(batch) == 0 {
		return wait
	}
	slog.Info("queue: publishing", "entries", len(batch), "paths", len(paths))
	res, err := w.Publish(ctx, paths...)
	if ctx.Err() != nil {
		return 0 // shutting down: the entries stay for the next start
	}
	if err == nil {
		w.done(batch, res)
		return 0
	}
	if len(batch) == 1 {
		w.failed(batch[0], err)
		return 0
	}
	// One bad entry must not hold up the others: try each on its own.
	slog.Warn("queue: batch failed, publishing entries one by one", "entries", len(batch), "err", err)
	for _, e := range batch {
		res, err := w.Publish(ctx, e.Paths...)
		if ctx.Err() != nil {
			return 0
		}
		if err != nil {
			w.failed(e, err)
			continue
		}
		w.done([]Entry{e}, res)
	}
	return 0
}

// done removes published entries. Publish returned, so the manifest state
// file was renamed into place; the data dir is synced first so that the
// rename is on disk before the entries disappear.
func (w *Worker) done(batch []Entry, res []publish.Result) {
	if err := syncDir(w.Queue.dataDir); err != nil {
		slog.Warn("queue", "err", err)
		return // the entries stay; publishing them again is a no-op
	}
	for _, e := range batch {
		delete(w.notBefore, e.ID)
		if err := w.Queue.Done(e.ID); err != nil {
			slog.Warn("queue", "err", err)
		}
	}
	if err := syncDir(w.Queue.Dir()); err != nil {
		slog.Warn("queue", "err", err)
	}
	n := 0
	for _, r := range res {
		if r.Status != publish.Unchanged {
			n++
		}
	}
	slog.Info("queue: published", "entries", len(batch), "paths", len(res), "changed", n)
	if m := w.Metrics; m != nil {
		m.QueueAttempts.WithLabelValues("ok").Add(float64(len(batch)))
		for _, r := range res {
			m.QueuePublished.WithLabelValues(string(r.Status)).Inc()
		}
	}
	if w.OnPublished != nil {
		w.OnPublished(res)
	}
	w.refreshGauges()
}

func (w *Worker) failed(e Entry, err error) {
	if errors.Is(err, nixstore.ErrInvalidPath) && e.Attempts+1 >= w.GiveUpAfter {
		slog.Error("queue: giving up on an entry", "entry", e.ID, "paths", e.Paths, "attempts", e.Attempts+1, "err", err)
		w.setAside(e, err)
		return
	}
	next := w.Backoff(e.Attempts + 1)
	slog.Warn("queue: publish failed, will retry", "entry", e.ID, "attempt", e.Attempts+1, "in", next, "err", err)
	w.notBefore[e.ID] = w.now().Add(next)
	if werr := w.Queue.retry(e, err, w.now().Add(next)); werr != nil {
		// Most likely the disk is full: the entry stays as it was and is
		// retried at once next round, which is no worse.
		slog.Warn("queue: record retry", "entry", e.ID, "err", werr)
	}
	if w.Metrics != nil {
		w.Metrics.QueueAttempts.WithLabelValues("retry").Inc()
	}
}

func (w *Worker) setAside(e Entry, err error) {
	delete(w.notBefore, e.ID)
	if serr := w.Queue.setAside(e, err); serr != nil {
		slog.Warn("queue: set aside", "entry", e.ID, "err", serr)
	}
	if w.Metrics != nil {
		w.Metrics.QueueAttempts.WithLabelValues("failed").Inc()
	}
	w.refreshGauges()
}

func (w *Worker) refreshGauges() {
	n, err := w.Queue.Depth()
	if err == nil {
		w.gauges(n)
	}
}

func (w *Worker) gauges(depth int) {
	if w.Metrics == nil {
		return
	}
	w.Metrics.QueueDepth.Set(float64(depth))
	if n, err := w.Queue.FailedCount(); err == nil {
		w.Metrics.QueueFailed.Set(float64(n))
	}
}
