package gateway

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
	"github.com/klauspost/compress/zstd"

	"github.com/nixipfs/nixipfs/gateway/narcache"
	"github.com/nixipfs/nixipfs/internal/retrieve"
	"github.com/nixipfs/nixipfs/ipldnar"
)

// Fields of every NAR answer (Quick sends the same).
const (
	narType = "application/x-nix-nar"
	// immutable: content-addressed URLs never change their bytes.
	immutable = "public, max-age=31536000, immutable"
)

func (g *Gateway) nar(w http.ResponseWriter, r *http.Request) {
	root, size, want, err := parseNarURL(r.PathValue("file"))
	if err != nil {
		notFound(w)
		return
	}
	// A NAR in the cache was checked against its NarHash when it went in:
	// it is served without reading the DAG at all.
	var cached *os.File
	if g.cfg.NARCache != nil {
		cached = g.openCached(r.Context(), root, want, size)
	}
	var sess *retrieve.Session
	if cached != nil {
		defer cached.Close()
	} else {
		// Blocks that are not here come from peers (see package retrieve).
		// The root must arrive before committing to a 200: a DAG that no
		// one has is "absent" (404), not a server error.
		sess = g.cfg.Retriever.Session(r.Context(), root, size)
		defer func() {
			if sess != nil {
				sess.Close()
			}
		}()
		ctx, cancel := context.WithTimeout(r.Context(), rootTimeout)
		_, err = sess.Get(ctx, root)
		cancel()
		if err != nil {
			g.cfg.Logger.Info("nar root unavailable", "root", root, "asked", sess.Asked(), "err", err)
			g.noSource(root, err)
			notFound(w)
			return
		}
	}

	h := w.Header()
	h.Set("Content-Type", narType)
	h.Set("Cache-Control", immutable)
	useZstd := !g.cfg.NoZstd && acceptsZstd(r.Header.Get("Accept-Encoding"))
	h.Add("Vary", "Accept-Encoding")

	start, end := int64(0), size // serve [start, end)
	status := http.StatusOK
	if useZstd {
		h.Set("Content-Encoding", "zstd")
	} else {
		// Ranges resume downloads only on identity responses.
		h.Set("Accept-Ranges", "bytes")
		if rh := r.Header.Get("Range"); rh != "" {
			s, e, ok := parseRange(rh, size)
			if !ok {
				h.Set("Content-Range", fmt.Sprintf("bytes */%d", size))
				http.Error(w, "range not satisfiable", http.StatusRequestedRangeNotSatisfiable)
				return
			}
			start, end, status = s, e, http.StatusPartialContent
			h.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", s, e-1, size))
		}
		h.Set("Content-Length", strconv.FormatInt(end-start, 10))
	}
	w.WriteHeader(status)
	if r.Method == http.MethodHead {
		return
	}

	var out io.Writer = w
	var zw *zstd.Encoder
	if useZstd {
		zw, err = zstd.NewWriter(w, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1))
		if err != nil {
			panic(http.ErrAbortHandler)
		}
		defer zw.Close()
		out = zw
	}
	if cached != nil {
		sendCached(out, cached, start, end)
		if zw != nil {
			if err := zw.Close(); err != nil {
				panic(http.ErrAbortHandler)
			}
		}
		if start == 0 && end == size && g.cfg.OnServed != nil {
			g.cfg.OnServed(NarRef{Root: root, NarSize: size, NarHash: want})
		}
		return
	}
	vw := g.newVerifier(r.Context(), out, root, size, want, start, end)
	var sink io.Writer = vw
	var cw *narcache.Writer
	if vw.full && g.cfg.NARCache != nil {
		// Rendered once, verified, then served from the cache's file.
		if cw = g.cfg.NARCache.Create(root, want, size); cw != nil {
			sink = io.MultiWriter(vw, cw) // cw never fails: vw's errors stand
		}
	}
	t0 := time.Now()
	var src ipld.NodeGetter = sess
	if g.cfg.Recycle != nil {
		src = ipldnar.WithRecycle(sess, g.cfg.Recycle)
	}
	_, err = ipldnar.Render(r.Context(), sink, root, src)
	if errors.Is(err, errRangeDone) {
		err = nil
	}
	if err == nil {
		err = vw.finish()
	}
	g.observeRender(vw.n, time.Since(t0), err)
	if cw != nil {
		if err == nil {
			cw.Commit() // finish checked size and NarHash
		} else {
			cw.Abort()
		}
	}
	if err != nil {
		// Abort the connection: with the tail held back the client gets a
		// short body (or a broken zstd stream), never a complete wrong NAR.
		// Nix then moves on to its next substituter.
		entry := "/"
		var ne *ipldnar.Error
		if errors.As(err, &ne) {
			entry = ne.Path
		}
		var stall *retrieve.StallError
		var none *retrieve.NoSourceError
		switch {
		case errors.As(err, &stall):
			g.cfg.Logger.Warn("nar render stalled", "root", root, "cid", stall.Cid, "path", entry,
				"waited", stall.Waited, "asked", stall.Asked)
		case errors.As(err, &none):
			g.cfg.Logger.Warn("nar render: block held nowhere reachable", "root", root, "cid", none.Cid, "path", entry,
				"asked", none.Asked)
			g.noSource(root, err)
		default:
			g.cfg.Logger.Warn("nar render aborted", "root", root, "err", err)
		}
		if zw != nil {
			zw.Reset(io.Discard)
		}
		panic(http.ErrAbortHandler)
	}
	if zw != nil {
		if err := zw.Close(); err != nil {
			panic(http.ErrAbortHandler)
		}
	}
	if vw.full {
		// The answer is complete: store the fetched blocks after it, not
		// before (the client's next request on this connection waits for
		// the handler), then let OnServed pin them.
		s, onServed := sess, g.cfg.OnServed
		sess = nil
		g.background.Go(func() {
			s.Close()
			if onServed != nil {
				onServed(NarRef{Root: root, NarSize: size, NarHash: want})
			}
		})
	}
}

