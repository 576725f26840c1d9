package builder

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	bpath "github.com/ipfs/boxo/path"
	"github.com/ipfs/go-cid"
	"github.com/ipfs/kubo/core/coreiface/options"
	"github.com/nix-community/go-nix/pkg/narinfo/signature"

	"github.com/nixipfs/nixipfs/internal/ipfsnode"
	"github.com/nixipfs/nixipfs/internal/publish"
	"github.com/nixipfs/nixipfs/manifests"
)

// RequesterConfig configures a Requester.
type RequesterConfig struct {
	Node     *ipfsnode.Node // online
	Network  string
	Queue    *Queue
	Manifest *manifests.Local
	// TrustedBuilders are the keys a builder must sign its claims and
	// results with; outputs must carry a signature by one of them too.
	TrustedBuilders []signature.PublicKey
	// SignKey, if set, signs our offers and assignments (builders may
	// insist on it).
	SignKey *signature.SecretKey

	Lease         time.Duration // default 60 s
	Heartbeat     time.Duration // default 10 s
	OfferInterval time.Duration // re-send offers and assignments; default 5 s
	ClaimWindow   time.Duration // gather claims this long before choosing; default 1 s
	MaxAttempts   int           // infrastructure failures before a job fails; default 5
	// Unclaimed is how long an offer may go unclaimed before it is reported
	// (default 30 s).
	Unclaimed time.Duration
	// Progress, if set, receives every change of a job.
	Progress func(Event)
	// BuildLog, if set, receives the build logs as builders stream them
	// (the tails their heartbeats carry; a gap is marked).
	BuildLog func(job, text string)
	// Until, if set, are the jobs Run waits for; other queued jobs are
	// worked on meanwhile. Empty: all of them.
	Until []string
}

// Event is a change of a job, for progress output.
type Event struct {
	Job     string
	State   State
	Builder string // peer id, when assigned or done
	Note    string // what happened, for people
}

// claim is a builder's bid for an offered job.
type claim struct {
	from    string
	key     string
	have    int
	running int
	at      time.Time
}

// Requester offers the queue's runnable jobs on the network, leases each to
// one builder, and takes the results it can verify.
type Requester struct {
	cfg  RequesterConfig
	t    *transport
	name string // our manifest's IPNS name

	jobs      map[string]*Job
	claims    map[string][]claim
	confirmed map[string]bool      // lease holder has answered the assignment
	leaseEnd  map[string]time.Time // when the current lease runs out
	nextSend  map[string]time.Time // next offer or assignment re-send
	offered   map[string]time.Time // since when the job is offered
	reported  map[string]bool      // unclaimed offer reported
	accepting map[string]bool      // a result is being verified
	accepted  chan acceptance
	logged    map[string]int64 // how much of each job's log BuildLog has had
}

type acceptance struct {
	m       Message
	results []Output
	err     error
}

// NewRequester returns a requester for the jobs in cfg.Queue.
func NewRequester(ctx context.Context, cfg RequesterConfig) (*Requester, error) {
	if len(cfg.TrustedBuilders) == 0 {
		return nil, fmt.Errorf("requester: no trusted builder keys: results could never be accepted")
	}
	setDefault(&cfg.Lease, 60*time.Second)
	setDefault(&cfg.Heartbeat, 10*time.Second)
	setDefault(&cfg.OfferInterval, 5*time.Second)
	setDefault(&cfg.ClaimWindow, time.Second)
	setDefault(&cfg.Unclaimed, 30*time.Second)
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 5
	}
	t, err := newTransport(ctx, cfg.Node.API, cfg.Network, cfg.SignKey)
	if err != nil {
		return nil, err
	}
	name, err := cfg.Manifest.Name(ctx)
	if err != nil {
		return nil, fmt.Errorf("requester: %w", err)
	}
	return &Requester{cfg: cfg, t: t, name: name,
		jobs: map[string]*Job{}, claims: map[string][]claim{}, confirmed: map[string]bool{},
		leaseEnd: map[string]time.Time{}, nextSend: map[string]time.Time{}, offered: map[string]time.Time{},
		reported: map[string]bool{}, accepting: map[string]bool{}, accepted: make(chan acceptance, 16),
		logged: map[string]int64{}}, nil
}

