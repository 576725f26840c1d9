// Package gateway serves the Nix binary-cache protocol from IPFS: narinfo
// answers come from the local manifest (never a network-wide search), NARs are
// rendered from their UnixFS DAGs and verified against the recorded NarHash
// while they stream.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
	coreiface "github.com/ipfs/kubo/core/coreiface"
	"github.com/ipfs/kubo/core/coreiface/options"
	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/nixipfs/nixipfs/gateway/narcache"
	"github.com/nixipfs/nixipfs/internal/metrics"
	"github.com/nixipfs/nixipfs/internal/retrieve"
	"github.com/nixipfs/nixipfs/internal/status"
	"github.com/nixipfs/nixipfs/ipldnar"
	"github.com/nixipfs/nixipfs/manifests"
)

// Lookup finds the PathInfo of a store-path hash. It returns an error
// wrapping manifests.ErrNotFound when the path is not published.
type Lookup interface {
	Lookup(ctx context.Context, hashPart string) (*manifests.PathInfo, error)
}

// Config configures a Gateway.
type Config struct {
	API      coreiface.CoreAPI
	Paths    Lookup
	Sources  Sources // mirrored files by hash; nil: none
	Logs     Logs    // build logs by .drv; nil: none
	StoreDir string  // default /nix/store
	Priority int     // nix-cache-info Priority; lower wins (cache.nixos.org is 40)
	// OnServed, if set, is called after a whole NAR was served and matched
	// its NarHash (the daemon keeps paths it served from followed nodes).
	OnServed func(nar NarRef)
	// NoZstd turns off zstd Content-Encoding even when clients ask for it.
	NoZstd bool
	Logger *slog.Logger
	// NARCache, if set, keeps NARs once rendered and verified, and serves
	// them again from there (see nar.go).
	NARCache *narcache.Cache
	// Local, if set, reads local blocks only, never the network
	// (ipfsnode.Node.LocalBlocks); by default, API's offline DAG service.
	Local ipld.NodeGetter
	// Denied, if set, names blocks not to serve (kubo's denylists:
	// ipfsnode.Node.Denied): a NAR whose root it names is not served from
	// the NAR cache, and the default Retriever refuses the blocks it names.
	Denied func(root cid.Cid) bool
	// Recycle, if set, takes the data of each block a render has written
	// and holds no more (ipfsnode.Node.Recycle), for the store to reuse.
	Recycle func(data []byte)
	// Reverify hashes every render of a NAR, not only the first that
	// matched its NarHash (see Gateway.verified); for stores that check
	// each block's hash on every read too (Datastore.HashOnRead).
	Reverify bool
	// Rendered, if set, says whether root is recorded to render to a NAR
	// of size bytes and SHA-256 narHash by the import that hashed it
	// (ipfsnode.Node.Rendered): such a NAR is not hashed. Unused with
	// Reverify.
	Rendered func(ctx context.Context, root cid.Cid, size int64, narHash []byte) bool

	// Metrics, if set, counts requests, lookups and NAR renders, and is
	// served at /metrics.
	Metrics *metrics.Metrics
	// Status, if set, serves the status page at / and /status.json.
	Status func(context.Context) *status.Report
	// Health, if set, is asked by /health: nil is healthy (200), an error
	// unhealthy (503). Without it /health always answers 200.
	Health func(context.Context) error

	// Retriever, if set, fetches the blocks of NARs being rendered that are
	// not local (CAR streams from peers' gateways, then bitswap), every wait
	// bounded. By default blocks come from API alone, with the default
	// stall bound.
	Retriever *retrieve.Retriever
	// Trustless, if set, answers the IPFS trustless-gateway requests under
	// /ipfs/ (format=car or raw, or an Accept header asking for them), which
	// is how peers fetch whole DAGs from this node.
	Trustless http.Handler
	// Upload, if set, takes PUT requests: Nix's uploads of NARs and
	// narinfos (`nix copy --to`), see package upload.
	Upload http.Handler
	// Prerender, if above 0 and with a NAR cache, renders the NARs of
	// narinfos served (GET) into the NAR cache in the background, at most
	// this many waiting, newest first (see prerender.go).
	Prerender int
}

