package remotepin

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
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
