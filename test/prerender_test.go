package test

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"

	"github.com/nixipfs/nixipfs/gateway"
	"github.com/nixipfs/nixipfs/gateway/narcache"
	"github.com/nixipfs/nixipfs/internal/ipfsnode"
	"github.com/nixipfs/nixipfs/internal/metrics"
	"github.com/nixipfs/nixipfs/manifests"
)

// TestPrerender serves narinfos from a gateway with --prerender on a real
// kubo: GET narinfos alone render nothing (a crawler's reads cost no
// renders); once a NAR is asked for, the path's NAR is put in the NAR cache
// with no request of its own, verified as a request's render is; a NAR
// whose record is forged, or whose blocks are not here, or whose narinfo
// was only asked with HEAD, is not cached; /metrics counts what it did;
// and the cached NAR is then served whole.
func TestPrerender(t *testing.T) {
	k := startKubo(t)
	node, err := ipfsnode.Open(ctx(t), ipfsnode.Options{APIAddr: k.api})
	if err != nil {
		t.Fatal(err)
	}
	nar, got := randomPath(t, node, "/nix/store/a0000000000000000000000000000000-p")
	_, head := randomPath(t, node, "/nix/store/b0000000000000000000000000000000-p")
	_, other := randomPath(t, node, "/nix/store/c0000000000000000000000000000000-p")
	_, first := randomPath(t, node, "/nix/store/d0000000000000000000000000000000-p")
	forged := *got
	forged.StorePath = "/nix/store/f0000000000000000000000000000000-forged"
	forged.Root = other.Root // same size, other bytes
	absent := *got
	absent.StorePath = "/nix/store/g0000000000000000000000000000000-absent"
	h, _ := mh.Sum([]byte("nobody has this block"), mh.SHA2_256, -1)
	absent.Root = cid.NewCidV1(cid.Raw, h)

	local := manifests.OpenLocal(t.TempDir(), node.API)
	puts := map[string]cid.Cid{}
	for _, p := range []*manifests.PathInfo{got, head, first, &forged, &absent} {
		c, err := manifests.Store(ctx(t), node.API, p)
		if err != nil {
			t.Fatal(err)
		}
		puts[manifests.KeyStorePath(p.HashPart())] = c
	}
	if _, err := local.Update(ctx(t), puts, nil); err != nil {
		t.Fatal(err)
	}
	resolver, err := manifests.NewResolver(node.API, local, nil, manifests.Policy{})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := narcache.Open(t.TempDir(), 64<<20)
	if err != nil {
		t.Fatal(err)
	}
	m := metrics.New()
	gw := gateway.New(gateway.Config{API: node.API, Paths: resolver, NARCache: nc, Prerender: 16, Metrics: m})
	srv := httptest.NewServer(gw)
	defer srv.Close()

	ask := func(method string, p *manifests.PathInfo) {
		req, _ := http.NewRequest(method, srv.URL+"/"+p.HashPart()+".narinfo", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s narinfo of %s: %s", method, p.StorePath, resp.Status)
		}
	}
	ask(http.MethodGet, got)
	ask(http.MethodGet, &forged)
	ask(http.MethodGet, &absent)
	ask(http.MethodHead, head)
	cached := func(p *manifests.PathInfo) bool {
		f := nc.Open(p.Root, p.NarHash, p.NarSize)
		if f != nil {
			f.Close()
		}
		return f != nil
	}
	counts := func(want map[string]float64) {
		t.Helper()
		got := scrape(t, srv.URL)
		for k, v := range want {
			if got["nixipfs_prerender_"+k+"_total"] != v {
				t.Errorf("/metrics: nixipfs_prerender_%s_total %v, want %v", k, got["nixipfs_prerender_"+k+"_total"], v)
			}
		}
	}
	// No NAR asked for yet: no worker was started, so this returns at once.
	if err := gw.Prerendered(ctx(t)); err != nil {
		t.Fatal(err)
	}
	if cached(got) {
		t.Fatal("narinfo GETs alone prerendered a NAR")
	}
	counts(map[string]float64{"queued": 3, "rendered": 0})

	get(t, srv.URL+"/"+gateway.NarURL(first)) // Nix's first NAR download arms the prerenderer
	if err := gw.Prerendered(ctx(t)); err != nil {
		t.Fatal(err)
	}
	nc.Close() // and committed
	for _, c := range []struct {
		p      *manifests.PathInfo
		cached bool
	}{{got, true}, {&forged, false}, {&absent, false}, {head, false}} {
		if cached(c.p) != c.cached {
			t.Errorf("%s: cached %v, want %v", c.p.StorePath, !c.cached, c.cached)
		}
	}
	counts(map[string]float64{"queued": 3, "rendered": 1, "failed": 2, "dropped": 0})

	if body := get(t, srv.URL+"/"+gateway.NarURL(got)); !bytes.Equal(body, nar) {
		t.Fatalf("prerendered NAR: %d bytes, not the path's NAR", len(body))
	}
	counts(map[string]float64{"used": 1, "unused": 0})
}
