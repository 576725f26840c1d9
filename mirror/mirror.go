package mirror

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nixipfs/nixipfs/internal/backoff"
)

// Sink is where verified files go: the IPFS import and the manifest, kept
// behind this interface so that the package needs no IPFS code. Mirror
// calls Has and Add from several goroutines at once.
type Sink interface {
	// Has reports whether the file with this hash is already mirrored, in
	// which case it is not downloaded again.
	Has(ctx context.Context, h Hash) (bool, error)
	// Add stores a downloaded file whose hash has been VERIFIED against the
	// entry's and records it under all of hashes (md5, sha1, sha256 and
	// sha512 by algorithm, computed while downloading). r yields exactly
	// size bytes and is an io.ReaderAt and io.Seeker too. Add is called at
	// most once per entry; r is only valid until Add returns.
	Add(ctx context.Context, e Entry, r io.Reader, size int64, hashes map[string][]byte) error
}

// Options tune Mirror. The zero value gives the defaults.
type Options struct {
	Concurrency int // parallel downloads (default 4)
	// Retries is how many times one URL is tried again after a transient
	// failure (a network error, a stall, HTTP 408, 425, 429 or 5xx, FTP 4xx),
	// waiting Backoff, then twice that... with jitter, or what Retry-After
	// asks (up to 2 minutes). 0 means the default, 3; negative means none.
	Retries int
	Backoff time.Duration // first wait before a retry (default 1 s)
	// MaxSize bounds one download (default 4 GiB): a larger announced size
	// is refused before reading and a body that runs past it is cut off.
	MaxSize int64
	// Timeout bounds one attempt at one URL, headers and body (default 10
	// minutes).
	Timeout time.Duration
	// StallTimeout cuts an attempt off when no byte arrives for this long,
	// from the request on (default Timeout, at most 1 minute).
	StallTimeout time.Duration
	Mirrors      Mirrors      // resolves mirror:// URLs; nil refuses them
	Client       *http.Client // default: a client honouring the *_proxy variables, as curl does
	// TempDir is where downloads are written (and hashed) before Add; a
	// directory of the run is made in it and removed at the end, cancelled
	// or not. Default os.TempDir(). Up to Concurrency × MaxSize bytes.
	TempDir string
	// Progress, if set, is called (never concurrently) when an entry
	// finishes and, while bytes arrive, at most every 200 ms. It should
	// return quickly: downloads wait for it.
	Progress func(Progress)
	Logger   *slog.Logger // default slog.Default()
}

// Progress is a snapshot of a run, for a status line.
type Progress struct {
	Total    int           `json:"total"`    // entries in the run
	Done     int           `json:"done"`     // entries finished, whatever their outcome
	Mirrored int           `json:"mirrored"` // statuses so far, as in Report
	Skipped  int           `json:"skipped"`
	Patches  int           `json:"patches"`
	Failed   int           `json:"failed"`
	Active   int           `json:"active"` // entries being downloaded now
	Bytes    int64         `json:"bytes"`  // bytes received, every attempt counted
	Rate     float64       `json:"rate"`   // bytes/s: Bytes over Elapsed
	Elapsed  time.Duration `json:"elapsed"`
}

// Statuses of a Result.
const (
	StatusMirrored = "mirrored" // downloaded, verified and added to the sink
	StatusSkipped  = "skipped"  // the sink already had it (or an earlier entry with the same hash)
	StatusPatch    = "patch"    // isPatch: its output is not the downloaded file, so not mirrored
	StatusFailed   = "failed"
)

// Attempt is one URL that did not give the file, and why.
type Attempt struct {
	URL string `json:"url"`
	Err string `json:"err"`
}

// Result is what became of one entry.
type Result struct {
	Entry  Entry     `json:"entry"`
	Status string    `json:"status"`
	URL    string    `json:"url,omitempty"`  // where the mirrored file came from
	Size   int64     `json:"size,omitempty"` // bytes mirrored
	Err    string    `json:"err,omitempty"`  // why it failed, in one line
	Tried  []Attempt `json:"tried,omitempty"`
	Note   string    `json:"note,omitempty"`
}

