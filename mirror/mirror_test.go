package mirror

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// deadURL is an http URL on a loopback port nobody listens on.
func deadURL(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "http://" + addr
}

// fixtureList writes a 50-entry find-tarballs.nix list like the acceptance
// test's: real tarballs in mixed hash encodings and both list forms, some
// through mirror://, one whose first URL is dead (connection refused), one
// whose first URL is a 404, one with the wrong hash, one patch and one that
// is only a 404. 47 files can be mirrored.
func fixtureList(t *testing.T, srv *fileServer, base string) (list []byte, files map[string][]byte) {
	t.Helper()
	tarballs := realTarballs(t, 48, 48<<10)
	dead := deadURL(t)
	files = map[string][]byte{}
	var entries []map[string]any
	for i := range 45 {
		data := tarballs[i]
		name := fmt.Sprintf("pkg-%02d.tar.gz", i)
		path := "/files/" + name
		srv.add(path, data)
		files[name] = data
		url := base + path
		if i%5 == 0 {
			url = "mirror://test/" + name
			srv.add("/mirror-b/"+name, data) // the mirror's second base; the first has nothing
		}
		var e map[string]any
		switch i % 9 {
		case 0:
			h := hashOf("sha256", data)
			e = map[string]any{"urls": []string{url}, "hash": h.Nix32(), "type": "sha256"}
		case 1:
			h := hashOf("sha256", data)
			e = map[string]any{"urls": []string{url}, "hash": h.SRI(), "type": nil}
		case 2:
			h := hashOf("sha512", data)
			e = map[string]any{"urls": []string{url}, "hash": h.SRI(), "type": nil}
		case 3:
			h := hashOf("sha256", data)
			e = map[string]any{"url": url, "hash": h.Hex(), "type": "sha256"} // the old form
		case 4:
			h := hashOf("sha1", data)
			e = map[string]any{"urls": []string{url}, "hash": h.Hex(), "type": "sha1"}
		case 5:
			h := hashOf("md5", data)
			e = map[string]any{"url": url, "hash": h.Hex(), "type": "md5"}
		case 6:
			h := hashOf("sha512", data)
			e = map[string]any{"urls": []string{url}, "hash": h.Nix32(), "type": "sha512"}
		case 7:
			h := hashOf("sha256", data)
			e = map[string]any{"urls": []string{url}, "hash": h.String(), "type": nil}
		case 8:
			h := hashOf("sha1", data)
			e = map[string]any{"urls": []string{url}, "hash": strings.ToUpper(h.Hex()), "type": "sha1"}
		}
		e["isPatch"] = false
		if _, ok := e["url"]; !ok {
			e["name"] = name
		}
		entries = append(entries, e)
	}
	// Dead first URL, working second.
	d45 := tarballs[45]
	srv.add("/files/pkg-45.tar.gz", d45)
	files["pkg-45.tar.gz"] = d45
	entries = append(entries, map[string]any{
		"urls": []string{dead + "/pkg-45.tar.gz", base + "/files/pkg-45.tar.gz"},
		"hash": hashOf("sha256", d45).SRI(), "type": nil, "name": "pkg-45.tar.gz", "isPatch": false})
	// 404 first, working second.
	d46 := tarballs[46]
	srv.add("/files/pkg-46.tar.gz", d46)
	files["pkg-46.tar.gz"] = d46
	entries = append(entries, map[string]any{
		"urls": []string{base + "/gone/pkg-46.tar.gz", base + "/files/pkg-46.tar.gz"},
		"hash": hashOf("sha256", d46).Nix32(), "type": "sha256", "name": "pkg-46.tar.gz", "isPatch": false})
	// The wrong hash: the server has a file, but not the one the list names.
	srv.add("/files/wrong.tar.gz", tarballs[47])
	entries = append(entries, map[string]any{
		"urls": []string{base + "/files/wrong.tar.gz"},
		"hash": hashOf("sha256", []byte("something else")).Nix32(), "type": "sha256", "name": "wrong.tar.gz", "isPatch": false})
	// A patch: counted, never fetched.
	entries = append(entries, map[string]any{
		"urls": []string{base + "/files/fix.patch"},
		"hash": hashOf("sha256", []byte("patched")).SRI(), "type": nil, "name": "fix.patch", "isPatch": true})
	// Only a 404.
	entries = append(entries, map[string]any{
		"urls": []string{base + "/gone/missing.tar.gz"},
		"hash": hashOf("sha256", []byte("missing")).Nix32(), "type": "sha256", "name": "missing.tar.gz", "isPatch": false})
	list, err := json.Marshal(entries)
	if err != nil {
		t.Fatal(err)
	}
	return list, files
}

