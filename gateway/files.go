package gateway

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/ipfs/boxo/files"
	"github.com/ipfs/boxo/path"
	"github.com/ipfs/go-cid"
	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/nixipfs/nixipfs/manifests"
)

// Sources finds mirrored files by hash. It returns an error wrapping
// manifests.ErrNotFound when the file is not mirrored.
type Sources interface {
	Source(ctx context.Context, algo string, digest []byte) (cid.Cid, error)
}

// fileTimeout bounds the wait for a file's root block: /ipfs/ requests may
// name content no connected peer has, and fetchers fall back to their
// next URL on a 404.
const fileTimeout = 10 * time.Second

// hashLen is each mirror algorithm's digest size.
var hashLen = map[string]int{"md5": 16, "sha1": 20, "sha256": 32, "sha512": 64}

// parseMirrorHash accepts base16 (what Nix's builtin fetcher asks) or nix32
// (what nixpkgs' fetchurl may ask), as tarballs.nixos.org does.
func parseMirrorHash(algo, s string) ([]byte, bool) {
	n, ok := hashLen[algo]
	if !ok {
		return nil, false
	}
	if len(s) == 2*n {
		if d, err := hex.DecodeString(strings.ToLower(s)); err == nil {
			return d, true
		}
	}
	if len(s) == (n*8+4)/5 { // nix32 length

		if d, err := nixbase32.DecodeString(s); err == nil {
			return d, true
		}
	}
	return nil, false
}

// twoSegments dispatches /ipfs/<cid>[/path] and /<algo>/<hash>: one route,
// because the two patterns would overlap in the mux.
func (g *Gateway) twoSegments(w http.ResponseWriter, r *http.Request) {
	first, rest := r.PathValue("first"), r.PathValue("rest")
	switch first {
	case "ipfs":
		if g.cfg.Trustless != nil && trustless(r) {
			g.cfg.Trustless.ServeHTTP(w, r)
			return
		}
		g.ipfsPath(w, r, rest)
		return
	case "log":
		g.buildLog(w, r, rest)
		return
	}
	if g.cfg.Sources == nil {
		notFound(w)
		return
	}
	digest, ok := parseMirrorHash(first, rest)
	if !ok {
		notFound(w)
		return
	}
	c, err := g.cfg.Sources.Source(r.Context(), first, digest)
	if err != nil {
		if !errors.Is(err, manifests.ErrNotFound) {
			g.cfg.Logger.Warn("mirror lookup", "algo", first, "err", err)
		}
		notFound(w)
		return
	}
	g.serveFile(w, r, path.FromCid(c), first+"-"+rest)
}

// Logs finds build logs by the hash part of their .drv. It returns an error
// wrapping manifests.ErrNotFound when there is none.
type Logs interface {
	Log(ctx context.Context, drvHashPart string) (cid.Cid, error)
}

// buildLog serves log/<hash>-<name>.drv, where `nix log` looks in a binary
// cache.
func (g *Gateway) buildLog(w http.ResponseWriter, r *http.Request, name string) {
	hash, _, _ := strings.Cut(name, "-")
	if g.cfg.Logs == nil || !strings.HasSuffix(name, ".drv") || !manifests.ValidHashPart(hash) {
		notFound(w)
		return
	}
	c, err := g.cfg.Logs.Log(r.Context(), hash)
	if err != nil {
		if !errors.Is(err, manifests.ErrNotFound) {
			g.cfg.Logger.Warn("log lookup", "drv", name, "err", err)
		}
		notFound(w)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	g.serveFile(w, r, path.FromCid(c), name)
}

// trustless reports whether r asks for a verifiable response (a CAR or a
// raw block) rather than a file.
func trustless(r *http.Request) bool {
	switch r.URL.Query().Get("format") {
	case "car", "raw":
		return true
	}
	a := r.Header.Get("Accept")
	return strings.Contains(a, "application/vnd.ipld.car") || strings.Contains(a, "application/vnd.ipld.raw")
}

func (g *Gateway) ipfsPath(w http.ResponseWriter, r *http.Request, rest string) {
	p, err := path.NewPath("/ipfs/" + rest)
	if err != nil {
		notFound(w)
		return
	}
	name := rest[strings.LastIndexByte(rest, '/')+1:]
	g.serveFile(w, r, p, name)
}

// serveFile streams a UnixFS file with Range and HEAD support (the content
// is addressed by its CID, so it is immutable and checked block by block).
func (g *Gateway) serveFile(w http.ResponseWriter, r *http.Request, p path.Path, name string) {
	// Bound the wait for the path to resolve; the body then streams under
	// the request's own context (the reader fetches blocks as it goes).
	// ResolveNode fetches the root block (resolving a bare CID needs none),
	// so content that no reachable peer has is a 404 within the limit.
	ctx, cancel := context.WithTimeout(r.Context(), fileTimeout)
	_, err := g.cfg.API.ResolveNode(ctx, p)
	cancel()
	var nd files.Node
	if err == nil {
		nd, err = g.cfg.API.Unixfs().Get(r.Context(), p)
	}
	if err != nil {
		g.cfg.Logger.Info("ipfs content unavailable", "path", p, "err", err)
		notFound(w)
		return
	}
	defer nd.Close()
	f, ok := nd.(files.File)
	if !ok {
		http.Error(w, fmt.Sprintf("%s is not a file", p), http.StatusNotFound)
		return
	}
	if w.Header().Get("Content-Type") == "" {
		w.Header().Set("Content-Type", "application/octet-stream")
	}
	w.Header().Set("Cache-Control", immutable)
	if rc, ok := p.(path.ImmutablePath); ok {
		w.Header().Set("Etag", `"`+rc.RootCid().String()+`"`)
	}
	rs, ok := f.(io.ReadSeeker)
	if !ok {
		// Without Seek no ranges: stream the whole file.
		size, err := f.Size()
		if err == nil {
			w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
		}
		if r.Method == http.MethodHead {
			return
		}
		if _, err := io.Copy(w, f); err != nil {
			panic(http.ErrAbortHandler)
		}
		return
	}
	http.ServeContent(w, r, name, time.Time{}, rs)
}
