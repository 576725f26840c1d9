// Package remotepin keeps every path this node records pinned on remote
// pinning services as well: an IPFS Cluster (its pinset is replicated over
// many kubo peers with a replication factor) or any IPFS Pinning Service
// API endpoint. The Pinner follows the local manifest, so every way a path
// gets recorded (publish, the queue, watch-store, uploads, mirrors, build
// results) is covered; its state lives in a file in the data dir, so
// pending pins survive crashes and restarts.
package remotepin

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	clusterapi "github.com/ipfs-cluster/ipfs-cluster/api"
	clusterclient "github.com/ipfs-cluster/ipfs-cluster/api/rest/client"
	pinclient "github.com/ipfs/boxo/pinning/remote/client"
	"github.com/ipfs/go-cid"
)

// State is where a remote pin stands.
type State string

const (
	Unknown State = ""        // the remote does not know the CID
	Queued  State = "queued"  // accepted, not started
	Pinning State = "pinning" // being fetched by the remote's nodes
	Pinned  State = "pinned"  // held (by enough peers, for a cluster)
	Failed  State = "failed"  // the remote gave up
)

// Status is a CID's pin on a remote.
type Status struct {
	State State
	// Holders are the IPFS peer IDs that hold the CID pinned (a cluster's
	// peers); a pinning service that does not say who holds it counts as
	// one holder, named by its URL.
	Holders []string
	Error   string
}

// Remote is a pinning service. Pin is idempotent: pinning a CID the remote
// already holds changes nothing.
type Remote interface {
	// Name identifies the remote in status and logs (its kind and URL).
	Name() string
	Pin(ctx context.Context, c cid.Cid, name string) error
	Status(ctx context.Context, c cid.Cid) (Status, error)
	Unpin(ctx context.Context, c cid.Cid) error
}

// requestTimeout bounds one call to a remote: a hung service must not stall
// the pinner (or gc) forever.
const requestTimeout = 30 * time.Second

// Cluster speaks IPFS Cluster's REST API through the project's own Go
// client (it builds in this module beside kubo).
type Cluster struct {
	url         string
	client      clusterclient.Client
	replication int
}

// NewCluster returns the cluster whose REST API is at rawURL
// (http://127.0.0.1:9094), with basicAuth ("user:password", or "" for
// none). Every pin asks for exactly replication peers (-1: all peers).
func NewCluster(rawURL, basicAuth string, replication int) (*Cluster, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("pin cluster %q: %w", rawURL, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("pin cluster %q: want an http:// or https:// URL", rawURL)
	}
	host, port, err := net.SplitHostPort(u.Host)
	if err != nil {
		return nil, fmt.Errorf("pin cluster %q: want host:port: %w", rawURL, err)
	}
	if u.User != nil {
		return nil, fmt.Errorf("pin cluster %q: put the credentials in the auth file, not the URL", rawURL)
	}
	if u.Path != "" && u.Path != "/" {
		return nil, fmt.Errorf("pin cluster %q: the REST API has no path prefix", rawURL)
	}
	if replication == 0 || replication < -1 {
		return nil, fmt.Errorf("pin cluster: replication %d: want at least 1, or -1 for every peer", replication)
	}
	cfg := &clusterclient.Config{Host: host, Port: port, SSL: u.Scheme == "https", Timeout: requestTimeout, LogLevel: "error"}
	if basicAuth = strings.TrimSpace(basicAuth); basicAuth != "" {
		var ok bool
		if cfg.Username, cfg.Password, ok = strings.Cut(basicAuth, ":"); !ok || cfg.Username == "" {
			return nil, fmt.Errorf("pin cluster %q: the auth file must hold user:password", rawURL)
		}
	}
	c, err := clusterclient.NewDefaultClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("pin cluster %q: %w", rawURL, err)
	}
	return &Cluster{url: u.String(), client: c, replication: replication}, nil
}

// Name implements Remote.
func (c *Cluster) Name() string { return "cluster " + c.url }

// Pin implements Remote: a recursive pin on replication peers.
func (c *Cluster) Pin(ctx context.Context, ci cid.Cid, name string) error {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	_, err := c.client.Pin(ctx, clusterapi.NewCid(ci), clusterapi.PinOptions{
		Name:                 name,
		ReplicationFactorMin: c.replication,
		ReplicationFactorMax: c.replication,
		Mode:                 clusterapi.PinModeRecursive,
	})
	if err != nil {
		return fmt.Errorf("%s: pin %s: %w", c.Name(), ci, err)
	}
	return nil
}

// Status implements Remote: pinned once replication peers hold it (all
// allocated peers for -1).
func (c *Cluster) Status(ctx context.Context, ci cid.Cid) (Status, error) {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	gpi, err := c.client.Status(ctx, clusterapi.NewCid(ci), false)
	if err != nil {
		return Status{}, fmt.Errorf("%s: status %s: %w", c.Name(), ci, err)
	}
	return clusterStatus(gpi, c.replication), nil
}

