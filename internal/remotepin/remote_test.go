package remotepin

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"
)

func testCID(t *testing.T, s string) cid.Cid {
	t.Helper()
	h, err := multihash.Sum([]byte(s), multihash.SHA2_256, -1)
	if err != nil {
		t.Fatal(err)
	}
	return cid.NewCidV1(cid.Raw, h)
}

// Peer IDs of the kind cluster peers and kubo have.
const (
	peerA = "12D3KooWGzxzKZYveHXtpG6AsrUJBcWxHBFS2HsEoGTxrMLvKXtf"
	peerB = "12D3KooWJ8VGjcdfhCnhZLx6ZQeC8fZ5jXHuDDiC6ogB6cvEbrKS"
	peerC = "12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo"
)

func peerInfo(name, ipfs, status string) map[string]any {
	return map[string]any{"peername": name, "ipfs_peer_id": ipfs, "status": status, "timestamp": time.Now(), "error": ""}
}

// TestClusterProtocol checks what the cluster client sends (path, query,
// basic auth) and how it reads the peers' answers.
func TestClusterProtocol(t *testing.T) {
	c := testCID(t, "a")
	var mu sync.Mutex
	var got []string
	peerMap := map[string]any{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		user, pass, ok := r.BasicAuth()
		if !ok || user != "nix" || pass != "s3cret" {
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprint(w, `{"code":401,"message":"unauthorized"}`)
			return
		}
		got = append(got, r.Method+" "+r.URL.Path)
		switch {
		case r.Method == http.MethodPost && r.URL.Path == "/pins/"+c.String():
			q := r.URL.Query()
			if q.Get("replication-min") != "2" || q.Get("replication-max") != "2" || q.Get("name") != "nixipfs x" || q.Get("mode") != "recursive" {
				t.Errorf("pin query %v", q)
			}
			fmt.Fprintf(w, `{"cid":"%s","name":"nixipfs x","allocations":["%s","%s"]}`, c, peerA, peerB)
		case r.Method == http.MethodGet && r.URL.Path == "/pins/"+c.String():
			json.NewEncoder(w).Encode(map[string]any{"cid": c.String(), "peer_map": peerMap})
		case r.Method == http.MethodDelete:
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprint(w, `{"code":404,"message":"pin not found"}`)
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	ctx := context.Background()

	bad, err := NewCluster(srv.URL, "nix:wrong", 2)
	if err != nil {
		t.Fatal(err)
	}
	if err := bad.Pin(ctx, c, "nixipfs x"); err == nil || !strings.Contains(err.Error(), "unauthorized") {
		t.Fatalf("wrong password: %v", err)
	}
	cl, err := NewCluster(srv.URL, "nix:s3cret\n", 2)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(cl.Name(), "s3cret") {
		t.Fatalf("the name shows the password: %s", cl.Name())
	}
	if err := cl.Pin(ctx, c, "nixipfs x"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		peers   map[string]any
		want    State
		holders int
	}{
		{map[string]any{}, Unknown, 0},
		{map[string]any{"p1": peerInfo("a", peerA, "unpinned"), "p2": peerInfo("b", peerB, "remote")}, Unknown, 0},
		{map[string]any{"p1": peerInfo("a", peerA, "pinning"), "p2": peerInfo("b", peerB, "pin_queued"), "p3": peerInfo("c", peerC, "remote")}, Pinning, 0},
		{map[string]any{"p1": peerInfo("a", peerA, "pinned"), "p2": peerInfo("b", peerB, "pinning")}, Pinning, 1},
		{map[string]any{"p1": peerInfo("a", peerA, "pinned"), "p2": peerInfo("b", peerB, "pin_error")}, Failed, 1},
		{map[string]any{"p1": peerInfo("a", peerA, "pinned"), "p2": peerInfo("b", peerB, "pinned"), "p3": peerInfo("c", peerC, "remote")}, Pinned, 2},
	} {
		mu.Lock()
		peerMap = tc.peers
		mu.Unlock()
		s, err := cl.Status(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		if s.State != tc.want || len(s.Holders) != tc.holders {
			t.Errorf("peers %v: got %+v, want %q with %d holders", tc.peers, s, tc.want, tc.holders)
		}
		if tc.want == Failed && !strings.Contains(s.Error, "pin_error") {
			t.Errorf("failed status without the peer's error: %+v", s)
		}
	}
	if n, err := Holders(ctx, []Remote{cl}, c, peerA); err != nil || n != 1 {
		t.Fatalf("Holders leaving out self: %d, %v", n, err)
	}
	// Unpinning what the cluster does not track is done, not an error.
	if err := cl.Unpin(ctx, c); err != nil {
		t.Fatal(err)
	}
	want := []string{"POST /pins/" + c.String(), "GET /pins/" + c.String()}
	if len(got) < 2 || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("requests %v", got)
	}
}

// TestClusterHostile: answers that are not what the API promises are
// errors, never a pinned state.
func TestClusterHostile(t *testing.T) {
	c := testCID(t, "b")
	for name, h := range map[string]http.HandlerFunc{
		"garbage":    func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "<html>not json") },
		"500":        func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "boom", 500) },
		"wrong type": func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, `{"peer_map":[1,2,3]}`) },
		"bad peer": func(w http.ResponseWriter, _ *http.Request) {
			fmt.Fprint(w, `{"peer_map":{"x":{"ipfs_peer_id":"not-a-peer","status":"pinned"}}}`)
		},
	} {
		t.Run(name, func(t *testing.T) {
			srv := httptest.NewServer(h)
			defer srv.Close()
			cl, err := NewCluster(srv.URL, "", 1)
			if err != nil {
				t.Fatal(err)
			}
			s, err := cl.Status(context.Background(), c)
			if err == nil && s.State == Pinned {
				t.Fatalf("hostile answer taken as pinned: %+v", s)
			}
			if name != "bad peer" && err == nil {
				t.Fatalf("no error for %s: %+v", name, s)
			}
		})
	}
	// A server that never answers: the call ends with the context.
	block := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		select {
		case <-block:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(block)
	cl, err := NewCluster(srv.URL, "", 1)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := cl.Pin(ctx, c, "x"); err == nil {
		t.Fatal("a hung cluster did not fail the pin")
	}
}