func TestMirrorFixture(t *testing.T) {
	srv := newFileServer()
	ts := httptest.NewServer(srv)
	defer ts.Close()
	list, files := fixtureList(t, srv, ts.URL)
	entries, bad, err := ParseList(strings.NewReader(string(list)))
	if err != nil || len(bad) != 0 || len(entries) != 50 {
		t.Fatalf("ParseList: %d entries, bad %v, %v", len(entries), bad, err)
	}
	opts := fastOpts(t)
	opts.Mirrors = Mirrors{"test": {ts.URL + "/mirror-a/", ts.URL + "/mirror-b/"}}
	var (
		progMu sync.Mutex
		last   Progress
		calls  int
	)
	opts.Progress = func(p Progress) {
		progMu.Lock()
		defer progMu.Unlock()
		if p.Done < last.Done || p.Bytes < last.Bytes {
			t.Errorf("progress went back: %+v after %+v", p, last)
		}
		last = p
		calls++
	}
	sink := newMemSink()
	rep, err := Mirror(context.Background(), entries, sink, opts)
	if err != nil {
		t.Fatal(err)
	}
	opts.Progress = nil
	if sink.addCount() != 47 {
		t.Errorf("%d files added, want 47", sink.addCount())
	}
	if rep.Mirrored != 47 || rep.Skipped != 0 || rep.Patches != 1 || rep.Failed != 2 || len(rep.Results) != 50 {
		t.Errorf("report: %d mirrored, %d skipped, %d patches, %d failed, %d results",
			rep.Mirrored, rep.Skipped, rep.Patches, rep.Failed, len(rep.Results))
	}
	var total int64
	for _, d := range files {
		total += int64(len(d))
	}
	if rep.Bytes != total {
		t.Errorf("report bytes %d, want %d", rep.Bytes, total)
	}
	// What was added is what was served, under the right entry.
	for _, a := range sink.adds {
		data, ok := files[a.entry.Name]
		if !ok || sha256.Sum256(data) != a.sha256 {
			t.Errorf("entry %d (%s): added the wrong bytes", a.entry.Index, a.entry.Name)
		}
	}
	res := func(i int) Result { return rep.Results[i] }
	if r := res(45); r.Status != StatusMirrored || len(r.Tried) != 1 || !strings.Contains(r.Tried[0].Err, "refused") ||
		!strings.Contains(r.Tried[0].Err, "attempts") || !strings.HasSuffix(r.URL, "/files/pkg-45.tar.gz") {
		t.Errorf("dead first URL: %+v", r)
	}
	if r := res(46); r.Status != StatusMirrored || len(r.Tried) != 1 || !strings.Contains(r.Tried[0].Err, "404") {
		t.Errorf("404 first URL: %+v", r)
	}
	if r := res(47); r.Status != StatusFailed || !strings.Contains(r.Err, "hash mismatch") || !strings.Contains(r.Err, "/files/wrong.tar.gz") {
		t.Errorf("wrong hash: %+v", r)
	}
	if r := res(48); r.Status != StatusPatch {
		t.Errorf("patch: %+v", r)
	}
	if r := res(49); r.Status != StatusFailed || !strings.Contains(r.Err, "404") || !strings.Contains(r.Err, "/gone/missing.tar.gz") {
		t.Errorf("404 only: %+v", r)
	}
	if n := srv.hitsOf("/gone/missing.tar.gz"); n != 1 {
		t.Errorf("a 404 was asked %d times, want once (no retries)", n)
	}
	if n := srv.hitsOf("/files/fix.patch"); n != 0 {
		t.Errorf("the patch was fetched %d times", n)
	}
	// mirror:// entries fell through the empty first base to the second.
	if r := res(0); r.Status != StatusMirrored || !strings.Contains(r.URL, "/mirror-b/") || len(r.Tried) != 1 {
		t.Errorf("mirror:// entry: %+v", r)
	}
	if got := len(rep.Failures()); got != 2 {
		t.Errorf("%d failures", got)
	}
	if _, err := json.Marshal(rep); err != nil {
		t.Errorf("report does not encode: %v", err)
	}
	if last.Done != 50 || last.Mirrored != 47 || last.Failed != 2 || last.Patches != 1 || last.Total != 50 || last.Bytes < total || calls < 50 {
		t.Errorf("last progress %+v after %d calls", last, calls)
	}
	emptyDir(t, opts.TempDir)

	// Again with the same sink: the 47 are there, nothing of theirs is fetched.
	before := map[string]int{}
	for name := range files {
		before[name] = srv.hitsOf("/files/" + name)
	}
	rep, err = Mirror(context.Background(), entries, sink, opts)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Skipped != 47 || rep.Mirrored != 0 || rep.Failed != 2 || sink.addCount() != 47 {
		t.Errorf("rerun: %d skipped, %d mirrored, %d failed, %d adds", rep.Skipped, rep.Mirrored, rep.Failed, sink.addCount())
	}
	for name, n := range before {
		if srv.hitsOf("/files/"+name) != n {
			t.Errorf("%s fetched again", name)
		}
	}

	// And with a sink that has everything: not one request.
	srv.requests.Store(0)
	all := newMemSink()
	all.hasAll = true
	rep, err = Mirror(context.Background(), entries, all, opts)
	if err != nil {
		t.Fatal(err)
	}
	if n := srv.requests.Load(); n != 0 {
		t.Errorf("%d requests to the server, want 0", n)
	}
	if rep.Skipped != 49 || rep.Patches != 1 || all.addCount() != 0 {
		t.Errorf("all there: %d skipped, %d patches, %d adds", rep.Skipped, rep.Patches, all.addCount())
	}
	emptyDir(t, opts.TempDir)
}