// Report sums up a run. Results are in entry order.
type Report struct {
	Results  []Result      `json:"results"`
	Mirrored int           `json:"mirrored"`
	Skipped  int           `json:"skipped"`
	Patches  int           `json:"patches"`
	Failed   int           `json:"failed"`
	Bytes    int64         `json:"bytes"`    // bytes mirrored
	Duration time.Duration `json:"duration"` // nanoseconds in JSON
}

// Failures are the failed results.
func (r Report) Failures() []Result {
	var out []Result
	for _, res := range r.Results {
		if res.Status == StatusFailed {
			out = append(out, res)
		}
	}
	return out
}

// ErrHashMismatch is wrapped by the error of a download whose bytes do not
// have the entry's hash.
var ErrHashMismatch = errors.New("hash mismatch")

const (
	defaultConcurrency = 4
	defaultRetries     = 3
	defaultBackoff     = time.Second
	defaultMaxSize     = 4 << 30
	defaultTimeout     = 10 * time.Minute
	maxStallTimeout    = time.Minute
	maxBackoff         = time.Minute
	maxRetryAfter      = 2 * time.Minute
	progressInterval   = 200 * time.Millisecond
	copyBufferSize     = 256 << 10
)

// Mirror downloads every entry the sink does not have yet, verifies its
// hash and hands it to the sink, Concurrency entries at a time. Patches are
// counted and skipped. Each entry's URLs (mirror:// ones expanded) are tried
// in order: transient failures are retried with backoff, and a missing file,
// a file over MaxSize or one with the wrong hash moves on to the next URL.
// Nothing reaches the sink unverified. Entries with the same hash are
// fetched once.
//
// Per-entry failures are in the Report; the error is for setup problems and
// for ctx ending, which stops every download promptly and removes the
// temporary files. The Report then holds the entries that finished.
func Mirror(ctx context.Context, entries []Entry, sink Sink, opts Options) (Report, error) {
	start := time.Now()
	if sink == nil {
		return Report{}, errors.New("mirror: no sink")
	}
	if err := ctx.Err(); err != nil {
		return Report{}, fmt.Errorf("mirror: %w", context.Cause(ctx))
	}
	opts = opts.withDefaults()
	if opts.Client == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConnsPerHost = opts.Concurrency
		opts.Client = &http.Client{Transport: tr, CheckRedirect: checkRedirect}
		defer tr.CloseIdleConnections()
	}
	dir, err := os.MkdirTemp(opts.TempDir, "nixipfs-mirror-")
	if err != nil {
		return Report{}, fmt.Errorf("mirror: temp dir: %w", err)
	}
	defer os.RemoveAll(dir)

	r := &run{
		opts:    opts,
		sink:    sink,
		log:     opts.Logger,
		dir:     dir,
		entries: entries,
		results: make([]Result, len(entries)),
		done:    make([]bool, len(entries)),
		start:   start,
	}
	r.prog.Total = len(entries)

	groups := groupByHash(entries)
	work := make(chan []int)
	var wg sync.WaitGroup
	for range min(opts.Concurrency, len(groups)) {
		wg.Go(func() {
			for g := range work {
				r.group(ctx, g)
			}
		})
	}
feed:
	for _, g := range groups {
		select {
		case work <- g:
		case <-ctx.Done():
			break feed
		}
	}
	close(work)
	wg.Wait()
	r.progress(true)

	var rep Report
	for i, ok := range r.done {
		if !ok {
			continue
		}
		res := r.results[i]
		rep.Results = append(rep.Results, res)
		switch res.Status {
		case StatusMirrored:
			rep.Mirrored++
			rep.Bytes += res.Size
		case StatusSkipped:
			rep.Skipped++
		case StatusPatch:
			rep.Patches++
		case StatusFailed:
			rep.Failed++
		}
	}
	rep.Duration = time.Since(start)
	if ctx.Err() != nil && len(rep.Results) < len(entries) {
		return rep, fmt.Errorf("mirror: %w (%d of %d entries done)", context.Cause(ctx), len(rep.Results), len(entries))
	}
	return rep, nil
}

