package test

import (
	"bytes"
	"crypto/rand"
	"io"
	"testing"

	"github.com/ipfs/boxo/path"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"

	"github.com/nixipfs/nixipfs/internal/ipfsnode"
	"github.com/nixipfs/nixipfs/internal/publish"
	"github.com/nixipfs/nixipfs/ipldnar"
)

// backendSuite is what the rest of nixipfs needs from an IPFS node; both
// backends (embedded, external kubo over RPC) must pass it.
//
// It returns the result of the import it renders.
func backendSuite(t *testing.T, n *ipfsnode.Node) (imported ipldnar.Result) {
	c := ctx(t)
	raw := func(data []byte) blocks.Block {
		id, _ := cid.V1Builder{Codec: cid.Raw, MhType: mh.SHA2_256}.Sum(data)
		b, _ := blocks.NewBlockWithCid(data, id)
		return b
	}

	t.Run("bulk write then read", func(t *testing.T) {
		bw, err := n.NewBlockWriter(c)
		if err != nil {
			t.Fatal(err)
		}
		var written []blocks.Block
		for range 600 { // more than one embedded batch
			d := make([]byte, 4096)
			rand.Read(d)
			b := raw(d)
			written = append(written, b)
			if err := bw.Put(c, b); err != nil {
				t.Fatal(err)
			}
		}
		if err := bw.Put(c, written[0]); err != nil { // duplicates are fine
			t.Fatal(err)
		}
		if err := bw.Close(); err != nil {
			t.Fatal(err)
		}
		for _, b := range []blocks.Block{written[0], written[299], written[599]} {
			r, err := n.API.Block().Get(c, path.FromCid(b.Cid()))
			if err != nil {
				t.Fatalf("get %s: %v", b.Cid(), err)
			}
			got, _ := io.ReadAll(r)
			if !bytes.Equal(got, b.RawData()) {
				t.Fatalf("block %s read back differs", b.Cid())
			}
		}
	})

	t.Run("aborted write pins nothing", func(t *testing.T) {
		before := pinSet(t, c, n.API, "all")
		bw, err := n.NewBlockWriter(c)
		if err != nil {
			t.Fatal(err)
		}
		bw.Put(c, raw([]byte("half an import")))
		bw.Abort()
		if got := pinSet(t, c, n.API, "all"); len(got) != len(before) {
			t.Fatalf("pins changed: %d -> %d", len(before), len(got))
		}
	})

	t.Run("import, pin, render", func(t *testing.T) {
		nar := narOf(dir(entry("bin", dir(entry("x", file("#!/bin/sh\n", true)))), entry("lib", symlink("bin"))))
		res, err := publish.ImportNAR(c, n, bytes.NewReader(nar), nil)
		if err != nil {
			t.Fatal(err)
		}
		if !pinSet(t, c, n.API, "all")[res.Root] {
			t.Fatalf("root %s not pinned", res.Root)
		}
		var out bytes.Buffer
		if _, err := ipldnar.Render(c, &out, res.Root, n.API.Dag()); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out.Bytes(), nar) {
			t.Fatal("rendered NAR differs")
		}
		// The import recorded what it hashed, for the gateway, on an
		// embedded node only; a record names one size and hash.
		size := int64(res.NarSize)
		if got, want := n.Rendered(c, res.Root, size, res.NarHash[:]), n.Kind() == "embedded"; got != want {
			t.Fatalf("%s node: Rendered %v after the import, want %v", n.Kind(), got, want)
		}
		other := res.NarHash
		other[0] ^= 1
		if n.Rendered(c, res.Root, size, other[:]) || n.Rendered(c, res.Root, size+1, res.NarHash[:]) {
			t.Fatal("Rendered true for another NarHash or size")
		}
		imported = res
	})
	return imported
}

func TestBackendEmbedded(t *testing.T) {
	dataDir := t.TempDir()
	n, err := ipfsnode.Open(ctx(t), ipfsnode.Options{DataDir: dataDir})
	if err != nil {
		t.Fatal(err)
	}
	if n.Kind() != "embedded" {
		t.Fatalf("kind %s", n.Kind())
	}
	res := backendSuite(t, n)
	n.Close()

	// Reopened online, the node listens on loopback only and its config
	// has no bootstrap peers, mDNS or delegated routing; it still knows
	// what the import rendered to.
	n, err = ipfsnode.Open(ctx(t), ipfsnode.Options{DataDir: dataDir, Online: true})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if !n.Rendered(ctx(t), res.Root, int64(res.NarSize), res.NarHash[:]) {
		t.Fatal("the import's NAR record did not outlive the node")
	}
	addrs, err := n.API.Swarm().ListenAddrs(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if s := a.String(); !bytes.HasPrefix([]byte(s), []byte("/ip4/127.0.0.1/")) {
			t.Errorf("embedded node listens on %s", s)
		}
	}
	cfg, err := n.Embedded().Repo.Config()
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Bootstrap) != 0 || cfg.Discovery.MDNS.Enabled || len(cfg.Routing.DelegatedRouters) != 0 || cfg.AutoConf.Enabled.WithDefault(true) {
		t.Errorf("embedded config not closed: bootstrap %v mdns %v routers %v autoconf %v",
			cfg.Bootstrap, cfg.Discovery.MDNS.Enabled, cfg.Routing.DelegatedRouters, cfg.AutoConf.Enabled)
	}
}

func TestBackendExternal(t *testing.T) {
	k := startKubo(t)
	n, err := ipfsnode.Open(ctx(t), ipfsnode.Options{APIAddr: k.api})
	if err != nil {
		t.Fatal(err)
	}
	if n.Kind() != "external" {
		t.Fatalf("kind %s", n.Kind())
	}
	backendSuite(t, n)
}

// TestBackendDaemonSocket: while a daemon holds the embedded repo, Open on
// the same data dir reaches the daemon's node through its API socket.
func TestBackendDaemonSocket(t *testing.T) {
	nd := newNode(t, "", nil)
	nd.daemon(t)
	n, err := ipfsnode.Open(ctx(t), ipfsnode.Options{DataDir: nd.dataDir})
	if err != nil {
		t.Fatal(err)
	}
	if n.Kind() != "external" {
		t.Fatalf("kind %s, want the daemon's node over its socket", n.Kind())
	}
	backendSuite(t, n)
}
