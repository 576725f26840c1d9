// Package ipfsnode opens the IPFS side of nixipfs: an embedded kubo node (the
// default, so nixipfs works on a machine with no IPFS installed) or an external
// kubo daemon over its RPC API. Both are returned as a coreiface.CoreAPI, which
// is all the rest of the project talks to, plus a bulk block writer so imports
// never cost one request per block.
package ipfsnode

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/ipfs-shipyard/nopfs"
	"github.com/ipfs/boxo/autoconf"
	"github.com/ipfs/kubo/client/rpc"
	"github.com/ipfs/kubo/config"
	"github.com/ipfs/kubo/core"
	"github.com/ipfs/kubo/core/coreapi"
	coreiface "github.com/ipfs/kubo/core/coreiface"
	"github.com/ipfs/kubo/core/coreiface/options"
	"github.com/ipfs/kubo/core/node/libp2p"
	"github.com/ipfs/kubo/plugin/loader"
	"github.com/ipfs/kubo/repo/fsrepo"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// Options says which IPFS node to open.
type Options struct {
	// DataDir holds the embedded node's repo (DataDir/ipfs) and, while a
	// daemon runs, the file naming its API socket.
	DataDir string
	// APIAddr is the multiaddr of an external kubo RPC API
	// (/ip4/127.0.0.1/tcp/5001 or /unix/...). Empty means embedded.
	APIAddr string
	// Online starts libp2p for the embedded node. Its listen addresses are
	// loopback only and it has no bootstrap peers and no mDNS: nothing leaves
	// the machine until Peers (or later a network) are named.
	Online bool
	// Peers are multiaddrs with /p2p/ ids to connect to once online.
	Peers []string
	// SwarmListen overrides the embedded node's listen addresses
	// (default /ip4/127.0.0.1/tcp/0).
	SwarmListen []string
	// Discovery opens the embedded node beyond the peers named, only when
	// asked: "mdns" (LAN multicast discovery) and "public" (the public IPFS
	// network's bootstrap peers). Either also listens on all interfaces
	// unless SwarmListen says otherwise. Default: none, nothing leaves the
	// machine.
	Discovery []string
	// Datastore is the storage of a new embedded repo: DatastorePebble (the
	// default: one compressed pebble database) or DatastoreFlatfs (kubo's
	// default: a file per block, which the stock ipfs command can open). An
	// existing repo keeps the one it was made with.
	Datastore string
}

// Discovery modes.
const (
	DiscoveryMDNS   = "mdns"
	DiscoveryPublic = "public"
)

// applyDiscovery opens cfg as the user asked; with no modes it leaves the
// closed config alone.
func applyDiscovery(cfg *config.Config, modes, listen []string) error {
	wide := false
	for _, m := range modes {
		switch m {
		case DiscoveryMDNS:
			cfg.Discovery.MDNS.Enabled = true
		case DiscoveryPublic:
			cfg.Bootstrap = append([]string(nil), autoconf.FallbackBootstrapPeers...)
			cfg.Swarm.DisableNatPortMap = false
		default:
			return fmt.Errorf("--discovery %q: want %s or %s", m, DiscoveryMDNS, DiscoveryPublic)
		}
		wide = true
	}
	if wide && len(listen) == 0 {
		// Other machines cannot reach a loopback address.
		cfg.Addresses.Swarm = []string{"/ip4/0.0.0.0/tcp/4001", "/ip6/::/tcp/4001"}
	}
	return nil
}

// Node is an open IPFS node.
type Node struct {
	API coreiface.CoreAPI

	embedded *core.IpfsNode
	rpc      *rpc.HttpApi
	repoPath string
	store    *pebbleStore // the embedded repo's nixipfs-pebble datastore, if it is one
	// For LocalBlocks: the repo's Datastore.HashOnRead, and the denylists
	// kubo applies to its blocks (nil: none).
	hashOnRead bool
	blocker    *nopfs.Blocker

	pinBatch sync.Mutex // one PinDirect or Unpin batch at a time
}

// Kind reports "embedded" or "external".
func (n *Node) Kind() string {
	if n.embedded != nil {
		return "embedded"
	}
	return "external"
}

// Embedded returns the in-process kubo node, or nil for an external one.
func (n *Node) Embedded() *core.IpfsNode { return n.embedded }

// Close stops an embedded node; for an external one it does nothing.
func (n *Node) Close() error {
	if n.blocker != nil {
		n.blocker.Close()
	}
	if n.embedded != nil {
		return n.embedded.Close()
	}
	return nil
}

// Recycle gives back the data of a block read from this node once the
// caller is done with it and holds its only reference (a render that has
// written a file's block), so that the datastore reuses the memory for the
// next read. Data the datastore did not lend is ignored.
func (n *Node) Recycle(data []byte) {
	if n.store != nil && n.store.ord != nil {
		n.store.ord.bufs.put(data)
	}
}