func TestMirrorRetries(t *testing.T) {
	data := realTarballs(t, 1, 32<<10)[0]
	srv := newFileServer()
	var mu sync.Mutex
	n := 0
	srv.handle("/flaky.tar.gz", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		n++
		k := n
		mu.Unlock()
		if k <= 2 {
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write(data)
	})
	srv.handle("/always503.tar.gz", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "busy", http.StatusServiceUnavailable)
	})
	srv.handle("/teapot.tar.gz", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no", http.StatusForbidden)
	})
	ts := httptest.NewServer(srv)
	defer ts.Close()
	h := hashOf("sha256", data)
	entries := []Entry{
		{Index: 0, Name: "flaky", URLs: []string{ts.URL + "/flaky.tar.gz"}, Hash: h},
		{Index: 1, Name: "busy", URLs: []string{ts.URL + "/always503.tar.gz"}, Hash: hashOf("sha256", []byte("b"))},
		{Index: 2, Name: "forbidden", URLs: []string{ts.URL + "/teapot.tar.gz"}, Hash: hashOf("sha256", []byte("c"))},
	}
	opts := fastOpts(t)
	sink := newMemSink()
	rep, err := Mirror(context.Background(), entries, sink, opts)
	if err != nil {
		t.Fatal(err)
	}
	if r := rep.Results[0]; r.Status != StatusMirrored || sink.addCount() != 1 {
		t.Errorf("flaky: %+v", r)
	}
	if n != 3 {
		t.Errorf("flaky asked %d times, want 3", n)
	}
	// Retries: 3 means 4 attempts in all.
	if got := srv.hitsOf("/always503.tar.gz"); got != 4 {
		t.Errorf("a 503 server asked %d times, want 4", got)
	}
	if r := rep.Results[1]; r.Status != StatusFailed || !strings.Contains(r.Err, "503") || !strings.Contains(r.Err, "after 4 attempts") {
		t.Errorf("503: %+v", r)
	}
	if got := srv.hitsOf("/teapot.tar.gz"); got != 1 {
		t.Errorf("a 403 asked %d times, want once", got)
	}

	// No retries at all.
	opts.Retries = -1
	n = 0
	rep, err = Mirror(context.Background(), entries[:1], newMemSink(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if r := rep.Results[0]; r.Status != StatusFailed || n != 1 {
		t.Errorf("no retries: %d requests, %+v", n, r)
	}
}

func TestMirrorRetryAfter(t *testing.T) {
	srv := newFileServer()
	data := []byte("retry after")
	var first time.Time
	var second time.Duration
	srv.handle("/f", func(w http.ResponseWriter, r *http.Request) {
		if first.IsZero() {
			first = time.Now()
			w.Header().Set("Retry-After", "1")
			http.Error(w, "slow down", http.StatusTooManyRequests)
			return
		}
		second = time.Since(first)
		_, _ = w.Write(data)
	})
	ts := httptest.NewServer(srv)
	defer ts.Close()
	rep, err := Mirror(context.Background(), []Entry{{URLs: []string{ts.URL + "/f"}, Hash: hashOf("md5", data)}}, newMemSink(), fastOpts(t))
	if err != nil {
		t.Fatal(err)
	}
	if rep.Mirrored != 1 || second < 900*time.Millisecond {
		t.Errorf("mirrored %d, retried after %v, want about 1 s (Retry-After)", rep.Mirrored, second)
	}
}

func TestMirrorMaxSize(t *testing.T) {
	const limit = 1 << 20
	big := make([]byte, 3<<20)
	for i := range big {
		big[i] = byte(i * 7)
	}
	srv := newFileServer()
	srv.handle("/with-length", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(big)))
		_, _ = w.Write(big)
	})
	var mu sync.Mutex
	sent := 0
	srv.handle("/endless", func(w http.ResponseWriter, r *http.Request) {
		// Chunked, no length, until the client goes away (at most 256 MiB).
		chunk := make([]byte, 64<<10)
		for range 4096 {
			if _, err := w.Write(chunk); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			mu.Lock()
			sent += len(chunk)
			mu.Unlock()
		}
	})
	ts := httptest.NewServer(srv)
	defer ts.Close()
	opts := fastOpts(t)
	opts.MaxSize = limit
	sink := newMemSink()
	entries := []Entry{
		{Index: 0, URLs: []string{ts.URL + "/with-length"}, Hash: hashOf("sha256", big)},
		{Index: 1, URLs: []string{ts.URL + "/endless"}, Hash: hashOf("sha256", big)},
	}
	rep, err := Mirror(context.Background(), entries, sink, opts)
	if err != nil {
		t.Fatal(err)
	}
	if sink.addCount() != 0 || rep.Failed != 2 {
		t.Fatalf("%d added, %d failed", sink.addCount(), rep.Failed)
	}
	if r := rep.Results[0]; !strings.Contains(r.Err, "announces 3145728 bytes, over the limit") {
		t.Errorf("with length: %s", r.Err)
	}
	if r := rep.Results[1]; !strings.Contains(r.Err, "cut off") {
		t.Errorf("endless: %s", r.Err)
	}
	// Both are permanent for their URL: asked once each.
	if srv.hitsOf("/with-length") != 1 || srv.hitsOf("/endless") != 1 {
		t.Errorf("asked %d and %d times", srv.hitsOf("/with-length"), srv.hitsOf("/endless"))
	}
	ts.Close() // waits for the handler
	mu.Lock()
	defer mu.Unlock()
	if sent > 64<<20 {
		t.Errorf("the endless server sent %d bytes before being cut off (limit %d)", sent, limit)
	}
	emptyDir(t, opts.TempDir)
}

