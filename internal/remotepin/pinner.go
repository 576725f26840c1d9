package remotepin

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"slices"
	"time"

	"github.com/ipfs/go-cid"
	coreiface "github.com/ipfs/kubo/core/coreiface"

	"github.com/nixipfs/nixipfs/internal/atomicfile"
	"github.com/nixipfs/nixipfs/internal/backoff"
	"github.com/nixipfs/nixipfs/manifests"
)

// Entry states, as `nixipfs status` shows them.
const (
	StatePending = "pending" // recorded here, not yet sent to the remote
	StatePinning = "pinning" // the remote accepted it and is fetching
	StatePinned  = "pinned"  // the remote holds it (Holders peers)
	StateFailed  = "failed"  // the last attempt failed; retried at NextTry
)

// Entry is one recorded path's pins on one remote: its PathInfo and its
// DAG root. The entry with an empty Key is the manifest itself (its
// Version, pinned recursively, which holds every HAMT shard).
type Entry struct {
	Remote    string    `json:"remote"`
	Key       string    `json:"key"` // the manifest's store-path key
	StorePath string    `json:"storePath,omitempty"`
	PathInfo  string    `json:"pathInfo"` // for the manifest entry, its Version
	Root      string    `json:"root,omitempty"`
	State     string    `json:"state"`
	Holders   int       `json:"holders"`
	Error     string    `json:"error,omitempty"`
	Attempts  int       `json:"attempts,omitempty"`
	NextTry   time.Time `json:"nextTry,omitzero"`
	Updated   time.Time `json:"updated"`
	// Old are the manifest versions this one replaces, unpinned once this
	// one is pinned.
	Old []string `json:"old,omitempty"`
}

// ManifestEntry tells the manifest's own entry from the paths'.
func (e Entry) ManifestEntry() bool { return e.Key == "" }

// stateFile is the pinner's durable state.
type stateFile struct {
	// Scanned is the manifest version whose store paths all have entries
	// on each of Remotes (a remote configured later starts from scratch).
	Scanned string   `json:"scanned,omitempty"`
	Remotes []string `json:"remotes,omitempty"`
	Entries []Entry  `json:"entries"`
}

// StateFile is where the pinner keeps its state in a data dir.
func StateFile(dataDir string) string { return filepath.Join(dataDir, "remote-pins.json") }

func readState(dataDir string) (stateFile, error) {
	var st stateFile
	b, err := os.ReadFile(StateFile(dataDir))
	if errors.Is(err, fs.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return st, fmt.Errorf("read remote pin state: %w", err)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("remote pin state %s: %w", StateFile(dataDir), err)
	}
	return st, nil
}

// Report is the remote pins' state for `nixipfs status` and the status page.
type Report struct {
	Remotes []string       `json:"remotes"`
	Counts  map[string]int `json:"counts"` // state -> entries
	// Entries lists every entry, those not pinned first (at most
	// reportMax of them).
	Entries   []Entry `json:"entries"`
	Truncated bool    `json:"truncated,omitempty"`
}

const reportMax = 500

// ReadReport reads the state a daemon's pinner keeps in dataDir (nil when
// none was ever kept).
func ReadReport(dataDir string) (*Report, error) {
	st, err := readState(dataDir)
	if err != nil || len(st.Entries) == 0 {
		return nil, err
	}
	r := &Report{Counts: map[string]int{}}
	for _, e := range st.Entries {
		r.Counts[e.State]++
		if !slices.Contains(r.Remotes, e.Remote) {
			r.Remotes = append(r.Remotes, e.Remote)
		}
	}
	es := slices.Clone(st.Entries)
	slices.SortStableFunc(es, func(a, b Entry) int {
		return cmp.Compare(stateOrder(a.State), stateOrder(b.State))
	})
	if len(es) > reportMax {
		es, r.Truncated = es[:reportMax], true
	}
	r.Entries = es
	return r, nil
}

func stateOrder(s string) int {
	return map[string]int{StateFailed: 0, StatePending: 1, StatePinning: 2, StatePinned: 3}[s]
}

// Pinner pins every path of the local manifest on its Remotes, following
// the manifest's versions. Run it in the daemon.
type Pinner struct {
	DataDir string
	API     coreiface.CoreAPI
	Local   *manifests.Local
	Remotes []Remote

	// Interval is how often the manifest and the remotes are looked at
	// (default 1 s); CheckEvery how often a pin the remote is still
	// fetching is asked about (default 2 s).
	Interval   time.Duration
	CheckEvery time.Duration
	// RecheckEvery is how often a pinned entry is asked about again
	// (default 10 min).
	RecheckEvery time.Duration
	// ManifestEvery spaces the manifest's own pins: each one makes the
	// remote walk the whole manifest (default 1 min; the first is at once).
	ManifestEvery time.Duration
	// Backoff is the wait before retry n (n >= 1) of a failed pin.
	Backoff func(n int) time.Duration
	// Budget bounds the remote calls of one round (default 64), so that a
	// large manifest is worked through in steps that each save progress.
	Budget int

	now  func() time.Time
	wake chan struct{}
	busy bool // the last round left due work for lack of budget
}

