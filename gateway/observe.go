package gateway

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/nixipfs/nixipfs/internal/metrics"
	"github.com/nixipfs/nixipfs/manifests"
)

// endpointOf names the endpoint a request path belongs to, the "endpoint"
// label of the request metrics: a fixed set, whatever clients ask.
func endpointOf(p string) string {
	switch {
	case p == "/" || p == "/status.json":
		return "status"
	case p == "/health":
		return "health"
	case p == "/metrics":
		return "metrics"
	case p == "/nix-cache-info":
		return "nix-cache-info"
	case strings.HasPrefix(p, "/nar/"):
		return "nar"
	case strings.HasPrefix(p, "/ipfs/"):
		return "ipfs"
	case strings.HasPrefix(p, "/log/"):
		return "log"
	case strings.HasSuffix(p, ".narinfo") && strings.Count(p, "/") == 1:
		return "narinfo"
	}
	if algo, _, ok := strings.Cut(strings.TrimPrefix(p, "/"), "/"); ok {
		if _, known := hashLen[algo]; known {
			return "mirror"
		}
	}
	return "other"
}

// recorder remembers the status and counts the body bytes a handler wrote.
type recorder struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	n, err := r.ResponseWriter.Write(p)
	r.bytes += int64(n)
	return n, err
}

// ReadFrom keeps sendfile working through the wrapper: NARs served from
// the NAR cache are copied from a file.
func (r *recorder) ReadFrom(src io.Reader) (int64, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	n, err := io.Copy(r.ResponseWriter, src)
	r.bytes += n
	return n, err
}

// Flush keeps streamed NARs streaming through the wrapper.
func (r *recorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the connection.
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// observe serves the request with next and counts it. A handler that
// aborts its response (panic(http.ErrAbortHandler)) is counted as
// "aborted", and the panic goes on to net/http, which cuts the connection.
func (g *Gateway) observe(w http.ResponseWriter, r *http.Request, next http.HandlerFunc) {
	m := g.cfg.Metrics
	start := time.Now()
	rec := &recorder{ResponseWriter: w}
	endpoint := endpointOf(r.URL.Path)
	if r.Method == http.MethodPut {
		endpoint = "upload" // NARs and narinfos alike: `nix copy --to`
	}
	defer func() {
		code := strconv.Itoa(rec.status)
		if rec.status == 0 {
			code = "200" // nothing written: net/http answers 200 with no body
		}
		p := recover()
		if p != nil {
			code = "aborted"
		}
		m.Requests.WithLabelValues(endpoint, code).Inc()
		m.Duration.WithLabelValues(endpoint).Observe(time.Since(start).Seconds())
		m.BytesServed.WithLabelValues(endpoint).Add(float64(rec.bytes))
		if p != nil {
			panic(p)
		}
	}()
	next(rec, r)
}

// observeRender counts a NAR render: bytes rendered, time taken, result.
func (g *Gateway) observeRender(n int64, d time.Duration, err error) {
	m := g.cfg.Metrics
	if m == nil {
		return
	}
	m.RenderBytes.Add(float64(n))
	m.RenderSeconds.Add(d.Seconds())
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.Renders.WithLabelValues(result).Inc()
}

func lookupResult(err error) string {
	switch {
	case err == nil:
		return metrics.Hit
	case errors.Is(err, manifests.ErrNotFound):
		return metrics.Miss
	default:
		return metrics.Error
	}
}

// countedLookup counts narinfo lookups by result.
type countedLookup struct {
	next Lookup
	m    *metrics.Metrics
}

func (c countedLookup) Lookup(ctx context.Context, hashPart string) (*manifests.PathInfo, error) {
	p, err := c.next.Lookup(ctx, hashPart)
	c.m.Lookups.WithLabelValues("narinfo", lookupResult(err)).Inc()
	return p, err
}

// countedSources counts hashed-mirror lookups by result.
type countedSources struct {
	next Sources
	m    *metrics.Metrics
}

func (c countedSources) Source(ctx context.Context, algo string, digest []byte) (cid.Cid, error) {
	root, err := c.next.Source(ctx, algo, digest)
	c.m.Lookups.WithLabelValues("source", lookupResult(err)).Inc()
	return root, err
}
