// Package daemon runs a nixipfs node: the IPFS node (online, loopback-only
// unless peers are named), its RPC API socket for other nixipfs commands on
// the same data dir, and the binary-cache gateway.
package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"

	"github.com/nixipfs/nixipfs/gateway"
	"github.com/nixipfs/nixipfs/gateway/fastpath"
	"github.com/nixipfs/nixipfs/gateway/narcache"
	"github.com/nixipfs/nixipfs/gateway/upload"
	"github.com/nixipfs/nixipfs/internal/atomicfile"
	"github.com/nixipfs/nixipfs/internal/ipfsnode"
	"github.com/nixipfs/nixipfs/internal/metrics"
	"github.com/nixipfs/nixipfs/internal/nixstore"
	"github.com/nixipfs/nixipfs/internal/publish"
	"github.com/nixipfs/nixipfs/internal/queue"
	"github.com/nixipfs/nixipfs/internal/remotepin"
	"github.com/nixipfs/nixipfs/internal/retrieve"
	"github.com/nixipfs/nixipfs/internal/status"
	"github.com/nixipfs/nixipfs/manifests"
	"github.com/nixipfs/nixipfs/manifests/network"
)

// Config configures a daemon.
type Config struct {
	// UploadToken, if set, turns on uploads (`nix copy --to` the gateway)
	// for clients that send it; see package upload. Uploads must be
	// signed by a key in Trusted, or get SignKey's signature.
	UploadToken string
	DataDir     string
	Node        *ipfsnode.Node
	Listen      string // gateway address, e.g. 127.0.0.1:8080
	Gateway     gateway.Config
	// NARCacheSize bounds the NARs kept in DataDir/nar-cache once rendered
	// and verified, and served from there again (bytes; 0: none).
	NARCacheSize int64
	// HotBlocks bounds the blocks kept in memory once read twice
	// (Node.KeepHotBlocks; bytes; 0: none). Negative: without a NAR cache
	// ipfsnode.DefaultHotBlocks, with one none.
	HotBlocks int64
	// Follow are IPNS names to follow besides those in the data dir's
	// follow list (nixipfs follow add).
	Follow []string
	// FollowInterval is how often followed names are resolved.
	FollowInterval time.Duration
	// Trusted, if set, are the keys a path must be signed by to be served.
	Trusted []signature.PublicKey

	// Network, if set, is the network name to join: announce this node's
	// manifest and follow the manifests announced there.
	Network          string
	AnnounceInterval time.Duration
	PeerTimeout      time.Duration
	// NetworkKeys must have signed a path from a network peer's manifest for
	// it to be served (default: Nix's trusted-public-keys), unless the peer's
	// name is in TrustPublishers.
	NetworkKeys     []signature.PublicKey
	TrustPublishers []string

	// WatchStore ("", "signed" or "all") publishes new valid paths of
	// Store as they appear: those signed by NetworkKeys, or all.
	WatchStore    string
	WatchInterval time.Duration
	Store         *nixstore.Store
	SignKey       *signature.SecretKey

	// KeepServed pins paths served from followed manifests and adds them
	// to this node's manifest, so they stay servable when their publisher
	// leaves.
	KeepServed bool

	// Metrics, if set, is the registry served at /metrics, for parts wired
	// from outside to set their own figures in (the build protocol's
	// JobStates); by default the daemon makes its own.
	Metrics *metrics.Metrics
	// QueueInterval is how often the publish queue is looked at (default
	// 250 ms). Queued paths are signed with SignKey.
	QueueInterval time.Duration

	// StallTimeout bounds how long a NAR render waits for one block that
	// does not arrive (default 30 s); the response then ends, so Nix moves
	// on to its next substituter.
	StallTimeout time.Duration
	// PeerGateways are trustless-gateway URLs to fetch DAGs from (a stock
	// kubo's gateway works), asked before the gateways of connected
	// nixipfs peers.
	PeerGateways []string

	// Prefetch, if above 0, fetches the paths that followed manifests add
	// in the background, this many at a time, at most PrefetchRate bytes
	// per second in all (0: no limit), so that Nix's first request is
	// served locally. With KeepServed they are pinned and kept.
	Prefetch     int
	PrefetchRate int64

	// Ready, if set, is called with the gateway's address once it listens.
	Ready func(addr net.Addr)

	// RemotePins, if set, are pinning services (an IPFS Cluster, a Pinning
	// Service API endpoint) every path the manifest records is pinned on
	// as well.
	RemotePins []remotepin.Remote

	// Services run beside the gateway once it listens (a builder, say);
	// the first to fail ends the daemon.
	Services []func(ctx context.Context, h Host) error
}