func (p *Pinner) defaults() {
	if p.Interval <= 0 {
		p.Interval = time.Second
	}
	if p.CheckEvery <= 0 {
		p.CheckEvery = 2 * time.Second
	}
	if p.ManifestEvery <= 0 {
		p.ManifestEvery = time.Minute
	}
	if p.RecheckEvery <= 0 {
		p.RecheckEvery = 10 * time.Minute
	}
	if p.Backoff == nil {
		p.Backoff = defaultBackoff
	}
	if p.Budget <= 0 {
		p.Budget = 64
	}
	if p.now == nil {
		p.now = time.Now
	}
	if p.wake == nil {
		p.wake = make(chan struct{}, 1)
	}
}

// defaultBackoff doubles from 2 s up to 10 min.
func defaultBackoff(n int) time.Duration { return backoff.Doubling(2*time.Second, 10*time.Minute, n) }

// Wake makes the next round start now (after a manifest update, say). It
// never blocks; without it, the next round starts within Interval.
func (p *Pinner) Wake() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// Run works rounds until ctx ends.
func (p *Pinner) Run(ctx context.Context) {
	p.defaults()
	t := time.NewTicker(p.Interval)
	defer t.Stop()
	for {
		if err := p.Round(ctx); err != nil && ctx.Err() == nil {
			slog.Warn("remote pins", "err", err)
		}
		if p.busy && ctx.Err() == nil {
			continue // the budget ran out with work left: no pause
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-p.wake:
		}
	}
}

func entryID(remote, key string) string { return remote + "\x00" + key }

// Round adds entries for the paths the manifest gained since the last
// round, then sends due pins and asks about pins in progress, within
// Budget remote calls, and saves the state.
func (p *Pinner) Round(ctx context.Context) error {
	p.defaults()
	st, err := readState(p.DataDir)
	if err != nil {
		// Unreadable state is set aside and rebuilt from the manifest:
		// pins are idempotent, so redoing them costs calls, not copies.
		bad := StateFile(p.DataDir) + ".bad"
		if rerr := os.Rename(StateFile(p.DataDir), bad); rerr != nil {
			return errors.Join(err, rerr)
		}
		slog.Error("remote pins: state unreadable, moved aside; pinning everything again", "file", bad, "err", err)
		st = stateFile{}
	}
	now := p.now().UTC()
	changed := false
	v, err := p.Local.CurrentVersion()
	if err != nil {
		return err
	}
	var known, fresh []Remote
	for _, r := range p.Remotes {
		if slices.Contains(st.Remotes, r.Name()) {
			known = append(known, r)
		} else {
			fresh = append(fresh, r)
		}
	}
	if v.Defined() && (v.String() != st.Scanned || len(fresh) > 0) {
		if len(known) > 0 && v.String() != st.Scanned {
			changes, err := p.pathChanges(ctx, st.Scanned, v)
			if err != nil {
				return err
			}
			p.apply(&st, known, changes, v.String(), now)
		}
		if len(fresh) > 0 {
			changes, err := p.pathChanges(ctx, "", v)
			if err != nil {
				return err
			}
			p.apply(&st, fresh, changes, v.String(), now)
			for _, r := range fresh {
				st.Remotes = append(st.Remotes, r.Name())
			}
		}
		st.Scanned, changed = v.String(), true
	}

	budget := p.Budget
	p.busy = false
	for i := range st.Entries {
		e := &st.Entries[i]
		if budget <= 0 || ctx.Err() != nil {
			p.busy = budget <= 0
			break
		}
		if e.NextTry.After(now) {
			continue
		}
		r := p.remote(e.Remote)
		if r == nil {
			continue // a remote no longer configured: kept, not worked on
		}
		budget--
		changed = true
		p.work(ctx, r, e, now)
	}
	if !changed {
		return nil
	}
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(StateFile(p.DataDir), append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("save remote pin state: %w", err)
	}
	return nil
}

