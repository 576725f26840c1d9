package mirror

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"hash"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"os"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jlaffaye/ftp"
)

// userAgent names us to servers. Some mirrors refuse Go's default agent.
const userAgent = "nixipfs-mirror (Nix source mirror; like curl)"

// retryableError marks a failure worth trying the same URL again for;
// every other failure moves on to the next URL.
type retryableError struct {
	err   error
	after time.Duration // what Retry-After asked, if anything
}

func (e *retryableError) Error() string { return e.err.Error() }
func (e *retryableError) Unwrap() error { return e.err }

func retryable(err error) error {
	var re *retryableError
	if errors.As(err, &re) {
		return err
	}
	return &retryableError{err: err}
}

// attempt downloads u once into a temp file, hashing it on the way, and
// checks the entry's hash. Both Timeout and StallTimeout apply from the
// request on; either cancels the request and its connections.
func (r *run) attempt(ctx context.Context, e Entry, u string) (*download, error) {
	actx, cancel := context.WithTimeoutCause(ctx, r.opts.Timeout,
		&retryableError{err: fmt.Errorf("timed out after %v", r.opts.Timeout)})
	defer cancel()
	sctx, stall := context.WithCancelCause(actx)
	defer stall(nil)
	stalled := &retryableError{err: fmt.Errorf("stalled: no data for %v", r.opts.StallTimeout)}
	watchdog := time.AfterFunc(r.opts.StallTimeout, func() { stall(stalled) })
	defer watchdog.Stop()

	var (
		body io.ReadCloser
		size int64
		err  error
	)
	if scheme(u) == "ftp" {
		body, size, err = openFTP(sctx, u)
	} else {
		body, size, err = r.openHTTP(sctx, u)
	}
	if err != nil {
		return nil, failure(ctx, sctx, err)
	}
	defer body.Close()
	if size > r.opts.MaxSize {
		return nil, fmt.Errorf("announces %d bytes, over the limit of %d", size, r.opts.MaxSize)
	}

	f, err := os.CreateTemp(r.dir, "download-*")
	if err != nil {
		return nil, fmt.Errorf("temp file: %w", err)
	}
	keep := false
	defer func() {
		if !keep {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	hashers := make([]hash.Hash, len(Algos))
	writers := []io.Writer{fileWriter{f}}
	for i, a := range Algos {
		hashers[i] = newHasher(a)
		writers = append(writers, hashers[i])
	}
	src := &watchReader{r: io.LimitReader(body, r.opts.MaxSize+1), on: func(n int) {
		watchdog.Reset(r.opts.StallTimeout)
		r.addBytes(n)
	}}
	n, err := io.CopyBuffer(io.MultiWriter(writers...), src, make([]byte, copyBufferSize))
	if err != nil {
		var we *writeError
		if errors.As(err, &we) {
			return nil, err
		}
		return nil, failure(ctx, sctx, fmt.Errorf("after %d bytes: %w", n, err))
	}
	if n > r.opts.MaxSize {
		return nil, fmt.Errorf("cut off: more than the limit of %d bytes", r.opts.MaxSize)
	}
	if size >= 0 && n != size {
		return nil, retryable(fmt.Errorf("got %d of %d bytes", n, size))
	}
	hashes := make(map[string][]byte, len(Algos))
	for i, a := range Algos {
		hashes[a] = hashers[i].Sum(nil)
	}
	if got := hashes[e.Hash.Algo]; !bytes.Equal(got, e.Hash.Digest) {
		return nil, fmt.Errorf("%w: got %s, want %s (%d bytes)", ErrHashMismatch, Hash{Algo: e.Hash.Algo, Digest: got}, e.Hash, n)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("temp file: %w", err)
	}
	keep = true
	return &download{file: f, size: n, hashes: hashes}, nil
}

// failure says why an attempt ended: the run's ctx ending wins, then our
// own stall or timeout (which surface as "context canceled" from the
// transport), then the error itself, classified.
func failure(ctx, attemptCtx context.Context, err error) error {
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	if c := context.Cause(attemptCtx); c != nil {
		return c
	}
	return classify(err)
}

// classify decides whether a network-level error is worth a retry. Most
// are (resets, refusals, timeouts, truncation); a name that does not
// resolve, a bad certificate or a URL the client cannot fetch are not.
func classify(err error) error {
	var (
		re   *retryableError
		dns  *net.DNSError
		cv   *tls.CertificateVerificationError
		ua   x509.UnknownAuthorityError
		ci   x509.CertificateInvalidError
		he   x509.HostnameError
		tp   *textproto.Error
		perm *permanentError
	)
	switch {
	case errors.As(err, &re):
		return err
	case errors.As(err, &perm):
		return err
	case errors.As(err, &dns) && dns.IsNotFound:
		return err
	case errors.As(err, &cv), errors.As(err, &ua), errors.As(err, &ci), errors.As(err, &he):
		return err
	case errors.As(err, &tp):
		// FTP replies: 4xx are transient by definition, 5xx are not.
		if tp.Code >= 400 && tp.Code < 500 {
			return retryable(err)
		}
		return err
	}
	return retryable(err)
}

// permanentError is a failure no retry of the same URL can mend.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// writeError is a failure to write the temp file: ours, not the server's.
type writeError struct{ err error }

func (e *writeError) Error() string { return "temp file: " + e.err.Error() }
func (e *writeError) Unwrap() error { return e.err }

type fileWriter struct{ f *os.File }

func (w fileWriter) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	if err != nil {
		err = &writeError{err}
	}
	return n, err
}

// watchReader calls on with the size of every non-empty read: it feeds the
// stall watchdog and the byte counter.
type watchReader struct {
	r  io.Reader
	on func(int)
}

func (w *watchReader) Read(p []byte) (int, error) {
	n, err := w.r.Read(p)
	if n > 0 {
		w.on(n)
	}
	return n, err
}

// openHTTP sends the request and returns the body of a 200 response and
// its announced length (-1 if unknown).
func (r *run) openHTTP(ctx context.Context, u string) (io.ReadCloser, int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, 0, &permanentError{err}
	}
	req.Header.Set("User-Agent", userAgent)
	// The exact bytes the server stores: Go's transport would otherwise ask
	// for gzip and transparently decompress, and fetchurl (curl without
	// --compressed) does not.
	req.Header.Set("Accept-Encoding", "identity")
	resp, err := r.opts.Client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the URL is already in the report
		}
		return nil, 0, err
	}
	if resp.StatusCode == http.StatusOK {
		return resp.Body, resp.ContentLength, nil
	}
	// Drain a little so the connection can be reused, then give up on it.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	resp.Body.Close()
	err = fmt.Errorf("HTTP %s", resp.Status)
	switch c := resp.StatusCode; {
	case c == http.StatusRequestTimeout, c == http.StatusTooEarly, c == http.StatusTooManyRequests,
		c >= 500 && c != http.StatusNotImplemented && c != http.StatusHTTPVersionNotSupported:
		return nil, 0, &retryableError{err: err, after: retryAfter(resp.Header.Get("Retry-After"))}
	}
	return nil, 0, &permanentError{err}
}

