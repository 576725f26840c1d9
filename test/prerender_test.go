package test

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
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
// kubo: a GET narinfo puts the path's NAR in the NAR cache with no NAR
// request, verified as a request's render is; a NAR whose record is
// forged, or whose blocks are not here, or whose narinfo was only asked
// with HEAD, is not cached; /metrics counts what it did; and the cached
// NAR is then served whole.
func TestPrerender(t *testing.T) {
	k := startKubo(t)
	node, err := ipfsnode.Open(ctx(t), ipfsnode.Options{APIAddr: k.api})
	if err != nil {
		t.Fatal(err)
	}
	nar, got := randomPath(t, node, "/nix/store/a0000000000000000000000000000000-p")
	_, head := randomPath(t, node, "/nix/store/b0000000000000000000000000000000-p")
	_, other := randomPath(t, node, "/nix/store/c0000000000000000000000000000000-p")
	forged := *got
	forged.StorePath = "/nix/store/f0000000000000000000000000000000-forged"
	forged.Root = other.Root // same size, other bytes
	absent := *got
	absent.StorePath = "/nix/store/g0000000000000000000000000000000-absent"
	h, _ := mh.Sum([]byte("nobody has this block"), mh.SHA2_256, -1)
	absent.Root = cid.NewCidV1(cid.Raw, h)

	local := manifests.OpenLocal(t.TempDir(), node.API)
	puts := map[string]cid.Cid{}
	for _, p := range []*manifests.PathInfo{got, head, &forged, &absent} {
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
	if err := gw.Prerendered(ctx(t)); err != nil {
		t.Fatal(err)
	}
	nc.Close() // and committed
	for _, c := range []struct {
		p      *manifests.PathInfo
		cached bool
	}{{got, true}, {&forged, false}, {&absent, false}, {head, false}} {
		f := nc.Open(c.p.Root, c.p.NarHash, c.p.NarSize)
		if (f != nil) != c.cached {
			t.Errorf("%s: cached %v, want %v", c.p.StorePath, f != nil, c.cached)
		}
		if f != nil {
			f.Close()
		}
	}

	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	text, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"nixipfs_prerender_queued_total 3", "nixipfs_prerender_rendered_total 1",
		"nixipfs_prerender_failed_total 2", "nixipfs_prerender_dropped_total 0"} {
		if !strings.Contains(string(text), want+"\n") {
			t.Errorf("/metrics has no %q", want)
		}
	}

	resp, err = http.Get(srv.URL + "/" + gateway.NarURL(got))
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || !bytes.Equal(body, nar) {
		t.Fatalf("prerendered NAR: err %v, %d bytes, equal %v", err, len(body), bytes.Equal(body, nar))
	}
}