// KeepHotBlocks has the embedded repo keep the blocks read more than once
// in memory, at most size bytes of them (0: none), and serve them from
// there without reading its database (see hotBlocks), and returns their
// figures (nil: none kept). It is worth its memory where the same blocks
// are read again and again: renders with no NAR cache. Keeping them costs
// fresh memory for each, which made a fresh daemon's first requests 5-8%
// slower where blocks are shared by several paths. An external node or a
// repo without the ordered layout has none.
func (n *Node) KeepHotBlocks(size int64) *HotStats {
	if n.store == nil || n.store.ord == nil {
		return nil
	}
	n.store.ord.hot.Store(newHotBlocks(size))
	hs, _ := n.HotBlocks()
	return hs
}

// HotBlocks returns the figures of the hot blocks and their bound; nil and
// 0 if the node keeps none.
func (n *Node) HotBlocks() (*HotStats, int64) {
	if n.store == nil || n.store.ord == nil {
		return nil, 0
	}
	h := n.store.ord.hot.Load()
	if h == nil {
		return nil, 0
	}
	return &h.stats, h.max
}

// APIFile is where a running daemon writes the multiaddr of its RPC API, like
// kubo's $IPFS_PATH/api: other nixipfs commands on the same data dir find the
// daemon there instead of trying to open its locked repo.
func APIFile(dataDir string) string { return filepath.Join(dataDir, "api") }

// RepoPath is the embedded node's kubo repo under dataDir.
func RepoPath(dataDir string) string { return filepath.Join(dataDir, "ipfs") }

// Open opens the node described by opts. With no APIAddr it first looks for a
// daemon running on the same data dir and talks to it; otherwise it opens the
// embedded repo, creating it closed (kubo's test profile) on first use.
func Open(ctx context.Context, opts Options) (*Node, error) {
	switch opts.Datastore {
	case "", DatastorePebble, DatastoreFlatfs:
	default:
		return nil, fmt.Errorf("--datastore %q: want %s or %s", opts.Datastore, DatastorePebble, DatastoreFlatfs)
	}
	if opts.APIAddr == "" && opts.DataDir != "" {
		if addr, ok := runningDaemon(ctx, opts.DataDir); ok {
			slog.Debug("using the running daemon's IPFS node", "api", addr)
			opts.APIAddr = addr
		}
	}
	if opts.APIAddr != "" {
		return openExternal(ctx, opts.APIAddr)
	}
	if opts.DataDir == "" {
		return nil, errors.New("open IPFS node: no data dir and no --ipfs-api given")
	}
	return openEmbedded(ctx, opts)
}

// runningDaemon reports the API address of a live daemon on dataDir. A stale
// api file (daemon killed) is ignored.
func runningDaemon(ctx context.Context, dataDir string) (string, bool) {
	b, err := os.ReadFile(APIFile(dataDir))
	if err != nil {
		return "", false
	}
	addr := strings.TrimSpace(string(b))
	api, err := newRPC(addr)
	if err != nil {
		return "", false
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if _, err := api.Request("version").Send(ctx); err != nil {
		return "", false
	}
	return addr, true
}

func newRPC(addr string) (*rpc.HttpApi, error) {
	a, err := ma.NewMultiaddr(addr)
	if err != nil {
		return nil, fmt.Errorf("parse --ipfs-api %q: %w", addr, err)
	}
	network, address, err := manet.DialArgs(a)
	if err != nil {
		return nil, fmt.Errorf("parse --ipfs-api %q: %w", addr, err)
	}
	// Our own transport: client/rpc's NewApi disables keep-alive, which costs
	// a TCP handshake per block read.
	tr := &http.Transport{MaxIdleConnsPerHost: 64, IdleConnTimeout: 90 * time.Second}
	if network == "unix" {
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", address)
		}
		return rpc.NewURLApiWithClient("http://unix", &http.Client{Transport: tr})
	}
	return rpc.NewApiWithClient(a, &http.Client{Transport: tr})
}

func openExternal(ctx context.Context, addr string) (*Node, error) {
	api, err := newRPC(addr)
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := api.Request("version").Send(cctx); err != nil {
		return nil, fmt.Errorf("reach kubo RPC API at %s: %w", addr, err)
	}
	return &Node{API: api, rpc: api}, nil
}

var (
	pluginsOnce sync.Once
	pluginsErr  error
)

