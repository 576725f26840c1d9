package test

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/ipfs/kubo/core/coreiface/options"
	"github.com/klauspost/compress/zstd"
	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/nixipfs/nixipfs/gateway"
	"github.com/nixipfs/nixipfs/gateway/narcache"
	"github.com/nixipfs/nixipfs/internal/ipfsnode"
	"github.com/nixipfs/nixipfs/internal/nixtest"
	"github.com/nixipfs/nixipfs/internal/publish"
	"github.com/nixipfs/nixipfs/manifests"
)

// TestGatewayAbortsWrongNAR records in a manifest a PathInfo whose NarHash
// does not match its DAG (same size, other bytes) and checks that the client
// never gets a complete body, with and without zstd; that a malformed
// PathInfo block is skipped (404) while the rest of the manifest works; and
// that a true record serves in full, by ranges too.
func TestGatewayAbortsWrongNAR(t *testing.T) {
	k := startKubo(t)
	node, err := ipfsnode.Open(ctx(t), ipfsnode.Options{APIAddr: k.api})
	if err != nil {
		t.Fatal(err)
	}
	narA, honest := randomPath(t, node, "/nix/store/00000000000000000000000000000000-honest")
	narB, other := randomPath(t, node, "/nix/store/11111111111111111111111111111111-other")
	forged := *honest // the record of A with the DAG of B: same size, other bytes
	forged.StorePath = "/nix/store/11111111111111111111111111111111-forged"
	forged.Root = other.Root
	store := func(p *manifests.PathInfo) cid.Cid {
		c, err := manifests.Store(ctx(t), node.API, p)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	// A dag-cbor block that is no PathInfo, filed under a third path.
	junk, err := node.API.Block().Put(ctx(t), bytes.NewReader([]byte{0xa1, 0x61, 0x78, 0x01}), options.Block.CidCodec("dag-cbor"))
	if err != nil {
		t.Fatal(err)
	}
	local := manifests.OpenLocal(t.TempDir(), node.API)
	if _, err := local.Update(ctx(t), map[string]cid.Cid{
		manifests.KeyStorePath("00000000000000000000000000000000"): store(honest),
		manifests.KeyStorePath("11111111111111111111111111111111"): store(&forged),
		manifests.KeyStorePath("22222222222222222222222222222222"): junk.Path().RootCid(),
	}, nil); err != nil {
		t.Fatal(err)
	}
	resolver, err := manifests.NewResolver(node.API, local, nil, manifests.Policy{})
	if err != nil {
		t.Fatal(err)
	}
	t.Run("rendered", func(t *testing.T) { checkWrongNAR(t, node, resolver, nil, narA, narB, honest, &forged) })
	// With a NAR cache: the forged NAR never enters it, so it aborts every
	// time; the honest one is cached once verified and then served from
	// the cache, in full, through zstd and by ranges.
	nc, err := narcache.Open(t.TempDir(), 64<<20)
	if err != nil {
		t.Fatal(err)
	}
	t.Run("cached", func(t *testing.T) {
		for pass := range 2 {
			checkWrongNAR(t, node, resolver, nc, narA, narB, honest, &forged)
			nc.Close() // the honest NAR's commit is done
			if nc.Size() != int64(len(narA)) {
				t.Fatalf("pass %d: cache holds %d bytes, want the honest NAR's %d", pass, nc.Size(), len(narA))
			}
			f := nc.Open(honest.Root, honest.NarHash, honest.NarSize)
			if f == nil {
				t.Fatalf("pass %d: honest NAR not cached", pass)
			}
			f.Close()
			if nc.Open(forged.Root, forged.NarHash, forged.NarSize) != nil {
				t.Fatal("forged NAR cached")
			}
		}
	})
}

// randomPath imports into node the NAR of a store path holding one
// executable of 300 KiB of random bytes, and returns it and its record.
func randomPath(t *testing.T, node *ipfsnode.Node, storePath string) ([]byte, *manifests.PathInfo) {
	t.Helper()
	content := make([]byte, 300<<10)
	rand.Read(content)
	nar := narOf(dir(entry("bin", dir(entry("x", file(string(content), true))))))
	res, err := publish.ImportNAR(ctx(t), node, bytes.NewReader(nar), nil)
	if err != nil {
		t.Fatal(err)
	}
	return nar, &manifests.PathInfo{StorePath: storePath, NarHash: res.NarHash[:], NarSize: int64(res.NarSize),
		Blake3: res.Blake3[:], Root: res.Root, Profile: "x"}
}

func checkWrongNAR(t *testing.T, node *ipfsnode.Node, resolver gateway.Lookup, nc *narcache.Cache, narA, narB []byte, honest, forged *manifests.PathInfo) {
	srv := httptest.NewServer(gateway.New(gateway.Config{API: node.API, Paths: resolver, NARCache: nc}))
	defer srv.Close()
	for hash, want := range map[string]int{
		"00000000000000000000000000000000": http.StatusOK,
		"11111111111111111111111111111111": http.StatusOK, // the record is well-formed; its NAR is not
		"22222222222222222222222222222222": http.StatusNotFound,
		"33333333333333333333333333333333": http.StatusNotFound,
	} {
		resp, err := http.Get(srv.URL + "/" + hash + ".narinfo")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("narinfo %s: %s, want %d", hash, resp.Status, want)
		}
	}

	fetch := func(url, enc, rng string) (*http.Response, []byte, error) {
		req, _ := http.NewRequest("GET", url, nil)
		req.Header.Set("Accept-Encoding", enc) // set: Go then leaves the body as sent
		if rng != "" {
			req.Header.Set("Range", rng)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, nil, err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		return resp, body, err
	}

	forgedURL := srv.URL + "/" + gateway.NarURL(forged)
	resp, body, err := fetch(forgedURL, "identity", "")
	if err == nil {
		t.Fatalf("forged NAR served in full (%d bytes, %s)", len(body), resp.Status)
	}
	if len(body) >= len(narA) {
		t.Fatalf("client got %d bytes of a %d-byte NAR before the abort", len(body), len(narA))
	}
	if bytes.Equal(body, narB[:len(body)]) == false {
		t.Errorf("the bytes sent are not a prefix of the DAG's NAR")
	}
	_, zbody, zerr := fetch(forgedURL, "zstd", "")
	if zerr == nil {
		// The transport may have read a clean EOF; the zstd stream must be broken.
		dec, _ := zstd.NewReader(bytes.NewReader(zbody))
		if out, err := io.ReadAll(dec); err == nil && len(out) == len(narA) {
			t.Fatalf("forged NAR delivered complete through zstd")
		}
	}

	honestURL := srv.URL + "/" + gateway.NarURL(honest)
	_, body, err = fetch(honestURL, "identity", "")
	if err != nil || !bytes.Equal(body, narA) {
		t.Fatalf("honest NAR: err %v, %d bytes, equal %v", err, len(body), bytes.Equal(body, narA))
	}
	resp, zbody, err = fetch(honestURL, "zstd", "")
	if err != nil || resp.Header.Get("Content-Encoding") != "zstd" {
		t.Fatalf("zstd NAR: err %v, encoding %q", err, resp.Header.Get("Content-Encoding"))
	}
	dec, _ := zstd.NewReader(bytes.NewReader(zbody))
	if out, err := io.ReadAll(dec); err != nil || !bytes.Equal(out, narA) {
		t.Fatalf("zstd NAR decodes to %d bytes, err %v", len(out), err)
	}
	resp, body, err = fetch(honestURL, "identity", "bytes=1000-2999")
	if err != nil || resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, narA[1000:3000]) {
		t.Fatalf("range: %v %v, %d bytes", err, resp.Status, len(body))
	}
	if cr := resp.Header.Get("Content-Range"); !strings.HasPrefix(cr, "bytes 1000-2999/") {
		t.Errorf("Content-Range %q", cr)
	}
}

