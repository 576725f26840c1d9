package builder

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/ipfs/boxo/files"
	"github.com/ipfs/go-cid"
	"github.com/ipfs/kubo/core/coreiface/options"
	"github.com/nix-community/go-nix/pkg/narinfo/signature"

	"github.com/nixipfs/nixipfs/internal/ipfsnode"
	"github.com/nixipfs/nixipfs/internal/nixstore"
	"github.com/nixipfs/nixipfs/internal/publish"
	"github.com/nixipfs/nixipfs/manifests"
)

// WorkerConfig configures a Worker.
type WorkerConfig struct {
	Node     *ipfsnode.Node // online
	Network  string
	Store    *nixstore.Store
	Manifest *manifests.Local
	// SignKey signs our messages and the outputs we publish.
	SignKey signature.SecretKey

	Systems   []string // default: the store's system
	Features  []string // system features we support
	Mandatory []string // features a job must ask for to be built here
	MaxJobs   int      // default 1

	// TrustedKeys are the keys (name:base64) Nix must find on inputs it
	// substitutes; our own key is added.
	TrustedKeys []string
	// TrustedRequesters, if set, are the only keys whose offers and
	// assignments are taken.
	TrustedRequesters []signature.PublicKey
	// Substituter is the URL of this node's own gateway, and Follow makes it
	// follow a requester's manifest (builders fetch inputs through it).
	Substituter string
	Follow      func(ipnsName string)
	// WorkDir holds GC roots and logs of running builds.
	WorkDir string
	// ResultTimeout bounds how long a result is re-sent without an ack
	// (default 10 min).
	ResultTimeout time.Duration
	// JobStates, if set, is told how many jobs are in each state
	// ("building", "reporting") whenever that changes (for /metrics).
	JobStates func(state string, n int)
}

// Worker claims jobs it can build, builds them with Nix and reports the
// results.
type Worker struct {
	cfg WorkerConfig
	t   *transport

	mu    sync.Mutex
	tasks map[string]*task // by job
	bids  map[string]bid   // recent input counts, by job
}

type task struct {
	job       string
	requester string
	lease     int64
	reporting bool // built (or failed); the result is being sent
	acked     chan struct{}
	ackOnce   sync.Once
}

// states reports the jobs in each state to cfg.JobStates. Call with w.mu
// held.
func (w *Worker) states() {
	if w.cfg.JobStates == nil {
		return
	}
	n := map[string]int{"building": 0, "reporting": 0}
	for _, t := range w.tasks {
		if t.reporting {
			n["reporting"]++
		} else {
			n["building"]++
		}
	}
	for s, k := range n {
		w.cfg.JobStates(s, k)
	}
}

// NewWorker returns a worker.
func NewWorker(ctx context.Context, cfg WorkerConfig) (*Worker, error) {
	if len(cfg.Systems) == 0 {
		return nil, errors.New("builder: no systems")
	}
	if cfg.MaxJobs <= 0 {
		cfg.MaxJobs = 1
	}
	setDefault(&cfg.ResultTimeout, 10*time.Minute)
	if err := os.MkdirAll(cfg.WorkDir, 0o700); err != nil {
		return nil, fmt.Errorf("builder: work dir: %w", err)
	}
	key := cfg.SignKey
	t, err := newTransport(ctx, cfg.Node.API, cfg.Network, &key)
	if err != nil {
		return nil, err
	}
	return &Worker{cfg: cfg, t: t, tasks: map[string]*task{}, bids: map[string]bid{}}, nil
}

// Run takes jobs until ctx ends.
func (w *Worker) Run(ctx context.Context) error {
	slog.Info("builder ready", "network", w.cfg.Network, "systems", w.cfg.Systems, "features", w.cfg.Features, "maxJobs", w.cfg.MaxJobs)
	w.mu.Lock()
	w.states() // zeros, so that /metrics shows the states from the start
	w.mu.Unlock()
	return w.t.listen(ctx, func(m Message) { w.handle(ctx, m) })
}

