package gateway

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/nixipfs/nixipfs/gateway/fastpath"
	"github.com/nixipfs/nixipfs/manifests"
)

// Quick answers a fast-path GET of nix-cache-info, of a narinfo, or of a NAR
// already in the NAR cache, with the status, fields and body ServeHTTP sends for it; it
// declines everything else, which net/http then serves. TestQuickMatchesServeHTTP
// holds the two to the same answers.
func (g *Gateway) Quick(r *fastpath.Request) (fastpath.Answer, bool) {
	name := r.Path[1:] // parseHead: the path starts with '/'
	if name == "nix-cache-info" {
		// Nix asks this first on a connection; answering it here keeps
		// the connection on the fast path.
		a := fastpath.Answer{Status: http.StatusOK, ContentType: "text/x-nix-cache-info", Body: g.cacheInfoBody}
		return g.counted(a, "nix-cache-info", time.Now()), true
	}
	if file, ok := strings.CutPrefix(name, "nar/"); ok {
		return g.quickNAR(file, r)
	}
	hash, ok := strings.CutSuffix(name, ".narinfo")
	if !ok || !manifests.ValidHashPart(hash) {
		return fastpath.Answer{}, false
	}
	start := time.Now()
	// Lookups read only local blocks (the resolver's offline API), but an
	// external kubo may stall: there is no client context here to end them.
	ctx, cancel := context.WithTimeout(context.Background(), lookupTimeout)
	body := g.narinfoBody(ctx, hash, true) // the fast path takes only GET
	cancel()
	if body == nil {
		return g.counted(notFoundAnswer(), "narinfo", start), true
	}
	a := fastpath.Answer{Status: http.StatusOK, ContentType: "text/x-nix-narinfo", Body: body}
	return g.counted(a, "narinfo", start), true
}

func (g *Gateway) quickNAR(file string, r *fastpath.Request) (fastpath.Answer, bool) {
	nc := g.cfg.NARCache
	if nc == nil || strings.Contains(file, "/") || (!g.cfg.NoZstd && acceptsZstd(r.AcceptEncoding)) {
		return fastpath.Answer{}, false
	}
	root, size, want, err := parseNarURL(file)
	if err != nil {
		return fastpath.Answer{}, false
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), lookupTimeout)
	f := g.openCached(ctx, root, want, size)
	cancel()
	if f == nil {
		return fastpath.Answer{}, false // rendered from its DAG by net/http
	}
	a := fastpath.Answer{
		Status:      http.StatusOK,
		ContentType: narType,
		Header: [][2]string{
			{"Accept-Ranges", "bytes"},
			{"Cache-Control", immutable},
			{"Vary", "Accept-Encoding"},
		},
		File: f,
		Size: size,
	}
	if g.cfg.OnServed != nil {
		a.Done = func(sent int64, err error) {
			if err == nil {
				g.cfg.OnServed(NarRef{Root: root, NarSize: size, NarHash: want})
			}
		}
	}
	return g.counted(a, "nar", start), true
}

// lookupTimeout bounds a fast-path narinfo lookup.
const lookupTimeout = 20 * time.Second

// notFoundAnswer is http.Error's 404, as notFound sends it.
func notFoundAnswer() fastpath.Answer {
	return fastpath.Answer{
		Status:      http.StatusNotFound,
		ContentType: "text/plain; charset=utf-8",
		Header:      [][2]string{{"X-Content-Type-Options", "nosniff"}},
		Body:        []byte("not found\n"),
	}
}

// counted makes a's Done count the request as observe does.
func (g *Gateway) counted(a fastpath.Answer, endpoint string, start time.Time) fastpath.Answer {
	m := g.cfg.Metrics
	if m == nil {
		return a
	}
	done := a.Done
	code := strconv.Itoa(a.Status)
	a.Done = func(sent int64, err error) {
		code := code
		if err != nil {
			code = "aborted" // cut off, as observe counts it
		}
		m.Requests.WithLabelValues(endpoint, code).Inc()
		m.Duration.WithLabelValues(endpoint).Observe(time.Since(start).Seconds())
		m.BytesServed.WithLabelValues(endpoint).Add(float64(sent))
		if done != nil {
			done(sent, err)
		}
	}
	return a
}
