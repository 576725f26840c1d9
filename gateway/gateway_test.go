package gateway

import (
	"bytes"
	"context"
	"crypto/sha256"
	"strings"
	"testing"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"

	"github.com/nixipfs/nixipfs/manifests"
)

func TestParseRange(t *testing.T) {
	for _, c := range []struct {
		h          string
		start, end int64
		ok         bool
	}{
		{"bytes=0-99", 0, 100, true},
		{"bytes=100-", 100, 1000, true},
		{"bytes=-10", 990, 1000, true},
		{"bytes=-5000", 0, 1000, true},
		{"bytes=990-5000", 990, 1000, true},
		{"bytes=1000-", 0, 0, false},
		{"bytes=5-1", 0, 0, false},
		{"bytes=0-1,5-6", 0, 0, false},
		{"bytes=-0", 0, 0, false},
		{"items=0-1", 0, 0, false},
		{"bytes=x-1", 0, 0, false},
	} {
		s, e, ok := parseRange(c.h, 1000)
		if ok != c.ok || (ok && (s != c.start || e != c.end)) {
			t.Errorf("parseRange(%q) = %d, %d, %v; want %d, %d, %v", c.h, s, e, ok, c.start, c.end, c.ok)
		}
	}
}

func TestAcceptsZstd(t *testing.T) {
	for h, want := range map[string]bool{
		"": false, "gzip": false, "zstd": true, "gzip, zstd;q=0.5": true, "br, ZSTD": true, "zstd;q=0": false, "deflate, gzip, br, zstd": true,
	} {
		if got := acceptsZstd(h); got != want {
			t.Errorf("acceptsZstd(%q) = %v", h, got)
		}
	}
}

func TestNarInfoFormat(t *testing.T) {
	root, _ := cid.V1Builder{Codec: cid.DagProtobuf, MhType: mh.SHA2_256}.Sum([]byte("r"))
	p := &manifests.PathInfo{
		StorePath: "/nix/store/45ciyxrcskr7rjzs00znrhw8xn3ixp1k-top",
		NarHash:   bytes.Repeat([]byte{7}, 32), NarSize: 688, Blake3: make([]byte, 32), Root: root,
		References: []manifests.Reference{{Name: "zzzzyq1w2sxr5szq3n5ldx0a8ar4q6zk-z"}, {Name: "0c7dyq1w2sxr5szq3n5ldx0a8ar4q6zk-dep"}},
		Signatures: []string{"a-1:x", "b-1:y"},
	}
	got := NarInfo(p)
	for _, line := range []string{
		"StorePath: /nix/store/45ciyxrcskr7rjzs00znrhw8xn3ixp1k-top\n",
		"URL: nar/" + root.String() + "-688-",
		"Compression: none\n",
		"NarSize: 688\n",
		"References: 0c7dyq1w2sxr5szq3n5ldx0a8ar4q6zk-dep zzzzyq1w2sxr5szq3n5ldx0a8ar4q6zk-z\n",
		"Sig: a-1:x\nSig: b-1:y\n",
	} {
		if !strings.Contains(got, line) {
			t.Errorf("narinfo lacks %q:\n%s", line, got)
		}
	}
	r, size, h, err := parseNarURL(strings.TrimPrefix(NarURL(p), "nar/"))
	if err != nil || !r.Equals(root) || size != 688 || !bytes.Equal(h, p.NarHash) {
		t.Fatalf("parseNarURL round trip: %v %v %d", err, r, size)
	}
	for _, bad := range []string{"x.nar", root.String() + "-0-aaaa.nar", root.String() + "-5.nar", "../etc-1-2.nar"} {
		if _, _, _, err := parseNarURL(bad); err == nil {
			t.Errorf("parseNarURL(%q) accepted", bad)
		}
	}
}

