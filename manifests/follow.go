package manifests

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ipfs/boxo/namesys"
	"github.com/ipfs/boxo/path"
	"github.com/ipfs/go-cid"
	coreiface "github.com/ipfs/kubo/core/coreiface"
	"github.com/ipfs/kubo/core/coreiface/options"

	"github.com/nixipfs/nixipfs/internal/atomicfile"
	"github.com/nixipfs/nixipfs/internal/ipfsnode"
)

// FollowStatus is what the follower knows of one followed name.
type FollowStatus struct {
	Name     string    `json:"name"`
	Version  string    `json:"version,omitempty"`
	Seq      int64     `json:"seq,omitempty"`
	Count    int64     `json:"count,omitempty"`
	Updated  time.Time `json:"updated,omitempty"`
	LastErr  string    `json:"error,omitempty"`
	Resolved bool      `json:"resolved"`
}

// Follower tracks other nodes' manifests by IPNS name. In the background it
// resolves each name, and when a new version appears it fetches the changed
// HAMT shards and PathInfo blocks from the network, so that narinfo lookups
// afterwards find everything locally and never wait on a network search.
type Follower struct {
	api coreiface.CoreAPI // online: fetches from peers
	// stateFile, if set, keeps each name's last synced version across
	// restarts (see NewFollower).
	stateFile string
	saveMu    sync.Mutex // orders writes of stateFile

	mu     sync.RWMutex
	names  []string
	state  map[string]*FollowStatus
	synced map[string]cid.Cid // name -> version whose blocks are local
}

// NewFollower returns a follower that fetches through api. With a
// stateFile it remembers, for each name, the last version whose blocks it
// fetched, and starts from there: a follower restarted while the publisher
// is offline (or its IPNS record is not yet found again) keeps serving what
// it had, and fetches only what changed once a newer version resolves. A
// state file it cannot read is reported and then replaced.
func NewFollower(api coreiface.CoreAPI, stateFile string) *Follower {
	f := &Follower{api: api, stateFile: stateFile, state: map[string]*FollowStatus{}, synced: map[string]cid.Cid{}}
	if stateFile == "" {
		return f
	}
	saved, err := readJSONFile[[]FollowStatus](stateFile, "followed versions")
	if err != nil {
		slog.Warn("followed versions not restored; resolving every name again", "err", err)
	}
	for _, s := range saved {
		v, err := cid.Decode(s.Version)
		if err != nil {
			slog.Warn("followed version not restored", "file", stateFile, "name", s.Name, "err", err)
			continue
		}
		f.synced[s.Name] = v
		f.state[s.Name] = &FollowStatus{Name: s.Name, Version: s.Version, Seq: s.Seq, Count: s.Count, Updated: s.Updated}
	}
	return f
}

// save writes the synced version of every name to the state file.
func (f *Follower) save() error {
	if f.stateFile == "" {
		return nil
	}
	f.saveMu.Lock()
	defer f.saveMu.Unlock()
	f.mu.RLock()
	var saved []FollowStatus
	for n, v := range f.synced {
		s := FollowStatus{Name: n, Version: v.String()}
		if st := f.state[n]; st != nil {
			s.Seq, s.Count, s.Updated = st.Seq, st.Count, st.Updated
		}
		saved = append(saved, s)
	}
	f.mu.RUnlock()
	slices.SortFunc(saved, func(a, b FollowStatus) int { return strings.Compare(a.Name, b.Name) })
	b, err := json.MarshalIndent(saved, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(f.stateFile, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("save followed versions: %w", err)
	}
	return nil
}

// Set replaces the followed names (order is lookup order).
func (f *Follower) Set(names []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.names = append([]string(nil), names...)
	for _, n := range names {
		if f.state[n] == nil {
			f.state[n] = &FollowStatus{Name: n}
		}
	}
}

// Followed is a followed name and the version of it whose blocks are local.
type Followed struct {
	Name    string
	Version cid.Cid
}

// Versions returns the synced version of each followed name, in order.
func (f *Follower) Versions() []Followed {
	f.mu.RLock()
	defer f.mu.RUnlock()
	var vs []Followed
	for _, n := range f.names {
		if v, ok := f.synced[n]; ok {
			vs = append(vs, Followed{Name: n, Version: v})
		}
	}
	return vs
}

// Status reports each followed name.
func (f *Follower) Status() []FollowStatus {
	f.mu.RLock()
	defer f.mu.RUnlock()
	var out []FollowStatus
	for _, n := range f.names {
		out = append(out, *f.state[n])
	}
	return out
}

// Run polls the followed names every interval until ctx ends. With IPNS
// over pubsub a resolve answers from the records peers pushed, so polling
// is cheap and a new version is seen within about one interval.
func (f *Follower) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		f.mu.RLock()
		names := append([]string(nil), f.names...)
		f.mu.RUnlock()
		// Concurrently: a name with no record yet must not delay the others
		// by its resolve timeout.
		var wg sync.WaitGroup
		for _, n := range names {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := f.refresh(ctx, n); err != nil && ctx.Err() == nil {
					slog.Debug("follow", "name", n, "err", err)
				}
			}()
		}
		wg.Wait()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (f *Follower) setErr(name string, err error) {
	f.mu.Lock()
	if s := f.state[name]; s != nil {
		s.LastErr = err.Error()
	}
	f.mu.Unlock()
}