// clusterStatus sums the peers' answers: the holders, and the first error.
func clusterStatus(gpi clusterapi.GlobalPinInfo, replication int) Status {
	var st Status
	busy, failed, allocated := false, false, 0
	for _, p := range gpi.PeerMap {
		switch {
		case p.Status == clusterapi.TrackerStatusPinned:
			if p.IPFS.Validate() == nil {
				st.Holders = append(st.Holders, p.IPFS.String())
			}
			allocated++
		case p.Status.Match(clusterapi.TrackerStatusError):
			failed, allocated = true, allocated+1
			if st.Error == "" {
				st.Error = fmt.Sprintf("%s: %s %s", p.PeerName, p.Status, p.Error)
			}
		case p.Status.Match(clusterapi.TrackerStatusQueued | clusterapi.TrackerStatusPinning):
			busy, allocated = true, allocated+1
		}
	}
	want := replication
	if want < 0 {
		want = max(allocated, 1)
	}
	switch {
	case len(st.Holders) >= want:
		st.State = Pinned
	case busy:
		st.State = Pinning
	case failed:
		st.State = Failed
	case len(st.Holders) > 0 || len(gpi.Allocations) > 0:
		st.State = Pinning
	}
	return st
}

// Unpin implements Remote. A CID the cluster does not track is not an error.
func (c *Cluster) Unpin(ctx context.Context, ci cid.Cid) error {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	if _, err := c.client.Unpin(ctx, clusterapi.NewCid(ci)); err != nil {
		var apiErr clusterapi.Error
		if errors.As(err, &apiErr) && apiErr.Code == 404 {
			return nil
		}
		return fmt.Errorf("%s: unpin %s: %w", c.Name(), ci, err)
	}
	return nil
}

// Service speaks the IPFS Pinning Service API through boxo's client, the one
// kubo's `ipfs pin remote` uses.
type Service struct {
	url    string
	client *pinclient.Client
}

// NewService returns the pinning service at rawURL (its API root, e.g.
// https://pins.example/psa), authenticated by token.
func NewService(rawURL, token string) (*Service, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("pin service %q: %w", rawURL, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("pin service %q: want an http:// or https:// URL", rawURL)
	}
	if u.User != nil {
		return nil, fmt.Errorf("pin service %q: put the token in the token file, not the URL", rawURL)
	}
	token = strings.TrimSpace(token)
	if token == "" {
		return nil, fmt.Errorf("pin service %q: empty token", rawURL)
	}
	return &Service{url: strings.TrimSuffix(u.String(), "/"), client: pinclient.NewClient(strings.TrimSuffix(u.String(), "/"), token)}, nil
}

// Name implements Remote.
func (s *Service) Name() string { return "service " + s.url }

var allStatuses = []pinclient.Status{pinclient.StatusQueued, pinclient.StatusPinning, pinclient.StatusPinned, pinclient.StatusFailed}

// find lists the service's pin requests for c (every status).
func (s *Service) find(ctx context.Context, c cid.Cid) ([]pinclient.PinStatusGetter, error) {
	res, _, err := s.client.LsBatchSync(ctx, pinclient.PinOpts.FilterCIDs(c), pinclient.PinOpts.FilterStatus(allStatuses...))
	return res, err
}

// Pin implements Remote: a new request only when none is queued, pinning or
// pinned; a failed one is replaced.
func (s *Service) Pin(ctx context.Context, c cid.Cid, name string) error {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	reqs, err := s.find(ctx, c)
	if err != nil {
		return fmt.Errorf("%s: look up %s: %w", s.Name(), c, err)
	}
	for _, r := range reqs {
		if r.GetStatus() != pinclient.StatusFailed {
			return nil
		}
	}
	if len(reqs) > 0 {
		_, err = s.client.Replace(ctx, reqs[0].GetRequestId(), c, pinclient.PinOpts.WithName(name))
	} else {
		_, err = s.client.Add(ctx, c, pinclient.PinOpts.WithName(name))
	}
	if err != nil {
		return fmt.Errorf("%s: pin %s: %w", s.Name(), c, err)
	}
	return nil
}

// Status implements Remote: the best of the service's requests for c.
func (s *Service) Status(ctx context.Context, c cid.Cid) (Status, error) {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	reqs, err := s.find(ctx, c)
	if err != nil {
		return Status{}, fmt.Errorf("%s: status %s: %w", s.Name(), c, err)
	}
	rank := map[pinclient.Status]int{pinclient.StatusFailed: 1, pinclient.StatusQueued: 2, pinclient.StatusPinning: 3, pinclient.StatusPinned: 4}
	var st Status
	best := 0
	for _, r := range reqs {
		if got := r.GetPin().GetCid(); !got.Equals(c) {
			continue // a service that ignores the filter
		}
		if rk := rank[r.GetStatus()]; rk > best {
			best, st.State = rk, State(r.GetStatus())
			if r.GetStatus() == pinclient.StatusFailed {
				st.Error = "the service reports the pin failed"
			}
		}
	}
	if st.State == Pinned {
		st.Holders = []string{s.url}
	}
	return st, nil
}

// Unpin implements Remote: every request for c is deleted.
func (s *Service) Unpin(ctx context.Context, c cid.Cid) error {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	reqs, err := s.find(ctx, c)
	if err != nil {
		return fmt.Errorf("%s: unpin %s: %w", s.Name(), c, err)
	}
	for _, r := range reqs {
		if err := s.client.DeleteByID(ctx, r.GetRequestId()); err != nil {
			return fmt.Errorf("%s: unpin %s: %w", s.Name(), c, err)
		}
	}
	return nil
}