func (w *Worker) handle(ctx context.Context, m Message) {
	switch m.Kind {
	case KindOffer, KindAssign, KindAck:
	default:
		return // builders' messages
	}
	if m.Kind != KindOffer && m.To != w.t.self {
		return
	}
	if m.From != m.Requester {
		slog.Warn("builds: message rejected", "kind", m.Kind, "from", m.From, "err", "sent by someone other than the job's requester")
		return
	}
	if len(w.cfg.TrustedRequesters) > 0 {
		if _, err := m.SignedBy(w.cfg.TrustedRequesters); err != nil {
			slog.Warn("builds: message rejected", "kind", m.Kind, "from", m.From, "err", err)
			return
		}
	}
	switch m.Kind {
	case KindOffer:
		w.offer(ctx, m)
	case KindAssign:
		w.assigned(ctx, m)
	case KindAck:
		w.mu.Lock()
		t := w.tasks[m.Job]
		w.mu.Unlock()
		if t != nil && t.lease == m.Lease {
			if !m.OK {
				slog.Warn("builds: result refused by requester", "job", m.Job, "reason", m.Reason)
			}
			t.ackOnce.Do(func() { close(t.acked) })
		}
	}
}

func (w *Worker) offer(ctx context.Context, m Message) {
	if !compatible(m.System, m.Features, w.cfg.Systems, w.cfg.Features, w.cfg.Mandatory) {
		return
	}
	w.mu.Lock()
	_, busy := w.tasks[m.Job]
	full := len(w.tasks) >= w.cfg.MaxJobs
	n := len(w.tasks)
	w.mu.Unlock()
	if busy || full {
		return
	}
	w.t.sendLogged(ctx, Message{Kind: KindClaim, Job: m.Job, Requester: m.Requester,
		Systems: w.cfg.Systems, Supports: w.cfg.Features, Have: w.have(ctx, m), Running: n})
}

// bid is how many of a job's offered inputs the store held, and when that
// was counted.
type bid struct {
	have int
	at   time.Time
}

// bidTTL is how long a count is reused: offers are re-sent every few
// seconds, and each count runs nix-store in the message loop.
const bidTTL = 10 * time.Second

// have counts the offered inputs our store already holds.
func (w *Worker) have(ctx context.Context, m Message) int {
	if len(m.Inputs) == 0 {
		return 0
	}
	now := time.Now()
	w.mu.Lock()
	b, ok := w.bids[m.Job]
	w.mu.Unlock()
	if ok && now.Sub(b.at) < bidTTL {
		return b.have
	}
	invalid, err := w.cfg.Store.Invalid(ctx, m.Inputs)
	if err != nil {
		slog.Warn("builds: check inputs", "job", m.Job, "err", err)
		return 0
	}
	have := len(m.Inputs) - len(invalid)
	w.mu.Lock()
	for job, old := range w.bids {
		if now.Sub(old.at) >= bidTTL {
			delete(w.bids, job)
		}
	}
	w.bids[m.Job] = bid{have: have, at: now}
	w.mu.Unlock()
	return have
}

func (w *Worker) assigned(ctx context.Context, m Message) {
	w.mu.Lock()
	t, ok := w.tasks[m.Job]
	switch {
	case ok:
		// A re-sent assignment (or a new lease on a job still here): keep
		// building, answer with a heartbeat.
		t.lease = max(t.lease, m.Lease)
	case len(w.tasks) >= w.cfg.MaxJobs:
		w.mu.Unlock()
		w.t.sendLogged(ctx, Message{Kind: KindRelease, Job: m.Job, Requester: m.Requester, Lease: m.Lease})
		return
	default:
		t = &task{job: m.Job, requester: m.Requester, lease: m.Lease, acked: make(chan struct{})}
		w.tasks[m.Job] = t
		w.states()
	}
	w.mu.Unlock()
	w.t.sendLogged(ctx, Message{Kind: KindHeartbeat, Job: m.Job, Requester: m.Requester, Lease: m.Lease})
	if ok {
		return
	}
	go w.work(ctx, t, m)
}

