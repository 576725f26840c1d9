package gateway

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"

	"github.com/nixipfs/nixipfs/internal/metrics"
	"github.com/nixipfs/nixipfs/internal/queue"
	"github.com/nixipfs/nixipfs/internal/remotepin"
	"github.com/nixipfs/nixipfs/internal/status"
	"github.com/nixipfs/nixipfs/manifests"
)

// oneLookup knows a single path.
type oneLookup struct{ p *manifests.PathInfo }

func (l oneLookup) Lookup(_ context.Context, hash string) (*manifests.PathInfo, error) {
	if hash == l.p.HashPart() {
		return l.p, nil
	}
	return nil, manifests.ErrNotFound
}

func testPath() *manifests.PathInfo {
	root, _ := cid.V1Builder{Codec: cid.DagProtobuf, MhType: mh.SHA2_256}.Sum([]byte("r"))
	return &manifests.PathInfo{
		StorePath: "/nix/store/45ciyxrcskr7rjzs00znrhw8xn3ixp1k-top",
		NarHash:   make([]byte, 32), NarSize: 688, Blake3: make([]byte, 32), Root: root,
	}
}

func do(t *testing.T, h http.Handler, method, path string) (*http.Response, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
	res := rec.Result()
	b, _ := io.ReadAll(res.Body)
	return res, string(b)
}

func TestEndpointOf(t *testing.T) {
	for p, want := range map[string]string{
		"/": "status", "/status.json": "status", "/health": "health", "/metrics": "metrics",
		"/nix-cache-info": "nix-cache-info", "/nar/x-1-y.nar": "nar", "/abc.narinfo": "narinfo",
		"/sha256/abcd": "mirror", "/ipfs/bafy/x": "ipfs", "/log/x.drv": "log",
		"/a/b.narinfo": "other", "/favicon.ico": "other", "/sha999/x": "other",
	} {
		if got := endpointOf(p); got != want {
			t.Errorf("endpointOf(%q) = %q, want %q", p, got, want)
		}
	}
}

func TestMetricsCountRequestsAndLookups(t *testing.T) {
	m := metrics.New()
	p := testPath()
	g := New(Config{Paths: oneLookup{p}, Metrics: m})
	if res, _ := do(t, g, "GET", "/"+p.HashPart()+".narinfo"); res.StatusCode != 200 {
		t.Fatalf("hit: %s", res.Status)
	}
	for range 2 {
		if res, _ := do(t, g, "GET", "/00000000000000000000000000000000.narinfo"); res.StatusCode != 404 {
			t.Fatalf("miss: %s", res.Status)
		}
	}
	do(t, g, "POST", "/nix-cache-info")
	if got := metrics.Sum(m.Lookups, map[string]string{"kind": "narinfo", "result": "hit"}); got != 1 {
		t.Errorf("narinfo hits %v, want 1", got)
	}
	if got := metrics.Sum(m.Lookups, map[string]string{"kind": "narinfo", "result": "miss"}); got != 2 {
		t.Errorf("narinfo misses %v, want 2", got)
	}
	if got := metrics.Sum(m.Requests, map[string]string{"endpoint": "narinfo", "code": "404"}); got != 2 {
		t.Errorf("narinfo 404s %v, want 2", got)
	}
	if got := metrics.Sum(m.Requests, map[string]string{"endpoint": "nix-cache-info", "code": "405"}); got != 1 {
		t.Errorf("refused POSTs %v, want 1", got)
	}
	_, body := do(t, g, "GET", "/"+p.HashPart()+".narinfo")
	if got := metrics.Sum(m.BytesServed, map[string]string{"endpoint": "narinfo"}); got < float64(len(body)) {
		t.Errorf("bytes served %v, want at least %d", got, len(body))
	}
	res, text := do(t, g, "GET", "/metrics")
	if res.StatusCode != 200 || !strings.Contains(text, `nixipfs_http_requests_total{code="200",endpoint="narinfo"} 2`) ||
		!strings.Contains(text, "go_goroutines") || !strings.Contains(text, "process_resident_memory_bytes") {
		t.Errorf("/metrics: %s\n%s", res.Status, text)
	}
}

func TestAbortedCounted(t *testing.T) {
	m := metrics.New()
	g := &Gateway{cfg: Config{Metrics: m}}
	rec := httptest.NewRecorder()
	func() {
		defer func() {
			if p := recover(); p != http.ErrAbortHandler {
				t.Errorf("panic %v, want it passed on", p)
			}
		}()
		g.observe(rec, httptest.NewRequest("GET", "/nar/x.nar", nil), func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(200)
			_, _ = w.Write([]byte("partial"))
			panic(http.ErrAbortHandler)
		})
	}()
	if got := metrics.Sum(m.Requests, map[string]string{"endpoint": "nar", "code": "aborted"}); got != 1 {
		t.Errorf("aborted count %v, want 1", got)
	}
}

