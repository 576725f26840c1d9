package manifests

import (
	"bytes"
	"crypto/rand"
	"slices"
	"strings"
	"testing"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"
	"github.com/nix-community/go-nix/pkg/narinfo/signature"
)

func testCID(t *testing.T, s string) cid.Cid {
	t.Helper()
	c, err := cid.V1Builder{Codec: cid.Raw, MhType: mh.SHA2_256}.Sum([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func sample(t *testing.T) *PathInfo {
	dep := testCID(t, "dep-info")
	drv := "6fbdkc2kbkkfq43xpmj5ycxjqfy4zh1q-top.drv"
	ca := "fixed:r:sha256:1w8359zwlx05d5jzzjp6q8l48d209zxjfb2mjdd8ynhp7sm97c9n"
	return &PathInfo{
		StorePath: "/nix/store/45ciyxrcskr7rjzs00znrhw8xn3ixp1k-top",
		NarHash:   bytes.Repeat([]byte{1}, 32),
		NarSize:   688,
		Blake3:    bytes.Repeat([]byte{2}, 32),
		Root:      testCID(t, "root"),
		References: []Reference{
			{Name: "45ciyxrcskr7rjzs00znrhw8xn3ixp1k-top"},
			{Name: "0c7dyq1w2sxr5szq3n5ldx0a8ar4q6zk-dep", Info: &dep},
		},
		Deriver:        &drv,
		ContentAddress: &ca,
		Signatures:     []string{"cache.example.org-1:AAAA"},
		Profile:        "unixfs-v1-2025",
	}
}

func TestBlockRoundTrip(t *testing.T) {
	p := sample(t)
	blk, err := p.Block()
	if err != nil {
		t.Fatal(err)
	}
	if blk.Cid().Type() != cid.DagCBOR {
		t.Fatalf("codec %x, want dag-cbor", blk.Cid().Type())
	}
	got, err := Decode(blk.RawData())
	if err != nil {
		t.Fatal(err)
	}
	again, _ := got.Block()
	if !again.Cid().Equals(blk.Cid()) {
		t.Fatalf("re-encoding changed the CID: %s vs %s", again.Cid(), blk.Cid())
	}
	if got.StorePath != p.StorePath || *got.Deriver != *p.Deriver || !got.References[1].Info.Equals(*p.References[1].Info) || got.References[0].Info != nil {
		t.Fatalf("decoded %+v", got)
	}
}

func TestValidateRefuses(t *testing.T) {
	for name, mut := range map[string]func(*PathInfo){
		"bad store path": func(p *PathInfo) { p.StorePath = "/nix/store/../etc" },
		"short hash":     func(p *PathInfo) { p.NarHash = p.NarHash[:31] },
		"zero size":      func(p *PathInfo) { p.NarSize = 0 },
		"no root":        func(p *PathInfo) { p.Root = cid.Undef },
		"bad reference":  func(p *PathInfo) { p.References[0].Name = "../x" },
		"newline in sig": func(p *PathInfo) { p.Signatures = []string{"k:a\nStorePath: /evil"} },
	} {
		t.Run(name, func(t *testing.T) {
			p := sample(t)
			mut(p)
			if _, err := p.Block(); err == nil {
				t.Fatal("encoded an invalid record")
			}
		})
	}
	if _, err := Decode([]byte{0xa1, 0x01}); err == nil {
		t.Fatal("decoded garbage")
	}
}

// TestFingerprintAndSign checks the fingerprint Nix signs (references sorted,
// full paths) and that our signature verifies, and signing twice is a no-op.
func TestFingerprintAndSign(t *testing.T) {
	p := sample(t)
	want := "1;/nix/store/45ciyxrcskr7rjzs00znrhw8xn3ixp1k-top;sha256:" + p.NarHashString()[7:] + ";688;" +
		"/nix/store/0c7dyq1w2sxr5szq3n5ldx0a8ar4q6zk-dep,/nix/store/45ciyxrcskr7rjzs00znrhw8xn3ixp1k-top"
	if got := p.Fingerprint(); got != want {
		t.Fatalf("fingerprint\n got %s\nwant %s", got, want)
	}
	sk, pk, err := signature.GenerateKeypair("test-1", rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if changed, err := p.Sign(sk); err != nil || !changed {
		t.Fatalf("sign: %v %v", changed, err)
	}
	if changed, _ := p.Sign(sk); changed {
		t.Fatal("signed twice with the same key")
	}
	if !p.Verify([]signature.PublicKey{pk}) {
		t.Fatal("our signature does not verify")
	}
	_, other, _ := signature.GenerateKeypair("test-1", rand.Reader)
	if p.Verify([]signature.PublicKey{other}) {
		t.Fatal("verified under the wrong key")
	}
	if !slices.ContainsFunc(p.Signatures, func(s string) bool { return strings.HasPrefix(s, "cache.example.org-1:") }) {
		t.Fatal("lost the original signature")
	}
}

func TestValidHashPart(t *testing.T) {
	for _, c := range []struct {
		s  string
		ok bool
	}{
		{"45ciyxrcskr7rjzs00znrhw8xn3ixp1k", true},
		{"../../etc/passwd", false},
		{"", false},
		{"45ciyxrcskr7rjzs00znrhw8xn3ixp1", false},
		{"45ciyxrcskr7rjzs00znrhw8xn3ixp1e", false}, // e is not nix32
	} {
		if got := ValidHashPart(c.s); got != c.ok {
			t.Errorf("ValidHashPart(%q) = %v", c.s, got)
		}
	}
}