// work builds one job and reports it, heartbeating until the requester has
// the result.
func (w *Worker) work(ctx context.Context, t *task, m Message) {
	defer func() {
		w.mu.Lock()
		delete(w.tasks, t.job)
		w.states()
		w.mu.Unlock()
	}()
	hb := time.Duration(m.HeartbeatMillis) * time.Millisecond
	if hb <= 0 {
		hb = 10 * time.Second
	}
	log := &logBuffer{}
	hctx, stopHB := context.WithCancel(ctx)
	defer stopHB()
	go func() {
		tk := time.NewTicker(hb)
		defer tk.Stop()
		for {
			select {
			case <-hctx.Done():
				return
			case <-tk.C:
				w.t.sendLogged(hctx, Message{Kind: KindHeartbeat, Job: t.job, Requester: t.requester, Lease: t.lease}.withLog(log.tail(2048)))
			}
		}
	}()

	res := w.build(ctx, t, m, log)
	w.mu.Lock()
	t.reporting = true
	w.states()
	w.mu.Unlock()
	logCID, err := w.storeLog(ctx, t.job, log.bytes())
	if err != nil {
		slog.Warn("builds: store log", "job", t.job, "err", err)
	} else {
		res.Log = logCID.String()
	}
	slog.Info("builds: result", "job", t.job, "status", res.Status, "err", res.Error)
	deadline := time.After(w.cfg.ResultTimeout)
	for {
		res.Lease = t.lease
		w.t.sendLogged(ctx, res)
		select {
		case <-t.acked:
			return
		case <-ctx.Done():
			return
		case <-deadline:
			slog.Warn("builds: requester never acknowledged the result", "job", t.job, "requester", t.requester)
			return
		case <-time.After(hb):
		}
	}
}

// build fetches the job's .drv closure through our gateway, builds it and
// publishes the outputs. Its result is a message ready to send.
func (w *Worker) build(ctx context.Context, t *task, m Message, log *logBuffer) Message {
	res := Message{Kind: KindResult, Job: t.job, Requester: t.requester}
	fail := func(status string, err error) Message {
		res.Status, res.Error = status, err.Error()
		fmt.Fprintf(log, "nixipfs builder: %v\n", err)
		return res
	}
	slog.Info("builds: building", "job", t.job, "requester", t.requester, "lease", t.lease)
	fmt.Fprintf(log, "nixipfs builder: building %s for %s\n", t.job, t.requester)
	if m.Manifest != "" && w.cfg.Follow != nil {
		w.cfg.Follow(m.Manifest)
	}
	if err := w.waitServed(ctx, []string{t.job}, time.Minute); err != nil {
		return fail(StatusError, err)
	}
	// Signatures stay checked: .drv files and sources need none because
	// they are content-addressed (Nix checks the content against the path),
	// and anything else in the closure must be signed by a key we trust. A
	// requester cannot slip a forged copy of some other path into our store,
	// where other requesters' builds would use it.
	trusted := append(slices.Clone(w.cfg.TrustedKeys), w.cfg.SignKey.ToPublicKey().String())
	if err := w.cfg.Store.CopyFrom(ctx, w.cfg.Substituter, []string{t.job}, false, trusted); err != nil {
		return fail(StatusError, fmt.Errorf("fetch %s: %w", t.job, err))
	}
	// Fetch the inputs first, so that one not published yet is an error
	// here rather than a build of it by Nix.
	missing, err := w.cfg.Store.Invalid(ctx, m.Inputs)
	if err != nil {
		return fail(StatusError, err)
	}
	if len(missing) > 0 {
		if err := w.waitServed(ctx, missing, time.Minute); err != nil {
			return fail(StatusError, err)
		}
		if err := w.cfg.Store.CopyFrom(ctx, w.cfg.Substituter, missing, false, trusted); err != nil {
			return fail(StatusError, fmt.Errorf("fetch inputs: %w", err))
		}
	}
	hash, _ := storePathHash(t.job)
	root := filepath.Join(w.cfg.WorkDir, "root-"+hash)
	defer removeRoots(root)
	outs, err := w.cfg.Store.Build(ctx, t.job, nixstore.BuildOptions{
		Substituters:   []string{w.cfg.Substituter},
		TrustedKeys:    trusted,
		SystemFeatures: w.cfg.Features,
		GCRoot:         root,
		Log:            log,
	})
	var be *nixstore.BuildError
	if errors.As(err, &be) {
		return fail(StatusFailed, err)
	}
	if err != nil {
		return fail(StatusError, err)
	}
	pub := &publish.Publisher{Node: w.cfg.Node, Store: w.cfg.Store, Manifest: w.cfg.Manifest, SignKey: &w.cfg.SignKey}
	results, err := pub.Publish(ctx, outs...)
	if err != nil {
		return fail(StatusError, fmt.Errorf("publish outputs: %w", err))
	}
	for _, r := range results {
		if slices.Contains(outs, r.StorePath) {
			res.Outputs = append(res.Outputs, Output{Path: r.StorePath, PathInfo: r.PathInfo.String()})
		}
	}
	fmt.Fprintf(log, "nixipfs builder: built and published %d outputs\n", len(res.Outputs))
	res.Status = StatusBuilt
	return res
}