func (f *Follower) refresh(ctx context.Context, name string) error {
	// Short: a name with no record yet must not hold up the other names
	// (the DHT part of a resolve waits out its timeout). No namesys cache:
	// it would hold a version for the record's TTL. The first record found
	// is enough: over pubsub it is the newest one peers pushed.
	rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	p, err := f.api.Name().Resolve(rctx, "/ipns/"+strings.TrimPrefix(name, "/ipns/"), options.Name.Cache(false),
		options.Name.ResolveOption(namesys.ResolveWithDhtRecordCount(1)),
		options.Name.ResolveOption(namesys.ResolveWithDhtTimeout(2*time.Second)))
	if err != nil {
		f.setErr(name, err)
		return fmt.Errorf("resolve %s: %w", name, err)
	}
	ip, err := path.NewImmutablePath(p)
	if err != nil {
		f.setErr(name, err)
		return fmt.Errorf("resolve %s: %w", name, err)
	}
	v := ip.RootCid()
	f.mu.RLock()
	old, had := f.synced[name]
	f.mu.RUnlock()
	if had && old.Equals(v) {
		// Resolved again (a version restored at start, or after a failed
		// resolve): the status says so.
		f.mu.Lock()
		if s := f.state[name]; s != nil {
			s.Resolved, s.LastErr = true, ""
		}
		f.mu.Unlock()
		return nil
	}
	// The shards and PathInfos fetched from here on are read one at a time,
	// by lookups, as a publisher's own are (ipfsnode.WithSmallReads): the
	// blockservice stores what it fetches under this context.
	ctx = ipfsnode.WithSmallReads(ctx)
	next, err := LoadManifest(ctx, f.api.Dag(), v)
	if err != nil {
		f.setErr(name, err)
		return fmt.Errorf("follow %s: %w", name, err)
	}
	prev := EmptyManifest(f.api.Dag())
	if had {
		if pm, err := LoadManifest(ctx, f.api.Dag(), old); err == nil {
			prev = pm
		}
	}
	if err := f.fetch(ctx, prev, next); err != nil {
		f.setErr(name, err)
		return fmt.Errorf("follow %s: %w", name, err)
	}
	info := next.Info()
	f.mu.Lock()
	f.synced[name] = v
	if s := f.state[name]; s != nil {
		*s = FollowStatus{Name: name, Version: v.String(), Seq: info.Seq, Count: info.Count, Updated: time.Now().UTC(), Resolved: true}
	}
	f.mu.Unlock()
	slog.Info("followed manifest updated", "name", name, "version", v, "seq", info.Seq, "paths", info.Count)
	if err := f.save(); err != nil {
		// The version is served; only a restart would resolve it again.
		slog.Warn("follow", "name", name, "err", err)
	}
	return nil
}

// fetch brings the blocks narinfo lookups need into the local blockstore:
// the shards that differ (the diff walks them) and the new PathInfos.
func (f *Follower) fetch(ctx context.Context, prev, next *Manifest) error {
	changes, err := DiffManifests(ctx, prev, next)
	if err != nil {
		return err
	}
	for _, ch := range changes {
		if !ch.New.Defined() || !strings.HasPrefix(ch.Key, "p/") {
			continue
		}
		if _, err := f.api.Block().Stat(ctx, path.FromCid(ch.New)); err != nil {
			// A PathInfo we cannot fetch stays a 404 here; the rest of the
			// manifest keeps working.
			slog.Warn("followed PathInfo unavailable", "key", ch.Key, "cid", ch.New, "err", err)
		}
	}
	return nil
}