// apply turns the manifest's changes into entries on remotes: a new
// or changed path is pending, a path no longer recorded is dropped (its
// remote pins stay: whether they may go is gc's call, made with the
// remote's count), and the manifest's entry moves to version v.
func (p *Pinner) apply(st *stateFile, remotes []Remote, changes []manifests.Change, v string, now time.Time) {
	gone := map[string]bool{}
	for _, c := range changes {
		if !c.New.Defined() {
			gone[c.Key] = true
		}
	}
	if len(gone) > 0 {
		st.Entries = slices.DeleteFunc(st.Entries, func(e Entry) bool {
			return gone[e.Key] && slices.ContainsFunc(remotes, func(r Remote) bool { return r.Name() == e.Remote })
		})
	}
	byID := map[string]int{}
	for i, e := range st.Entries {
		byID[entryID(e.Remote, e.Key)] = i
	}
	for _, r := range remotes {
		for _, c := range changes {
			if !c.New.Defined() {
				continue
			}
			e := Entry{Remote: r.Name(), Key: c.Key, PathInfo: c.New.String(), State: StatePending, Updated: now}
			if i, ok := byID[entryID(e.Remote, e.Key)]; !ok {
				byID[entryID(e.Remote, e.Key)] = len(st.Entries)
				st.Entries = append(st.Entries, e)
			} else if st.Entries[i].PathInfo != e.PathInfo {
				st.Entries[i] = e
			}
		}
		p.newVersion(st, byID, r.Name(), v, now)
	}
}

// newVersion points remote's manifest entry at version v, keeping the
// version pinned so far to unpin once v is pinned.
func (p *Pinner) newVersion(st *stateFile, byID map[string]int, remote, v string, now time.Time) {
	i, ok := byID[entryID(remote, "")]
	if !ok {
		byID[entryID(remote, "")] = len(st.Entries)
		st.Entries = append(st.Entries, Entry{Remote: remote, PathInfo: v, State: StatePending, Updated: now})
		return
	}
	e := &st.Entries[i]
	if e.PathInfo == v {
		return
	}
	if e.State != StatePending {
		// Held, or perhaps sent: dropped once v is held.
		e.Old = append(e.Old, e.PathInfo)
	}
	next := e.Updated.Add(p.ManifestEvery)
	*e = Entry{Remote: remote, PathInfo: v, State: StatePending, Updated: now, Old: e.Old, NextTry: next}
}

// pathChanges lists the store-path keys added, changed or removed from
// version from (all of them, as added, when from is empty or unreadable)
// to to.
func (p *Pinner) pathChanges(ctx context.Context, from string, to cid.Cid) ([]manifests.Change, error) {
	cur, err := manifests.LoadManifest(ctx, p.API.Dag(), to)
	if err != nil {
		return nil, fmt.Errorf("remote pins: %w", err)
	}
	old := manifests.EmptyManifest(p.API.Dag())
	if fc, err := cid.Decode(from); err == nil {
		if m, err := manifests.LoadManifest(ctx, p.API.Dag(), fc); err == nil {
			old = m
		} else {
			slog.Debug("remote pins: previous manifest unreadable, rescanning", "err", err)
		}
	}
	changes, err := manifests.DiffManifests(ctx, old, cur)
	if err != nil {
		return nil, fmt.Errorf("remote pins: %w", err)
	}
	var out []manifests.Change
	for _, c := range changes {
		if manifests.IsStorePathKey(c.Key) {
			out = append(out, c)
		}
	}
	return out, nil
}

func (p *Pinner) remote(name string) Remote {
	for _, r := range p.Remotes {
		if r.Name() == name {
			return r
		}
	}
	return nil
}

// cids are what an entry pins: the manifest version, or a path's PathInfo
// and DAG root.
func (p *Pinner) cids(ctx context.Context, e *Entry) ([]cid.Cid, error) {
	pi, err := cid.Decode(e.PathInfo)
	if err != nil {
		return nil, fmt.Errorf("entry %q: %w", e.PathInfo, err)
	}
	if e.ManifestEntry() {
		return []cid.Cid{pi}, nil
	}
	if e.Root == "" {
		rec, err := manifests.Load(ctx, p.API, pi)
		if err != nil {
			return nil, err
		}
		e.StorePath, e.Root = rec.StorePath, rec.Root.String()
	}
	root, err := cid.Decode(e.Root)
	if err != nil {
		return nil, fmt.Errorf("entry root %q: %w", e.Root, err)
	}
	return []cid.Cid{pi, root}, nil
}

// pinName names a pin on the remote after what it holds.
func pinName(e *Entry, c cid.Cid) string {
	if e.ManifestEntry() {
		return "nixipfs manifest"
	}
	base := path.Base(e.StorePath)
	if c.String() == e.PathInfo {
		return "nixipfs " + base + " pathinfo"
	}
	return "nixipfs " + base
}

