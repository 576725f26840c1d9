// Package fastpath answers a binary cache's hottest requests, narinfos and
// NARs already on disk, on keep-alive HTTP/1.1 connections without
// net/http's per-request machinery, and hands every other request, with its
// connection, to a net/http server.
//
// Why: a client fetching narinfos one after another on one connection waits
// a round trip per request, and net/http spends more on each (a background
// read goroutine, header maps, a context) than nginx spends in total. This
// server reads a request head, and if it is a plain GET the Handler knows
// (see parseHead), writes the answer in one write; anything else, or a head
// it cannot parse, goes to net/http exactly as it arrived, so odd and hostile
// requests get net/http's answers, and a connection once handed over stays
// with net/http.
package fastpath

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Handler answers fast-path requests.
type Handler interface {
	// Quick answers r, or returns false to leave the request, and the
	// connection, to net/http. It must not block for long: a slow answer
	// holds up the requests behind it and Shutdown.
	Quick(r *Request) (Answer, bool)
}

// Answer is a complete response with a body: the server writes the status
// line, Content-Length, Content-Type, Date, then Header, then the body. It
// is for statuses that have a body (not 1xx, 204 or 304).
type Answer struct {
	Status      int // with a reason phrase in net/http's StatusText
	ContentType string
	Header      [][2]string // more fields, in order
	// The body is Body, or the first Size (≥ 0) bytes of File, which the
	// server closes. Larger files go to the socket with sendfile.
	Body []byte
	File *os.File
	Size int64
	// Done, if set, is called once the answer was written (err nil) or
	// failed, with the body bytes sent.
	Done func(sent int64, err error)
}

// Config configures a Server.
type Config struct {
	// HeaderTimeout bounds the wait for a new connection's first request
	// head, and for a later request's head from its first byte;
	// IdleTimeout the wait between requests. Both as net/http's
	// ReadHeaderTimeout and IdleTimeout, and both required.
	HeaderTimeout, IdleTimeout time.Duration
	// Logger reports handler panics; nil: slog.Default().
	Logger *slog.Logger
}

// Server accepts connections, answers what its Handler can, and hands the
// rest to the net/http server serving HandOff().
type Server struct {
	h       Handler
	cfg     Config
	handoff *handoffListener
	// bufs holds answer buffers between requests, so an idle connection
	// keeps only its read buffer, as with net/http.
	bufs sync.Pool

	mu      sync.Mutex
	conns   map[net.Conn]struct{} // being read or answered here
	closing bool
	wg      sync.WaitGroup
	ln      net.Listener
}

// New returns a server that answers with h.
func New(h Handler, cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Server{h: h, cfg: cfg, conns: map[net.Conn]struct{}{},
		handoff: &handoffListener{conns: make(chan net.Conn), done: make(chan struct{})}}
	s.bufs.New = func() any { b := make([]byte, 0, 8<<10); return &b }
	return s
}

// HandOff is the listener the net/http server must Serve: it yields the
// connections this server hands over.
func (s *Server) HandOff() net.Listener { return s.handoff }

// Serve accepts connections on ln until Shutdown, and returns the error
// that stopped it (nil after Shutdown). Call it once.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		ln.Close()
		return nil
	}
	s.ln = ln
	addr := ln.Addr()
	s.handoff.addr.Store(&addr)
	s.mu.Unlock()
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if s.isClosing() {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			// Out of file descriptors and the like: wait and retry, as
			// net/http does, rather than stop serving.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.cfg.Logger.Warn("gateway: accept", "err", err, "retry in", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		if !s.track(c) {
			c.Close()
			return nil
		}
		go s.serveConn(c)
	}
}

func (s *Server) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	return true
}

// forget stops tracking c: it is closed or net/http's now.
func (s *Server) forget(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// Shutdown stops accepting, closes the hand-off listener, wakes connections
// waiting for a request so they close, and waits until answers in flight
// are written or ctx ends, when it closes what is left. Connections already
// handed over are the net/http server's to shut down.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	if s.ln != nil {
		s.ln.Close()
	}
	for c := range s.conns {
		_ = c.SetReadDeadline(time.Now())
	}
	s.mu.Unlock()
	s.handoff.Close()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		return ctx.Err()
	}
}