// Host is what a service running in the daemon can use.
type Host struct {
	// GatewayURL is this daemon's binary-cache URL (use it as a
	// substituter).
	GatewayURL string
	// Follow follows an IPNS name as --follow does, trusted as chosen.
	Follow func(name string)
	// Metrics is the registry the daemon serves at /metrics (a builder sets
	// Metrics.JobStates).
	Metrics *metrics.Metrics
}

// Run serves until ctx ends.
func Run(ctx context.Context, cfg Config) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var apiErr <-chan error
	if cfg.Node.Embedded() != nil {
		ready, errc := cfg.Node.ServeAPI(ctx, cfg.DataDir)
		select {
		case <-ready:
		case err := <-errc:
			return fmt.Errorf("daemon: %w", err)
		}
		apiErr = errc
	}

	local := manifests.OpenLocalNode(cfg.DataDir, cfg.Node)
	// Publish new versions without waiting for the old ones' pins to go.
	local.ReleaseInBackground()
	defer local.Wait()
	if v, err := local.CurrentVersion(); err == nil && v.Defined() {
		// Announce the current version: publishes made while offline reach
		// peers now.
		if name, err := local.Publish(ctx); err != nil {
			slog.Warn("republish manifest", "err", err)
		} else {
			slog.Info("manifest", "ipns", name, "version", v)
		}
	}
	follower := manifests.NewFollower(cfg.Node.API, filepath.Join(cfg.DataDir, "followed.json"))
	follows, err := newFollowSet(cfg, follower)
	if err != nil {
		return err
	}
	go follows.watchList(ctx)
	interval := cfg.FollowInterval
	if interval <= 0 {
		interval = time.Second
	}
	go follower.Run(ctx, interval)

	var nw *network.Network
	if cfg.Network != "" {
		nw, err = network.Join(ctx, cfg.Node.API, cfg.Network, network.Options{
			Interval: cfg.AnnounceInterval,
			Timeout:  cfg.PeerTimeout,
			State: func(ctx context.Context) (string, int64) {
				m, err := local.Current(ctx)
				if err != nil || !m.Version().Defined() {
					return "", 0
				}
				return m.Version().String(), m.Info().Count
			},
			OnChange: follows.setNetwork,
		})
		if err != nil {
			return fmt.Errorf("daemon: %w", err)
		}
		go func() {
			if err := nw.Run(ctx); err != nil {
				slog.Error("network", "err", err)
			}
		}()
		go writePeers(ctx, cfg.DataDir, nw, cfg.AnnounceInterval)
	}
	trustPub := map[string]bool{}
	for _, n := range cfg.TrustPublishers {
		name, err := manifests.ParseName(n)
		if err != nil {
			return fmt.Errorf("daemon: --trust-publisher: %w", err)
		}
		trustPub[name] = true
	}
	resolver, err := manifests.NewResolver(cfg.Node.API, local, follower, manifests.Policy{
		Trusted:        cfg.Trusted,
		NetworkKeys:    cfg.NetworkKeys,
		IsNetwork:      follows.isNetwork,
		TrustPublisher: func(name string) bool { return trustPub[name] },
	})
	if err != nil {
		return fmt.Errorf("daemon: %w", err)
	}
	m := cfg.Metrics
	if m == nil {
		m = metrics.New()
	}
	recent := newRecentLog(recentKept)
	store := cfg.Store
	if store == nil {
		store = nixstore.New("")
	}
	pub := &publish.Publisher{Node: cfg.Node, Store: store, Manifest: local, SignKey: cfg.SignKey}
	if cfg.WatchStore != "" {
		wi := cfg.WatchInterval
		if wi <= 0 {
			wi = time.Second
		}
		go watchStore(ctx, pub, cfg.WatchStore, cfg.NetworkKeys, wi, recent.add)
	}
	worker := &queue.Worker{Queue: queue.Open(cfg.DataDir), Publish: pub.Publish, Interval: cfg.QueueInterval,
		Metrics: m, OnPublished: recent.add}
	go worker.Run(ctx)

	if len(cfg.RemotePins) > 0 {
		// It follows the manifest, so whatever records a path (publish,
		// the queue, watch-store, keep-served, uploads) gets it pinned.
		pinner := &remotepin.Pinner{DataDir: cfg.DataDir, API: cfg.Node.API, Local: local, Remotes: cfg.RemotePins}
		go pinner.Run(ctx)
	}
	collector := &status.Collector{DataDir: cfg.DataDir, Node: cfg.Node, Follower: follower, Metrics: m,
		Recent: recent.list, PinsEvery: 30 * time.Second}
	gc := cfg.Gateway
	gc.API = cfg.Node.API
	gc.Recycle, gc.Local, gc.Denied = cfg.Node.Recycle, cfg.Node.LocalBlocks(), cfg.Node.Denied
	gc.Reverify, gc.Rendered = cfg.Node.HashOnRead(), cfg.Node.Rendered
	if hs := cfg.Node.KeepHotBlocks(hotBlocks(cfg.HotBlocks, cfg.NARCacheSize)); hs != nil {
		m.Atomics(
			metrics.Atomic{Name: "nixipfs_hot_block_hits_total", Help: "Block reads answered from the hot blocks in memory.", V: &hs.Hits},
			metrics.Atomic{Name: "nixipfs_hot_blocks_kept_total", Help: "Blocks kept in memory on their second read.", V: &hs.Kept},
		)
		m.Gauges(metrics.Atomic{Name: "nixipfs_hot_blocks_bytes", Help: "Bytes of blocks kept in memory now.", V: &hs.Bytes})
	}
	if cfg.NARCacheSize > 0 {
		nc, err := narcache.Open(filepath.Join(cfg.DataDir, "nar-cache"), cfg.NARCacheSize)
		if err != nil {
			return fmt.Errorf("daemon: %w", err)
		}
		defer nc.Close()
		gc.NARCache = nc
	}
	gc.Paths = resolver
	gc.Sources = resolver
	gc.Logs = resolver
	gc.Metrics = m
	gc.Status = collector.Collect
	gc.Health = func(ctx context.Context) error { return health(ctx, cfg.Node, local) }
	if cfg.KeepServed {
		k := newKeeper(cfg.Node.API, local)
		go k.run(ctx, 2*time.Second)
		gc.OnServed = func(ref gateway.NarRef) {
			if p, ok := resolver.FollowedRecord(ref.Root, ref.NarHash); ok {
				k.served(p)
			}
		}
	}
	var pf *prefetcher
	if cfg.Prefetch > 0 {
		pf = newPrefetcher(cfg.Node.API, follower, resolver, cfg.Prefetch, cfg.PrefetchRate)
		collector.Prefetch = pf.report
	}
	if cfg.UploadToken != "" {
		ipns := newPublisher()
		go ipns.run(ctx, time.Second, 10*time.Second, local.Publish)
		up, err := upload.New(upload.Config{
			Token:    cfg.UploadToken,
			Store:    uploadStore{pub: pub, lookup: resolver.Lookup},
			Trusted:  cfg.Trusted,
			StoreDir: gc.StoreDir,
			OnRecorded: func(storePath string, narSize uint64) {
				recent.add([]publish.Result{{StorePath: storePath, NarSize: int64(narSize), Status: publish.Published}})
				ipns.soon()
			},
		})
		if err != nil {
			return fmt.Errorf("daemon: %w", err)
		}
		gc.Upload = up
	}
	holders := newHolders(cfg.Node, cfg.PeerGateways)
	gc.Retriever = newRetriever(cfg.Node, holders, cfg.StallTimeout, m)
	if cfg.Node.Embedded() != nil {
		if gc.Trustless, err = cfg.Node.TrustlessHandler(nil); err != nil {
			return fmt.Errorf("daemon: %w", err)
		}
	}
	gw := gateway.New(gc)
	srv := &http.Server{
		Handler:           logRequests(gw),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	// Narinfos and cached NARs are answered by the fast path, the rest by
	// srv. With debug logging every request goes through srv, which logs it.
	var fast *fastpath.Server
	if !slog.Default().Enabled(ctx, slog.LevelDebug) {
		fast = fastpath.New(gw, fastpath.Config{HeaderTimeout: srv.ReadHeaderTimeout, IdleTimeout: srv.IdleTimeout})
	}
	lis, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("daemon: listen on %s: %w", cfg.Listen, err)
	}
	slog.Info("gateway listening", "addr", lis.Addr().String(), "ipfs", cfg.Node.Kind())
	collector.Gateway = gatewayURL(lis.Addr())
	if e := cfg.Node.Embedded(); e != nil {
		// Peers ask over libp2p where to fetch CARs from.
		retrieve.ServeGateway(e.PeerHost, lis.Addr().(*net.TCPAddr).Port)
	}
	if err := atomicfile.WriteFile(status.GatewayFile(cfg.DataDir), []byte(collector.Gateway+"\n"), 0o600); err != nil {
		slog.Warn("write gateway address", "err", err)
	}
	defer removeIfOurs(status.GatewayFile(cfg.DataDir), collector.Gateway+"\n")
	if cfg.Ready != nil {
		cfg.Ready(lis.Addr())
	}
	srvErr := make(chan error, 1)
	if fast != nil {
		go func() { srvErr <- fast.Serve(lis) }()
		go func() { _ = srv.Serve(fast.HandOff()) }()
	} else {
		go func() { srvErr <- srv.Serve(lis) }()
	}
	if pf != nil {
		go pf.run(ctx, collector.Gateway, interval)
	}
	host := Host{GatewayURL: collector.Gateway, Follow: follows.add, Metrics: m}
	svcErr := make(chan error, len(cfg.Services))
	for _, svc := range cfg.Services {
		go func() {
			if err := svc(ctx, host); err != nil && ctx.Err() == nil {
				svcErr <- err
			}
		}()
	}

	select {
	case <-ctx.Done():
	case err = <-srvErr:
	case err = <-svcErr:
	case err = <-apiErr:
		if err != nil {
			err = fmt.Errorf("daemon: IPFS API: %w", err)
		}
	}
	sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer scancel()
	// Both at once: a slow client of one must not use up the other's time.
	var shut sync.WaitGroup
	if fast != nil {
		shut.Go(func() { _ = fast.Shutdown(sctx) })
	}
	_ = srv.Shutdown(sctx)
	shut.Wait()
	if err := gw.Drain(sctx); err != nil {
		slog.Warn("blocks fetched for answers not all stored before shutdown", "err", err)
	}
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// followSet is the union of the names to follow: --follow flags, the data
// dir's follow list (re-read every few seconds) and the peers a network
// announced.
type followSet struct {
	f        *manifests.Follower
	dataDir  string
	mu       sync.Mutex
	flags    []string
	list     []string
	networks map[string]bool
}

