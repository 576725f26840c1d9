package fastpath

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// files answers /fast with a body and /file/<name> with a file of dir;
// everything else is declined. It records what Done reported.
type files struct {
	dir              string
	entered, release chan struct{} // /block: entered, then waits for release
	mu               sync.Mutex
	sent             []int64
}

func (h *files) Quick(r *Request) (Answer, bool) {
	done := func(n int64, err error) {
		h.mu.Lock()
		defer h.mu.Unlock()
		if err == nil {
			h.sent = append(h.sent, n)
		}
	}
	switch r.Path {
	case "/block":
		h.entered <- struct{}{}
		<-h.release
		return Answer{Status: 200, ContentType: "text/plain", Body: []byte("unblocked")}, true
	case "/panic":
		panic("handler bug")
	}
	if r.Path == "/fast" {
		return Answer{Status: 200, ContentType: "text/plain", Body: []byte("fast " + r.AcceptEncoding), Done: done}, true
	}
	if name, ok := strings.CutPrefix(r.Path, "/file/"); ok {
		f, err := os.Open(filepath.Join(h.dir, name))
		if err != nil {
			return Answer{}, false
		}
		fi, _ := f.Stat()
		return Answer{Status: 200, ContentType: "application/octet-stream", File: f, Size: fi.Size(),
			Header: [][2]string{{"Cache-Control", "immutable"}}, Done: done}, true
	}
	return Answer{}, false
}

// start runs a fast-path server in front of a net/http server that names
// itself in X-Via and echoes method, path and body.
func start(t *testing.T, cfg Config) (*Server, *files, string, chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return startOn(t, cfg, ln)
}

func startOn(t *testing.T, cfg Config, ln net.Listener) (*Server, *files, string, chan error) {
	t.Helper()
	h := &files{dir: t.TempDir(), entered: make(chan struct{}, 1), release: make(chan struct{})}
	s := New(h, cfg)
	slow := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Via", "net/http")
		fmt.Fprintf(w, "%s %s %s", r.Method, r.URL.Path, body)
	})}
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	go func() { _ = slow.Serve(s.HandOff()) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
		_ = slow.Shutdown(ctx)
	})
	return s, h, ln.Addr().String(), served
}

var testCfg = Config{HeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute}

func dial(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(30 * time.Second)) // a hung server fails, not hangs, the test
	return c, bufio.NewReader(c)
}

type want struct {
	via, body string
}

func expect(t *testing.T, br *bufio.Reader, w want) *http.Response {
	t.Helper()
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	if via := resp.Header.Get("X-Via"); via != w.via || string(body) != w.body {
		t.Fatalf("got X-Via %q, body %.60q; want %q, %.60q", via, body, w.via, w.body)
	}
	if resp.Header.Get("Date") == "" {
		t.Errorf("no Date field")
	}
	return resp
}