func setDefault(d *time.Duration, def time.Duration) {
	if *d <= 0 {
		*d = def
	}
}

// Run works the queue until every job in it is final or ctx ends.
func (r *Requester) Run(ctx context.Context) error {
	jobs, err := r.cfg.Queue.List()
	if err != nil {
		return err
	}
	now := time.Now()
	for _, j := range jobs {
		r.jobs[j.Drv] = j
		if j.State == Assigned {
			// Restarted mid-lease: give the holder a full lease to be heard
			// from (it keeps re-sending its result until we ack it).
			r.leaseEnd[j.Drv] = now.Add(r.cfg.Lease)
		}
		if j.State == Offered {
			r.offered[j.Drv] = now
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	in := make(chan Message, 256)
	listenErr := make(chan error, 1)
	go func() {
		listenErr <- r.t.listen(ctx, func(m Message) {
			select {
			case in <- m:
			case <-ctx.Done():
			}
		})
	}()
	tick := min(r.cfg.OfferInterval/4, 100*time.Millisecond)
	t := time.NewTicker(max(tick, 20*time.Millisecond))
	defer t.Stop()
	for {
		if err := r.step(ctx, time.Now()); err != nil {
			return err
		}
		if r.allFinal() {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-listenErr:
			if err == nil {
				// listen ends quietly when ctx does; the caller needs to
				// know why (a --timeout is not a finished build).
				err = ctx.Err()
			}
			return err
		case m := <-in:
			if err := r.handle(ctx, m, time.Now()); err != nil {
				return err
			}
		case a := <-r.accepted:
			if err := r.finishAccept(ctx, a); err != nil {
				return err
			}
		case <-t.C:
		}
	}
}

func (r *Requester) allFinal() bool {
	for _, j := range r.jobs {
		if len(r.cfg.Until) > 0 && !slices.Contains(r.cfg.Until, j.Drv) {
			continue
		}
		if !j.Final() {
			return false
		}
	}
	return len(r.accepting) == 0
}

// Jobs returns a snapshot of the jobs, in queue order.
func (r *Requester) Jobs() []Job {
	out := make([]Job, 0, len(r.jobs))
	for _, j := range r.jobs {
		out = append(out, *j)
	}
	slices.SortFunc(out, func(a, b Job) int { return a.Queued.Compare(b.Queued) })
	return out
}

// set moves a job to a state, records it durably and reports it.
func (r *Requester) set(j *Job, s State, note string) error {
	j.State = s
	j.Updated = time.Now().UTC()
	if err := r.cfg.Queue.Save(j); err != nil {
		return err
	}
	if r.cfg.Progress != nil {
		r.cfg.Progress(Event{Job: j.Drv, State: s, Builder: j.Builder, Note: note})
	}
	return nil
}

// step advances every job by the clock: waiting jobs whose inputs are built
// are offered, offers and assignments are re-sent, claims are decided and
// expired leases re-offered.
func (r *Requester) step(ctx context.Context, now time.Time) error {
	for _, j := range r.sorted() {
		switch j.State {
		case Waiting:
			if dep := r.failedDep(j); dep != "" {
				j.Error = "input " + dep + " failed"
				if err := r.set(j, Failed, j.Error); err != nil {
					return err
				}
				continue
			}
			if r.depsBuilt(j) {
				r.offered[j.Drv] = now
				if err := r.set(j, Offered, "runnable: offered"); err != nil {
					return err
				}
				r.sendOffer(ctx, j, now)
			}
		case Offered:
			if now.Before(j.RetryAt) {
				continue
			}
			if cs := r.claims[j.Drv]; len(cs) > 0 && now.Sub(cs[0].at) >= r.cfg.ClaimWindow {
				if err := r.assign(ctx, j, now); err != nil {
					return err
				}
				continue
			}
			if !now.Before(r.nextSend[j.Drv]) {
				r.sendOffer(ctx, j, now)
			}
			if since, ok := r.offered[j.Drv]; ok && !r.reported[j.Drv] && now.Sub(since) > r.cfg.Unclaimed {
				r.reported[j.Drv] = true
				r.report(j, fmt.Sprintf("no builder has claimed it for %s (needs %s)", now.Sub(since).Round(time.Second), j.Needs()))
			}
		case Assigned:
			if r.accepting[j.Drv] {
				continue
			}
			if end, ok := r.leaseEnd[j.Drv]; ok && now.After(end) {
				slog.Warn("builds: lease expired", "job", j.Drv, "builder", j.Builder, "lease", j.Lease)
				if err := r.retry(j, now, "lease "+fmt.Sprint(j.Lease)+" on "+j.Builder+" expired"); err != nil {
					return err
				}
				continue
			}
			if !r.confirmed[j.Drv] && !now.Before(r.nextSend[j.Drv]) {
				r.nextSend[j.Drv] = now.Add(r.cfg.OfferInterval)
				r.sendAssign(ctx, j)
			}
		}
	}
	return nil
}

// maxBidInputs bounds the input paths an offer lists for bids, so that an
// offer stays well under MaxMessage (a store path is at most 211 bytes).
const maxBidInputs = 200

// maxAssignInputs bounds the inputs an assignment names for the builder to
// fetch first; Nix fetches any further ones itself as it builds.
const maxAssignInputs = 250

func (r *Requester) sendOffer(ctx context.Context, j *Job, now time.Time) {
	r.nextSend[j.Drv] = now.Add(r.cfg.OfferInterval)
	r.t.sendLogged(ctx, Message{Kind: KindOffer, Job: j.Drv, Requester: r.t.self,
		System: j.System, Features: j.Features, Inputs: j.Inputs[:min(len(j.Inputs), maxBidInputs)], Manifest: r.name})
}

// Needs describes what a builder needs to build j.
func (j *Job) Needs() string {
	if len(j.Features) == 0 {
		return j.System
	}
	return j.System + " with features " + strings.Join(j.Features, ",")
}

func (r *Requester) report(j *Job, note string) {
	slog.Info("builds: job", "job", j.Drv, "state", j.State, "note", note)
	if r.cfg.Progress != nil {
		r.cfg.Progress(Event{Job: j.Drv, State: j.State, Builder: j.Builder, Note: note})
	}
}

func (r *Requester) sorted() []*Job {
	out := make([]*Job, 0, len(r.jobs))
	for _, j := range r.jobs {
		out = append(out, j)
	}
	slices.SortFunc(out, func(a, b *Job) int { return strings.Compare(a.Drv, b.Drv) })
	return out
}

func (r *Requester) depsBuilt(j *Job) bool {
	for _, d := range j.Deps {
		if dj, ok := r.jobs[d]; ok && dj.State != Built {
			return false
		}
	}
	return true
}

func (r *Requester) failedDep(j *Job) string {
	for _, d := range j.Deps {
		if dj, ok := r.jobs[d]; ok && dj.State == Failed {
			return d
		}
	}
	return ""
}

// assign leases j to the best claimant: the one already holding most of its
// inputs (cache-aware placement), then the least busy, then the first.
func (r *Requester) assign(ctx context.Context, j *Job, now time.Time) error {
	cs := slices.Clone(r.claims[j.Drv])
	slices.SortStableFunc(cs, func(a, b claim) int {
		if a.have != b.have {
			return b.have - a.have
		}
		return a.running - b.running
	})
	best := cs[0]
	firstClaim := r.claims[j.Drv][0].at
	delete(r.claims, j.Drv)
	j.Builder = best.from
	j.Lease++
	r.confirmed[j.Drv] = false
	r.leaseEnd[j.Drv] = now.Add(r.cfg.Lease)
	r.nextSend[j.Drv] = now.Add(r.cfg.OfferInterval)
	note := fmt.Sprintf("assigned to %s (key %s, holds %d of %d inputs; %d claims)", best.from, best.key, best.have, len(j.Inputs), len(cs))
	// wait is the claim latency: from the (latest) offer to assignment.
	slog.Info("builds: placement", "job", j.Drv, "builder", best.from, "have", best.have, "claims", len(cs),
		"wait", now.Sub(r.offered[j.Drv]), "firstClaim", firstClaim.Sub(r.offered[j.Drv]))
	if err := r.set(j, Assigned, note); err != nil {
		return err
	}
	r.sendAssign(ctx, j)
	return nil
}

func (r *Requester) sendAssign(ctx context.Context, j *Job) {
	r.t.sendLogged(ctx, Message{Kind: KindAssign, Job: j.Drv, Requester: r.t.self, To: j.Builder, Lease: j.Lease,
		Manifest: r.name, Inputs: j.Inputs[:min(len(j.Inputs), maxAssignInputs)], LeaseMillis: r.cfg.Lease.Milliseconds(), HeartbeatMillis: r.cfg.Heartbeat.Milliseconds()})
}

// retry re-offers j after an infrastructure failure, with backoff, or fails
// it after too many.
func (r *Requester) retry(j *Job, now time.Time, why string) error {
	j.Attempts++
	j.Builder = ""
	delete(r.claims, j.Drv)
	if j.Attempts >= r.cfg.MaxAttempts {
		j.Error = fmt.Sprintf("%s (attempt %d of %d)", why, j.Attempts, r.cfg.MaxAttempts)
		return r.set(j, Failed, j.Error)
	}
	backoff := min(time.Duration(1<<(j.Attempts-1))*time.Second, time.Minute)
	j.RetryAt = now.Add(backoff).UTC()
	r.offered[j.Drv] = j.RetryAt
	r.reported[j.Drv] = false
	r.nextSend[j.Drv] = time.Time{}
	return r.set(j, Offered, fmt.Sprintf("%s; re-offered in %s", why, backoff))
}

// handle takes one message from the network.
func (r *Requester) handle(ctx context.Context, m Message, now time.Time) error {
	if m.Requester != r.t.self {
		return nil // another requester's job
	}
	switch m.Kind {
	case KindOffer, KindAssign, KindAck:
		return nil // requesters' messages
	}
	reject := func(why string) error {
		slog.Warn("builds: message rejected", "kind", m.Kind, "from", m.From, "job", m.Job, "err", why)
		return nil
	}
	key, err := m.SignedBy(r.cfg.TrustedBuilders)
	if err != nil {
		return reject(err.Error())
	}
	j, ok := r.jobs[m.Job]
	if !ok {
		return reject("no such job")
	}
	holder := j.Builder == m.From && j.Lease == m.Lease && m.Lease != 0
	switch m.Kind {
	case KindClaim:
		if j.State != Offered || now.Before(j.RetryAt) {
			return nil // late or early claim: harmless
		}
		if !compatible(j.System, j.Features, m.Systems, m.Supports, nil) {
			return reject("claimant cannot build " + j.Needs())
		}
		for _, c := range r.claims[j.Drv] {
			if c.from == m.From {
				return nil
			}
		}
		r.claims[j.Drv] = append(r.claims[j.Drv], claim{from: m.From, key: key.Name, have: m.Have, running: m.Running, at: now})
	case KindHeartbeat:
		if j.State != Assigned || !holder {
			return reject("heartbeat from a builder that does not hold the lease")
		}
		if !r.confirmed[j.Drv] {
			r.confirmed[j.Drv] = true
			r.report(j, "building on "+m.From)
		}
		r.leaseEnd[j.Drv] = now.Add(r.cfg.Lease)
		r.streamLog(j.Drv, m)
	case KindRelease:
		if j.State != Assigned || !holder {
			return reject("release from a builder that does not hold the lease")
		}
		j.Builder = ""
		r.offered[j.Drv] = now
		r.nextSend[j.Drv] = time.Time{}
		return r.set(j, Offered, m.From+" gave the job back: re-offered")
	case KindResult:
		if j.Final() && holder {
			// Our ack was lost: say it again.
			r.ack(ctx, m, true, "")
			return nil
		}
		if j.State != Assigned || !holder {
			r.ack(ctx, m, false, "not the lease holder")
			return reject("result from a builder that does not hold the lease")
		}
		if r.accepting[j.Drv] {
			return nil // a re-sent result; the first is being verified
		}
		r.accepting[j.Drv] = true
		go func() {
			res, err := r.accept(ctx, j.Drv, j.Outputs, m)
			select {
			case r.accepted <- acceptance{m: m, results: res, err: err}:
			case <-ctx.Done():
			}
		}()
	}
	return nil
}

// streamLog passes on the part of a heartbeat's log tail not passed on yet.
func (r *Requester) streamLog(job string, m Message) {
	if r.cfg.BuildLog == nil || m.LogTail == "" {
		return
	}
	done := r.logged[job]
	end := m.LogOffset + int64(len(m.LogTail))
	if end <= done {
		return
	}
	from := max(done, m.LogOffset)
	if m.LogOffset > done {
		r.cfg.BuildLog(job, fmt.Sprintf("[… %d bytes of log not received …]\n", m.LogOffset-done))
	}
	r.cfg.BuildLog(job, m.LogTail[from-m.LogOffset:])
	r.logged[job] = end
}

func (r *Requester) ack(ctx context.Context, m Message, ok bool, reason string) {
	r.t.sendLogged(ctx, Message{Kind: KindAck, Job: m.Job, Requester: r.t.self, To: m.From, Lease: m.Lease, OK: ok, Reason: reason})
}

// accept fetches and verifies a result: for a build, every output's record
// (signed by a trusted builder key) and DAG (rendering to its NarHash); for
// both builds and failures, the log. Nothing is recorded unless all of it
// checks out.
func (r *Requester) accept(ctx context.Context, drv string, outputs []string, m Message) ([]Output, error) {
	api := r.cfg.Node.API
	extra := map[string]cid.Cid{}
	if m.Log != "" {
		c, err := cid.Decode(m.Log)
		if err != nil {
			return nil, fmt.Errorf("log CID %q: %w", m.Log, err)
		}
		pctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		err = api.Pin().Add(pctx, bpath.FromCid(c), options.Pin.Recursive(true))
		cancel()
		if err != nil {
			return nil, fmt.Errorf("fetch log %s: %w", c, err)
		}
		hash, _ := storePathHash(drv)
		extra[manifests.KeyLog(hash)] = c
	}
	if m.Status != StatusBuilt {
		if len(extra) > 0 {
			if _, err := r.cfg.Manifest.Update(ctx, extra, nil); err != nil {
				return nil, err
			}
			if _, err := r.cfg.Manifest.Publish(ctx); err != nil {
				return nil, err
			}
		}
		return nil, nil
	}
	want := map[string]cid.Cid{}
	for _, o := range m.Outputs {
		c, err := cid.Decode(o.PathInfo)
		if err != nil {
			return nil, fmt.Errorf("output %s: PathInfo CID %q: %w", o.Path, o.PathInfo, err)
		}
		want[o.Path] = c
	}
	got := make([]string, 0, len(want))
	for p := range want {
		got = append(got, p)
	}
	slices.Sort(got)
	if !slices.Equal(got, outputs) {
		return nil, fmt.Errorf("result names outputs %v, the derivation has %v", got, outputs)
	}
	actx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	if _, err := publish.Adopt(actx, r.cfg.Node, r.cfg.Manifest, want, r.cfg.TrustedBuilders, extra); err != nil {
		return nil, err
	}
	return m.Outputs, nil
}

func (r *Requester) finishAccept(ctx context.Context, a acceptance) error {
	m := a.m
	j := r.jobs[m.Job]
	delete(r.accepting, m.Job)
	now := time.Now()
	if a.err != nil {
		slog.Warn("builds: result refused", "job", m.Job, "builder", m.From, "err", a.err)
		r.ack(ctx, m, false, a.err.Error())
		return r.retry(j, now, "result from "+m.From+" refused: "+a.err.Error())
	}
	r.ack(ctx, m, true, "")
	j.Log = m.Log
	switch m.Status {
	case StatusBuilt:
		j.Results = a.results
		return r.set(j, Built, "built by "+m.From)
	case StatusFailed:
		j.Error = m.Error
		return r.set(j, Failed, "build failed on "+m.From+": "+m.Error)
	default:
		return r.retry(j, now, "error on "+m.From+": "+m.Error)
	}
}