func newFollowSet(cfg Config, f *manifests.Follower) (*followSet, error) {
	s := &followSet{f: f, dataDir: cfg.DataDir, networks: map[string]bool{}}
	for _, n := range cfg.Follow {
		name, err := manifests.ParseName(n)
		if err != nil {
			return nil, fmt.Errorf("daemon: --follow: %w", err)
		}
		s.flags = append(s.flags, name)
	}
	s.reload()
	return s, nil
}

func (s *followSet) reload() {
	names, err := manifests.ReadFollowList(s.dataDir)
	if err != nil {
		slog.Warn("follow list", "err", err)
		return
	}
	s.mu.Lock()
	s.list = names
	s.mu.Unlock()
	s.apply()
}

func (s *followSet) watchList(ctx context.Context) {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.reload()
		}
	}
}

// add follows name like a --follow flag.
func (s *followSet) add(n string) {
	name, err := manifests.ParseName(n)
	if err != nil {
		slog.Warn("follow", "name", n, "err", err)
		return
	}
	s.mu.Lock()
	if slices.Contains(s.flags, name) {
		s.mu.Unlock()
		return
	}
	s.flags = append(s.flags, name)
	s.mu.Unlock()
	s.apply()
}

func (s *followSet) setNetwork(names []string) {
	s.mu.Lock()
	s.networks = map[string]bool{}
	for _, n := range names {
		s.networks[n] = true
	}
	s.mu.Unlock()
	s.apply()
}

