package ipfsnode

import (
	"errors"
	"net/http"

	"github.com/ipfs/boxo/blockservice"
	offline "github.com/ipfs/boxo/exchange/offline"
	"github.com/ipfs/boxo/gateway"
	"github.com/prometheus/client_golang/prometheus"
)

// TrustlessHandler serves the IPFS trustless-gateway requests
// (`/ipfs/<cid>?format=car|raw`, application/vnd.ipld.car and .raw) from
// the embedded node's blocks, with boxo's gateway handler. It reads only
// local blocks: a peer asking for a CAR gets what this node holds, never a
// fetch on its behalf. An external kubo serves these from its own gateway.
func (n *Node) TrustlessHandler(reg prometheus.Registerer) (http.Handler, error) {
	if n.embedded == nil {
		return nil, errors.New("trustless gateway: only an embedded node serves one")
	}
	if reg == nil {
		reg = prometheus.NewRegistry() // not the global one
	}
	bs := n.embedded.Blockstore
	bserv := blockservice.New(bs, offline.Exchange(bs))
	backend, err := gateway.NewBlocksBackend(bserv,
		gateway.WithResolver(n.embedded.OfflineUnixFSPathResolver),
		gateway.WithPrometheusRegistry(reg))
	if err != nil {
		return nil, err
	}
	return gateway.NewHandler(gateway.Config{NoDNSLink: true, MetricsRegistry: reg}, backend), nil
}