func TestMirrorStall(t *testing.T) {
	srv := newFileServer()
	release := make(chan struct{})
	srv.handle("/stall-body", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "100000")
		_, _ = w.Write(make([]byte, 1000))
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	srv.handle("/stall-headers", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	srv.handle("/drip", func(w http.ResponseWriter, r *http.Request) {
		// A byte every 20 ms: never stalls, never finishes in time.
		w.Header().Set("Content-Length", "1000")
		for range 1000 {
			if _, err := w.Write([]byte{'x'}); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				return
			case <-release:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	})
	ts := httptest.NewServer(srv)
	defer ts.Close()
	defer close(release)

	for _, tc := range []struct {
		path, want     string
		timeout, stall time.Duration
		cut            time.Duration // when it should be cut off
	}{
		// Timeout alone: the stall timeout defaults to it.
		{"/stall-body", "", 400 * time.Millisecond, 0, 400 * time.Millisecond},
		{"/stall-headers", "", 400 * time.Millisecond, 0, 400 * time.Millisecond},
		// A shorter stall timeout.
		{"/stall-body", "stalled: no data for 300ms", 5 * time.Second, 300 * time.Millisecond, 300 * time.Millisecond},
		{"/stall-headers", "stalled: no data for 300ms", 5 * time.Second, 300 * time.Millisecond, 300 * time.Millisecond},
		// Data keeps coming, too slowly: the total timeout.
		{"/drip", "timed out after 400ms", 400 * time.Millisecond, 5 * time.Second, 400 * time.Millisecond},
	} {
		t.Run(tc.path+"/"+tc.want, func(t *testing.T) {
			opts := fastOpts(t)
			opts.Timeout, opts.StallTimeout, opts.Retries = tc.timeout, tc.stall, -1
			sink := newMemSink()
			start := time.Now()
			rep, err := Mirror(context.Background(), []Entry{{URLs: []string{ts.URL + tc.path}, Hash: hashOf("sha256", nil)}}, sink, opts)
			took := time.Since(start)
			if err != nil {
				t.Fatal(err)
			}
			r := rep.Results[0]
			if r.Status != StatusFailed || sink.addCount() != 0 {
				t.Errorf("%+v", r)
			}
			if tc.want != "" && !strings.Contains(r.Err, tc.want) || !strings.Contains(r.Err, "stalled") && !strings.Contains(r.Err, "timed out") {
				t.Errorf("error %q, want %q", r.Err, tc.want)
			}
			if took < tc.cut || took > tc.cut+time.Second {
				t.Errorf("cut off after %v, want about %v", took, tc.cut)
			}
			emptyDir(t, opts.TempDir)
		})
	}
}

func TestMirrorCancel(t *testing.T) {
	srv := newFileServer()
	started := make(chan struct{})
	var once sync.Once
	srv.handle("/slow", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(10<<20))
		_, _ = w.Write(make([]byte, 1<<20))
		w.(http.Flusher).Flush()
		once.Do(func() { close(started) })
		<-r.Context().Done()
	})
	ts := httptest.NewServer(srv)
	defer ts.Close()
	var entries []Entry
	for i := range 10 {
		entries = append(entries, Entry{Index: i, URLs: []string{ts.URL + "/slow"}, Hash: hashOf("sha256", []byte{byte(i)})})
	}
	opts := fastOpts(t)
	opts.Concurrency = 2
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sink := newMemSink()
	type out struct {
		rep Report
		err error
	}
	done := make(chan out, 1)
	go func() {
		rep, err := Mirror(ctx, entries, sink, opts)
		done <- out{rep, err}
	}()
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("the download never started")
	}
	// A download is under way, in a temp file inside TempDir.
	var partial []string
	for range 100 {
		partial, _ = filepath.Glob(filepath.Join(opts.TempDir, "nixipfs-mirror-*", "download-*"))
		if len(partial) > 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if len(partial) == 0 {
		t.Error("no temp file while downloading")
	}
	cancel()
	var o out
	select {
	case o = <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("Mirror did not stop within 2 s of the cancel")
	}
	if !errors.Is(o.err, context.Canceled) {
		t.Errorf("error %v, want context.Canceled", o.err)
	}
	if len(o.rep.Results) != 0 || sink.addCount() != 0 {
		t.Errorf("%d results, %d adds after a cancel mid-download", len(o.rep.Results), sink.addCount())
	}
	emptyDir(t, opts.TempDir)

	// A context that is already done does nothing.
	if _, err := Mirror(ctx, entries, sink, opts); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled context: %v", err)
	}
}