func (o Options) withDefaults() Options {
	if o.Concurrency <= 0 {
		o.Concurrency = defaultConcurrency
	}
	switch {
	case o.Retries == 0:
		o.Retries = defaultRetries
	case o.Retries < 0:
		o.Retries = 0
	}
	if o.Backoff <= 0 {
		o.Backoff = defaultBackoff
	}
	if o.MaxSize <= 0 {
		o.MaxSize = defaultMaxSize
	}
	if o.Timeout <= 0 {
		o.Timeout = defaultTimeout
	}
	if o.StallTimeout <= 0 {
		o.StallTimeout = min(o.Timeout, maxStallTimeout)
	}
	if o.TempDir == "" {
		o.TempDir = os.TempDir()
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// groupByHash puts entries with the same hash together (in list order), so
// that one worker handles them in turn and the file is fetched once; the
// groups are in the order of their first entry.
func groupByHash(entries []Entry) [][]int {
	var groups [][]int
	at := map[string]int{}
	for i, e := range entries {
		if !e.Hash.Valid() {
			groups = append(groups, []int{i})
			continue
		}
		k := e.Hash.Algo + ":" + string(e.Hash.Digest)
		if g, ok := at[k]; ok {
			groups[g] = append(groups[g], i)
			continue
		}
		at[k] = len(groups)
		groups = append(groups, []int{i})
	}
	return groups
}

// run is the state of one Mirror call.
type run struct {
	opts    Options
	sink    Sink
	log     *slog.Logger
	dir     string
	entries []Entry
	start   time.Time
	bytes   atomic.Int64

	mu       sync.Mutex // guards everything below, and serialises Progress
	results  []Result
	done     []bool
	prog     Progress
	lastProg time.Time
}

func (r *run) group(ctx context.Context, idxs []int) {
	have := -1 // an entry of the group the sink has now
	for _, i := range idxs {
		if ctx.Err() != nil {
			return
		}
		e := r.entries[i]
		if have >= 0 && !e.IsPatch {
			r.finish(i, Result{Entry: e, Status: StatusSkipped, Note: fmt.Sprintf("same hash as entry %d", r.entries[have].Index)})
			continue
		}
		res, ok := r.entry(ctx, e)
		if !ok {
			return // interrupted: not a result
		}
		r.finish(i, res)
		if res.Status == StatusMirrored || res.Status == StatusSkipped {
			have = i
		}
	}
}

func (r *run) finish(i int, res Result) {
	// Reports get printed: no passwords from ftp://user:pass@ URLs in them.
	urls := make([]string, len(res.Entry.URLs))
	for j, u := range res.Entry.URLs {
		urls[j] = redact(u)
	}
	res.Entry.URLs = urls
	r.mu.Lock()
	r.results[i] = res
	r.done[i] = true
	r.prog.Done++
	switch res.Status {
	case StatusMirrored:
		r.prog.Mirrored++
	case StatusSkipped:
		r.prog.Skipped++
	case StatusPatch:
		r.prog.Patches++
	case StatusFailed:
		r.prog.Failed++
	}
	r.mu.Unlock()
	r.progress(true)
	attrs := []any{"entry", res.Entry.Index, "name", res.Entry.Name, "status", res.Status}
	if res.Status == StatusFailed {
		r.log.Warn("mirror: entry failed", append(attrs, "err", res.Err)...)
	} else {
		r.log.Debug("mirror: entry done", append(attrs, "url", res.URL, "size", res.Size)...)
	}
}

func (r *run) setActive(delta int) {
	r.mu.Lock()
	r.prog.Active += delta
	r.mu.Unlock()
}

func (r *run) addBytes(n int) {
	r.bytes.Add(int64(n))
	r.progress(false)
}

// progress reports to opts.Progress: always when forced (an entry
// finished), else at most every progressInterval.
func (r *run) progress(force bool) {
	if r.opts.Progress == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	if !force && now.Sub(r.lastProg) < progressInterval {
		return
	}
	r.lastProg = now
	p := r.prog
	p.Bytes = r.bytes.Load()
	p.Elapsed = now.Sub(r.start)
	if s := p.Elapsed.Seconds(); s > 0 {
		p.Rate = float64(p.Bytes) / s
	}
	r.opts.Progress(p)
}

// entry mirrors one entry. ok is false when ctx ended before the entry
// had an outcome.
func (r *run) entry(ctx context.Context, e Entry) (res Result, ok bool) {
	res = Result{Entry: e, Status: StatusFailed}
	if e.IsPatch {
		res.Status = StatusPatch
		return res, true
	}
	if !e.Hash.Valid() {
		res.Err = fmt.Sprintf("entry %d: invalid hash (algorithm %q, %d bytes)", e.Index, e.Hash.Algo, len(e.Hash.Digest))
		return res, true
	}
	has, err := r.sink.Has(ctx, e.Hash)
	if err != nil {
		if ctx.Err() != nil {
			return res, false
		}
		res.Err = fmt.Sprintf("entry %d: ask the sink for %s: %v", e.Index, e.Hash, err)
		return res, true
	}
	if has {
		res.Status = StatusSkipped
		return res, true
	}

	r.setActive(1)
	defer r.setActive(-1)
	seen := map[string]bool{}
	mismatch := false
	for _, raw := range e.URLs {
		cands, err := r.opts.Mirrors.Expand(raw)
		if err != nil {
			res.Tried = append(res.Tried, Attempt{URL: redact(raw), Err: err.Error()})
			continue
		}
		for _, u := range cands {
			if seen[u] {
				continue
			}
			seen[u] = true
			d, err := r.fetch(ctx, e, u)
			if err != nil {
				if ctx.Err() != nil {
					return res, false
				}
				mismatch = mismatch || errors.Is(err, ErrHashMismatch)
				res.Tried = append(res.Tried, Attempt{URL: redact(u), Err: err.Error()})
				r.log.Debug("mirror: URL failed", "entry", e.Index, "url", redact(u), "err", err)
				continue
			}
			err = r.sink.Add(ctx, e, io.NewSectionReader(d.file, 0, d.size), d.size, d.hashes)
			d.remove()
			if err != nil {
				if ctx.Err() != nil {
					return res, false
				}
				res.Err = fmt.Sprintf("entry %d: add %s (from %s) to the sink: %v", e.Index, e.Hash, redact(u), err)
				return res, true
			}
			res.Status, res.URL, res.Size = StatusMirrored, redact(u), d.size
			return res, true
		}
	}
	var why []string
	for _, a := range res.Tried {
		why = append(why, a.URL+": "+a.Err)
	}
	switch {
	case len(res.Tried) == 0:
		res.Err = fmt.Sprintf("entry %d: no URLs", e.Index)
	case mismatch:
		res.Err = fmt.Sprintf("entry %d: %v: no URL gave a file with %s (%s)", e.Index, ErrHashMismatch, e.Hash, strings.Join(why, "; "))
	default:
		res.Err = fmt.Sprintf("entry %d: every URL failed (%s)", e.Index, strings.Join(why, "; "))
	}
	return res, true
}

// fetch downloads one URL, retrying transient failures. The download it
// returns has the entry's hash.
func (r *run) fetch(ctx context.Context, e Entry, u string) (*download, error) {
	for attempt := 0; ; attempt++ {
		d, err := r.attempt(ctx, e, u)
		if err == nil {
			return d, nil
		}
		if ctx.Err() != nil {
			return nil, context.Cause(ctx)
		}
		var re *retryableError
		if !errors.As(err, &re) || attempt >= r.opts.Retries {
			if attempt > 0 {
				err = fmt.Errorf("%w (after %d attempts)", err, attempt+1)
			}
			return nil, err
		}
		wait := r.backoff(attempt, re.after)
		r.log.Debug("mirror: retrying", "entry", e.Index, "url", redact(u), "err", err, "in", wait)
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, context.Cause(ctx)
		}
	}
}

// backoff is the wait before retry number attempt+1: Backoff doubled each
// time up to a minute, jittered by ±50% so that parallel workers hitting
// one failing server do not come back in step; longer if the server asked.
func (r *run) backoff(attempt int, after time.Duration) time.Duration {
	d := backoff.Doubling(r.opts.Backoff, maxBackoff, attempt+1)
	d = d/2 + rand.N(d)
	if after > d {
		d = min(after, maxRetryAfter)
	}
	return d
}

// download is a verified file in the run's temp dir.
type download struct {
	file   *os.File
	size   int64
	hashes map[string][]byte
}

func (d *download) remove() {
	d.file.Close()
	os.Remove(d.file.Name())
}
