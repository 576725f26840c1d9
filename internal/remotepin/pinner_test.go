package remotepin

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/nixipfs/nixipfs/internal/ipfsnode"
	"github.com/nixipfs/nixipfs/manifests"
)

// fakeRemote records calls and answers as told.
type fakeRemote struct {
	pinErr   error
	state    State
	pins     []string
	unpinned []string
}

func (f *fakeRemote) Name() string { return "fake" }
func (f *fakeRemote) Pin(_ context.Context, c cid.Cid, _ string) error {
	if f.pinErr != nil {
		return f.pinErr
	}
	f.pins = append(f.pins, c.String())
	return nil
}
func (f *fakeRemote) Status(context.Context, cid.Cid) (Status, error) {
	return Status{State: f.state, Holders: []string{"a", "b"}}, nil
}
func (f *fakeRemote) Unpin(_ context.Context, c cid.Cid) error {
	f.unpinned = append(f.unpinned, c.String())
	return nil
}

// TestManifestEntryLifecycle: a failed pin backs off, doubling; a new
// manifest version waits ManifestEvery after the last one, and the version
// it replaces is unpinned only once the new one is held.
func TestManifestEntryLifecycle(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	p := &Pinner{ManifestEvery: time.Minute}
	p.defaults()
	r := &fakeRemote{pinErr: errors.New("cluster down")}
	v1, v2 := testCID(t, "v1").String(), testCID(t, "v2").String()
	st := stateFile{}
	byID := map[string]int{}
	p.newVersion(&st, byID, r.Name(), v1, now)
	e := &st.Entries[0]

	for i, wait := range []time.Duration{2 * time.Second, 4 * time.Second, 8 * time.Second} {
		p.work(ctx, r, e, now)
		if e.State != StateFailed || e.Attempts != i+1 || !e.NextTry.Equal(now.Add(wait)) || e.Error == "" {
			t.Fatalf("failure %d: %+v", i+1, e)
		}
	}
	r.pinErr = nil
	p.work(ctx, r, e, now)
	if e.State != StatePinning || len(r.pins) != 1 || r.pins[0] != v1 {
		t.Fatalf("after the remote came back: %+v, pins %v", e, r.pins)
	}
	r.state = Pinning
	p.work(ctx, r, e, now)
	if e.State != StatePinning || !e.NextTry.Equal(now.Add(p.CheckEvery)) {
		t.Fatalf("still pinning: %+v", e)
	}
	r.state = Pinned
	p.work(ctx, r, e, now)
	if e.State != StatePinned || e.Holders != 2 || e.Attempts != 0 {
		t.Fatalf("pinned: %+v", e)
	}

	later := now.Add(10 * time.Second)
	p.newVersion(&st, byID, r.Name(), v2, later)
	e = &st.Entries[0]
	if e.State != StatePending || e.PathInfo != v2 || len(e.Old) != 1 || e.Old[0] != v1 || !e.NextTry.Equal(now.Add(time.Minute)) {
		t.Fatalf("new version: %+v", e)
	}
	p.work(ctx, r, e, later) // pending -> pinning
	if len(r.unpinned) != 0 {
		t.Fatalf("old version unpinned before the new one is held: %v", r.unpinned)
	}
	p.work(ctx, r, e, later) // pinning -> pinned
	p.work(ctx, r, e, later) // pinned: drop the old version
	if len(r.unpinned) != 1 || r.unpinned[0] != v1 || len(e.Old) != 0 || e.State != StatePinned || e.PathInfo != v2 {
		t.Fatalf("after the new version is held: %+v, unpinned %v", e, r.unpinned)
	}

	// Rechecks: a pin the remote holds short of the factor shows as
	// pinning; one it lost is sent again after the backoff.
	if !e.NextTry.Equal(later.Add(p.RecheckEvery)) {
		t.Fatalf("next recheck at %v, want %v", e.NextTry, later.Add(p.RecheckEvery))
	}
	r.state = Pinning
	p.work(ctx, r, e, later)
	if e.State != StatePinning {
		t.Fatalf("under-replicated on recheck: %+v", e)
	}
	r.state = Pinned
	p.work(ctx, r, e, later)
	r.state = Unknown
	p.work(ctx, r, e, later)
	if e.State != StateFailed || e.Attempts != 1 || !e.NextTry.Equal(later.Add(2*time.Second)) {
		t.Fatalf("lost on recheck: %+v", e)
	}
	pins := len(r.pins)
	p.work(ctx, r, e, later)
	if e.State != StatePinning || len(r.pins) != pins+1 {
		t.Fatalf("re-sent after the loss: %+v, %d pins", e, len(r.pins))
	}
}

