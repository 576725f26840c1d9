package builder

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"time"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"

	"github.com/nixipfs/nixipfs/gateway"
	"github.com/nixipfs/nixipfs/internal/ipfsnode"
	"github.com/nixipfs/nixipfs/internal/nixstore"
	"github.com/nixipfs/nixipfs/internal/publish"
	"github.com/nixipfs/nixipfs/manifests"
)

// BuildOptions configures Build, the requester's side of `nixipfs build`.
type BuildOptions struct {
	Drvs    []string // .drv paths; none resumes the queue
	Network string
	Wait    bool // copy the requested outputs into Store
	Store   *nixstore.Store
	DataDir string
	// Open opens the online IPFS node (after the queue is locked and the
	// plan made, so that bad arguments fail fast).
	Open            func(ctx context.Context) (*ipfsnode.Node, error)
	TrustedBuilders []signature.PublicKey
	SignKey         *signature.SecretKey

	Lease, Heartbeat, OfferInterval, ClaimWindow, Unclaimed time.Duration
	MaxAttempts                                             int
	Progress                                                func(Event)
	BuildLog                                                func(job, text string)
}

// BuildResult is what Build did.
type BuildResult struct {
	Jobs    int      // jobs in the queue
	Outputs []string // with Wait: the requested outputs, now in the store
	Failed  []Job
	Pending []Job // not final when Build returned
}

// Build queues the derivations (with what they need built), publishes their
// .drv closures and available inputs, and works the queue until every job
// is final. With Wait it then copies every output built into the store and
// returns the requested ones.
func Build(ctx context.Context, o BuildOptions) (BuildResult, error) {
	var res BuildResult
	if o.Network == "" {
		return res, errors.New("build: --network is required: builders are found on a network")
	}
	for _, d := range o.Drvs {
		if !validDrv(d) {
			return res, fmt.Errorf("build: %q is not a .drv store path (instantiate it first, e.g. with nix-instantiate)", d)
		}
	}
	q, err := OpenQueue(o.DataDir)
	if err != nil {
		return res, err
	}
	unlock, err := q.Lock()
	if err != nil {
		return res, err
	}
	defer unlock()
	var plan *Plan
	if len(o.Drvs) > 0 {
		if plan, err = MakePlan(ctx, o.Store, o.Drvs); err != nil {
			return res, err
		}
	}

	node, err := o.Open(ctx)
	if err != nil {
		return res, err
	}
	defer node.Close()
	local := manifests.OpenLocalNode(o.DataDir, node)
	if plan != nil {
		pub := &publish.Publisher{Node: node, Store: o.Store, Manifest: local, SignKey: o.SignKey}
		if _, err := pub.Publish(ctx, plan.Publish...); err != nil {
			return res, fmt.Errorf("build: publish the derivations and their inputs: %w", err)
		}
		if err := enqueue(q, plan.Jobs); err != nil {
			return res, err
		}
		if o.Progress != nil {
			for _, j := range plan.Jobs {
				o.Progress(Event{Job: j.Drv, State: Waiting, Note: fmt.Sprintf("queued (%d inputs to build first)", len(j.Deps))})
			}
		}
	}
	var until []string
	if plan != nil {
		for _, j := range plan.Jobs {
			until = append(until, j.Drv)
		}
	}
	r, err := NewRequester(ctx, RequesterConfig{Until: until, Node: node, Network: o.Network, Queue: q, Manifest: local,
		TrustedBuilders: o.TrustedBuilders, SignKey: o.SignKey, Lease: o.Lease, Heartbeat: o.Heartbeat,
		OfferInterval: o.OfferInterval, ClaimWindow: o.ClaimWindow, Unclaimed: o.Unclaimed,
		MaxAttempts: o.MaxAttempts, Progress: o.Progress, BuildLog: o.BuildLog})
	if err != nil {
		return res, err
	}
	runErr := r.Run(ctx)
	var requested, built []string
	for _, j := range r.Jobs() {
		if len(until) > 0 && !slices.Contains(until, j.Drv) {
			continue
		}
		res.Jobs++
		switch {
		case j.State == Failed:
			res.Failed = append(res.Failed, j)
		case !j.Final():
			res.Pending = append(res.Pending, j)
		default:
			built = append(built, j.Outputs...)
			if j.Requested {
				requested = append(requested, j.Outputs...)
			}
		}
	}
	if runErr != nil || len(res.Failed) > 0 || !o.Wait {
		return res, runErr
	}
	if plan != nil {
		derivs, err := o.Store.Derivations(ctx, plan.Ready...)
		if err != nil {
			return res, err
		}
		for _, d := range plan.Ready {
			requested = append(requested, derivs[d].OutputPaths()...)
		}
	}
	slices.Sort(requested)
	requested = slices.Compact(requested)
	// Every output built, not only the requested ones' closures: they are
	// what the next build of a neighbouring derivation needs.
	if err := importOutputs(ctx, node, local, o.Store, append(built, requested...), o.TrustedBuilders); err != nil {
		return res, err
	}
	res.Outputs = requested
	return res, nil
}

// enqueue adds the plan's jobs to the queue. A job already there keeps its
// state (it may be leased right now), except that a failed one is tried
// again, as nix-build would.
func enqueue(q *Queue, jobs []*Job) error {
	for _, j := range jobs {
		old, err := q.Get(j.Drv)
		if err != nil {
			return err
		}
		if old != nil && old.State != Failed {
			if j.Requested && !old.Requested {
				old.Requested = true
				if err := q.Save(old); err != nil {
					return err
				}
			}
			continue
		}
		if err := q.Save(j); err != nil {
			return err
		}
	}
	return nil
}

// importOutputs copies paths from our own manifest into store through a
// gateway on a loopback port: Nix checks every NarHash and that each path
// is signed by a builder key (or a key it already trusts).
func importOutputs(ctx context.Context, node *ipfsnode.Node, local *manifests.Local, store *nixstore.Store, paths []string, builders []signature.PublicKey) error {
	missing, err := store.Invalid(ctx, paths)
	if err != nil || len(missing) == 0 {
		return err
	}
	resolver, err := manifests.NewResolver(node.API, local, nil, manifests.Policy{})
	if err != nil {
		return err
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("import outputs: %w", err)
	}
	srv := &http.Server{Handler: gateway.New(gateway.Config{API: node.API, Paths: resolver}), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(lis)
	defer srv.Close()
	keys, err := store.TrustedPublicKeys(ctx)
	if err != nil {
		return err
	}
	for _, k := range builders {
		keys = append(keys, k.String())
	}
	if err := store.CopyFrom(ctx, "http://"+lis.Addr().String(), missing, false, keys); err != nil {
		return fmt.Errorf("import outputs into %s: %w", store, err)
	}
	return nil
}