func (s *Server) isClosing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

// setReadDeadline sets c's read deadline unless the server is closing: a
// deadline Shutdown set (under the same lock) is never pushed back.
func (s *Server) setReadDeadline(c net.Conn, t time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	_ = c.SetReadDeadline(t)
	return true
}

// serveConn answers requests on c until one is not for the fast path, then
// hands c over with everything read from it still unread.
func (s *Server) serveConn(c net.Conn) {
	defer s.wg.Done()
	defer func() {
		// net/http survives a handler's panic by dropping its connection;
		// so does this.
		if p := recover(); p != nil {
			s.cfg.Logger.Error("gateway: panic answering a request", "panic", p, "stack", string(debug.Stack()))
			s.forget(c)
			c.Close()
		}
	}()
	br := bufio.NewReaderSize(c, maxHead)
	wait := s.cfg.HeaderTimeout // a new connection has this long to send its first head
	for {
		head, err := s.readHead(c, br, wait)
		wait = s.cfg.IdleTimeout
		if err != nil {
			if !errors.Is(err, errHandOff) {
				s.forget(c)
				c.Close()
				return
			}
			s.handOver(c, br)
			return
		}
		start := time.Now()
		r, err := parseHead(head)
		if err != nil {
			s.handOver(c, br)
			return
		}
		a, ok := s.h.Quick(&r)
		if !ok {
			s.handOver(c, br)
			return
		}
		_, _ = br.Discard(len(head))
		out := s.bufs.Get().(*[]byte)
		var sent int64
		*out, sent, err = write(c, (*out)[:0], &a, start)
		if cap(*out) <= 64<<10 {
			s.bufs.Put(out)
		}
		if a.File != nil {
			a.File.Close()
		}
		if a.Done != nil {
			a.Done(sent, err)
		}
		if err != nil || s.isClosing() {
			s.forget(c)
			c.Close()
			return
		}
	}
}

// readHead waits up to wait for a request to start, then up to
// HeaderTimeout for its whole head at the start of br, and returns the head
// without consuming it. A head that does not fit in br's buffer, or bytes
// that can never start a fast-path head, are errHandOff; a closed, idle or
// slow connection is any other error.
func (s *Server) readHead(c net.Conn, br *bufio.Reader, wait time.Duration) ([]byte, error) {
	if !s.setReadDeadline(c, time.Now().Add(wait)) {
		return nil, net.ErrClosed
	}
	started, scanned := false, 0
	for {
		buf, _ := br.Peek(br.Buffered())
		if n, ok := scanHead(buf, scanned); n > 0 {
			return buf[:n], nil
		} else if !ok {
			return nil, errHandOff
		}
		scanned = len(buf)
		if len(buf) >= maxHead {
			return nil, errHandOff
		}
		if len(buf) > 0 && !started {
			started = true
			if !s.setReadDeadline(c, time.Now().Add(s.cfg.HeaderTimeout)) {
				return nil, net.ErrClosed
			}
		}
		if _, err := br.Peek(len(buf) + 1); err != nil {
			if len(buf) > 0 && errors.Is(err, io.EOF) {
				return nil, errHandOff // a truncated request: net/http's to answer
			}
			return nil, err
		}
	}
}

// scanHead looks for the end of a request head in b, of which the first
// from bytes were scanned before. It returns the head's length, or 0 and
// whether b can still become a fast-path head: it must begin "GET /" and
// end its lines with CRLF. Anything else is handed over as soon as it shows,
// rather than when a head that never comes times out.
func scanHead(b []byte, from int) (int, bool) {
	const get = "GET /"
	if n := min(len(b), len(get)); string(b[:n]) != get[:n] {
		return 0, false
	}
	for i := max(from, 1); i < len(b); i++ {
		if b[i] != '\n' {
			continue
		}
		if b[i-1] != '\r' {
			return 0, false // a bare LF: net/http's to read
		}
		if i >= 3 && b[i-2] == '\n' && b[i-3] == '\r' {
			return i + 1, true
		}
	}
	return 0, true
}