func TestMirrorSinkErrorsAndDuplicates(t *testing.T) {
	data := []byte("the same file under two entries")
	srv := newFileServer()
	srv.add("/a", data)
	srv.add("/b", data)
	ts := httptest.NewServer(srv)
	defer ts.Close()
	h := hashOf("sha1", data)
	entries := []Entry{
		{Index: 0, Name: "a", URLs: []string{ts.URL + "/a"}, Hash: h},
		{Index: 1, Name: "b", URLs: []string{ts.URL + "/b"}, Hash: h},
		{Index: 2, Name: "bad", URLs: []string{ts.URL + "/a"}, Hash: Hash{Algo: "sha1", Digest: []byte{1, 2}}},
		{Index: 3, Name: "nourls", Hash: hashOf("md5", data)},
		{Index: 4, Name: "file", URLs: []string{"file:///etc/passwd"}, Hash: hashOf("sha256", data)},
	}
	sink := newMemSink()
	rep, err := Mirror(context.Background(), entries, sink, fastOpts(t))
	if err != nil {
		t.Fatal(err)
	}
	if sink.addCount() != 1 || srv.hitsOf("/b") != 0 {
		t.Errorf("duplicate hash: %d adds, /b asked %d times", sink.addCount(), srv.hitsOf("/b"))
	}
	if r := rep.Results[1]; r.Status != StatusSkipped || !strings.Contains(r.Note, "entry 0") {
		t.Errorf("duplicate: %+v", r)
	}
	if r := rep.Results[2]; r.Status != StatusFailed || !strings.Contains(r.Err, "invalid hash") {
		t.Errorf("invalid hash: %+v", r)
	}
	if r := rep.Results[3]; r.Status != StatusFailed || !strings.Contains(r.Err, "no URLs") {
		t.Errorf("no urls: %+v", r)
	}
	if r := rep.Results[4]; r.Status != StatusFailed || !strings.Contains(r.Err, "unsupported URL scheme") {
		t.Errorf("file URL: %+v", r)
	}
	if _, err := json.Marshal(rep); err != nil {
		t.Errorf("a report with an invalid hash does not encode: %v", err)
	}

	// A sink that cannot answer or store: the entry fails, naming the sink.
	broken := newMemSink()
	broken.hasErr = errors.New("ipfs down")
	rep, _ = Mirror(context.Background(), entries[:1], broken, fastOpts(t))
	if r := rep.Results[0]; r.Status != StatusFailed || !strings.Contains(r.Err, "ask the sink") || !strings.Contains(r.Err, "ipfs down") {
		t.Errorf("Has error: %+v", r)
	}
	broken = newMemSink()
	broken.addErr = errors.New("disk full")
	rep, _ = Mirror(context.Background(), entries[:1], broken, fastOpts(t))
	if r := rep.Results[0]; r.Status != StatusFailed || !strings.Contains(r.Err, "to the sink: disk full") {
		t.Errorf("Add error: %+v", r)
	}
	if _, err := Mirror(context.Background(), entries, nil, fastOpts(t)); err == nil {
		t.Error("nil sink accepted")
	}
	if _, err := Mirror(context.Background(), entries, sink, Options{TempDir: filepath.Join(t.TempDir(), "missing")}); err == nil {
		t.Error("missing temp dir accepted")
	}
	if _, err := os.Stat(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("the missing temp dir was created")
	}
}