// TestGatewayFiles serves a mirrored file by hash (base16 and nix32, as the
// hashed-mirror layout asks) and by CID, with HEAD and ranges.
func TestGatewayFiles(t *testing.T) {
	node, err := ipfsnode.Open(ctx(t), ipfsnode.Options{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer node.Close()
	content := make([]byte, 2<<20+99)
	rand.Read(content)
	res, err := publish.ImportNAR(ctx(t), node, bytes.NewReader(narOf(file(string(content), false))), nil)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(content)
	local := manifests.OpenLocal(t.TempDir(), node.API)
	if _, err := local.Update(ctx(t), map[string]cid.Cid{manifests.KeySource("sha256", sum[:]): res.Root}, nil); err != nil {
		t.Fatal(err)
	}
	resolver, err := manifests.NewResolver(node.API, local, nil, manifests.Policy{})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(gateway.New(gateway.Config{API: node.API, Paths: resolver, Sources: resolver}))
	defer srv.Close()

	for _, u := range []string{
		"/sha256/" + hex.EncodeToString(sum[:]),
		"/sha256/" + nixbase32.EncodeToString(sum[:]),
		"/ipfs/" + res.Root.String(),
	} {
		if body := get(t, srv.URL+u); !bytes.Equal(body, content) {
			t.Errorf("GET %s: %d bytes, not the file", u, len(body))
		}
		req, _ := http.NewRequest("GET", srv.URL+u, nil)
		req.Header.Set("Range", "bytes=1048570-1048585")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		part, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(part, content[1048570:1048586]) {
			t.Errorf("range on %s: %s, %d bytes", u, resp.Status, len(part))
		}
		head, err := http.Head(srv.URL + u)
		if err != nil || head.StatusCode != 200 || head.ContentLength != int64(len(content)) {
			t.Errorf("HEAD %s: %v %v", u, err, head)
		}
	}
	other := sha256.Sum256([]byte("not mirrored"))
	for _, u := range []string{"/sha256/" + hex.EncodeToString(other[:]), "/sha256/zz", "/md4/00", "/sha1/" + hex.EncodeToString(sum[:])} {
		if code := status(t, srv.URL+u); code != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", u, code)
		}
	}
}

// TestGatewayHostileHTTP sends a real daemon requests that are malformed,
// ambiguous or smuggling a second request, each on its own connection. The
// gateway answers narinfos and cached NARs on a fast path beside net/http,
// which hands anything unusual to net/http: each of these gets net/http's
// answer (a refusal, or for what it reads one way only, such as a folded
// field or a chunked body beside a length, the answer to what it read), never
// a 5xx, and afterwards the daemon serves the same narinfo and NAR.
func TestGatewayHostileHTTP(t *testing.T) {
	nixEnv(t)
	store := nixtest.Store(t)
	p := addRandomFile(t, store, "hostile-http", 100<<10)
	n := newNode(t, store, nil)
	n.publish(t, p)
	gw := n.daemon(t).url
	addr := strings.TrimPrefix(gw, "http://")
	hash := strings.SplitN(filepath.Base(p), "-", 2)[0]
	info := get(t, gw+"/"+hash+".narinfo")
	nar := get(t, gw+"/"+narinfo(t, gw, p)["URL"][0])
	get(t, gw+"/"+narinfo(t, gw, p)["URL"][0]) // now from the NAR cache

	ok := "GET /" + hash + ".narinfo HTTP/1.1\r\nHost: a\r\n\r\n"
	for _, c := range []struct {
		name, req string
		codes     []int // the statuses of the answers, in order
	}{
		{"NUL in a field", "GET /" + hash + ".narinfo HTTP/1.1\r\nHost: a\r\nAccept: \x00\r\n\r\n", []int{400}},
		{"two Hosts", "GET /" + hash + ".narinfo HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", []int{400}},
		{"no Host", "GET /" + hash + ".narinfo HTTP/1.1\r\n\r\n", []int{400}},
		{"bad Host", "GET /" + hash + ".narinfo HTTP/1.1\r\nHost: a/b\r\n\r\n", []int{400}},
		{"obs-fold", "GET /" + hash + ".narinfo HTTP/1.1\r\nHost: a\r\nAccept: x\r\n y\r\n\r\n" + ok, []int{200, 200}},
		{"space before colon", "GET /" + hash + ".narinfo HTTP/1.1\r\nHost : a\r\n\r\n", []int{400}},
		// The chunked body ends at "0": the request after it is answered
		// as one, not read as body bytes.
		{"length and chunked", "GET /" + hash + ".narinfo HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + ok, []int{200, 200}},
		{"two lengths", "GET /" + hash + ".narinfo HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx", []int{400}},
		{"bad version", "GET /" + hash + ".narinfo HTTP/9.9\r\nHost: a\r\n\r\n", []int{505}},
		{"request line garbage", "GET\x01/x HTTP/1.1\r\nHost: a\r\n\r\n", []int{400}},
		{"HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", []int{405}},
		{"method", "DELETE /" + hash + ".narinfo HTTP/1.1\r\nHost: a\r\n\r\n", []int{405}},
		{"head too large", "GET /" + hash + ".narinfo HTTP/1.1\r\nHost: a\r\nAccept: " + strings.Repeat("a", 2<<20) + "\r\n\r\n", []int{431}},
		{"smuggled after a fast answer", ok + "GARBAGE\r\n\r\n", []int{200, 400}},
		{"traversal", "GET /nar/../" + hash + ".narinfo HTTP/1.1\r\nHost: a\r\n\r\n", []int{307}}, // to the clean path
		{"escaped", "GET /%2e%2e/" + hash + ".narinfo HTTP/1.1\r\nHost: a\r\n\r\n", []int{404}},
	} {
		t.Run(c.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
			// Written concurrently: the server may answer a too-large head
			// before reading it all.
			go io.WriteString(conn, c.req)
			br := bufio.NewReader(conn)
			for i, want := range c.codes {
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatalf("answer %d: %v", i, err)
				}
				io.Copy(io.Discard, resp.Body)
				if resp.StatusCode != want {
					t.Errorf("answer %d: %s, want %d", i, resp.Status, want)
				}
			}
		})
	}
	if got := get(t, gw+"/"+hash+".narinfo"); !bytes.Equal(got, info) {
		t.Errorf("narinfo changed after the hostile requests:\n%s\nwas\n%s", got, info)
	}
	if got := get(t, gw+"/"+narinfo(t, gw, p)["URL"][0]); !bytes.Equal(got, nar) {
		t.Errorf("NAR changed after the hostile requests")
	}
}