// handOver gives c to the net/http server, which reads br's buffered bytes
// first, so the request that was not answered here is answered there.
func (s *Server) handOver(c net.Conn, br *bufio.Reader) {
	s.forget(c)
	_ = c.SetReadDeadline(time.Time{})
	if !s.handoff.push(&handedConn{Conn: c, r: br}) {
		c.Close()
	}
}

// write sends a's status line, header and body on c, building them in buf
// (returned for reuse) so that a small answer is one write.
func write(c net.Conn, buf []byte, a *Answer, now time.Time) ([]byte, int64, error) {
	size := int64(len(a.Body))
	if a.File != nil {
		if a.Size < 0 {
			return buf, 0, errors.New("fastpath: negative file size")
		}
		size = a.Size
	}
	buf = append(buf, "HTTP/1.1 "...)
	buf = strconv.AppendInt(buf, int64(a.Status), 10)
	buf = append(buf, ' ')
	buf = append(buf, http.StatusText(a.Status)...)
	buf = append(buf, "\r\nContent-Length: "...)
	buf = strconv.AppendInt(buf, size, 10)
	buf = append(buf, "\r\nContent-Type: "...)
	buf = append(buf, a.ContentType...)
	buf = append(buf, "\r\nDate: "...)
	buf = now.UTC().AppendFormat(buf, http.TimeFormat)
	for _, f := range a.Header {
		buf = append(buf, "\r\n"...)
		buf = append(buf, f[0]...)
		buf = append(buf, ": "...)
		buf = append(buf, f[1]...)
	}
	buf = append(buf, "\r\n\r\n"...)
	head := len(buf)
	switch {
	case a.File == nil:
		buf = append(buf, a.Body...)
	case size <= smallFile:
		// One write for the head and a small file: a second packet costs
		// the client more than the copy costs here.
		buf = slices.Grow(buf, int(size))[:head+int(size)]
		if _, err := io.ReadFull(a.File, buf[head:]); err != nil {
			return buf[:head], 0, err
		}
	}
	n, err := c.Write(buf)
	sent := max(0, int64(n-head))
	if err != nil || a.File == nil || size <= smallFile {
		return buf, sent, err
	}
	// sendfile: net.TCPConn.ReadFrom takes the file through a LimitedReader.
	m, err := io.Copy(c, io.LimitReader(a.File, size))
	if err == nil && m != size {
		err = io.ErrUnexpectedEOF
	}
	return buf, m, err
}

// smallFile is the largest file answer copied into the head's write.
const smallFile = 32 << 10

// handedConn is a connection whose first bytes were already read into r.
type handedConn struct {
	net.Conn
	r *bufio.Reader // nil once drained
}

func (c *handedConn) Read(p []byte) (int, error) {
	if c.r != nil {
		if c.r.Buffered() > 0 {
			return c.r.Read(p)
		}
		c.r = nil // drained: let its buffer go
	}
	return c.Conn.Read(p)
}

// ReadFrom keeps net/http's sendfile: it copies to the connection itself.
func (c *handedConn) ReadFrom(src io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(src)
	}
	return io.Copy(c.Conn, src)
}

// CloseWrite keeps net/http's half-close before it closes a connection
// after an error answer, so the client reads the answer before the close.
func (c *handedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// handoffListener yields handed-over connections to net/http.
type handoffListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
	addr  atomic.Pointer[net.Addr]
}

func (l *handoffListener) push(c net.Conn) bool {
	select {
	case l.conns <- c:
		return true
	case <-l.done:
		return false
	}
}

func (l *handoffListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *handoffListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

// Addr is the address Serve listens on, once it does.
func (l *handoffListener) Addr() net.Addr {
	if a := l.addr.Load(); a != nil {
		return *a
	}
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}
}
