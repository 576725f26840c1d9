package test

import (
	"encoding/binary"
	"path/filepath"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/ipfs/boxo/datastore/dshelp"
	"github.com/ipfs/go-cid"

	"github.com/nixipfs/nixipfs/internal/ipfsnode"
	"github.com/nixipfs/nixipfs/manifests"
)

// A narinfo reads a PathInfo record and the manifest's shards one block at
// a time. Publishing keeps them apart from NAR data in the embedded
// datastore (small-read data entries, which pebble keeps in its tables
// instead of the blob files the NARs' blocks go to), through kubo's block
// API (the record) and the bulk writer (the shards); the NAR's blocks stay
// in write order with the rest.
func TestSmallReadsKeptApart(t *testing.T) {
	dataDir := t.TempDir()
	node, err := ipfsnode.Open(ctx(t), ipfsnode.Options{DataDir: dataDir})
	if err != nil {
		t.Fatal(err)
	}
	_, rec := randomPath(t, node, "/nix/store/33333333333333333333333333333333-small-reads")
	pi, err := manifests.Store(ctx(t), node.API, rec)
	if err != nil {
		t.Fatal(err)
	}
	m, err := manifests.OpenLocalNode(dataDir, node).Update(ctx(t), map[string]cid.Cid{
		manifests.KeyStorePath("33333333333333333333333333333333"): pi,
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := node.Close(); err != nil {
		t.Fatal(err)
	}

	smallRead := smallReadIndex(t, dataDir)
	for name, c := range map[string]cid.Cid{"PathInfo record": pi, "manifest version": m.Version(), "manifest HAMT root": m.Info().Entries} {
		if !smallRead(c) {
			t.Errorf("%s %s is not a small-read block", name, c)
		}
	}
	if smallRead(rec.Root) {
		t.Errorf("the NAR's root %s is a small-read block", rec.Root)
	}
}

// A follower stores the manifest shards and PathInfo records it fetches as
// small-read blocks too, so that its narinfos read them as a publisher's
// do; the NAR's blocks it fetches stay in write order with the rest.
func TestFollowedRecordsKeptApart(t *testing.T) {
	nixEnv(t)
	pa := newPublisher(t, 1<<20, 20)
	pub := pa.node.publish(t, "--sign-key", pa.key, pa.path)
	if len(pub) != 1 {
		t.Fatalf("published %d paths, want 1", len(pub))
	}
	version, _ := pa.node.manifestVersion(t)
	b := newNode(t, "", nil)
	db := b.daemon(t, "--peer", loopbackPeer(t, pa.d), "--follow", pa.node.manifestName(t), "--prefetch", "1")
	waitPrefetched(t, db.url, 1)
	db.stop()
	pa.d.stop()

	node, err := ipfsnode.Open(ctx(t), ipfsnode.Options{DataDir: b.dataDir})
	if err != nil {
		t.Fatal(err)
	}
	v := cid.MustParse(version)
	m, err := manifests.LoadManifest(ctx(t), node.API.Dag(), v)
	if err != nil {
		t.Fatalf("B's copy of A's manifest %s: %v", v, err)
	}
	entries := m.Info().Entries
	if err := node.Close(); err != nil {
		t.Fatal(err)
	}
	smallRead := smallReadIndex(t, b.dataDir)
	for name, c := range map[string]cid.Cid{"PathInfo record": cid.MustParse(pub[0].PathInfo), "manifest version": v, "manifest HAMT root": entries} {
		if !smallRead(c) {
			t.Errorf("%s %s is not a small-read block on the follower", name, c)
		}
	}
	if root := cid.MustParse(pub[0].Root); smallRead(root) {
		t.Errorf("the NAR's root %s is a small-read block on the follower", root)
	}
}

// smallReadIndex opens the pebble datastore of dataDir's embedded repo (read
// only, closed with the test) and returns whether a block's index entry
// marks it small-read: sequence number, size, and a last byte 1.
func smallReadIndex(t *testing.T, dataDir string) func(cid.Cid) bool {
	t.Helper()
	db, err := pebble.Open(filepath.Join(dataDir, "ipfs", "pebble"), &pebble.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return func(c cid.Cid) bool {
		t.Helper()
		v, closer, err := db.Get([]byte("/blocks" + dshelp.MultihashToDsKey(c.Hash()).String()))
		if err != nil {
			t.Fatalf("index entry of %s: %v", c, err)
		}
		defer closer.Close()
		_, n := binary.Uvarint(v)
		_, k := binary.Uvarint(v[n:])
		rest := v[n+k:]
		return len(rest) == 1 && rest[0] == 1
	}
}