func TestNewRemoteRefusesBadInput(t *testing.T) {
	for _, u := range []string{"", "ftp://x:1", "http://nohost", "http://127.0.0.1:9094/api", "::", "http://u:p@127.0.0.1:9094"} {
		if _, err := NewCluster(u, "", 2); err == nil {
			t.Errorf("NewCluster(%q) accepted", u)
		}
	}
	for _, a := range []string{"nopassword", ":pw"} {
		if _, err := NewCluster("http://127.0.0.1:9094", a, 2); err == nil {
			t.Errorf("auth %q accepted", a)
		}
	}
	for _, r := range []int{0, -2} {
		if _, err := NewCluster("http://127.0.0.1:9094", "", r); err == nil {
			t.Errorf("replication %d accepted", r)
		}
	}
	if _, err := NewService("https://pins.example/psa", " \n"); err == nil {
		t.Error("empty token accepted")
	}
	if _, err := NewService("https://u:p@pins.example/psa", "t"); err == nil {
		t.Error("credentials in the service URL accepted")
	}
	if _, err := NewService("pins.example", "t"); err == nil {
		t.Error("a URL without scheme accepted")
	}
}

// fakeService is a small Pinning Service API: requests by id.
type fakeService struct {
	mu      sync.Mutex
	token   string
	reqs    map[string]map[string]any // requestid -> PinStatus
	adds    int
	replace int
	// lie, if set, answers every GET /pins with this CID's request too.
	lie string
}

func (f *fakeService) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r.Header.Get("Authorization") != "Bearer "+f.token {
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprint(w, `{"error":{"reason":"UNAUTHORIZED","details":"bad token"}}`)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/pins":
		var res []any
		want := r.URL.Query().Get("cid")
		for _, p := range f.reqs {
			if p["pin"].(map[string]any)["cid"] == want {
				res = append(res, p)
			}
		}
		if f.lie != "" {
			res = append(res, map[string]any{"requestid": "lie", "status": "pinned", "created": time.Now(), "pin": map[string]any{"cid": f.lie}, "delegates": []string{}})
		}
		json.NewEncoder(w).Encode(map[string]any{"count": len(res), "results": res})
	case r.Method == http.MethodPost && r.URL.Path == "/pins":
		var pin map[string]any
		json.NewDecoder(r.Body).Decode(&pin)
		id := fmt.Sprintf("r%d", len(f.reqs)+1)
		st := map[string]any{"requestid": id, "status": "queued", "created": time.Now(), "pin": pin, "delegates": []string{}}
		f.reqs[id] = st
		f.adds++
		w.WriteHeader(http.StatusAccepted)
		json.NewEncoder(w).Encode(st)
	case r.Method == http.MethodPost && strings.HasPrefix(r.URL.Path, "/pins/"):
		id := strings.TrimPrefix(r.URL.Path, "/pins/")
		var pin map[string]any
		json.NewDecoder(r.Body).Decode(&pin)
		st := map[string]any{"requestid": id, "status": "queued", "created": time.Now(), "pin": pin, "delegates": []string{}}
		f.reqs[id] = st
		f.replace++
		w.WriteHeader(http.StatusAccepted)
		json.NewEncoder(w).Encode(st)
	case r.Method == http.MethodDelete && strings.HasPrefix(r.URL.Path, "/pins/"):
		delete(f.reqs, strings.TrimPrefix(r.URL.Path, "/pins/"))
		w.WriteHeader(http.StatusAccepted)
	default:
		http.NotFound(w, r)
	}
}