// LocalBlocks reads api's local blocks only (nil if the API cannot go
// offline).
func LocalBlocks(api coreiface.CoreAPI) ipld.NodeGetter {
	off, err := api.WithOptions(options.Api.Offline(true))
	if err != nil {
		return nil
	}
	return off.Dag()
}

// Gateway is an http.Handler.
type Gateway struct {
	cfg Config
	mux *http.ServeMux
	// narinfos remembers each record's rendered narinfo. Records are
	// immutable, and the resolver hands out the same *PathInfo for as long
	// as it keeps it, so the pointer is the key.
	narinfos      *lru.Cache[*manifests.PathInfo, []byte]
	cacheInfoBody []byte
	// background is the work answers leave behind (storing fetched
	// blocks); Drain waits for it.
	background sync.WaitGroup
	prerender  *prerenderer   // nil: off
	followed   followedLookup // Config.Paths, if it is one
	// nowhere remembers, by DAG root, when a NAR failed because no holder
	// or connected peer had a block of it (retrieve.NoSourceError): for
	// nowhereFor after, that path's narinfo is a 404 (Nix's narinfo cache
	// would have made the NAR URL the next client's only try).
	nowhere *lru.Cache[cid.Cid, time.Time]
	// verified remembers the NARs (narcache.Name: root, size, NarHash)
	// whose render matched their NarHash. A root CID names its DAG's
	// blocks, which are checked against their CIDs when stored or fetched,
	// and so the bytes it renders to: renders of such a NAR again are not
	// hashed. nil: Config.Reverify.
	verified *lru.Cache[string, struct{}]
}

// verifiedNARs is how many verified NARs a gateway remembers (about 150
// bytes each).
const verifiedNARs = 1 << 16

// Drain waits until the work answers left behind (storing the blocks a
// render fetched from peers) is done, or ctx ends. Call it after the HTTP
// server stopped and before the IPFS node closes.
func (g *Gateway) Drain(ctx context.Context) error {
	if g.prerender != nil {
		// Speculative work: what is queued is dropped.
		g.prerender.stop()
		if err := g.prerender.waitIdle(ctx); err != nil {
			return err
		}
	}
	done := make(chan struct{})
	go func() { g.background.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Prerendered waits until the prerenderer (Config.Prerender) has nothing to
// do: no NAR is queued or being rendered, or no NAR was asked for lately
// (it renders only then), or ctx ends.
func (g *Gateway) Prerendered(ctx context.Context) error {
	if g.prerender == nil {
		return nil
	}
	return g.prerender.waitIdle(ctx)
}

// New returns a gateway serving cfg.
func New(cfg Config) *Gateway {
	if cfg.StoreDir == "" {
		cfg.StoreDir = "/nix/store"
	}
	if cfg.Priority == 0 {
		cfg.Priority = 30
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	followed, _ := cfg.Paths.(followedLookup)
	if m := cfg.Metrics; m != nil {
		cfg.Paths = countedLookup{next: cfg.Paths, m: m}
		if cfg.Sources != nil {
			cfg.Sources = countedSources{next: cfg.Sources, m: m}
		}
	}
	if cfg.Local == nil && cfg.API != nil {
		cfg.Local = LocalBlocks(cfg.API)
	}
	if cfg.Retriever == nil && cfg.API != nil {
		cfg.Retriever = retrieve.New(retrieve.Config{Local: cfg.Local, Network: cfg.API.Dag(), Denied: cfg.Denied, Logger: cfg.Logger})
	}
	narinfos, _ := lru.New[*manifests.PathInfo, []byte](16384)
	nowhere, _ := lru.New[cid.Cid, time.Time](4096)
	g := &Gateway{cfg: cfg, mux: http.NewServeMux(), narinfos: narinfos, followed: followed, nowhere: nowhere,
		cacheInfoBody: fmt.Appendf(nil, "StoreDir: %s\nWantMassQuery: 1\nPriority: %d\n", cfg.StoreDir, cfg.Priority)}
	if !cfg.Reverify {
		g.verified, _ = lru.New[string, struct{}](verifiedNARs)
	}
	if cfg.Prerender > 0 && cfg.NARCache != nil {
		if local := cfg.Local; local != nil {
			if cfg.Recycle != nil {
				local = ipldnar.WithRecycle(local, cfg.Recycle)
			}
			g.prerender = newPrerenderer(g, local, cfg.Prerender, cfg.NARCache.Max()/4)
			if cfg.Metrics != nil {
				g.prerender.register(cfg.Metrics)
			}
		}
	}
	g.mux.HandleFunc("GET /health", g.health)
	if cfg.Metrics != nil {
		g.mux.Handle("GET /metrics", cfg.Metrics.Handler())
	}
	if cfg.Status != nil {
		g.mux.HandleFunc("GET /{$}", g.statusPage)
		g.mux.HandleFunc("GET /status.json", g.statusJSON)
	}
	g.mux.HandleFunc("GET /nix-cache-info", g.cacheInfo)
	g.mux.HandleFunc("GET /nar/{file}", g.nar)
	g.mux.HandleFunc("GET /{file}", g.narinfo)
	g.mux.HandleFunc("GET /{first}/{rest...}", g.twoSegments)
	return g
}

func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if g.cfg.Metrics != nil {
		g.observe(w, r, g.serve)
		return
	}
	g.serve(w, r)
}

func (g *Gateway) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPut && g.cfg.Upload != nil {
		g.cfg.Upload.ServeHTTP(w, r)
		return
	}
	// GET patterns match HEAD too; anything else is refused.
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		msg := "method not allowed"
		if r.Method == http.MethodPut {
			msg = "uploads are off: start the daemon with --upload-token-file to take nix copy --to"
		}
		http.Error(w, msg, http.StatusMethodNotAllowed)
		return
	}
	g.mux.ServeHTTP(w, r)
}