// work moves one due entry on: send its pins, or ask how they stand.
func (p *Pinner) work(ctx context.Context, r Remote, e *Entry, now time.Time) {
	cids, err := p.cids(ctx, e)
	if err != nil {
		p.fail(e, err, now)
		return
	}
	switch e.State {
	case StatePinning, StatePinned:
	default: // pending, failed, or a state this version does not know
		e.State = StatePending
	}
	switch e.State {
	case StatePending:
		for _, c := range cids {
			if err := r.Pin(ctx, c, pinName(e, c)); err != nil {
				p.fail(e, err, now)
				return
			}
		}
		e.State, e.Error, e.NextTry, e.Updated = StatePinning, "", now.Add(p.CheckEvery), now
		slog.Debug("remote pin sent", "remote", r.Name(), "path", e.StorePath, "pathInfo", e.PathInfo)
	case StatePinning:
		holders := -1
		for _, c := range cids {
			s, err := r.Status(ctx, c)
			if err != nil {
				p.fail(e, err, now)
				return
			}
			switch s.State {
			case Failed:
				p.fail(e, errors.New(cmp.Or(s.Error, "the remote reports the pin failed")), now)
				return
			case Unknown:
				// Lost by the remote (or never recorded): send it again.
				p.fail(e, fmt.Errorf("%s does not know %s", r.Name(), c), now)
				return
			case Pinned:
				if holders < 0 || len(s.Holders) < holders {
					holders = len(s.Holders)
				}
			default:
				holders = -2 // still on its way
			}
			if holders == -2 {
				break
			}
		}
		if holders < 0 {
			e.NextTry = now.Add(p.CheckEvery)
			return
		}
		e.State, e.Holders, e.Error, e.Attempts, e.NextTry, e.Updated = StatePinned, holders, "", 0, now.Add(p.RecheckEvery), now
		slog.Info("remote pin done", "remote", r.Name(), "path", cmp.Or(e.StorePath, "manifest"), "holders", holders)
	case StatePinned:
		if len(e.Old) == 0 {
			p.recheck(ctx, r, e, cids, now)
			return
		}
		// The manifest's entry: drop the old versions, now that the new
		// one is held.
		for len(e.Old) > 0 {
			if c, err := cid.Decode(e.Old[0]); err == nil && c.String() != e.PathInfo {
				if err := r.Unpin(ctx, c); err != nil {
					e.Error, e.NextTry = err.Error(), now.Add(p.Backoff(1))
					return
				}
			}
			e.Old = e.Old[1:]
		}
		e.Old, e.Error = nil, ""
		e.NextTry = now.Add(p.RecheckEvery)
	}
}

// recheck asks again how a pinned entry stands, so that status shows the
// holders as they are now: a pin the remote lost is sent again, one with
// fewer holders than asked is shown pinning while the remote repairs it.
func (p *Pinner) recheck(ctx context.Context, r Remote, e *Entry, cids []cid.Cid, now time.Time) {
	holders := -1
	for _, c := range cids {
		s, err := r.Status(ctx, c)
		if err != nil {
			// The remote is unreachable, not the pin gone: ask later.
			e.Error, e.NextTry = err.Error(), now.Add(p.Backoff(1))
			return
		}
		switch s.State {
		case Pinned:
			if holders < 0 || len(s.Holders) < holders {
				holders = len(s.Holders)
			}
		case Unknown, Failed:
			p.fail(e, fmt.Errorf("%s no longer holds %s: %s", r.Name(), c, cmp.Or(s.Error, "not pinned")), now)
			return
		default:
			e.State, e.Holders, e.NextTry, e.Updated = StatePinning, len(s.Holders), now.Add(p.CheckEvery), now
			return
		}
	}
	e.Holders, e.Error, e.NextTry = holders, "", now.Add(p.RecheckEvery)
}

func (p *Pinner) fail(e *Entry, err error, now time.Time) {
	e.Attempts++
	e.State, e.Error, e.Updated = StateFailed, err.Error(), now
	e.NextTry = now.Add(p.Backoff(e.Attempts))
	slog.Warn("remote pin", "remote", e.Remote, "path", cmp.Or(e.StorePath, "manifest"), "attempt", e.Attempts, "retry", e.NextTry, "err", err)
}

// Holders asks each remote which peers hold c pinned, leaving out self
// (this node's own IPFS peer ID): the copies elsewhere. It returns the most
// any one remote reports (remotes may share peers).
func Holders(ctx context.Context, remotes []Remote, c cid.Cid, self string) (int, error) {
	best := 0
	var errs []error
	for _, r := range remotes {
		s, err := r.Status(ctx, c)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		n := 0
		for _, h := range s.Holders {
			if h != self {
				n++
			}
		}
		best = max(best, n)
	}
	return best, errors.Join(errs...)
}
