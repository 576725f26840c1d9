package daemon

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/nixipfs/nixipfs/internal/ipfsnode"
	"github.com/nixipfs/nixipfs/internal/metrics"
	"github.com/nixipfs/nixipfs/internal/retrieve"
)

// holders lists where DAGs may be fetched as CARs: the gateways named on
// the command line, then those of connected nixipfs peers.
type holders struct {
	static []retrieve.Holder
	peers  *retrieve.PeerGateways // nil for an external node
	next   atomic.Uint64
}

func newHolders(node *ipfsnode.Node, static []string) *holders {
	h := &holders{}
	for _, u := range static {
		h.static = append(h.static, retrieve.Holder{URL: u})
	}
	if e := node.Embedded(); e != nil {
		h.peers = &retrieve.PeerGateways{Host: e.PeerHost}
	}
	return h
}

// list is asked once per NAR render. Peers' gateways come in turn first,
// so the paths of a closure fetched at once are spread over their holders.
func (h *holders) list(ctx context.Context) []retrieve.Holder {
	out := append([]retrieve.Holder(nil), h.static...)
	if h.peers != nil {
		found := h.peers.Gateways(ctx)
		if n := len(found); n > 1 {
			k := int(h.next.Add(1) % uint64(n))
			found = append(append([]retrieve.Holder(nil), found[k:]...), found[:k]...)
		}
		out = append(out, found...)
	}
	return out
}

// newRetriever wires peer retrieval for the gateway's renders and counts
// what it does in m.
func newRetriever(node *ipfsnode.Node, h *holders, stall time.Duration, m *metrics.Metrics) *retrieve.Retriever {
	cnt := &retrieve.Counters{}
	var peers func() []peer.ID // unknown for an external node
	if e := node.Embedded(); e != nil {
		peers = e.PeerHost.Network().Peers
	}
	r := retrieve.New(retrieve.Config{
		Local:   node.LocalBlocks(),
		Network: node.API.Dag(),
		Denied:  node.Denied,
		NewWriter: func(ctx context.Context) (retrieve.BlockWriter, error) {
			return node.NewBlockWriter(ctx)
		},
		Holders:  h.list,
		Peers:    peers,
		Stall:    stall,
		Counters: cnt,
	})
	m.Atomics(
		metrics.Atomic{Name: "nixipfs_retrieve_car_bytes_total", Help: "Block bytes received in CAR streams from peers' gateways.", V: &cnt.CARBytes},
		metrics.Atomic{Name: "nixipfs_retrieve_car_streams_total", Help: "CAR streams asked of peers' gateways.", V: &cnt.CARStreams},
		metrics.Atomic{Name: "nixipfs_retrieve_car_failures_total", Help: "CAR streams that ended in an error (holder gone, bad or truncated CAR).", V: &cnt.CARFailures},
		metrics.Atomic{Name: "nixipfs_retrieve_rejected_total", Help: "CAR streams refused for a block that does not match its CID or for too many bytes.", V: &cnt.RejectedCARs},
		metrics.Atomic{Name: "nixipfs_retrieve_network_blocks_total", Help: "Blocks fetched through the IPFS node (bitswap) for renders.", V: &cnt.NetworkGets},
		metrics.Atomic{Name: "nixipfs_retrieve_stalls_total", Help: "Waits for a block that hit the stall bound (the response was ended).", V: &cnt.Stalls},
	)
	return r
}
