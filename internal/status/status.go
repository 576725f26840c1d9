// Package status gathers what a nixipfs node is doing: its manifest and
// recent versions, pins, publish queue, followed names, peers and, inside a
// running daemon, what the gateway has served. `nixipfs status` prints it;
// the gateway's status page and /status.json render it.
package status

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	coreiface "github.com/ipfs/kubo/core/coreiface"
	"github.com/ipfs/kubo/core/coreiface/options"

	"github.com/nixipfs/nixipfs/internal/ipfsnode"
	"github.com/nixipfs/nixipfs/internal/metrics"
	"github.com/nixipfs/nixipfs/internal/queue"
	"github.com/nixipfs/nixipfs/internal/remotepin"
	"github.com/nixipfs/nixipfs/manifests"
	"github.com/nixipfs/nixipfs/manifests/network"
)

// Report is a node's status at one moment.
type Report struct {
	Time time.Time `json:"time"`
	// Daemon is true when a running daemon collected the report (then
	// Followed, Serving and Recent are live figures).
	Daemon   bool                     `json:"daemon"`
	Gateway  string                   `json:"gateway,omitempty"`
	Node     Node                     `json:"node"`
	Manifest Manifest                 `json:"manifest"`
	Pins     *Pins                    `json:"pins,omitempty"`
	Queue    Queue                    `json:"queue"`
	Followed []manifests.FollowStatus `json:"followed"`
	Peers    Peers                    `json:"peers"`
	Serving  *Serving                 `json:"serving,omitempty"`
	Prefetch *Prefetch                `json:"prefetch,omitempty"`
	// RemotePins is each recorded path's pin state on the remote pinning
	// services (daemon --pin-cluster, --pin-service).
	RemotePins *remotepin.Report `json:"remotePins,omitempty"`
	Recent     []Published       `json:"recent"`
	// Errors name the parts that could not be collected.
	Errors []string `json:"errors,omitempty"`
}

// Node is the IPFS node.
type Node struct {
	Kind   string `json:"kind"` // embedded or external
	PeerID string `json:"peerId,omitempty"`
	// IPNS is the manifest's name: other nodes follow it.
	IPNS string `json:"ipns,omitempty"`
	// Datastore is what an embedded node stores blocks in (nixipfs-pebble
	// or flatfs); RepoBytes is its repo's size on disk.
	Datastore string `json:"datastore,omitempty"`
	RepoBytes int64  `json:"repoBytes,omitempty"`
	// HotBytes are the bytes of blocks a daemon keeps in memory (hot
	// blocks), HotMax their bound and HotHits the reads they answered;
	// all 0 without hot blocks.
	HotBytes int64 `json:"hotBytes,omitempty"`
	HotMax   int64 `json:"hotMax,omitempty"`
	HotHits  int64 `json:"hotHits,omitempty"`
}

// Manifest is this node's manifest and its latest versions, newest first.
type Manifest struct {
	Version string    `json:"version,omitempty"`
	Seq     int64     `json:"seq"`
	Paths   int64     `json:"paths"`
	Time    string    `json:"time,omitempty"`
	History []Version `json:"history"`
}

// Version is one manifest version.
type Version struct {
	CID   string `json:"cid"`
	Seq   int64  `json:"seq"`
	Paths int64  `json:"paths"`
	Time  string `json:"time"`
}

// Pins counts the node's pins (all of them, not only nixipfs's).
type Pins struct {
	Recursive int       `json:"recursive"`
	Direct    int       `json:"direct"`
	Counted   time.Time `json:"counted"`
}

// Queue is the publish queue: how many entries wait or were set aside, and
// the first few of each.
type Queue struct {
	Waiting       int           `json:"waiting"`
	Failed        int           `json:"failed"`
	Entries       []queue.Entry `json:"entries"`
	FailedEntries []queue.Entry `json:"failedEntries"`
}

// Peers are the IPFS peers connected now and the nodes heard on the
// daemon's --network.
type Peers struct {
	Connected []string       `json:"connected"`
	Network   []network.Peer `json:"network"`
}

// Serving are the gateway's figures since the daemon started.
type Serving struct {
	Requests      int64   `json:"requests"`
	NarinfoHits   int64   `json:"narinfoHits"`
	NarinfoMisses int64   `json:"narinfoMisses"`
	HitRate       float64 `json:"hitRate"` // hits / (hits + misses); 0 with no lookups
	NARs          int64   `json:"nars"`
	BytesServed   int64   `json:"bytesServed"` // cache answers: NARs, narinfos, files
	RenderMBps    float64 `json:"renderMBps"`  // NAR bytes rendered / render time
}