// loadPlugins injects kubo's built-in plugins (datastores, IPLD codecs). The
// loader keeps process-wide state, so it runs once per process.
func loadPlugins() error {
	pluginsOnce.Do(func() {
		// Belt and braces: kubo's telemetry plugin only starts in its own
		// daemon command, but never let it phone home from here.
		if os.Getenv("IPFS_TELEMETRY") == "" {
			os.Setenv("IPFS_TELEMETRY", "off")
		}
		l, err := loader.NewPluginLoader("")
		if err != nil {
			pluginsErr = fmt.Errorf("kubo plugin loader: %w", err)
			return
		}
		if err := l.Load(pebblePlugin{}); err != nil {
			pluginsErr = fmt.Errorf("load the %s datastore: %w", PebbleType, err)
			return
		}
		if err := l.Initialize(); err != nil {
			pluginsErr = fmt.Errorf("initialise kubo plugins: %w", err)
			return
		}
		if err := l.Inject(); err != nil {
			pluginsErr = fmt.Errorf("inject kubo plugins: %w", err)
		}
	})
	return pluginsErr
}

// closedConfig returns a fresh kubo config with the test profile applied: no
// bootstrap peers, no mDNS, no autoconf, no delegated routers, loopback only.
func closedConfig(listen []string, datastore string) (*config.Config, error) {
	id, err := config.CreateIdentity(io.Discard, []options.KeyGenerateOption{options.Key.Type(options.Ed25519Key)})
	if err != nil {
		return nil, fmt.Errorf("kubo identity: %w", err)
	}
	cfg, err := config.InitWithIdentity(id)
	if err != nil {
		return nil, fmt.Errorf("kubo config: %w", err)
	}
	if err := config.Profiles["test"].Transform(cfg); err != nil {
		return nil, fmt.Errorf("apply test profile: %w", err)
	}
	if datastore != DatastoreFlatfs {
		cfg.Datastore.Spec = pebbleSpec()
	} // else kubo's default: flatfs for blocks, leveldb for the rest
	if len(listen) > 0 {
		cfg.Addresses.Swarm = listen
	}
	// The CLI API and gateway addresses are unused in-process; keep them on
	// loopback anyway in case someone runs `ipfs daemon` on this repo.
	cfg.Addresses.API = config.Strings{"/ip4/127.0.0.1/tcp/0"}
	cfg.Addresses.Gateway = config.Strings{"/ip4/127.0.0.1/tcp/0"}
	return cfg, nil
}

// enforceClosed re-applies the closed settings to an existing repo's config,
// so a repo edited by hand or made by an older version cannot open the
// public network behind the user's back.
func enforceClosed(cfg *config.Config) {
	cfg.Bootstrap = []string{}
	cfg.Discovery.MDNS.Enabled = false
	cfg.AutoConf.Enabled = config.False
	cfg.AutoTLS.Enabled = config.False
	cfg.Routing.DelegatedRouters = []string{}
	cfg.Ipns.DelegatedPublishers = []string{}
	cfg.DNS.Resolvers = map[string]string{}
	cfg.Swarm.DisableNatPortMap = true
	// No relays, hole punching or relay service: peers meet directly on the
	// addresses the user named.
	cfg.Swarm.RelayClient.Enabled = config.False
	cfg.Swarm.RelayService.Enabled = config.False
	cfg.Swarm.EnableHolePunching = config.False
	cfg.Swarm.Transports.Network.Relay = config.False
	var swarm []string
	for _, a := range cfg.Addresses.Swarm {
		if isLoopback(a) {
			swarm = append(swarm, a)
		}
	}
	if len(swarm) == 0 {
		swarm = []string{"/ip4/127.0.0.1/tcp/0"}
	}
	cfg.Addresses.Swarm = swarm
}

// provideRoots makes an embedded node announce only the roots of its
// recursive pins and its direct pins, unless the repo's config names a
// strategy. kubo announces every block by default ("all"): at each start its
// provider then re-reads every block key of the repo into a keystore it
// rewrites, which kept a core busy for seconds on a 1 GB repo while the first
// requests waited. Peers find what they fetch through its root (a bitswap
// session asks the providers of a DAG's root for the rest, and gc
// --min-replicas counts the holders of roots), so that is all a nixipfs node
// needs to announce.
func provideRoots(cfg *config.Config) {
	if cfg.Provide.Strategy.IsDefault() {
		cfg.Provide.Strategy = config.NewOptionalString("roots")
	}
}

func isLoopback(addr string) bool {
	a, err := ma.NewMultiaddr(addr)
	if err != nil {
		return false
	}
	return manet.IsIPLoopback(a)
}

