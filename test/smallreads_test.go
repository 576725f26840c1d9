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

	db, err := pebble.Open(filepath.Join(dataDir, "ipfs", "pebble"), &pebble.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	// smallRead reads c's index entry: sequence number, size, and a last
	// byte 1 for a small-read block.
	smallRead := func(c cid.Cid) bool {
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
	for name, c := range map[string]cid.Cid{"PathInfo record": pi, "manifest version": m.Version(), "manifest HAMT root": m.Info().Entries} {
		if !smallRead(c) {
			t.Errorf("%s %s is not a small-read block", name, c)
		}
	}
	if smallRead(rec.Root) {
		t.Errorf("the NAR's root %s is a small-read block", rec.Root)
	}
}