func (g *Gateway) cacheInfo(w http.ResponseWriter, r *http.Request) {
	writeBody(w, r, "text/x-nix-cache-info", g.cacheInfoBody)
}

// writeBody answers with body, or only its headers for HEAD.
func writeBody(w http.ResponseWriter, r *http.Request, ctype string, body []byte) {
	w.Header().Set("Content-Type", ctype)
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	if r.Method == http.MethodHead {
		return
	}
	_, _ = w.Write(body)
}

// notFound is the answer for anything not here: Nix treats 404 as "absent"
// and retries 5xx, so a missing path must never be a 5xx.
func notFound(w http.ResponseWriter) {
	http.Error(w, "not found", http.StatusNotFound)
}

func (g *Gateway) narinfo(w http.ResponseWriter, r *http.Request) {
	file := r.PathValue("file")
	hash, ok := strings.CutSuffix(file, ".narinfo")
	if !ok || !manifests.ValidHashPart(hash) {
		notFound(w)
		return
	}
	body := g.narinfoBody(r.Context(), hash, r.Method == http.MethodGet)
	if body == nil {
		notFound(w)
		return
	}
	writeBody(w, r, "text/x-nix-narinfo", body)
}

// narinfoBody is the narinfo of the path with this hash, nil if there is
// none to serve. get says the client asked for the narinfo itself (not
// HEAD): its NAR is likely next, and is prerendered if that is on.
func (g *Gateway) narinfoBody(ctx context.Context, hash string, get bool) []byte {
	p, err := g.cfg.Paths.Lookup(ctx, hash)
	if err != nil {
		if !errors.Is(err, manifests.ErrNotFound) {
			g.cfg.Logger.Warn("narinfo lookup", "hash", hash, "err", err)
		}
		return nil
	}
	if !g.available(ctx, p) {
		g.cfg.Logger.Debug("narinfo: DAG not here and nobody to ask", "storePath", p.StorePath, "root", p.Root)
		return nil
	}
	if get && g.prerender != nil {
		g.prerender.want(p)
	}
	body, ok := g.narinfos.Get(p)
	if !ok {
		body = []byte(NarInfo(p))
		g.narinfos.Add(p, body)
	}
	return body
}

// followedLookup is a Lookup that also answers from followed manifests
// (manifests.Resolver) and can tell which answers came from one.
type followedLookup interface {
	FollowedRecord(root cid.Cid, narHash []byte) (*manifests.PathInfo, bool)
}

