package fastpath

import (
	"bufio"
	"bytes"
	"net/http"
	"strings"
	"testing"
)

func TestParseHead(t *testing.T) {
	const ok = "GET /abc.narinfo HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: curl/8\r\nAccept: */*\r\n\r\n"
	for _, c := range []struct {
		name, head string
		path, ae   string // "" path: handed off
	}{
		{"curl", ok, "/abc.narinfo", ""},
		{"go client", "GET /nar/x-1-y.nar HTTP/1.1\r\nHost: h\r\nUser-Agent: Go-http-client/1.1\r\n\r\n", "/nar/x-1-y.nar", ""},
		{"nix", "GET /abc.narinfo HTTP/1.1\r\nHost: cache\r\nUser-Agent: curl/8 Nix/2.18\r\nAccept: */*\r\nAccept-Encoding: deflate, gzip, br, zstd\r\n\r\n", "/abc.narinfo", "deflate, gzip, br, zstd"},
		{"field case and spacing", "GET /a HTTP/1.1\r\nhOsT:h\r\nCONNECTION: Keep-Alive \r\n\r\n", "/a", ""},
		{"HEAD", strings.Replace(ok, "GET", "HEAD", 1), "", ""},
		{"POST", strings.Replace(ok, "GET", "POST", 1), "", ""},
		{"lower-case method", strings.Replace(ok, "GET", "get", 1), "", ""},
		{"HTTP/1.0", strings.Replace(ok, "HTTP/1.1", "HTTP/1.0", 1), "", ""},
		{"query", strings.Replace(ok, ".narinfo", ".narinfo?x=1", 1), "", ""},
		{"escape", strings.Replace(ok, "abc", "a%62c", 1), "", ""},
		{"absolute form", strings.Replace(ok, "/abc", "http://h/abc", 1), "", ""},
		{"two spaces", strings.Replace(ok, "GET ", "GET  ", 1), "", ""},
		{"no host", "GET /a HTTP/1.1\r\nAccept: */*\r\n\r\n", "", ""},
		{"two hosts", "GET /a HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "", ""},
		{"odd host", "GET /a HTTP/1.1\r\nHost: a b\r\n\r\n", "", ""},
		{"body", "GET /a HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n", "", ""},
		{"chunked", "GET /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", "", ""},
		{"close", "GET /a HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", "", ""},
		{"upgrade", "GET /a HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n", "", ""},
		{"range", "GET /a HTTP/1.1\r\nHost: a\r\nRange: bytes=0-1\r\n\r\n", "", ""},
		{"conditional", "GET /a HTTP/1.1\r\nHost: a\r\nIf-None-Match: x\r\n\r\n", "", ""},
		{"two encodings", "GET /a HTTP/1.1\r\nHost: a\r\nAccept-Encoding: a\r\nAccept-Encoding: b\r\n\r\n", "", ""},
		{"obs-fold", "GET /a HTTP/1.1\r\nHost: a\r\nAccept: x\r\n y\r\n\r\n", "", ""},
		{"space before colon", "GET /a HTTP/1.1\r\nHost : a\r\n\r\n", "", ""},
		{"bare LF", "GET /a HTTP/1.1\nHost: a\n\n", "", ""},
		{"NUL in value", "GET /a HTTP/1.1\r\nHost: a\r\nAccept: \x00\r\n\r\n", "", ""},
		{"trailing bytes", ok + "x", "", ""},
		{"too many fields", "GET /a HTTP/1.1\r\nHost: a\r\n" + strings.Repeat("Accept: x\r\n", maxFields) + "\r\n", "", ""},
	} {
		r, err := parseHead([]byte(c.head))
		switch {
		case c.path == "" && err == nil:
			t.Errorf("%s: parsed as %+v, want a hand-off", c.name, r)
		case c.path != "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.path != "" && (r.Path != c.path || r.AcceptEncoding != c.ae):
			t.Errorf("%s: got %+v, want path %q, Accept-Encoding %q", c.name, r, c.path, c.ae)
		}
	}
}

func TestScanHead(t *testing.T) {
	for _, c := range []struct {
		b    string
		from int
		n    int
		ok   bool
	}{
		{"", 0, 0, true},
		{"GE", 0, 0, true},
		{"GET /a HTTP/1.1\r\n", 0, 0, true},
		{"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET", 0, 28, true},
		{"GET /a HTTP/1.1\r\nHost: x\r\n\r\n", 27, 28, true}, // resumed mid-terminator
		{"POST", 0, 0, false},
		{"GET  /", 0, 0, false},
		{"\r\nGET /", 0, 0, false},
		{"GET /a HTTP/1.1\nHost: x\n\n", 0, 0, false}, // bare LF: net/http's
		{"GET /a HTTP/1.1\r\nHost: x\r\n\n", 0, 0, false},
	} {
		n, ok := scanHead([]byte(c.b), c.from)
		if n != c.n || ok != c.ok {
			t.Errorf("scanHead(%q, %d) = %d, %v; want %d, %v", c.b, c.from, n, ok, c.n, c.ok)
		}
	}
}

// FuzzParseHead holds parseHead to net/http: whatever the fast path accepts,
// net/http reads as the same GET of the same path with no body and a
// persistent connection, so no request gets a different meaning here.
func FuzzParseHead(f *testing.F) {
	f.Add([]byte("GET /abc.narinfo HTTP/1.1\r\nHost: h\r\nAccept-Encoding: zstd\r\n\r\n"))
	f.Add([]byte("GET /nar/a-1-b.nar HTTP/1.1\r\nhost:h:1\r\nConnection: keep-alive\r\nUser-Agent: x\r\n\r\n"))
	f.Add([]byte("GET /a HTTP/1.1\r\nHost: [::1]:80\r\nAccept:\t*/*\t\r\n\r\n"))
	f.Fuzz(func(t *testing.T, head []byte) {
		r, err := parseHead(head)
		if err != nil {
			return
		}
		req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(head)))
		if err != nil {
			t.Fatalf("fast path accepted %q, net/http refuses it: %v", head, err)
		}
		if req.Method != http.MethodGet || req.URL.Path != r.Path || req.URL.RawQuery != "" ||
			req.ContentLength != 0 || len(req.TransferEncoding) != 0 || req.Close ||
			req.Header.Get("Accept-Encoding") != r.AcceptEncoding {
			t.Fatalf("fast path read %q as %+v; net/http as %s %q close=%v length=%d", head, r, req.Method, req.URL, req.Close, req.ContentLength)
		}
	})
}
