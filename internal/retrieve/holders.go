package retrieve

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	manet "github.com/multiformats/go-multiaddr/net"
)

// Where a peer's gateway is.
//
// A follower must learn where a holder's trustless gateway listens. Nodes
// already share a libp2p connection, so a follower asks over it, on this
// protocol: the holder answers with its gateway's port, and the follower
// joins that port to the address it reached the holder at. So nothing is
// announced, a holder behind the same address as its IPFS node needs no
// configuration, and a follower only ever makes HTTP requests to hosts it
// is already connected to. identify tells which peers speak the protocol,
// so stock kubo peers are never asked.

// Protocol is the libp2p protocol that answers "where is your gateway".
const Protocol = protocol.ID("/nixipfs/gateway/1.0.0")

type gatewayInfo struct {
	Port int `json:"port"`
}

// maxInfo bounds an answer.
const maxInfo = 1024

// ServeGateway answers peers asking for this node's gateway port.
func ServeGateway(h host.Host, port int) {
	h.SetStreamHandler(Protocol, func(s network.Stream) {
		defer s.Close()
		_ = s.SetDeadline(time.Now().Add(5 * time.Second))
		_ = json.NewEncoder(s).Encode(gatewayInfo{Port: port})
	})
}

// PeerGateways finds the gateways of connected peers that speak Protocol.
// Answers (and failures) are remembered for a while.
type PeerGateways struct {
	Host host.Host
	// TTL is how long an answer is kept (default 30 s).
	TTL time.Duration

	mu    sync.Mutex
	known map[peer.ID]gatewayEntry
}

type gatewayEntry struct {
	url string // "" when the peer has none
	at  time.Time
}

// maxAsked bounds the peers asked at once.
const maxAsked = 32

// Gateways returns the gateways of connected peers.
func (p *PeerGateways) Gateways(ctx context.Context) []Holder {
	ttl := p.TTL
	if ttl <= 0 {
		ttl = 30 * time.Second
	}
	var ask []peer.ID
	var out []Holder
	now := time.Now()
	p.mu.Lock()
	if p.known == nil {
		p.known = map[peer.ID]gatewayEntry{}
	}
	for _, id := range p.Host.Network().Peers() {
		if e, ok := p.known[id]; ok && now.Sub(e.at) < ttl {
			if e.url != "" {
				out = append(out, Holder{URL: e.url, Peer: id})
			}
			continue
		}
		if ps, err := p.Host.Peerstore().SupportsProtocols(id, Protocol); err != nil || len(ps) == 0 {
			continue
		}
		if len(ask) < maxAsked {
			ask = append(ask, id)
		}
	}
	p.mu.Unlock()
	if len(ask) == 0 {
		return out
	}
	var wg sync.WaitGroup
	urls := make([]string, len(ask))
	for i, id := range ask {
		wg.Go(func() {
			u, err := askGateway(ctx, p.Host, id)
			if err == nil {
				urls[i] = u
			}
		})
	}
	wg.Wait()
	p.mu.Lock()
	for i, id := range ask {
		p.known[id] = gatewayEntry{url: urls[i], at: time.Now()}
		if urls[i] != "" {
			out = append(out, Holder{URL: urls[i], Peer: id})
		}
	}
	p.mu.Unlock()
	return out
}

// askGateway asks peer id for its gateway port and makes a URL of it with
// the address the connection to id goes to.
func askGateway(ctx context.Context, h host.Host, id peer.ID) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	s, err := h.NewStream(ctx, id, Protocol)
	if err != nil {
		return "", err
	}
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(3 * time.Second))
	var info gatewayInfo
	if err := json.NewDecoder(io.LimitReader(s, maxInfo)).Decode(&info); err != nil {
		return "", fmt.Errorf("gateway answer from %s: %w", id, err)
	}
	if info.Port <= 0 || info.Port > 65535 {
		return "", fmt.Errorf("gateway answer from %s: port %d", id, info.Port)
	}
	ip, err := manet.ToIP(s.Conn().RemoteMultiaddr())
	if err != nil {
		return "", fmt.Errorf("address of %s: %w", id, err)
	}
	u := url.URL{Scheme: "http", Host: net.JoinHostPort(ip.String(), strconv.Itoa(info.Port))}
	return u.String(), nil
}