// isNetwork reports whether name is followed only because a network
// announced it (explicit follows are trusted as the user chose them).
func (s *followSet) isNetwork(name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.networks[name] && !slices.Contains(s.flags, name) && !slices.Contains(s.list, name)
}

func (s *followSet) apply() {
	s.mu.Lock()
	all := append([]string(nil), s.flags...)
	for _, n := range s.list {
		if !slices.Contains(all, n) {
			all = append(all, n)
		}
	}
	var netNames []string
	for n := range s.networks {
		if !slices.Contains(all, n) {
			netNames = append(netNames, n)
		}
	}
	s.mu.Unlock()
	slices.Sort(netNames)
	s.f.Set(append(all, netNames...))
}

// writePeers keeps <data-dir>/peers.json current for `nixipfs peers`.
func writePeers(ctx context.Context, dataDir string, n *network.Network, interval time.Duration) {
	if interval <= 0 {
		interval = 10 * time.Second
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		b, _ := json.MarshalIndent(n.Peers(), "", "  ")
		if err := atomicfile.WriteFile(PeersFile(dataDir), append(b, '\n'), 0o600); err != nil {
			slog.Warn("write peers", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// PeersFile is where a daemon on a network lists its live peers.
func PeersFile(dataDir string) string { return status.PeersFile(dataDir) }

// health is /health's check: the IPFS node answers (for an external kubo, a
// round trip over its RPC API) and the manifest state is readable.
func health(ctx context.Context, node *ipfsnode.Node, local *manifests.Local) error {
	if _, err := node.API.Key().Self(ctx); err != nil {
		return fmt.Errorf("%s IPFS node: %w", node.Kind(), err)
	}
	if _, err := local.CurrentVersion(); err != nil {
		return err
	}
	return nil
}

// gatewayURL is the URL local clients reach the gateway at: an unspecified
// listen address (0.0.0.0, ::) is reached on loopback.
func gatewayURL(a net.Addr) string {
	host, port, err := net.SplitHostPort(a.String())
	if err != nil {
		return "http://" + a.String()
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
		if ip.To4() == nil {
			host = "::1"
		}
	}
	return "http://" + net.JoinHostPort(host, port)
}

// removeIfOurs removes file if it still holds what this daemon wrote (a
// second daemon on the data dir may have replaced it).
func removeIfOurs(file, content string) {
	if b, err := os.ReadFile(file); err == nil && string(b) == content {
		_ = os.Remove(file)
	}
}

// recentKept is how many recently published paths the status page lists.
const recentKept = 50

// recentLog keeps the latest published paths, newest first, with what
// publishing did (unchanged re-publishes are left out).
type recentLog struct {
	mu    sync.Mutex
	max   int
	items []status.Published
}

func newRecentLog(max int) *recentLog { return &recentLog{max: max} }

func (l *recentLog) add(res []publish.Result) {
	now := time.Now().UTC()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, r := range res {
		if r.Status == publish.Unchanged {
			continue
		}
		l.items = append([]status.Published{{StorePath: r.StorePath, Status: string(r.Status), Time: now}}, l.items...)
	}
	if len(l.items) > l.max {
		l.items = l.items[:l.max]
	}
}

func (l *recentLog) list() []status.Published {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]status.Published(nil), l.items...)
}

// statusRecorder remembers the status a handler wrote, for the request log.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

// Flush keeps streaming responses streaming through the wrapper.
// ReadFrom keeps sendfile working through the wrapper (NARs served from
// the NAR cache).
func (s *statusRecorder) ReadFrom(src io.Reader) (int64, error) {
	return io.Copy(s.ResponseWriter, src)
}

func (s *statusRecorder) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func logRequests(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Checked first: the wrapper and the arguments cost allocations on
		// every request, and debug logging is usually off.
		if !slog.Default().Enabled(r.Context(), slog.LevelDebug) {
			h.ServeHTTP(w, r)
			return
		}
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		defer func() {
			slog.Debug("request", "method", r.Method, "path", r.URL.Path, "status", rec.status, "dur", time.Since(start))
		}()
		h.ServeHTTP(rec, r)
	})
}

// hotBlocks is the size of the hot blocks for Config.HotBlocks: a render
// repeats the reads of an earlier one only without a NAR cache.
func hotBlocks(hot, narCache int64) int64 {
	switch {
	case hot >= 0:
		return hot
	case narCache == 0:
		return ipfsnode.DefaultHotBlocks()
	}
	return 0
}