// Prefetch is the background fetching of followed manifests' new paths
// (daemon --prefetch).
type Prefetch struct {
	Workers   int   `json:"workers"`
	RateBytes int64 `json:"rateBytes"` // per second; 0: no limit
	Queued    int64 `json:"queued"`
	Active    int64 `json:"active"`
	Done      int64 `json:"done"`
	Failed    int64 `json:"failed"`   // tries that failed
	Retrying  int64 `json:"retrying"` // paths whose prefetch failed, to be tried again
	Bytes     int64 `json:"bytes"`
}

// Published is one path a daemon published recently (queue or
// watch-store).
type Published struct {
	StorePath string    `json:"storePath"`
	Status    string    `json:"status"`
	Time      time.Time `json:"time"`
}

// PeersFile is where a daemon on a network lists its live peers.
func PeersFile(dataDir string) string { return filepath.Join(dataDir, "peers.json") }

// GatewayFile is where a running daemon writes its gateway URL, so that
// `nixipfs status` can ask it for the live report.
func GatewayFile(dataDir string) string { return filepath.Join(dataDir, "gateway") }

// ReadPeers reads the daemon's peers file (none when it does not exist).
func ReadPeers(dataDir string) ([]network.Peer, error) {
	b, err := os.ReadFile(PeersFile(dataDir))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read peers: %w", err)
	}
	var peers []network.Peer
	if err := json.Unmarshal(b, &peers); err != nil {
		return nil, fmt.Errorf("read peers %s: %w", PeersFile(dataDir), err)
	}
	return peers, nil
}

// listed bounds the queue entries and versions a report carries.
const listed = 20

// Collector collects reports. Only DataDir and Node are required.
type Collector struct {
	DataDir string
	Node    *ipfsnode.Node
	// Follower, if set, reports the followed names live; otherwise the
	// data dir's follow list is read.
	Follower *manifests.Follower
	Metrics  *metrics.Metrics
	// Recent, if set, returns the paths published lately.
	Recent func() []Published
	// Prefetch, if set, reports the background prefetch.
	Prefetch func() *Prefetch
	Gateway  string
	// PinsEvery bounds how often pins are counted (listing pins costs a
	// walk of the pin set); 0 counts on every report.
	PinsEvery time.Duration

	mu   sync.Mutex
	pins *Pins
}

// Collect gathers a report. Parts that fail are named in Errors; the rest is
// still reported.
func (c *Collector) Collect(ctx context.Context) *Report {
	r := &Report{
		Time: time.Now().UTC(), Daemon: c.Follower != nil, Gateway: c.Gateway,
		Node:     Node{Kind: c.Node.Kind()},
		Followed: []manifests.FollowStatus{}, Recent: []Published{},
		Manifest: Manifest{History: []Version{}},
		Peers:    Peers{Connected: []string{}, Network: []network.Peer{}},
		Queue:    Queue{Entries: []queue.Entry{}, FailedEntries: []queue.Entry{}},
	}
	fail := func(what string, err error) { r.Errors = append(r.Errors, fmt.Sprintf("%s: %v", what, err)) }
	api := c.Node.API

	if k, err := api.Key().Self(ctx); err != nil {
		fail("node identity", err)
	} else {
		r.Node.PeerID = k.ID().String()
	}
	local := manifests.OpenLocal(c.DataDir, api)
	if name, err := local.Name(ctx); err != nil {
		fail("manifest name", err)
	} else {
		r.Node.IPNS = name
	}
	if ds, size, err := c.Node.Storage(ctx); err != nil {
		fail("storage", err)
	} else {
		r.Node.Datastore, r.Node.RepoBytes = ds, int64(size)
	}
	if hs, bound := c.Node.HotBlocks(); hs != nil {
		r.Node.HotBytes, r.Node.HotMax, r.Node.HotHits = hs.Bytes.Load(), bound, hs.Hits.Load()
	}
	if err := c.manifest(ctx, local, r); err != nil {
		fail("manifest", err)
	}
	if p, err := c.countPins(ctx, api); err != nil {
		fail("pins", err)
	} else {
		r.Pins = p
	}
	if err := c.queue(r); err != nil {
		fail("queue", err)
	}
	if rp, err := remotepin.ReadReport(c.DataDir); err != nil {
		fail("remote pins", err)
	} else {
		r.RemotePins = rp
	}
	if c.Follower != nil {
		r.Followed = append(r.Followed, c.Follower.Status()...)
	} else if names, err := manifests.ReadFollowList(c.DataDir); err != nil {
		fail("follow list", err)
	} else {
		for _, n := range names {
			r.Followed = append(r.Followed, manifests.FollowStatus{Name: n})
		}
	}
	if conns, err := api.Swarm().Peers(ctx); err != nil {
		// An offline node has no swarm: nothing connected.
		if !errors.Is(err, coreiface.ErrOffline) {
			fail("swarm peers", err)
		}
	} else {
		for _, ci := range conns {
			r.Peers.Connected = append(r.Peers.Connected, ci.Address().String()+"/p2p/"+ci.ID().String())
		}
		slices.Sort(r.Peers.Connected)
	}
	if peers, err := ReadPeers(c.DataDir); err != nil {
		fail("network peers", err)
	} else if peers != nil {
		r.Peers.Network = peers
	}
	if c.Metrics != nil {
		r.Serving = serving(c.Metrics)
	}
	if c.Recent != nil {
		r.Recent = append(r.Recent, c.Recent()...)
	}
	if c.Prefetch != nil {
		r.Prefetch = c.Prefetch()
	}
	return r
}

