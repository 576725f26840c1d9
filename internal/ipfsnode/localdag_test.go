package ipfsnode

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

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
		if err := s.Put(ctx, blockKey(c), data); err != nil {
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

// GetQuick answers only from the hot blocks, with Get's checks: a block
// read twice is at hand, one read once or not at all is not, and neither
// is anything with HashOnRead or without hot blocks.
func TestStoreDagQuick(t *testing.T) {
	ctx := context.Background()
	s := openTestStore(t, t.TempDir(), layoutOrdered)
	defer s.Close()
	raw := merkledag.NewRawNode(bytes.Repeat([]byte("hot "), 1000))
	if err := s.Put(ctx, blockKey(raw.Cid()), raw.RawData()); err != nil {
		t.Fatal(err)
	}
	d := storeDag{s: s}
	get := func() {
		t.Helper()
		if _, err := d.Get(ctx, raw.Cid()); err != nil {
			t.Fatal(err)
		}
	}
	get()
	get()
	if _, ok := d.GetQuick(ctx, raw.Cid()); ok {
		t.Fatal("at hand without hot blocks")
	}
	s.ord.hot.Store(newHotBlocks(1 << 20))
	get()
	if _, ok := d.GetQuick(ctx, raw.Cid()); ok {
		t.Fatal("at hand after one read")
	}
	get()
	got, ok := d.GetQuick(ctx, raw.Cid())
	if !ok || !got.Cid().Equals(raw.Cid()) || !bytes.Equal(got.RawData(), raw.RawData()) {
		t.Fatalf("not at hand after two reads (%v)", ok)
	}
	if _, ok := (storeDag{s: s, hashOnRead: true}).GetQuick(ctx, raw.Cid()); ok {
		t.Fatal("at hand with HashOnRead")
	}
	absent := merkledag.NewRawNode([]byte("nobody stored this"))
	if _, ok := d.GetQuick(ctx, absent.Cid()); ok {
		t.Fatal("a missing block is at hand")
	}
}

// TestContentBlocking checks that direct reads apply kubo's denylists: a
// .deny file in $XDG_CONFIG_HOME/ipfs/denylists, ./denylists (where
// kubo's plugin looks, loaded with no repo) or the repo's denylists refuses
// the CIDs it names and no other, unless IPFS_CONTENT_BLOCKING_DISABLE is
// set (as in kubo).
func TestContentBlocking(t *testing.T) {
	ctx := context.Background()
	t.Setenv("IPFS_CONTENT_BLOCKING_DISABLE", "")
	xdg := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", xdg)
	t.Chdir(t.TempDir())
	repo := t.TempDir()
	if _, err := os.Stat("/etc/ipfs/denylists"); err == nil {
		t.Fatal("this machine has /etc/ipfs/denylists: the test cannot tell its cases apart")
	}
	s := openTestStore(t, t.TempDir(), layoutOrdered)
	defer s.Close()
	denied, other := merkledag.NewRawNode([]byte("denied")), merkledag.NewRawNode([]byte("other"))
	for _, n := range []ipld.Node{denied, other} {
		if err := s.Put(ctx, blockKey(n.Cid()), n.RawData()); err != nil {
			t.Fatal(err)
		}
	}
	// reads reports whether denied and other can be read by a node
	// started now.
	reads := func() (bool, bool) {
		t.Helper()
		b, err := newBlocker(repo)
		if err != nil {
			t.Fatal(err)
		}
		if b != nil {
			defer b.Close()
		}
		d := storeDag{s: s, blocker: b}
		_, errD := d.Get(ctx, denied.Cid())
		_, errO := d.Get(ctx, other.Cid())
		return errD == nil, errO == nil
	}
	if d, o := reads(); !d || !o {
		t.Fatalf("no denylist: reads %v, %v", d, o)
	}
	for _, dir := range []string{"denylists", filepath.Join(xdg, "ipfs", "denylists"), filepath.Join(repo, "denylists")} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		rule := "version: 1\nname: test\n---\n/ipfs/" + denied.Cid().String() + "\n"
		if err := os.WriteFile(filepath.Join(dir, "test.deny"), []byte(rule), 0o644); err != nil {
			t.Fatal(err)
		}
		if d, o := reads(); d || !o {
			t.Errorf("a denylist in %s: the denied block read %v, the other %v", dir, d, o)
		}
		t.Setenv("IPFS_CONTENT_BLOCKING_DISABLE", "1")
		if d, o := reads(); !d || !o {
			t.Errorf("IPFS_CONTENT_BLOCKING_DISABLE: reads %v, %v", d, o)
		}
		t.Setenv("IPFS_CONTENT_BLOCKING_DISABLE", "")
		if err := os.RemoveAll(dir); err != nil {
			t.Fatal(err)
		}
	}
}