func TestHealth(t *testing.T) {
	var err error
	g := New(Config{Paths: oneLookup{testPath()}, Health: func(context.Context) error { return err }})
	if res, body := do(t, g, "GET", "/health"); res.StatusCode != 200 || !strings.Contains(body, `"ok"`) {
		t.Errorf("healthy: %s %s", res.Status, body)
	}
	err = errors.New("kubo RPC API: connection refused")
	if res, body := do(t, g, "GET", "/health"); res.StatusCode != 503 || !strings.Contains(body, "connection refused") {
		t.Errorf("unhealthy: %s %s", res.Status, body)
	}
}

func TestStatusPageEscapes(t *testing.T) {
	now := time.Now().UTC()
	rep := &status.Report{
		Time: now, Daemon: true,
		Node:     status.Node{Kind: "embedded", IPNS: "k51qzi5uqu5dexample"},
		Manifest: status.Manifest{Version: "bafyversion", Seq: 3, Paths: 7, History: []status.Version{{CID: "bafyversion", Seq: 3, Paths: 7}}},
		Queue: status.Queue{Waiting: 1, Entries: []queue.Entry{{ID: "0000000000000000001-deadbeef",
			Paths: []string{"/nix/store/x-<b>bold</b>"}, Attempts: 2, LastError: `<script>alert("x")</script>`, NextTry: now.Add(time.Minute)}}},
		Followed: []manifests.FollowStatus{{Name: "k51other", LastErr: "<img src=x onerror=alert(1)>"}},
		Serving:  &status.Serving{NarinfoHits: 3, NarinfoMisses: 1, HitRate: 0.75, BytesServed: 3 << 20},
		Recent:   []status.Published{{StorePath: "/nix/store/45ciyxrcskr7rjzs00znrhw8xn3ixp1k-top", Status: "published", Time: now}},
		RemotePins: &remotepin.Report{Remotes: []string{"cluster http://127.0.0.1:9094"}, Counts: map[string]int{"pinned": 1, "failed": 1},
			Entries: []remotepin.Entry{
				{Remote: "cluster http://127.0.0.1:9094", StorePath: "/nix/store/x-failing", State: "failed", Attempts: 3, Error: "<i>cluster down</i>", NextTry: now.Add(time.Minute)},
				{Remote: "cluster http://127.0.0.1:9094", StorePath: "/nix/store/x-replicated", State: "pinned", Holders: 2},
			}},
	}
	g := New(Config{Paths: oneLookup{testPath()}, Status: func(context.Context) *status.Report { return rep }})
	res, body := do(t, g, "GET", "/")
	if res.StatusCode != 200 || res.Header.Get("Content-Type") != "text/html; charset=utf-8" {
		t.Fatalf("status page: %s %s", res.Status, res.Header.Get("Content-Type"))
	}
	for _, bad := range []string{"<script>", "<b>bold", "<img", "<i>cluster"} {
		if strings.Contains(body, bad) {
			t.Errorf("status page contains unescaped %q", bad)
		}
	}
	for _, want := range []string{"&lt;script&gt;", "75.0 %", "3.0 MiB", "/ipns/k51qzi5uqu5dexample", "/nix/store/45ciyxrcskr7rjzs00znrhw8xn3ixp1k-top", "retry in 1m0s",
		"Remote pins", "1 pinned, 0 pinning, 0 pending, 1 failed", "/nix/store/x-replicated</code></td><td><code>cluster http://127.0.0.1:9094</code></td><td>pinned</td><td>2</td>", "(attempt 3, retry in 1m0s)"} {
		if !strings.Contains(body, want) {
			t.Errorf("status page lacks %q", want)
		}
	}
	if strings.Contains(strings.ToLower(body), "<script") {
		t.Error("status page has a script element")
	}
	if res, body := do(t, g, "GET", "/status.json"); res.StatusCode != 200 || !strings.Contains(body, `"hitRate": 0.75`) {
		t.Errorf("status.json: %s %s", res.Status, body)
	}
	// The narinfo route still answers beside the status routes.
	if res, _ := do(t, g, "GET", "/"+testPath().HashPart()+".narinfo"); res.StatusCode != 200 {
		t.Errorf("narinfo next to the status page: %s", res.Status)
	}
}