// waitServed waits until our gateway has the paths' narinfos (it follows
// the requester's manifest, and sees a new version within about a second).
func (w *Worker) waitServed(ctx context.Context, paths []string, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	for _, p := range paths {
		hash, _ := storePathHash(p)
		url := w.cfg.Substituter + "/" + hash + ".narinfo"
		for {
			req, _ := http.NewRequestWithContext(ctx, http.MethodHead, url, nil)
			resp, err := http.DefaultClient.Do(req)
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("the requester's manifest did not list %s within %s", p, limit)
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	return nil
}

// storeLog adds a build log to IPFS, pins it and records it in our manifest
// under the .drv (our gateway serves it at log/<drv>).
func (w *Worker) storeLog(ctx context.Context, drv string, data []byte) (cid.Cid, error) {
	api := w.cfg.Node.API
	p, err := api.Unixfs().Add(ctx, files.NewBytesFile(data),
		options.Unixfs.CidVersion(1), options.Unixfs.RawLeaves(true), options.Unixfs.Pin(true, ""))
	if err != nil {
		return cid.Undef, fmt.Errorf("add log: %w", err)
	}
	c := p.RootCid()
	hash, _ := storePathHash(drv)
	if _, err := w.cfg.Manifest.Update(ctx, map[string]cid.Cid{manifests.KeyLog(hash): c}, nil); err != nil {
		return c, err
	}
	if _, err := w.cfg.Manifest.Publish(ctx); err != nil {
		return c, err
	}
	return c, nil
}

// removeRoots drops the GC roots of a build (nix-store names them root or
// root-<output>).
func removeRoots(root string) {
	matches, _ := filepath.Glob(root + "*")
	for _, p := range matches {
		os.Remove(p)
	}
}

// logBuffer collects a build log (bounded: the tail is kept).
type logBuffer struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	dropped int64 // bytes cut from the front
}

const maxLog = 8 << 20

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.buf.Len()+len(p) > maxLog {
		// Keep the last maxLog/2 bytes: the end of a log says why it failed.
		keep := b.buf.Bytes()[b.buf.Len()-min(b.buf.Len(), maxLog/2):]
		b.dropped += int64(b.buf.Len() - len(keep))
		nb := append([]byte(nil), keep...)
		b.buf.Reset()
		b.buf.Write(nb)
	}
	b.buf.Write(p)
	return len(p), nil
}

func (b *logBuffer) bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.dropped > 0 {
		return append([]byte(fmt.Sprintf("[… first %d bytes of the log dropped …]\n", b.dropped)), b.buf.Bytes()...)
	}
	return bytes.Clone(b.buf.Bytes())
}

// logTail is the end of a log and its offset in the whole log.
type logTail struct {
	text   string
	offset int64
}

func (b *logBuffer) tail(n int) logTail {
	b.mu.Lock()
	defer b.mu.Unlock()
	data := b.buf.Bytes()
	k := len(data) - min(n, len(data))
	return logTail{text: string(data[k:]), offset: b.dropped + int64(k)}
}

func (m Message) withLog(t logTail) Message {
	m.LogTail, m.LogOffset = t.text, t.offset
	return m
}

var _ io.Writer = (*logBuffer)(nil)