// TestRoundFollowsManifest runs rounds against a real (offline, embedded)
// IPFS node and manifest: recorded paths get entries on every remote, a
// remote configured later catches up, a dropped path leaves the state,
// and the state survives a new Pinner (a restart).
func TestRoundFollowsManifest(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	node, err := ipfsnode.Open(ctx, ipfsnode.Options{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer node.Close()
	root, err := node.API.Block().Put(ctx, bytes.NewReader([]byte("nar dag")))
	if err != nil {
		t.Fatal(err)
	}
	local := manifests.OpenLocal(dir, node.API)
	record := func(name string) (string, cid.Cid) {
		h := sha256.Sum256([]byte(name))
		hash := nixbase32.EncodeToString(h[:20])
		c, err := manifests.Store(ctx, node.API, &manifests.PathInfo{StorePath: "/nix/store/" + hash + "-" + name,
			NarHash: h[:], Blake3: h[:], NarSize: 7, Root: root.Path().RootCid()})
		if err != nil {
			t.Fatal(err)
		}
		return manifests.KeyStorePath(hash), c
	}
	k1, c1 := record("one")
	k2, c2 := record("two")
	if _, err := local.Update(ctx, map[string]cid.Cid{k1: c1, k2: c2}, nil); err != nil {
		t.Fatal(err)
	}

	ra := &fakeRemote{state: Pinned}
	newPinner := func(rs ...Remote) *Pinner {
		return &Pinner{DataDir: dir, API: node.API, Local: local, Remotes: rs}
	}
	states := func() map[string]string {
		rep, err := ReadReport(dir)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]string{}
		for _, e := range rep.Entries {
			out[e.Remote+" "+e.Key] = e.State
		}
		return out
	}
	p := newPinner(ra)
	for range 3 { // pending -> pinning -> pinned
		if err := p.Round(ctx); err != nil {
			t.Fatal(err)
		}
		p.now = func() time.Time { return time.Now().Add(time.Hour) } // every check due
	}
	st := states()
	if st["fake "+k1] != StatePinned || st["fake "+k2] != StatePinned || st["fake "] != StatePinned || len(st) != 3 {
		t.Fatalf("after three rounds: %v", st)
	}
	// Root and PathInfo of both paths, and the manifest's version.
	if len(ra.pins) != 5 {
		t.Fatalf("pins sent: %v", ra.pins)
	}

	// A second remote, configured on restart: it catches up; the first
	// one's pinned entries are not sent again.
	rb := &otherRemote{fakeRemote{state: Pinned}}
	p = newPinner(ra, rb)
	p.now = func() time.Time { return time.Now().Add(time.Minute) }
	if err := p.Round(ctx); err != nil {
		t.Fatal(err)
	}
	st = states()
	if st["other "+k1] != StatePinning || st["other "+k2] != StatePinning || len(st) != 6 || len(ra.pins) != 5 {
		t.Fatalf("second remote: %v, first one's pins %v", st, ra.pins)
	}

	// A path dropped from the manifest leaves the state on both remotes.
	if _, err := local.Update(ctx, nil, []string{k2}); err != nil {
		t.Fatal(err)
	}
	if err := p.Round(ctx); err != nil {
		t.Fatal(err)
	}
	st = states()
	if _, ok := st["fake "+k2]; ok || len(st) != 4 {
		t.Fatalf("after dropping %s: %v", k2, st)
	}
	if len(ra.unpinned) != 0 {
		t.Fatalf("a dropped path was unpinned on the remote: %v", ra.unpinned)
	}
}

// otherRemote is a second fake under another name.
type otherRemote struct{ fakeRemote }

func (o *otherRemote) Name() string { return "other" }