func TestMirrorRedirects(t *testing.T) {
	data := []byte("moved file")
	srv := newFileServer()
	srv.add("/new", data)
	srv.handle("/old", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/new", http.StatusFound) })
	srv.handle("/to-file", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "file:///etc/passwd", http.StatusFound)
	})
	srv.handle("/loop", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/loop", http.StatusFound) })
	ts := httptest.NewServer(srv)
	defer ts.Close()
	h := hashOf("sha256", data)
	entries := []Entry{
		{Index: 0, URLs: []string{ts.URL + "/old"}, Hash: h},
		{Index: 1, URLs: []string{ts.URL + "/to-file"}, Hash: hashOf("sha256", []byte("1"))},
		{Index: 2, URLs: []string{ts.URL + "/loop"}, Hash: hashOf("sha256", []byte("2"))},
	}
	rep, err := Mirror(context.Background(), entries, newMemSink(), fastOpts(t))
	if err != nil {
		t.Fatal(err)
	}
	if r := rep.Results[0]; r.Status != StatusMirrored {
		t.Errorf("redirect: %+v", r)
	}
	if r := rep.Results[1]; r.Status != StatusFailed || !strings.Contains(r.Err, "unsupported URL scheme") || srv.hitsOf("/to-file") != 1 {
		t.Errorf("redirect to file://: %+v, asked %d times", r, srv.hitsOf("/to-file"))
	}
	if r := rep.Results[2]; r.Status != StatusFailed || !strings.Contains(r.Err, "10 redirects") || srv.hitsOf("/loop") != 10 {
		t.Errorf("redirect loop: %+v, asked %d times", r, srv.hitsOf("/loop"))
	}
}