// available reports whether the NAR of p can be served now. Only a path
// from a followed manifest can be missing: its DAG is not here while no
// holder or peer is connected (its publisher is away). Its narinfo is then
// a 404, so that Nix asks its next substituter instead of failing the NAR
// download.
func (g *Gateway) available(ctx context.Context, p *manifests.PathInfo) bool {
	if g.followed == nil || g.cfg.Retriever == nil {
		return true
	}
	if _, followed := g.followed.FollowedRecord(p.Root, p.NarHash); !followed {
		return true
	}
	if g.cfg.NARCache != nil && g.cfg.NARCache.Has(narcache.Name(p.Root, p.NarHash, p.NarSize)) {
		return true
	}
	if t, ok := g.nowhere.Get(p.Root); ok && time.Since(t) < nowhereFor {
		return false
	}
	return g.cfg.Retriever.Available(ctx, p.Root)
}

// nowhereFor is how long a NAR that failed for want of a source makes its
// path's narinfo a 404: long enough for the other machines of a CI run
// that asked at once, short enough not to hide a holder that came back.
const nowhereFor = 30 * time.Second

// noSource remembers root if err says no holder or peer had a block of it.
func (g *Gateway) noSource(root cid.Cid, err error) {
	var none *retrieve.NoSourceError
	if errors.As(err, &none) {
		g.nowhere.Add(root, time.Now())
	}
}

// NarRef names a served NAR: its DAG root, size and hash.
type NarRef struct {
	Root    cid.Cid
	NarSize int64
	NarHash []byte
}

// NarURL is the stateless NAR URL of p: the DAG root, the NAR size and its
// hash, so any gateway holding the DAG can serve and verify it with no lookup.
func NarURL(p *manifests.PathInfo) string {
	return fmt.Sprintf("nar/%s-%d-%s.nar", p.Root, p.NarSize, nixbase32.EncodeToString(p.NarHash))
}

// parseNarURL undoes NarURL's file part.
func parseNarURL(file string) (root cid.Cid, size int64, hash []byte, err error) {
	base, ok := strings.CutSuffix(file, ".nar")
	if !ok {
		return cid.Undef, 0, nil, errors.New("not a .nar")
	}
	parts := strings.Split(base, "-")
	if len(parts) != 3 {
		return cid.Undef, 0, nil, errors.New("want <cid>-<size>-<hash>.nar")
	}
	if root, err = cid.Decode(parts[0]); err != nil {
		return cid.Undef, 0, nil, fmt.Errorf("root: %w", err)
	}
	if size, err = strconv.ParseInt(parts[1], 10, 64); err != nil || size <= 0 {
		return cid.Undef, 0, nil, fmt.Errorf("size %q", parts[1])
	}
	if hash, err = nixbase32.DecodeString(parts[2]); err != nil || len(hash) != 32 {
		return cid.Undef, 0, nil, fmt.Errorf("hash %q", parts[2])
	}
	return root, size, hash, nil
}

// NarInfo renders p as a narinfo: one space after each colon, Compression
// none written out (missing means bzip2 to Nix), References always present.
func NarInfo(p *manifests.PathInfo) string {
	var b strings.Builder
	fmt.Fprintf(&b, "StorePath: %s\n", p.StorePath)
	fmt.Fprintf(&b, "URL: %s\n", NarURL(p))
	b.WriteString("Compression: none\n")
	fmt.Fprintf(&b, "FileHash: %s\n", p.NarHashString())
	fmt.Fprintf(&b, "FileSize: %d\n", p.NarSize)
	fmt.Fprintf(&b, "NarHash: %s\n", p.NarHashString())
	fmt.Fprintf(&b, "NarSize: %d\n", p.NarSize)
	fmt.Fprintf(&b, "References: %s\n", strings.Join(p.ReferenceNames(), " "))
	if p.Deriver != nil {
		fmt.Fprintf(&b, "Deriver: %s\n", *p.Deriver)
	}
	for _, s := range p.Signatures {
		fmt.Fprintf(&b, "Sig: %s\n", s)
	}
	if p.ContentAddress != nil {
		fmt.Fprintf(&b, "CA: %s\n", *p.ContentAddress)
	}
	return b.String()
}

// rootTimeout bounds how long a NAR request waits for its root block before
// answering 404: the DAG is expected to be local or on a connected peer.
const rootTimeout = 20 * time.Second
