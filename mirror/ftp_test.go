package mirror

import (
	"context"
	"fmt"
	"net"
	"net/http/httptest"
	"net/textproto"
	"path"
	"strings"
	"sync"
	"testing"
	"time"
)

// ftpServer is a minimal passive-mode FTP server on loopback: enough of
// RFC 959 and RFC 2428 (EPSV) for a client to log in, change directory, ask
// a size and retrieve a file.
type ftpServer struct {
	t     *testing.T
	l     net.Listener
	files map[string][]byte // by absolute path

	mu      sync.Mutex
	users   []string
	conns   []net.Conn
	busy    int  // connections still to turn away with 421
	stall   bool // RETR sends a little, then nothing
	retrs   int
	closing bool
	wg      sync.WaitGroup
}

func startFTP(t *testing.T, files map[string][]byte) *ftpServer {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &ftpServer{t: t, l: l, files: files}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			if !s.track(c) {
				return
			}
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				s.serve(c)
			}()
		}
	}()
	t.Cleanup(s.close)
	return s
}

func (s *ftpServer) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		c.Close()
		return false
	}
	s.conns = append(s.conns, c)
	return true
}

func (s *ftpServer) close() {
	s.mu.Lock()
	s.closing = true
	for _, c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.l.Close()
	s.wg.Wait()
}

func (s *ftpServer) url(p string) string { return "ftp://" + s.l.Addr().String() + p }

func (s *ftpServer) serve(c net.Conn) {
	defer c.Close()
	tp := textproto.NewConn(c)
	s.mu.Lock()
	busy := s.busy > 0
	if busy {
		s.busy--
	}
	s.mu.Unlock()
	if busy {
		_ = tp.PrintfLine("421 Too many users, try later")
		return
	}
	_ = tp.PrintfLine("220 test ftp")
	cwd := "/"
	var data net.Listener
	defer func() {
		if data != nil {
			data.Close()
		}
	}()
	abs := func(p string) string {
		if strings.HasPrefix(p, "/") {
			return path.Clean(p)
		}
		return path.Join(cwd, p)
	}
	for {
		line, err := tp.ReadLine()
		if err != nil {
			return
		}
		cmd, arg, _ := strings.Cut(line, " ")
		switch strings.ToUpper(cmd) {
		case "USER":
			s.mu.Lock()
			s.users = append(s.users, arg)
			s.mu.Unlock()
			_ = tp.PrintfLine("331 password please")
		case "PASS":
			_ = tp.PrintfLine("230 logged in")
		case "TYPE":
			_ = tp.PrintfLine("200 type set")
		case "CWD":
			dir := abs(arg)
			found := false
			for p := range s.files {
				found = found || strings.HasPrefix(p, dir+"/")
			}
			if !found {
				_ = tp.PrintfLine("550 no such directory")
				continue
			}
			cwd = dir
			_ = tp.PrintfLine("250 ok")
		case "PWD":
			_ = tp.PrintfLine(`257 "%s"`, cwd)
		case "SIZE":
			if f, ok := s.files[abs(arg)]; ok {
				_ = tp.PrintfLine("213 %d", len(f))
			} else {
				_ = tp.PrintfLine("550 no such file")
			}
		case "EPSV":
			if data != nil {
				data.Close()
			}
			data, err = net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				_ = tp.PrintfLine("425 cannot listen")
				continue
			}
			_ = tp.PrintfLine("229 Entering Extended Passive Mode (|||%d|)", data.Addr().(*net.TCPAddr).Port)
		case "RETR":
			f, ok := s.files[abs(arg)]
			if !ok || data == nil {
				_ = tp.PrintfLine("550 no such file")
				continue
			}
			_ = tp.PrintfLine("150 sending")
			dc, err := data.Accept()
			if err != nil {
				return
			}
			if !s.track(dc) {
				return
			}
			s.mu.Lock()
			s.retrs++
			stall := s.stall
			s.mu.Unlock()
			if stall {
				_, _ = dc.Write(f[:len(f)/2])
				// Nothing more until the client hangs up.
				_, _ = dc.Read(make([]byte, 1))
				dc.Close()
				return
			}
			_, _ = dc.Write(f)
			dc.Close()
			_ = tp.PrintfLine("226 done")
		case "QUIT":
			_ = tp.PrintfLine("221 bye")
			return
		default:
			_ = tp.PrintfLine("502 %s not implemented", cmd)
		}
	}
}

