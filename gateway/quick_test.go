package gateway

import (
	"bufio"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"

	"github.com/nixipfs/nixipfs/gateway/fastpath"
	"github.com/nixipfs/nixipfs/gateway/narcache"
	"github.com/nixipfs/nixipfs/internal/metrics"
	"github.com/nixipfs/nixipfs/manifests"
)

// serve runs h behind net/http alone, or behind the fast path with net/http
// taking what it declines, and returns the address.
func serve(t testing.TB, g *Gateway, fast bool) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: g}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	if fast {
		f := fastpath.New(g, fastpath.Config{HeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute})
		go func() { _ = f.Serve(ln) }()
		go func() { _ = srv.Serve(f.HandOff()) }()
		t.Cleanup(func() { _ = f.Shutdown(ctx) })
	} else {
		go func() { _ = srv.Serve(ln) }()
	}
	t.Cleanup(func() { _ = srv.Shutdown(ctx); cancel() })
	return ln.Addr().String()
}

// roundTrip sends one raw request and returns the response, without Date.
func roundTrip(t *testing.T, addr, req string) (*http.Response, string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	// A second request on the connection: both servers read it only once
	// the first answer's accounting (metrics, OnServed) is done.
	if _, err := io.WriteString(c, req+"GET /health HTTP/1.1\r\nHost: cache\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("%q: %v", req, err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if next, err := http.ReadResponse(br, nil); err != nil || next.StatusCode != http.StatusOK {
		t.Fatalf("second request after %q: %v", req, err)
	}
	if resp.Header.Get("Date") == "" {
		t.Errorf("%q: no Date", req)
	}
	resp.Header.Del("Date")
	return resp, string(body)
}

// TestQuickMatchesServeHTTP holds the fast path to net/http: every request
// it answers gets the status, fields and body ServeHTTP gives, and is
// counted the same; the rest it leaves alone.
func TestQuickMatchesServeHTTP(t *testing.T) {
	nar := []byte(strings.Repeat("nar bytes ", 5000))
	sum := sha256.Sum256(nar)
	root, _ := cid.V1Builder{Codec: cid.DagProtobuf, MhType: mh.SHA2_256}.Sum([]byte("root"))
	p := &manifests.PathInfo{
		StorePath: "/nix/store/45ciyxrcskr7rjzs00znrhw8xn3ixp1k-top",
		NarHash:   sum[:], NarSize: int64(len(nar)), Blake3: make([]byte, 32), Root: root,
		References: []manifests.Reference{{Name: "45ciyxrcskr7rjzs00znrhw8xn3ixp1k-top"}},
		Signatures: []string{"k-1:c2ln"},
	}
	nc, err := narcache.Open(t.TempDir(), 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	w := nc.Create(root, sum[:], p.NarSize)
	if _, err := w.Write(nar); err != nil {
		t.Fatal(err)
	}
	w.Commit()
	nc.Close()
	m := metrics.New()
	served := make(chan NarRef, 8)
	g := New(Config{Paths: oneLookup{p}, NARCache: nc, Metrics: m,
		Logger: slog.New(slog.DiscardHandler), OnServed: func(r NarRef) { served <- r }})
	plain, fast := serve(t, g, false), serve(t, g, true)

	uncached, _ := cid.V1Builder{Codec: cid.DagProtobuf, MhType: mh.SHA2_256}.Sum([]byte("elsewhere"))
	narPath := "/" + NarURL(p)
	uncachedPath := "/nar/" + uncached.String() + "-100-" + strings.Repeat("0", 52) + ".nar"
	for _, c := range []struct {
		path, encoding string
		quick          bool
		endpoint       string
	}{
		{"/45ciyxrcskr7rjzs00znrhw8xn3ixp1k.narinfo", "", true, "narinfo"},
		{"/45ciyxrcskr7rjzs00znrhw8xn3ixp1k.narinfo", "zstd", true, "narinfo"},
		{"/0c7dyq1w2sxr5szq3n5ldx0a8ar4q6zk.narinfo", "", true, "narinfo"},
		{narPath, "", true, "nar"},
		{narPath, "gzip", true, "nar"},
		// net/http's: zstd, NARs not in the cache, odd shapes.
		{narPath, "zstd", false, ""},
		{uncachedPath, "", false, ""},
		{"/45ciyxrcskr7rjzs00znrhw8xn3ixp1k.narinfo/x", "", false, ""},
		{"/45ciyxrcskr7rjzs00znrhw8xn3ixp1.narinfo", "", false, ""},
		{"/nix-cache-info", "", true, "nix-cache-info"},
		{"/nar/x.nar", "", false, ""},
		{narPath + "/x", "", false, ""},
	} {
		if _, ok := g.Quick(&fastpath.Request{Path: c.path, AcceptEncoding: c.encoding}); ok != c.quick {
			t.Errorf("%s (Accept-Encoding %q): Quick answered %v, want %v", c.path, c.encoding, ok, c.quick)
		}
		if !c.quick {
			continue
		}
		req := "GET " + c.path + " HTTP/1.1\r\nHost: cache\r\nUser-Agent: curl/8 Nix/2.18\r\nAccept: */*\r\n"
		if c.encoding != "" {
			req += "Accept-Encoding: " + c.encoding + "\r\n"
		}
		req += "\r\n"
		want, wantBody := roundTrip(t, plain, req)
		count := func() float64 {
			return metrics.Sum(m.Requests, map[string]string{"endpoint": c.endpoint, "code": fmt.Sprint(want.StatusCode)})
		}
		before := count()
		got, gotBody := roundTrip(t, fast, req)
		if got.StatusCode != want.StatusCode || fmt.Sprint(got.Header) != fmt.Sprint(want.Header) || gotBody != wantBody {
			t.Errorf("%q:\nfast path: %d %v %.80q\nnet/http:  %d %v %.80q", req,
				got.StatusCode, got.Header, gotBody, want.StatusCode, want.Header, wantBody)
		}
		if n := count() - before; n != 1 {
			t.Errorf("%q: counted %v times", req, n)
		}
	}
	if len(served) != 4 { // two NARs, each served by both
		t.Errorf("OnServed called %d times, want 4", len(served))
	}
}

// BenchmarkNarinfoHTTP fetches one narinfo over one keep-alive loopback
// connection, from the fast path and from net/http alone: the per-request
// cost of each, client included.
func BenchmarkNarinfoHTTP(b *testing.B) {
	p := testPath()
	p.Signatures = []string{"k-1:c2ln"}
	g := New(Config{Paths: oneLookup{p}, Metrics: metrics.New(),
		Logger: slog.New(slog.DiscardHandler)})
	req := []byte("GET /45ciyxrcskr7rjzs00znrhw8xn3ixp1k.narinfo HTTP/1.1\r\nHost: cache\r\nUser-Agent: curl/8\r\nAccept: */*\r\n\r\n")
	for _, fast := range []bool{true, false} {
		name := "net-http"
		if fast {
			name = "fastpath"
		}
		b.Run(name, func(b *testing.B) {
			c, err := net.Dial("tcp", serve(b, g, fast))
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			br := bufio.NewReader(c)
			for b.Loop() {
				if _, err := c.Write(req); err != nil {
					b.Fatal(err)
				}
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := io.Copy(io.Discard, resp.Body); err != nil || resp.StatusCode != http.StatusOK {
					b.Fatalf("%s: %v", resp.Status, err)
				}
			}
		})
	}
}
