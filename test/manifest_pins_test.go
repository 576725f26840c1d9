package test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"testing"

	"github.com/ipfs/boxo/path"
	"github.com/ipfs/go-cid"
	coreiface "github.com/ipfs/kubo/core/coreiface"
	"github.com/ipfs/kubo/core/coreiface/options"
	mh "github.com/multiformats/go-multihash"
	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/nixipfs/nixipfs/internal/ipfsnode"
	"github.com/nixipfs/nixipfs/manifests"
)

// TestManifestBulkPins updates a manifest deep enough for sub-shards
// through OpenLocalNode, whose updates write and pin in batches, on an
// embedded node (also with the daemon's background release) and on an
// external kubo: after each update every shard of the current HAMT and its
// Version block are pinned directly and not recursively, the shards only the
// previous version had are no longer pinned, and after kubo's repo GC (which
// takes them) every entry is still there. The last update undoes the one
// before, right after it: it pins again exactly the shards whose release
// the one before started.
func TestManifestBulkPins(t *testing.T) {
	t.Run("embedded", func(t *testing.T) { manifestBulkPins(t, "", false) })
	t.Run("embedded-background", func(t *testing.T) { manifestBulkPins(t, "", true) })
	t.Run("external", func(t *testing.T) { manifestBulkPins(t, startKubo(t).api, false) })
}

func manifestBulkPins(t *testing.T, apiAddr string, background bool) {
	dataDir := t.TempDir()
	node, err := ipfsnode.Open(ctx(t), ipfsnode.Options{DataDir: dataDir, APIAddr: apiAddr})
	if err != nil {
		t.Fatal(err)
	}
	defer node.Close()
	api := node.API
	root, _ := cid.V1Builder{Codec: cid.Raw, MhType: mh.SHA2_256}.Sum(nil)
	if _, err := api.Block().Put(ctx(t), bytes.NewReader(nil)); err != nil {
		t.Fatal(err)
	}
	if err := api.Pin().Add(ctx(t), path.FromCid(root)); err != nil {
		t.Fatal(err)
	}
	// One record shared by every key: the HAMT's shape is what is tested.
	h := sha256.Sum256([]byte(t.Name()))
	rec, err := manifests.Store(ctx(t), api, &manifests.PathInfo{
		StorePath: "/nix/store/" + nixbase32.EncodeToString(h[:20]) + "-x",
		NarHash:   h[:], NarSize: 1, Blake3: h[:], Root: root, Profile: "x"})
	if err != nil {
		t.Fatal(err)
	}
	key := func(i int) string {
		s := sha256.Sum256(fmt.Appendf(nil, "%s %d", t.Name(), i))
		return manifests.KeyStorePath(nixbase32.EncodeToString(s[:20]))
	}
	puts := func(from, to int) map[string]cid.Cid {
		m := map[string]cid.Cid{}
		for i := from; i < to; i++ {
			m[key(i)] = rec
		}
		return m
	}
	local := manifests.OpenLocalNode(dataDir, node)
	if background {
		local.ReleaseInBackground()
	}
	check := func(m, prev *manifests.Manifest, entries int) {
		t.Helper()
		shards := hamtShards(ctx(t), t, api, m.Info().Entries)
		direct := pinSet(t, ctx(t), api, "direct")
		rec := pinSet(t, ctx(t), api, "recursive")
		if !direct[m.Version()] || rec[m.Version()] {
			t.Fatalf("version %s: pinned directly %v, recursively %v", m.Version(), direct[m.Version()], rec[m.Version()])
		}
		for c := range shards {
			if !direct[c] || rec[c] {
				t.Fatalf("shard %s of the current HAMT (%d shards): pinned directly %v, recursively %v", c, len(shards), direct[c], rec[c])
			}
		}
		if prev != nil {
			if direct[prev.Version()] {
				t.Fatalf("the previous version %s is still pinned", prev.Version())
			}
			gone := 0
			for c := range hamtShards(ctx(t), t, api, prev.Info().Entries) {
				if _, ok := shards[c]; ok {
					continue
				}
				if direct[c] {
					t.Fatalf("shard %s of the previous version only is still pinned", c)
				}
				gone++
			}
			if gone == 0 {
				t.Fatal("the update replaced no shard: the test tests nothing")
			}
		}
		if _, err := node.CollectGarbage(ctx(t)); err != nil {
			t.Fatal(err)
		}
		n := 0
		if err := m.Walk(ctx(t), func(string, cid.Cid) error { n++; return nil }); err != nil {
			t.Fatalf("walk after repo gc: %v", err)
		}
		if n != entries {
			t.Fatalf("walk after repo gc: %d entries, want %d", n, entries)
		}
	}

	keys := func(from, to int) []string {
		var ks []string
		for i := from; i < to; i++ {
			ks = append(ks, key(i))
		}
		return ks
	}
	update := func(puts map[string]cid.Cid, deletes []string) *manifests.Manifest {
		t.Helper()
		m, err := local.Update(ctx(t), puts, deletes)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}

	m1 := update(puts(0, 3000), nil)
	if len(hamtShards(ctx(t), t, api, m1.Info().Entries)) < 2 {
		t.Fatal("3,000 keys made no sub-shard")
	}
	local.Wait()
	check(m1, nil, 3000)
	m2 := update(puts(3000, 3300), keys(0, 100))
	local.Wait()
	check(m2, m1, 3200)
	m3 := update(puts(0, 100), keys(3000, 3300)) // back to m1's entries
	m4 := update(puts(3000, 3300), keys(0, 100)) // and to m2's, at once
	local.Wait()
	if !m3.Info().Entries.Equals(m1.Info().Entries) || !m4.Info().Entries.Equals(m2.Info().Entries) {
		t.Fatal("undoing an update did not give the same HAMT")
	}
	check(m4, m3, 3200)
	if got, err := local.CurrentVersion(); err != nil || !got.Equals(m4.Version()) {
		t.Fatalf("recorded version %s (%v), want %s", got, err, m4.Version())
	}
}

// hamtShards lists a manifest HAMT's shards (the dag-pb blocks under root;
// the values it links are dag-cbor) with their sizes.
func hamtShards(ctx context.Context, tb testing.TB, api coreiface.CoreAPI, root cid.Cid) map[cid.Cid]int {
	tb.Helper()
	shards := map[cid.Cid]int{}
	var walk func(c cid.Cid)
	walk = func(c cid.Cid) {
		if _, ok := shards[c]; ok || c.Type() != cid.DagProtobuf {
			return
		}
		nd, err := api.Dag().Get(ctx, c)
		if err != nil {
			tb.Fatal(err)
		}
		shards[c] = len(nd.RawData())
		for _, l := range nd.Links() {
			walk(l.Cid)
		}
	}
	walk(root)
	return shards
}

// pinSet lists the node's pins of one kind (all, direct, recursive,
// indirect).
func pinSet(t *testing.T, c context.Context, api coreiface.CoreAPI, kind string) map[cid.Cid]bool {
	t.Helper()
	opt, err := options.Pin.Ls.Type(kind)
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan coreiface.Pin)
	errc := make(chan error, 1)
	go func() { errc <- api.Pin().Ls(c, ch, opt) }()
	set := map[cid.Cid]bool{}
	for p := range ch {
		set[p.Path().RootCid()] = true
	}
	if err := <-errc; err != nil {
		t.Fatalf("pin ls %s: %v", kind, err)
	}
	return set
}