func openEmbedded(ctx context.Context, opts Options) (*Node, error) {
	if err := loadPlugins(); err != nil {
		return nil, err
	}
	repoPath := RepoPath(opts.DataDir)
	if !fsrepo.IsInitialized(repoPath) {
		if err := os.MkdirAll(repoPath, 0o700); err != nil {
			return nil, fmt.Errorf("create IPFS repo dir: %w", err)
		}
		cfg, err := closedConfig(opts.SwarmListen, opts.Datastore)
		if err != nil {
			return nil, err
		}
		if err := fsrepo.Init(repoPath, cfg); err != nil {
			return nil, fmt.Errorf("init IPFS repo %s: %w", repoPath, err)
		}
	}
	r, err := fsrepo.Open(repoPath)
	if err != nil {
		// Most often the repo lock: another nixipfs holds this data dir.
		return nil, fmt.Errorf("open IPFS repo %s (is another nixipfs using this data dir?): %w", repoPath, err)
	}
	cfg, err := r.Config()
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("read IPFS config: %w", err)
	}
	enforceClosed(cfg)
	provideRoots(cfg)
	if len(opts.SwarmListen) > 0 {
		cfg.Addresses.Swarm = opts.SwarmListen
	}
	if err := applyDiscovery(cfg, opts.Discovery, opts.SwarmListen); err != nil {
		r.Close()
		return nil, err
	}
	// Named peers are kept: kubo's peering service redials them when the
	// connection drops (a builder restarting, say).
	cfg.Peering.Peers = nil
	for _, s := range opts.Peers {
		if a, err := ma.NewMultiaddr(s); err == nil {
			if pi, err := peer.AddrInfoFromP2pAddr(a); err == nil {
				cfg.Peering.Peers = append(cfg.Peering.Peers, *pi)
			}
		}
	}
	if err := r.SetConfig(cfg); err != nil {
		r.Close()
		return nil, fmt.Errorf("write IPFS config: %w", err)
	}

	// Routing is set explicitly: core.NewNode ignores the config's routing
	// keys. Offline nodes need none. Online ones run a DHT server: with no
	// bootstrap peers it only ever meets the peers the user named, and in
	// server mode those peers find each other's provider records (what
	// replica-aware GC counts); auto mode would stay a client on loopback.
	routing := libp2p.NilRouterOption
	if opts.Online {
		routing = libp2p.DHTServerOption
	}
	// The node lives until Close, not until ctx ends (kubo stops a node
	// when its context does): on SIGTERM a daemon first stops serving and
	// stores what answers fetched, then closes the node.
	nd, err := core.NewNode(context.WithoutCancel(ctx), &core.BuildCfg{
		Online:    opts.Online,
		Permanent: true,
		Routing:   routing,
		Repo:      r, // never nil: a nil Repo means public bootstrap on 0.0.0.0
		ExtraOpts: map[string]bool{"pubsub": true, "ipnsps": true},
	})
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("start embedded IPFS node: %w", err)
	}
	api, err := coreapi.NewCoreAPI(nd)
	if err != nil {
		nd.Close()
		return nil, fmt.Errorf("core API: %w", err)
	}
	blocker, err := newBlocker(repoPath)
	if err != nil {
		nd.Close()
		return nil, fmt.Errorf("content blocking: %w", err)
	}
	n := &Node{API: api, embedded: nd, repoPath: repoPath, store: storeOf(repoPath),
		hashOnRead: cfg.Datastore.HashOnRead, blocker: blocker}
	if opts.Online {
		if err := n.Connect(ctx, opts.Peers...); err != nil {
			slog.Warn("connect peers", "err", err)
		}
	}
	return n, nil
}

// Connect dials the given peer multiaddrs (each with a /p2p/ part).
func (n *Node) Connect(ctx context.Context, addrs ...string) error {
	var errs []error
	for _, s := range addrs {
		a, err := ma.NewMultiaddr(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("peer %q: %w", s, err))
			continue
		}
		pi, err := peer.AddrInfoFromP2pAddr(a)
		if err != nil {
			errs = append(errs, fmt.Errorf("peer %q: %w", s, err))
			continue
		}
		if err := n.API.Swarm().Connect(ctx, *pi); err != nil {
			errs = append(errs, fmt.Errorf("connect %s: %w", s, err))
		}
	}
	return errors.Join(errs...)
}

// PeerAddrs returns the node's listen addresses with its peer id, the form
// other nodes pass to --peer.
func (n *Node) PeerAddrs(ctx context.Context) ([]string, error) {
	self, err := n.API.Key().Self(ctx)
	if err != nil {
		return nil, fmt.Errorf("peer id: %w", err)
	}
	addrs, err := n.API.Swarm().ListenAddrs(ctx)
	if err != nil {
		return nil, fmt.Errorf("listen addresses: %w", err)
	}
	var out []string
	for _, a := range addrs {
		out = append(out, a.String()+"/p2p/"+self.ID().String())
	}
	return out, nil
}