func (c *Collector) manifest(ctx context.Context, local *manifests.Local, r *Report) error {
	v, err := local.CurrentVersion()
	if err != nil || !v.Defined() {
		return err
	}
	hist, err := manifests.History(ctx, c.Node.API.Dag(), v, listed)
	for _, h := range hist {
		r.Manifest.History = append(r.Manifest.History, Version{CID: h.CID.String(), Seq: h.Seq, Paths: h.Count, Time: h.Time})
	}
	if len(hist) > 0 {
		cur := hist[0]
		r.Manifest.Version, r.Manifest.Seq, r.Manifest.Paths, r.Manifest.Time = cur.CID.String(), cur.Seq, cur.Count, cur.Time
	} else {
		r.Manifest.Version = v.String()
	}
	return err
}

func (c *Collector) countPins(ctx context.Context, api coreiface.CoreAPI) (*Pins, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pins != nil && time.Since(c.pins.Counted) < c.PinsEvery {
		return c.pins, nil
	}
	p := &Pins{Counted: time.Now().UTC()}
	for _, kind := range []struct {
		opt options.PinLsOption
		n   *int
	}{{options.Pin.Ls.Recursive(), &p.Recursive}, {options.Pin.Ls.Direct(), &p.Direct}} {
		ch := make(chan coreiface.Pin)
		errc := make(chan error, 1)
		go func() { errc <- api.Pin().Ls(ctx, ch, kind.opt) }()
		for range ch {
			*kind.n++
		}
		if err := <-errc; err != nil {
			return nil, fmt.Errorf("list pins: %w", err)
		}
	}
	c.pins = p
	return p, nil
}

func (c *Collector) queue(r *Report) error {
	q := queue.Open(c.DataDir)
	waiting, err := q.List()
	if err != nil {
		return err
	}
	failed, err := q.Failed()
	if err != nil {
		return err
	}
	r.Queue.Waiting, r.Queue.Failed = len(waiting), len(failed)
	r.Queue.Entries = append(r.Queue.Entries, waiting[:min(len(waiting), listed)]...)
	r.Queue.FailedEntries = append(r.Queue.FailedEntries, failed[:min(len(failed), listed)]...)
	return nil
}

func serving(m *metrics.Metrics) *Serving {
	s := &Serving{
		Requests:      int64(metrics.Sum(m.Requests, nil)),
		NarinfoHits:   int64(metrics.Sum(m.Lookups, map[string]string{"kind": "narinfo", "result": metrics.Hit})),
		NarinfoMisses: int64(metrics.Sum(m.Lookups, map[string]string{"kind": "narinfo", "result": metrics.Miss})),
		NARs:          int64(metrics.Sum(m.Requests, map[string]string{"endpoint": "nar", "code": "200"})),
	}
	// Bytes of the cache's answers, not of the monitoring endpoints.
	total := metrics.Sum(m.BytesServed, nil)
	for _, e := range []string{"status", "metrics", "health"} {
		total -= metrics.Sum(m.BytesServed, map[string]string{"endpoint": e})
	}
	s.BytesServed = int64(total)
	if n := s.NarinfoHits + s.NarinfoMisses; n > 0 {
		s.HitRate = float64(s.NarinfoHits) / float64(n)
	}
	if secs := metrics.Sum(m.RenderSeconds, nil); secs > 0 {
		s.RenderMBps = metrics.Sum(m.RenderBytes, nil) / secs / 1e6
	}
	return s
}