func TestPipelinedFastThenHandedOff(t *testing.T) {
	_, h, addr, _ := start(t, testCfg)
	big := make([]byte, 3*smallFile+17)
	_, _ = rand.Read(big)
	small := []byte("small file")
	for name, b := range map[string][]byte{"big": big, "small": small} {
		if err := os.WriteFile(filepath.Join(h.dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	c, br := dial(t, addr)
	// All in one write: the fast path must answer in order, then hand the
	// connection over with the unanswered requests still unread.
	req := func(path string, fields ...string) string {
		return "GET " + path + " HTTP/1.1\r\nHost: x\r\n" + strings.Join(fields, "") + "\r\n"
	}
	if _, err := io.WriteString(c, req("/fast", "Accept-Encoding: zstd\r\n")+req("/file/big")+req("/file/small")+
		req("/slow")+req("/fast")+"POST /post HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"+req("/fast")); err != nil {
		t.Fatal(err)
	}
	r := expect(t, br, want{"", "fast zstd"})
	if r.ContentLength != 9 || r.Header.Get("Content-Type") != "text/plain" {
		t.Errorf("fast answer: length %d, type %q", r.ContentLength, r.Header.Get("Content-Type"))
	}
	r = expect(t, br, want{"", string(big)})
	if r.Header.Get("Cache-Control") != "immutable" {
		t.Errorf("file answer lost its fields: %v", r.Header)
	}
	expect(t, br, want{"", string(small)})
	expect(t, br, want{"net/http", "GET /slow "})
	expect(t, br, want{"net/http", "GET /fast "}) // the connection stays with net/http
	expect(t, br, want{"net/http", "POST /post hello"})
	expect(t, br, want{"net/http", "GET /fast "})
	h.mu.Lock()
	defer h.mu.Unlock()
	if fmt.Sprint(h.sent) != fmt.Sprint([]int64{9, int64(len(big)), int64(len(small))}) {
		t.Errorf("Done reported %v", h.sent)
	}
}

func TestHandedOffAtOnce(t *testing.T) {
	_, _, addr, _ := start(t, testCfg)
	for _, c := range []struct{ name, req, body string }{
		// Not a GET: handed over at its first bytes, before a head is whole.
		{"POST", "POST /fast HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi", "POST /fast hi"},
		{"HEAD", "HEAD /fast HTTP/1.1\r\nHost: x\r\n\r\n", ""},
		// A head longer than the fast path reads.
		{"long head", "GET /fast HTTP/1.1\r\nHost: x\r\nAccept: " + strings.Repeat("a", maxHead) + "\r\n\r\n", "GET /fast "},
		{"odd field", "GET /fast HTTP/1.1\r\nHost: x\r\nX-Odd: 1\r\n\r\n", "GET /fast "},
		// Bare LFs: net/http reads them, at once, not after a timeout.
		{"bare LF", "GET /fast HTTP/1.1\nHost: x\n\n", "GET /fast "},
	} {
		t.Run(c.name, func(t *testing.T) {
			conn, br := dial(t, addr)
			if _, err := io.WriteString(conn, c.req); err != nil {
				t.Fatal(err)
			}
			if c.name == "HEAD" {
				resp, err := http.ReadResponse(br, &http.Request{Method: "HEAD"})
				if err != nil || resp.Header.Get("X-Via") != "net/http" {
					t.Fatalf("HEAD: %v %v", resp, err)
				}
				return
			}
			expect(t, br, want{"net/http", c.body})
		})
	}
}

// A new connection has HeaderTimeout to send its first head, and a later
// head HeaderTimeout from its first byte; an idle connection is cut at
// IdleTimeout. Each wait below is bounded by dial's 30 s deadline, far above
// the timeout under test and below the other one.
func TestTimeouts(t *testing.T) {
	eof := func(t *testing.T, what string, br *bufio.Reader) {
		t.Helper()
		if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
			t.Fatalf("%s: read %v, want EOF", what, err)
		}
	}
	t.Run("header", func(t *testing.T) {
		_, _, addr, _ := start(t, Config{HeaderTimeout: 50 * time.Millisecond, IdleTimeout: time.Hour})
		_, br := dial(t, addr)
		eof(t, "silent new connection", br)
		c, br := dial(t, addr)
		if _, err := io.WriteString(c, "GET /fast HTTP/1.1\r\nHost: x\r\n"); err != nil {
			t.Fatal(err)
		}
		eof(t, "first head unfinished", br)
		c, br = dial(t, addr)
		if _, err := io.WriteString(c, "GET /fast HTTP/1.1\r\nHost: x\r\n\r\nGET /fast HTTP/1.1\r\n"); err != nil {
			t.Fatal(err)
		}
		expect(t, br, want{"", "fast "})
		eof(t, "second head unfinished", br)
	})
	t.Run("idle", func(t *testing.T) {
		_, _, addr, _ := start(t, Config{HeaderTimeout: time.Hour, IdleTimeout: 50 * time.Millisecond})
		c, br := dial(t, addr)
		if _, err := io.WriteString(c, "GET /fast HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		expect(t, br, want{"", "fast "})
		eof(t, "idle after an answer", br)
	})
}

// An answer being written when Shutdown starts is finished, then its
// connection closed.
func TestShutdownFinishesAnswer(t *testing.T) {
	s, h, addr, served := start(t, testCfg)
	c, br := dial(t, addr)
	if _, err := io.WriteString(c, "GET /block HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	<-h.entered
	shut := make(chan error, 1)
	go func() { shut <- s.Shutdown(context.Background()) }()
	close(h.release)
	expect(t, br, want{"", "unblocked"})
	if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
		t.Fatalf("after the answer: read %v, want EOF", err)
	}
	if err := <-shut; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := <-served; err != nil {
		t.Fatalf("Serve: %v", err)
	}
}

// A handler's panic drops its connection, as net/http does, and the server
// goes on.
func TestHandlerPanic(t *testing.T) {
	_, _, addr, _ := start(t, Config{HeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute,
		Logger: slog.New(slog.DiscardHandler)})
	c, br := dial(t, addr)
	if _, err := io.WriteString(c, "GET /panic HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
		t.Fatalf("after a panic: read %v, want EOF", err)
	}
	c, br = dial(t, addr)
	if _, err := io.WriteString(c, "GET /fast HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	expect(t, br, want{"", "fast "})
}

// failingListener fails its first Accepts as a process out of file
// descriptors does.
type failingListener struct {
	net.Listener
	fails atomic.Int32
}

func (l *failingListener) Accept() (net.Conn, error) {
	if l.fails.Add(-1) >= 0 {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: syscall.EMFILE}
	}
	return l.Listener.Accept()
}

// Accept errors other than a closed listener are waited out, not fatal.
func TestAcceptErrorsRetried(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fl := &failingListener{Listener: ln}
	fl.fails.Store(3)
	_, _, addr, served := startOn(t, Config{HeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute,
		Logger: slog.New(slog.DiscardHandler)}, fl)
	c, br := dial(t, addr)
	if _, err := io.WriteString(c, "GET /fast HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	expect(t, br, want{"", "fast "})
	select {
	case err := <-served:
		t.Fatalf("Serve returned: %v", err)
	default:
	}
}

func TestShutdown(t *testing.T) {
	s, _, addr, served := start(t, testCfg)
	c, br := dial(t, addr)
	if _, err := io.WriteString(c, "GET /fast HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	expect(t, br, want{"", "fast "})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := <-served; err != nil {
		t.Fatalf("Serve after Shutdown: %v", err)
	}
	if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
		t.Fatalf("idle connection after Shutdown: read %v, want EOF", err)
	}
	if _, err := net.Dial("tcp", addr); err == nil {
		t.Fatal("still accepting after Shutdown")
	}
	if _, err := s.HandOff().Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("hand-off listener after Shutdown: %v", err)
	}
}

// A stock client keeps one connection across fast and handed-off answers:
// after the first hand-off, net/http answers /fast too.
func TestHTTPClient(t *testing.T) {
	_, _, addr, _ := start(t, testCfg)
	c := &http.Client{Timeout: 30 * time.Second}
	var got []string
	for i, p := range []string{"/fast", "/fast", "/other", "/fast"} {
		reused := false
		ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
			GotConn: func(info httptrace.GotConnInfo) { reused = info.Reused },
		})
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+p, nil)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if reused != (i > 0) {
			t.Errorf("request %d (%s): connection reused %v", i, p, reused)
		}
		got = append(got, string(b))
	}
	if want := []string{"fast gzip", "fast gzip", "GET /other ", "GET /fast "}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %q, want %q", got, want)
	}
}
