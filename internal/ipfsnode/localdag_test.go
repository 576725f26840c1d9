package ipfsnode

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	dshelp "github.com/ipfs/boxo/datastore/dshelp"
	"github.com/ipfs/boxo/ipld/merkledag"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
	mh "github.com/multiformats/go-multihash"
)

// TestStoreDag reads blocks through the ordered store directly, as renders
// do (Node.LocalBlocks): raw and dag-pb blocks decode as kubo's DAG service
// decodes them, identity CIDs need no store, a missing block is
// ipld.ErrNotFound (the retriever then asks peers), a CID with a hash
// kubo does not allow is refused, and with Datastore.HashOnRead a block
// whose data does not match its CID is refused.
func TestStoreDag(t *testing.T) {
	ctx := context.Background()
	s := openTestStore(t, t.TempDir(), layoutOrdered)
	defer s.Close()
	put := func(c cid.Cid, data []byte) {
		t.Helper()
		if err := s.Put(ctx, blocksNS.Child(dshelp.MultihashToDsKey(c.Hash())), data); err != nil {
			t.Fatal(err)
		}
	}
	raw := merkledag.NewRawNode(bytes.Repeat([]byte("raw "), 1000))
	pb := merkledag.NodeWithData([]byte("a directory"))
	if err := pb.AddNodeLink("f", raw); err != nil {
		t.Fatal(err)
	}
	for _, n := range []ipld.Node{raw, pb} {
		put(n.Cid(), n.RawData())
	}
	d := storeDag{s: s}
	for _, want := range []ipld.Node{raw, pb} {
		got, err := d.Get(ctx, want.Cid())
		if err != nil {
			t.Fatalf("Get %s: %v", want.Cid(), err)
		}
		if !got.Cid().Equals(want.Cid()) || !bytes.Equal(got.RawData(), want.RawData()) || len(got.Links()) != len(want.Links()) {
			t.Fatalf("Get %s: got %s, %d links", want.Cid(), got.Cid(), len(got.Links()))
		}
	}

	idHash, _ := mh.Sum([]byte("inline"), mh.IDENTITY, -1)
	if got, err := d.Get(ctx, cid.NewCidV1(cid.Raw, idHash)); err != nil || string(got.RawData()) != "inline" {
		t.Fatalf("identity CID: %v", err)
	}
	absent := merkledag.NewRawNode([]byte("nobody stored this"))
	if _, err := d.Get(ctx, absent.Cid()); !ipld.IsNotFound(err) {
		t.Fatalf("missing block: %v, want ipld.ErrNotFound", err)
	}
	md5Hash, _ := mh.Sum([]byte("weak"), mh.MD5, -1)
	if _, err := d.Get(ctx, cid.NewCidV1(cid.Raw, md5Hash)); err == nil || ipld.IsNotFound(err) {
		t.Fatalf("md5 CID: %v, want a refusal", err)
	}

	forged := merkledag.NewRawNode([]byte("the block this CID names"))
	put(forged.Cid(), []byte("other bytes"))
	if got, err := d.Get(ctx, forged.Cid()); err != nil || string(got.RawData()) != "other bytes" {
		t.Fatalf("without HashOnRead (as kubo): %v", err)
	}
	if _, err := (storeDag{s: s, hashOnRead: true}).Get(ctx, forged.Cid()); err == nil || !strings.Contains(err.Error(), "HashOnRead") {
		t.Fatalf("with HashOnRead: %v, want a refusal", err)
	}
}

// TestContentBlocking checks when renders must read through kubo, which
// applies its denylists: a .deny file in the repo's denylists directory or
// in $XDG_CONFIG_HOME/ipfs/denylists turns the direct reads off, unless
// IPFS_CONTENT_BLOCKING_DISABLE is set (as in kubo).
func TestContentBlocking(t *testing.T) {
	t.Setenv("IPFS_CONTENT_BLOCKING_DISABLE", "")
	xdg := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", xdg)
	if _, err := os.Stat("/etc/ipfs/denylists"); err == nil {
		t.Fatal("this machine has /etc/ipfs/denylists: the test cannot tell its cases apart")
	}
	repo := t.TempDir()
	s := openTestStore(t, repo, layoutOrdered)
	defer s.Close()
	direct := func() bool {
		n := &Node{store: s, blocking: contentBlocking(repo)}
		return n.directBlocks() != nil
	}
	if !direct() {
		t.Fatal("no denylist: renders do not read the store directly")
	}
	deny := func(dir string) {
		t.Helper()
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "bad.deny"), []byte("/ipfs/bafkqaaa\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, dir := range []string{filepath.Join(repo, "denylists"), filepath.Join(xdg, "ipfs", "denylists")} {
		deny(dir)
		if direct() {
			t.Errorf("a denylist in %s: renders read the store directly, not through kubo's blocker", dir)
		}
		t.Setenv("IPFS_CONTENT_BLOCKING_DISABLE", "1")
		if !direct() {
			t.Errorf("IPFS_CONTENT_BLOCKING_DISABLE: renders do not read the store directly")
		}
		t.Setenv("IPFS_CONTENT_BLOCKING_DISABLE", "")
		if err := os.RemoveAll(dir); err != nil {
			t.Fatal(err)
		}
	}
}
