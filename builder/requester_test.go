package builder

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"

	"github.com/nixipfs/nixipfs/internal/ipfsnode"
	"github.com/nixipfs/nixipfs/manifests"
)

// TestRequesterRejects feeds a requester (on a real embedded kubo node)
// messages that must be refused: each is logged, and the job, the queue and
// the manifest are left as they were.
func TestRequesterRejects(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	node, q, dir := testRequesterEnv(ctx, t, false)
	skTrusted, pkTrusted := testKey(t, "builder-1")
	skOther, _ := testKey(t, "intruder-1")
	local := manifests.OpenLocal(dir, node.API)
	r, err := NewRequester(ctx, RequesterConfig{Node: node, Network: "farm", Queue: q, Manifest: local,
		TrustedBuilders: []signature.PublicKey{pkTrusted}})
	if err != nil {
		t.Fatal(err)
	}
	job := &Job{Drv: testDrv, System: "x86_64-linux", Outputs: []string{testOut}, State: Assigned, Builder: "holder", Lease: 2}
	if err := q.Save(job); err != nil {
		t.Fatal(err)
	}
	r.jobs[job.Drv] = job

	var logs bytes.Buffer
	prev := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(&logs, nil)))
	defer slog.SetDefault(prev)

	result := Message{V: Version, Kind: KindResult, Network: "farm", Job: testDrv, Requester: r.t.self,
		Status: StatusBuilt, Outputs: []Output{{Path: testOut, PathInfo: "bafyreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"}}}
	seq := time.Now().UnixNano()
	msg := func(from string, lease int64, kind Kind, sk signature.SecretKey) Message {
		m := result
		seq++
		m.From, m.Lease, m.Kind, m.Seq = from, lease, kind, seq
		if err := m.Sign(sk); err != nil {
			t.Fatal(err)
		}
		// What the network delivers: bytes, checked.
		c := &Checker{Network: "farm"}
		got, err := c.Check(from, m.Encode(), time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	other := result
	other.Job = "/nix/store/ywygafxl9i9r9w7zgh0bi55r7ynp662l-kvm.drv"
	tests := []struct {
		name string
		m    Message
		log  string
	}{
		{"untrusted key", msg("holder", 2, KindResult, skOther), "untrusted key"},
		{"not the lease holder", msg("intruder", 2, KindResult, skTrusted), "does not hold the lease"},
		{"an old lease", msg("holder", 1, KindResult, skTrusted), "does not hold the lease"},
		{"heartbeat from another builder", msg("intruder", 2, KindHeartbeat, skTrusted), "does not hold the lease"},
		{"release from another builder", msg("intruder", 2, KindRelease, skTrusted), "does not hold the lease"},
		{"a job never queued", func() Message {
			m := msg("holder", 2, KindResult, skTrusted)
			m.Job = other.Job
			m.Sig = ""
			if err := m.Sign(skTrusted); err != nil {
				t.Fatal(err)
			}
			return m
		}(), "no such job"},
	}
	v0, _ := local.CurrentVersion()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			logs.Reset()
			if err := r.handle(ctx, tt.m, time.Now()); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(logs.String(), "message rejected") || !strings.Contains(logs.String(), tt.log) {
				t.Fatalf("not logged as rejected (%q):\n%s", tt.log, logs.String())
			}
			if len(r.accepting) != 0 {
				t.Fatal("a refused result is being accepted")
			}
			saved, err := q.Get(testDrv)
			if err != nil {
				t.Fatal(err)
			}
			if saved.State != Assigned || saved.Builder != "holder" || saved.Lease != 2 {
				t.Fatalf("job changed: %+v", saved)
			}
			if v, _ := local.CurrentVersion(); v != v0 {
				t.Fatal("the manifest changed")
			}
		})
	}
}

// TestRequesterDeadline: a requester whose context runs out while a job is
// still offered says so, whichever of its waits notices first (a nil here
// once let `nixipfs build --timeout` exit 0 with the job unbuilt).
func TestRequesterDeadline(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	node, q, dir := testRequesterEnv(ctx, t, true)
	_, pk := testKey(t, "builder-1")
	job := &Job{Drv: testDrv, System: "x86_64-linux", Outputs: []string{testOut}, State: Offered}
	if err := q.Save(job); err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		r, err := NewRequester(ctx, RequesterConfig{Node: node, Network: "farm", Queue: q,
			Manifest: manifests.OpenLocal(dir, node.API), TrustedBuilders: []signature.PublicKey{pk},
			OfferInterval: 80 * time.Millisecond, Until: []string{testDrv}})
		if err != nil {
			t.Fatal(err)
		}
		rctx, rcancel := context.WithTimeout(ctx, time.Duration(5+i%30)*time.Millisecond)
		err = r.Run(rctx)
		rcancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("run %d: Run = %v, want the deadline", i, err)
		}
	}
}

// testRequesterEnv opens a real embedded node (online: with a swarm on
// loopback, for pubsub) and a build queue in a fresh data dir.
func testRequesterEnv(ctx context.Context, t *testing.T, online bool) (*ipfsnode.Node, *Queue, string) {
	t.Helper()
	dir := t.TempDir()
	node, err := ipfsnode.Open(ctx, ipfsnode.Options{DataDir: dir, Online: online})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { node.Close() })
	q, err := OpenQueue(dir)
	if err != nil {
		t.Fatal(err)
	}
	return node, q, dir
}
