// Package network joins nixipfs nodes by a network name: each node announces
// its manifest's IPNS name on a pubsub topic derived from the name, and
// learns the other nodes' names to follow. Announcements are small, signed
// (pubsub signs every message with the sender's peer key, and a node may
// only announce its own name), idempotent and repeated, so lost messages do
// not matter.
package network

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ipfs/boxo/ipns"
	coreiface "github.com/ipfs/kubo/core/coreiface"
	"github.com/libp2p/go-libp2p/core/peer"
)

// MaxMessage bounds an announcement; anything larger is ignored.
const MaxMessage = 4096

// Announcement is what a node says on the network topic.
type Announcement struct {
	V       int    `json:"v"`       // 1
	Network string `json:"network"` // the network name
	Name    string `json:"name"`    // the sender's manifest IPNS name (its peer id)
	Seq     int64  `json:"seq"`     // Unix nanoseconds at sending; increases per sender
	Version string `json:"version,omitempty"`
	Paths   int64  `json:"paths"`
}

// Peer is a node heard on the network.
type Peer struct {
	Name     string    `json:"name"`
	PeerID   string    `json:"peerId"`
	Version  string    `json:"version,omitempty"`
	Paths    int64     `json:"paths"`
	LastSeen time.Time `json:"lastSeen"`
}

// Topic is the pubsub topic of a network name (hashed: names may be long or
// contain anything).
func Topic(name string) string {
	h := sha256.Sum256([]byte(name))
	return "/nixipfs/net/1/" + hex.EncodeToString(h[:16])
}

// Options configures a Network.
type Options struct {
	Interval time.Duration // between announcements (default 10 s)
	Timeout  time.Duration // a peer not heard for this long is dropped (default 6 × Interval)
	// State reports what this node announces: its manifest version and
	// path count.
	State func(ctx context.Context) (version string, paths int64)
	// OnChange is called with the live peers' names whenever that set
	// changes.
	OnChange func(names []string)
}

// Network is a joined network.
type Network struct {
	api  coreiface.CoreAPI
	name string
	self peer.ID
	opts Options

	mu      sync.Mutex
	peers   map[peer.ID]*Peer
	lastSeq map[peer.ID]int64
}

// Join prepares to join the network called name; Run does the work.
func Join(ctx context.Context, api coreiface.CoreAPI, name string, opts Options) (*Network, error) {
	if name == "" {
		return nil, fmt.Errorf("join network: empty name")
	}
	if opts.Interval <= 0 {
		opts.Interval = 10 * time.Second
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 6 * opts.Interval
	}
	self, err := api.Key().Self(ctx)
	if err != nil {
		return nil, fmt.Errorf("join network %s: %w", name, err)
	}
	return &Network{api: api, name: name, self: self.ID(), opts: opts,
		peers: map[peer.ID]*Peer{}, lastSeq: map[peer.ID]int64{}}, nil
}

// Peers lists the live peers, by name.
func (n *Network) Peers() []Peer {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]Peer, 0, len(n.peers))
	for _, p := range n.peers {
		out = append(out, *p)
	}
	slices.SortFunc(out, func(a, b Peer) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Run subscribes, announces every interval and drops silent peers, until
// ctx ends.
func (n *Network) Run(ctx context.Context) error {
	sub, err := n.api.PubSub().Subscribe(ctx, Topic(n.name))
	if err != nil {
		return fmt.Errorf("network %s: subscribe: %w", n.name, err)
	}
	defer sub.Close()
	go n.announceLoop(ctx)
	for {
		msg, err := sub.Next(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("network %s: %w", n.name, err)
		}
		n.receive(msg.From(), msg.Data(), time.Now())
	}
}

func (n *Network) announceLoop(ctx context.Context) {
	t := time.NewTicker(n.opts.Interval)
	defer t.Stop()
	for {
		n.announce(ctx)
		n.expire(time.Now())
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (n *Network) announce(ctx context.Context) {
	a := Announcement{V: 1, Network: n.name, Name: ipns.NameFromPeer(n.self).String(), Seq: time.Now().UnixNano()}
	if n.opts.State != nil {
		a.Version, a.Paths = n.opts.State(ctx)
	}
	b, _ := json.Marshal(a) // plain struct: cannot fail
	if err := n.api.PubSub().Publish(ctx, Topic(n.name), b); err != nil && ctx.Err() == nil {
		slog.Warn("network announce", "network", n.name, "err", err)
	}
}

// receive checks an announcement and records its sender. Invalid ones are
// logged and change nothing.
func (n *Network) receive(from peer.ID, data []byte, now time.Time) {
	if from == n.self {
		return
	}
	a, err := n.check(from, data, now)
	if err != nil {
		slog.Warn("network: announcement ignored", "from", from, "err", err)
		return
	}
	n.mu.Lock()
	n.lastSeq[from] = a.Seq
	_, known := n.peers[from]
	n.peers[from] = &Peer{Name: a.Name, PeerID: from.String(), Version: a.Version, Paths: a.Paths, LastSeen: now}
	n.mu.Unlock()
	if !known {
		slog.Info("network: peer joined", "network", n.name, "name", a.Name)
		n.changed()
	}
}

func (n *Network) check(from peer.ID, data []byte, now time.Time) (Announcement, error) {
	var a Announcement
	if len(data) > MaxMessage {
		return a, fmt.Errorf("%d bytes, over the %d-byte limit", len(data), MaxMessage)
	}
	if err := json.Unmarshal(data, &a); err != nil {
		return a, fmt.Errorf("malformed: %w", err)
	}
	if a.V != 1 {
		return a, fmt.Errorf("version %d not understood", a.V)
	}
	if a.Network != n.name {
		return a, fmt.Errorf("for network %q", a.Network)
	}
	// Only the owner of a manifest may announce it: its IPNS name is the
	// sender's peer id, which pubsub has verified.
	if want := ipns.NameFromPeer(from).String(); a.Name != want {
		return a, fmt.Errorf("forged: announces %s but was sent by %s", a.Name, want)
	}
	sent := time.Unix(0, a.Seq)
	if sent.Before(now.Add(-n.opts.Timeout)) || sent.After(now.Add(time.Minute)) {
		return a, fmt.Errorf("stale or replayed: sent at %s", sent.UTC().Format(time.RFC3339))
	}
	n.mu.Lock()
	last := n.lastSeq[from]
	n.mu.Unlock()
	if a.Seq <= last {
		return a, fmt.Errorf("replayed: seq %d, already had %d", a.Seq, last)
	}
	return a, nil
}

// expire drops peers not heard within the timeout.
func (n *Network) expire(now time.Time) {
	n.mu.Lock()
	dropped := false
	for id, p := range n.peers {
		if now.Sub(p.LastSeen) > n.opts.Timeout {
			delete(n.peers, id)
			slog.Info("network: peer dropped", "network", n.name, "name", p.Name, "lastSeen", p.LastSeen)
			dropped = true
		}
	}
	n.mu.Unlock()
	if dropped {
		n.changed()
	}
}

func (n *Network) changed() {
	if n.opts.OnChange == nil {
		return
	}
	var names []string
	for _, p := range n.Peers() {
		names = append(names, p.Name)
	}
	n.opts.OnChange(names)
}