// TestVerifierHoldsTail checks that a full response passes on nothing of its
// last holdBack bytes until the hash is confirmed.
func TestVerifierHoldsTail(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789abcdef"), 10000)
	sum := sha256.Sum256(data)
	for name, want := range map[string][]byte{"good": sum[:], "bad": make([]byte, 32)} {
		t.Run(name, func(t *testing.T) {
			var out bytes.Buffer
			v := New(Config{Reverify: true}).newVerifier(context.Background(), &out, testRoot, int64(len(data)), want, 0, int64(len(data)))
			for i := 0; i < len(data); i += 1000 {
				if _, err := v.Write(data[i:min(i+1000, len(data))]); err != nil {
					t.Fatal(err)
				}
			}
			if out.Len() != len(data)-holdBack {
				t.Fatalf("passed %d bytes before the check, want %d", out.Len(), len(data)-holdBack)
			}
			err := v.finish()
			if name == "good" && (err != nil || !bytes.Equal(out.Bytes(), data)) {
				t.Fatalf("good NAR: %v, %d bytes", err, out.Len())
			}
			if name == "bad" && (err == nil || out.Len() == len(data)) {
				t.Fatalf("bad NAR: %v, %d bytes", err, out.Len())
			}
		})
	}
	v := New(Config{}).newVerifier(context.Background(), &bytes.Buffer{}, testRoot, 10, nil, 0, 10)
	if _, err := v.Write(make([]byte, 11)); err == nil {
		t.Fatal("accepted more bytes than the recorded size")
	}
}

// testRoot is a CID for verifier tests, which never read its DAG.
var testRoot = cid.MustParse("bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi")

// TestVerifiedOnce: a NAR whose render matched its NarHash is not hashed
// again, unless Config.Reverify; one that did not match, or the same root
// under another NarHash or size, is.
func TestVerifiedOnce(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789abcdef"), 10000)
	sum := sha256.Sum256(data)
	size := int64(len(data))
	render := func(g *Gateway, want []byte, size int64) (hashed bool, err error) {
		var out bytes.Buffer
		v := g.newVerifier(context.Background(), &out, testRoot, size, want, 0, size)
		if _, err := v.Write(data); err != nil {
			return v.h != nil, err
		}
		if err := v.finish(); err != nil {
			return v.h != nil, err
		}
		if !bytes.Equal(out.Bytes(), data) {
			t.Fatalf("passed %d bytes, want the NAR's %d", out.Len(), len(data))
		}
		return v.h != nil, nil
	}
	g := New(Config{})
	bad := make([]byte, 32)
	for i, step := range []struct {
		want     []byte
		size     int64
		hashed   bool
		mismatch bool
	}{
		{bad, size, true, true},      // a wrong NarHash is not remembered...
		{bad, size, true, true},      // ...so it is hashed (and refused) again
		{sum[:], size, true, false},  // the first match is hashed
		{sum[:], size, false, false}, // and then trusted
		{bad, size, true, true},      // the same root under another NarHash is not
		{sum[:], size + 1, true, true},
	} {
		hashed, err := render(g, step.want, step.size)
		if hashed != step.hashed || (err != nil) != step.mismatch {
			t.Fatalf("render %d: hashed %v, err %v; want hashed %v, mismatch %v", i, hashed, err, step.hashed, step.mismatch)
		}
	}
	g = New(Config{Reverify: true})
	for i := range 2 {
		if hashed, err := render(g, sum[:], size); !hashed || err != nil {
			t.Fatalf("Reverify, render %d: hashed %v, err %v", i, hashed, err)
		}
	}

	// With Config.Rendered, a NAR recorded by its import is trusted at
	// once, and only under that NarHash and size; Reverify still hashes.
	recorded := func(_ context.Context, root cid.Cid, n int64, h []byte) bool {
		return root == testRoot && n == size && bytes.Equal(h, sum[:])
	}
	for i, step := range []struct {
		want     []byte
		size     int64
		reverify bool
		hashed   bool
		mismatch bool
	}{
		{sum[:], size, false, false, false},
		{bad, size, false, true, true},
		{sum[:], size + 1, false, true, true},
		{sum[:], size, true, true, false},
	} {
		g := New(Config{Rendered: recorded, Reverify: step.reverify})
		hashed, err := render(g, step.want, step.size)
		if hashed != step.hashed || (err != nil) != step.mismatch {
			t.Fatalf("recorded, render %d: hashed %v, err %v; want hashed %v, mismatch %v", i, hashed, err, step.hashed, step.mismatch)
		}
	}
}