// checkRedirect is the default client's redirect policy: Go's limit of 10,
// and only to http or https. Both failures are permanent for the URL, so
// they are not retried.
func checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= 10 {
		return &permanentError{errors.New("stopped after 10 redirects")}
	}
	if s := req.URL.Scheme; s != "http" && s != "https" {
		return &permanentError{fmt.Errorf("redirected to %s: %w", req.URL.Redacted(), ErrScheme)}
	}
	return nil
}

// retryAfter parses a Retry-After header: seconds or an HTTP date.
func retryAfter(v string) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil && s >= 0 {
		return time.Duration(min(s, int(maxRetryAfter/time.Second))) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(0, min(time.Until(t), maxRetryAfter))
	}
	return 0
}

// openFTP logs in (anonymously unless the URL has a user), changes to the
// file's directory as curl does and starts retrieving it. Every connection
// it makes, control and data, is closed when ctx ends, since the FTP
// client itself only honours a context while dialling.
func openFTP(ctx context.Context, raw string) (io.ReadCloser, int64, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, 0, &permanentError{err}
	}
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), "21")
	}
	dir, file := path.Split(strings.TrimPrefix(u.Path, "/"))
	if file == "" {
		return nil, 0, &permanentError{errors.New("no file name in the URL")}
	}

	var (
		mu     sync.Mutex
		conns  []net.Conn
		closed bool
		dialer net.Dialer
	)
	dial := func(network, address string) (net.Conn, error) {
		c, err := dialer.DialContext(ctx, network, address)
		if err != nil {
			return nil, err
		}
		mu.Lock()
		defer mu.Unlock()
		if closed {
			c.Close()
			return nil, net.ErrClosed
		}
		conns = append(conns, c)
		return c, nil
	}
	closeAll := func() {
		mu.Lock()
		defer mu.Unlock()
		closed = true
		for _, c := range conns {
			c.Close()
		}
	}
	stop := context.AfterFunc(ctx, closeAll)
	fail := func(what string, err error) (io.ReadCloser, int64, error) {
		stop()
		closeAll()
		return nil, 0, fmt.Errorf("ftp %s: %w", what, err)
	}

	c, err := ftp.Dial(addr, ftp.DialWithDialFunc(dial))
	if err != nil {
		return fail("connect", err)
	}
	user, pass := "anonymous", "anonymous@"
	if u.User != nil {
		user = u.User.Username()
		if p, ok := u.User.Password(); ok {
			pass = p
		}
	}
	if err := c.Login(user, pass); err != nil {
		return fail("login", err)
	}
	if dir != "" {
		if err := c.ChangeDir(strings.TrimSuffix(dir, "/")); err != nil {
			return fail("cd "+dir, err)
		}
	}
	size := int64(-1)
	if n, err := c.FileSize(file); err == nil && n >= 0 {
		size = n // SIZE is optional; without it the hash still catches a short file
	}
	resp, err := c.Retr(file)
	if err != nil {
		return fail("retr "+file, err)
	}
	return &ftpBody{resp: resp, conn: c, done: func() { stop(); closeAll() }}, size, nil
}

type ftpBody struct {
	resp *ftp.Response
	conn *ftp.ServerConn
	done func()
}

func (b *ftpBody) Read(p []byte) (int, error) { return b.resp.Read(p) }

func (b *ftpBody) Close() error {
	// The transfer's outcome does not matter here: the length and hash
	// checks judge the bytes.
	_ = b.resp.Close()
	_ = b.conn.Quit()
	b.done()
	return nil
}