func (f *fakeService) set(status string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, p := range f.reqs {
		p["status"] = status
	}
}

func TestServiceProtocol(t *testing.T) {
	c := testCID(t, "c")
	f := &fakeService{token: "tok", reqs: map[string]map[string]any{}}
	srv := httptest.NewServer(f)
	defer srv.Close()
	ctx := context.Background()

	wrong, err := NewService(srv.URL, "nope")
	if err != nil {
		t.Fatal(err)
	}
	if err := wrong.Pin(ctx, c, "x"); err == nil {
		t.Fatal("a wrong token pinned")
	}
	s, err := NewService(srv.URL+"/", "tok\n") // as read from a token file
	if err != nil {
		t.Fatal(err)
	}
	if st, err := s.Status(ctx, c); err != nil || st.State != Unknown {
		t.Fatalf("status before pinning: %+v, %v", st, err)
	}
	for range 2 { // the second Pin finds the request and adds none
		if err := s.Pin(ctx, c, "nixipfs x"); err != nil {
			t.Fatal(err)
		}
	}
	if f.adds != 1 {
		t.Fatalf("%d requests added, want 1", f.adds)
	}
	if st, _ := s.Status(ctx, c); st.State != Queued {
		t.Fatalf("status after pin: %+v", st)
	}
	f.set("failed")
	if st, _ := s.Status(ctx, c); st.State != Failed || st.Error == "" {
		t.Fatalf("failed request: %+v", st)
	}
	// A failed request is replaced, not duplicated.
	if err := s.Pin(ctx, c, "nixipfs x"); err != nil || f.adds != 1 || f.replace != 1 {
		t.Fatalf("re-pin after failure: %v, %d adds, %d replaces", err, f.adds, f.replace)
	}
	f.set("pinned")
	if st, _ := s.Status(ctx, c); st.State != Pinned || len(st.Holders) != 1 {
		t.Fatalf("pinned request: %+v", st)
	}
	if err := s.Unpin(ctx, c); err != nil || len(f.reqs) != 0 {
		t.Fatalf("unpin: %v, %d requests left", err, len(f.reqs))
	}

	// A service that answers with another CID's pin is not believed.
	f.lie = testCID(t, "other").String()
	if st, err := s.Status(ctx, c); err != nil || st.State != Unknown {
		t.Fatalf("another CID's pinned request counted: %+v, %v", st, err)
	}
}

func TestOpenSecrets(t *testing.T) {
	dir := t.TempDir()
	tok := dir + "/token"
	if err := os.WriteFile(tok, []byte("t0k\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(Options{Service: "https://pins.example", ServiceTokenFile: tok}); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("a world-readable token file: %v", err)
	}
	if err := os.Chmod(tok, 0o600); err != nil {
		t.Fatal(err)
	}
	rs, err := Open(Options{Service: "https://pins.example", ServiceTokenFile: tok, Cluster: "http://127.0.0.1:9094", Replication: 2})
	if err != nil || len(rs) != 2 {
		t.Fatalf("Open: %v, %v", rs, err)
	}
	for _, o := range []Options{
		{Service: "https://pins.example"},
		{ServiceTokenFile: tok},
		{ClusterAuthFile: tok},
		{Cluster: "http://127.0.0.1:9094", Replication: 2, ClusterAuthFile: dir + "/missing"},
	} {
		if _, err := Open(o); err == nil {
			t.Errorf("Open(%+v) accepted", o)
		}
	}
	if rs, err := Open(Options{}); err != nil || len(rs) != 0 {
		t.Fatalf("no remotes: %v, %v", rs, err)
	}
}