func TestMirrorFTP(t *testing.T) {
	tarballs := realTarballs(t, 4, 24<<10)
	srv := startFTP(t, map[string][]byte{
		"/pub/gnu/hello/hello-2.12.tar.gz": tarballs[0],
		"/top.tar.gz":                      tarballs[1],
		"/pub/private/p.tar.gz":            tarballs[2],
	})
	httpSrv := newFileServer()
	httpSrv.add("/fallback.tar.gz", tarballs[3])
	ts := httptest.NewServer(httpSrv)
	defer ts.Close()

	entries := []Entry{
		{Index: 0, Name: "hello", URLs: []string{"mirror://gnu/hello/hello-2.12.tar.gz"}, Hash: hashOf("sha256", tarballs[0])},
		{Index: 1, Name: "top", URLs: []string{srv.url("/top.tar.gz")}, Hash: hashOf("sha512", tarballs[1])},
		{Index: 2, Name: "private", URLs: []string{"ftp://joe:secret@" + srv.l.Addr().String() + "/pub/private/p.tar.gz"}, Hash: hashOf("md5", tarballs[2])},
		{Index: 3, Name: "fallback", URLs: []string{srv.url("/pub/gone/f.tar.gz"), srv.url("/pub/gnu/f.tar.gz"), ts.URL + "/fallback.tar.gz"}, Hash: hashOf("sha1", tarballs[3])},
	}
	opts := fastOpts(t)
	opts.Mirrors = Mirrors{"gnu": {srv.url("/pub/gnu/")}}
	sink := newMemSink()
	rep, err := Mirror(context.Background(), entries, sink, opts)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Mirrored != 4 || sink.addCount() != 4 {
		t.Fatalf("%d mirrored, %d added: %+v", rep.Mirrored, sink.addCount(), rep.Failures())
	}
	if r := rep.Results[0]; r.URL != srv.url("/pub/gnu/hello/hello-2.12.tar.gz") {
		t.Errorf("mirror:// over ftp came from %s", r.URL)
	}
	if r := rep.Results[2]; strings.Contains(fmt.Sprint(r), "secret") {
		t.Errorf("the password is in the result: %+v", r)
	}
	r := rep.Results[3]
	if !strings.HasPrefix(r.URL, ts.URL) || len(r.Tried) != 2 || !strings.Contains(r.Tried[0].Err, "550") || !strings.Contains(r.Tried[1].Err, "550") {
		t.Errorf("fallback after FTP 550s: %+v", r)
	}
	srv.mu.Lock()
	users := strings.Join(srv.users, ",")
	srv.mu.Unlock()
	if !strings.Contains(users, "anonymous") || !strings.Contains(users, "joe") {
		t.Errorf("users %s", users)
	}
	emptyDir(t, opts.TempDir)
}

func TestMirrorFTPBusyAndStall(t *testing.T) {
	data := realTarballs(t, 1, 24<<10)[0]
	srv := startFTP(t, map[string][]byte{"/f.tar.gz": data})
	entries := []Entry{{Name: "f", URLs: []string{srv.url("/f.tar.gz")}, Hash: hashOf("sha256", data)}}

	// 421 at login is transient: retried until the server lets us in.
	srv.mu.Lock()
	srv.busy = 2
	srv.mu.Unlock()
	rep, err := Mirror(context.Background(), entries, newMemSink(), fastOpts(t))
	if err != nil {
		t.Fatal(err)
	}
	if rep.Mirrored != 1 {
		t.Fatalf("after two 421s: %+v", rep.Results)
	}

	// A transfer that stops half-way is cut off by the stall timeout:
	// the FTP client only honours a context while dialling, so this checks
	// that our connections are closed under it.
	srv.mu.Lock()
	srv.stall = true
	srv.mu.Unlock()
	opts := fastOpts(t)
	opts.Retries, opts.Timeout, opts.StallTimeout = -1, 10*time.Second, 300*time.Millisecond
	sink := newMemSink()
	start := time.Now()
	rep, err = Mirror(context.Background(), entries, sink, opts)
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("a stalled FTP transfer took %v to cut off", took)
	}
	if r := rep.Results[0]; r.Status != StatusFailed || !strings.Contains(r.Err, "stalled") || sink.addCount() != 0 {
		t.Errorf("stalled FTP: %+v", r)
	}
	emptyDir(t, opts.TempDir)

	// Cancelling the run mid-transfer stops it as promptly.
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	opts.StallTimeout = 10 * time.Second
	start = time.Now()
	if _, err := Mirror(ctx, entries, sink, opts); err == nil {
		t.Error("no error from a cancelled run")
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("a cancelled FTP transfer took %v to stop", took)
	}
	emptyDir(t, opts.TempDir)
}
