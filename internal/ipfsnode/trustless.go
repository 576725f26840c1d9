package ipfsnode

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"github.com/ipfs-shipyard/nopfs"
	nopfsipfs "github.com/ipfs-shipyard/nopfs/ipfs"
	"github.com/ipfs/boxo/blockservice"
	bstore "github.com/ipfs/boxo/blockstore"
	offline "github.com/ipfs/boxo/exchange/offline"
	"github.com/ipfs/boxo/gateway"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nixipfs/nixipfs/manifests/carfile"
)

// TrustlessHandler serves the IPFS trustless-gateway requests
// (`/ipfs/<cid>?format=car|raw`, application/vnd.ipld.car and .raw) from
// the embedded node's blocks. It reads only local blocks: a peer asking for
// a CAR gets what this node holds, never a fetch on its behalf. An external
// kubo serves these from its own gateway.
//
// A whole DAG as one CAR (no path, dag-scope=all, dups=n, depth-first),
// which is what followers ask for, is written by carfile.Export straight
// from the blockstore (the datastore itself in the ordered layout, as
// LocalBlocks reads): boxo's handler, which serves everything else,
// decodes every block into IPLD nodes to walk it and ran at about a third
// of the speed of a NAR render here.
func (n *Node) TrustlessHandler(reg prometheus.Registerer) (http.Handler, error) {
	if n.embedded == nil {
		return nil, errors.New("trustless gateway: only an embedded node serves one")
	}
	if reg == nil {
		reg = prometheus.NewRegistry() // not the global one
	}
	bs := n.embedded.Blockstore
	bserv := blockservice.New(bs, offline.Exchange(bs))
	if n.blocker != nil {
		// kubo wraps only its node's own blockservice in its denylists.
		bserv = nopfsipfs.WrapBlockService(bserv, n.blocker)
	}
	backend, err := gateway.NewBlocksBackend(bserv,
		gateway.WithResolver(n.embedded.OfflineUnixFSPathResolver),
		gateway.WithPrometheusRegistry(reg))
	if err != nil {
		return nil, err
	}
	t := &trustless{bs: bs, blocker: n.blocker, boxo: gateway.NewHandler(gateway.Config{NoDNSLink: true, MetricsRegistry: reg}, backend)}
	if d, ok := n.LocalBlocks().(storeDag); ok {
		// The ordered layout: exports read the store directly, as renders
		// do (see LocalBlocks), with the same checks as get.
		t.read = d.block
	}
	return t, nil
}

type trustless struct {
	bs      bstore.Blockstore
	blocker *nopfs.Blocker // nil: no denylist
	boxo    http.Handler
	// read, if set, reads a block for a CAR export instead of get.
	read func(ctx context.Context, c cid.Cid) (blocks.Block, error)
}

// get reads a block for a CAR export, refusing what the denylists name.
func (t *trustless) get(ctx context.Context, c cid.Cid) (blocks.Block, error) {
	if t.read != nil {
		return t.read(ctx, c)
	}
	if err := blocked(t.blocker, c); err != nil {
		return nil, err
	}
	return t.bs.Get(ctx, c)
}

// carContentType is what a whole-DAG CAR answer says it is.
const carContentType = "application/vnd.ipld.car; version=1; order=dfs; dups=n"

func (t *trustless) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	root, ok := wholeDAGCAR(r)
	if !ok {
		t.boxo.ServeHTTP(w, r)
		return
	}
	if blocked(t.blocker, root) != nil {
		http.Error(w, "blocked by a denylist: "+root.String(), http.StatusGone) // as kubo's gateway
		return
	}
	if has, err := t.bs.Has(r.Context(), root); err != nil || !has {
		http.Error(w, "not here: "+root.String(), http.StatusNotFound)
		return
	}
	h := w.Header()
	h.Set("Content-Type", carContentType)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "public, max-age=29030400, immutable")
	h.Set("Etag", `"`+root.String()+`.car"`)
	h.Set("X-Ipfs-Roots", root.String())
	if r.Method == http.MethodHead {
		return
	}
	if _, err := carfile.Export(r.Context(), w, t.get, []cid.Cid{root}); err != nil {
		// A CAR cut short: the client's verifying reader sees it.
		panic(http.ErrAbortHandler)
	}
}

// wholeDAGCAR reports whether r asks for all of the DAG under one CID as a
// depth-first CARv1 without duplicates, and which CID.
func wholeDAGCAR(r *http.Request) (cid.Cid, bool) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return cid.Undef, false
	}
	rest, ok := strings.CutPrefix(r.URL.Path, "/ipfs/")
	if !ok || strings.Contains(rest, "/") {
		return cid.Undef, false
	}
	c, err := cid.Decode(rest)
	if err != nil {
		return cid.Undef, false
	}
	q := r.URL.Query()
	accept := r.Header.Get("Accept")
	if q.Get("format") != "car" && !strings.Contains(accept, "application/vnd.ipld.car") {
		return cid.Undef, false
	}
	if strings.Contains(accept, "application/vnd.ipld.raw") {
		return cid.Undef, false
	}
	for key, want := range map[string]string{"dag-scope": "all", "dups": "n", "order": "dfs", "car-version": "1"} {
		if v := q.Get(key); v != "" && v != want {
			return cid.Undef, false
		}
		if strings.Contains(accept, key+"=") && !strings.Contains(accept, key+"="+want) {
			return cid.Undef, false
		}
	}
	if q.Has("entity-bytes") || strings.Contains(accept, "version=2") {
		return cid.Undef, false
	}
	return c, true
}