// sendCached writes bytes [start, end) of a cached NAR to out, which for an
// identity response is w itself, so the file goes to the socket with
// sendfile (wrappers of w must implement io.ReaderFrom to keep that).
func sendCached(out io.Writer, f *os.File, start, end int64) {
	if _, err := f.Seek(start, io.SeekStart); err != nil {
		panic(http.ErrAbortHandler)
	}
	if n, err := io.Copy(out, io.LimitReader(f, end-start)); err != nil || n != end-start {
		// A short body: the client sees the NAR is incomplete.
		panic(http.ErrAbortHandler)
	}
}

func acceptsZstd(ae string) bool {
	for _, part := range strings.Split(ae, ",") {
		name, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		if strings.EqualFold(strings.TrimSpace(name), "zstd") {
			q := strings.ReplaceAll(strings.TrimSpace(params), " ", "")
			return q != "q=0" && q != "q=0.0" && q != "q=0.00" && q != "q=0.000"
		}
	}
	return false
}

// parseRange understands one byte range (bytes=a-b, a-, -n). Several ranges
// are answered as the whole NAR would be too costly to split; Nix asks one.
func parseRange(h string, size int64) (start, end int64, ok bool) {
	spec, found := strings.CutPrefix(h, "bytes=")
	if !found || strings.Contains(spec, ",") {
		return 0, 0, false
	}
	a, b, found := strings.Cut(strings.TrimSpace(spec), "-")
	if !found {
		return 0, 0, false
	}
	if a == "" {
		n, err := strconv.ParseInt(b, 10, 64)
		if err != nil || n <= 0 {
			return 0, 0, false
		}
		n = min(n, size)
		return size - n, size, true
	}
	s, err := strconv.ParseInt(a, 10, 64)
	if err != nil || s < 0 || s >= size {
		return 0, 0, false
	}
	e := size - 1
	if b != "" {
		if e, err = strconv.ParseInt(b, 10, 64); err != nil || e < s {
			return 0, 0, false
		}
		e = min(e, size-1)
	}
	return s, e + 1, true
}

// errRangeDone stops rendering once a range has been written.
var errRangeDone = errors.New("range written")

// holdBack is how many final bytes of a full NAR are withheld until its hash
// is checked: the client can then never receive a complete wrong NAR.
const holdBack = 64 << 10

// verifier passes rendered NAR bytes [start, end) to w, counts and hashes all
// of them, and for a full response withholds the tail until finish has
// compared size and SHA-256 with what the narinfo promised. A NAR the
// gateway has verified before (see Gateway.verified) is counted, not
// hashed.
type verifier struct {
	w          io.Writer
	size       int64
	want       []byte
	start, end int64
	full       bool
	n          int64
	h          hash.Hash // nil: verified before
	tail       bytes.Buffer
	matched    func() // called when a hashed NAR matched
}

func (g *Gateway) newVerifier(ctx context.Context, w io.Writer, root cid.Cid, size int64, want []byte, start, end int64) *verifier {
	v := &verifier{w: w, size: size, want: want, start: start, end: end, full: start == 0 && end == size}
	if !v.full {
		return v
	}
	if g.verified != nil {
		name := narcache.Name(root, want, size)
		if g.verified.Contains(name) {
			return v
		}
		if g.cfg.Rendered != nil && g.cfg.Rendered(ctx, root, size, want) {
			g.verified.Add(name, struct{}{})
			return v
		}
		v.matched = func() { g.verified.Add(name, struct{}{}) }
	}
	v.h = sha256.New()
	return v
}

func (v *verifier) Write(p []byte) (int, error) {
	if v.n+int64(len(p)) > v.size {
		return 0, fmt.Errorf("NAR is longer than its recorded size %d", v.size)
	}
	off := v.n
	v.n += int64(len(p))
	if !v.full {
		// Partial responses cannot be hash-checked before they end; Nix
		// checks the whole NAR it reassembles.
		lo, hi := max(off, v.start), min(v.n, v.end)
		if lo < hi {
			if _, err := v.w.Write(p[lo-off : hi-off]); err != nil {
				return 0, err
			}
		}
		if v.n >= v.end {
			return len(p), errRangeDone
		}
		return len(p), nil
	}
	if v.h == nil {
		_, err := v.w.Write(p)
		return len(p), err
	}
	v.h.Write(p)
	pass := int64(len(p))
	if limit := v.size - holdBack; v.n > limit {
		pass = max(0, limit-off)
	}
	if pass > 0 {
		if _, err := v.w.Write(p[:pass]); err != nil {
			return 0, err
		}
	}
	v.tail.Write(p[pass:])
	return len(p), nil
}

func (v *verifier) finish() error {
	if !v.full {
		if v.n < v.end {
			return fmt.Errorf("NAR ended at %d bytes, before the range end %d", v.n, v.end)
		}
		return nil
	}
	if v.n != v.size {
		return fmt.Errorf("NAR is %d bytes, recorded size is %d", v.n, v.size)
	}
	if v.h == nil {
		return nil
	}
	if !bytes.Equal(v.h.Sum(nil), v.want) {
		return errors.New("NAR does not match its recorded NarHash")
	}
	if v.matched != nil {
		v.matched()
	}
	_, err := v.w.Write(v.tail.Bytes())
	return err
}
