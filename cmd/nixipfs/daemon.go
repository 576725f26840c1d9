package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/nixipfs/nixipfs/gateway"
	"github.com/nixipfs/nixipfs/gateway/upload"
	"github.com/nixipfs/nixipfs/internal/daemon"
	"github.com/nixipfs/nixipfs/internal/ipfsnode"
	"github.com/nixipfs/nixipfs/internal/remotepin"
	"github.com/nixipfs/nixipfs/internal/retrieve"
	"github.com/nixipfs/nixipfs/manifests/network"
)

func newDaemonCmd(g *globals) *cobra.Command {
	var o daemonOpts
	cmd := &cobra.Command{
		Use:   "daemon [--listen ADDR]",
		Short: "Run the IPFS node and the Nix binary-cache gateway",
		Long: `Run the embedded IPFS node (or use --ipfs-api) and serve the Nix binary-cache
protocol on --listen: /nix-cache-info, /<hash>.narinfo and the NAR URLs they
name. Point Nix at it with 'substituters = http://127.0.0.1:8080'.

The gateway listens on 127.0.0.1 unless you name another address. The embedded
IPFS node listens on loopback only and meets only the --peer addresses given.
While the daemon runs, other nixipfs commands on the same --data-dir use its
IPFS node through a unix socket in the data dir.

The daemon publishes what 'nixipfs publish --queue' queued in the data dir,
signed with --sign-key. The gateway also serves a status page at /, the same
report at /status.json, Prometheus metrics at /metrics and /health (503 when
the IPFS node does not answer). With --upload-token-file it takes stock Nix's
uploads ('nix copy --to http://HOST:PORT'), checked against their narinfos and
signatures before anything is recorded.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.run(cmd.Context(), g, nil)
		},
	}
	o.addFlags(cmd.Flags())
	return cmd
}

// daemonOpts are the daemon's flags; the builder command runs a daemon too.
type daemonOpts struct {
	listen    string
	peers     []string
	swarm     []string
	priority  int
	noZstd    bool
	narCache  int64
	hotBlocks int64
	prerender int
	follow    []string
	trusted   []string
	interval  time.Duration
	netCfg    daemon.Config
	signKey   string
	pubs      []string
	keep      bool
	discovery []string

	prefetchRate int64
	uploadToken  string
	flags        *pflag.FlagSet // which were given (Changed)
}

func (o *daemonOpts) addFlags(f *pflag.FlagSet) {
	o.flags = f
	f.StringVar(&o.listen, "listen", "127.0.0.1:8080", "gateway listen address")
	f.StringArrayVar(&o.peers, "peer", nil, "IPFS peer multiaddr to connect to (repeatable), e.g. /ip4/127.0.0.1/tcp/4001/p2p/12D3...")
	f.StringArrayVar(&o.discovery, "discovery", nil, "also find peers by mdns (LAN) or public (the public IPFS network); repeatable; off by default: nothing leaves the machine unless asked")
	f.StringArrayVar(&o.swarm, "swarm-listen", nil, "IPFS swarm listen multiaddr (repeatable; default /ip4/127.0.0.1/tcp/0)")
	f.IntVar(&o.priority, "priority", 30, "nix-cache-info Priority (lower wins; cache.nixos.org is 40)")
	f.BoolVar(&o.noZstd, "no-zstd", false, "never answer with Content-Encoding: zstd")
	f.Int64Var(&o.narCache, "nar-cache-mb", 4096, "MiB of NARs kept on disk once rendered and verified (data dir's nar-cache), served from there again; 0: render every request")
	f.Int64Var(&o.hotBlocks, "hot-blocks-mb", -1, "MiB of blocks kept in memory once read twice, served from there without reading the datastore (embedded pebble repos); -1: a sixteenth of the machine's memory, at most 2048, with --nar-cache-mb 0, else none; 0: none")
	f.IntVar(&o.prerender, "prerender", 4096, "while NARs are being downloaded, render the NARs of narinfos served into the NAR cache in the background, newest first, at most N waiting and a quarter of the NAR cache ahead (Nix downloads a closure's NARs one by one after its narinfos); needs the NAR cache; 0: off")
	f.StringArrayVar(&o.follow, "follow", nil, "IPNS name of a manifest to follow (repeatable; also: nixipfs follow add)")
	f.DurationVar(&o.interval, "follow-interval", time.Second, "how often followed names are resolved")
	f.StringArrayVar(&o.trusted, "trusted-key", nil, "only serve paths signed by this key (name:base64, repeatable; default: serve all)")
	f.StringVar(&o.netCfg.Network, "network", "", "join this network: announce our manifest and follow the ones announced (peers still come from --peer)")
	f.DurationVar(&o.netCfg.AnnounceInterval, "announce-interval", 10*time.Second, "how often to announce our manifest on the network")
	f.DurationVar(&o.netCfg.PeerTimeout, "peer-timeout", time.Minute, "drop a network peer not heard from for this long")
	f.StringArrayVar(&o.pubs, "trust-publisher", nil, "serve a network peer's paths (by its IPNS name) even without a trusted signature (repeatable)")
	f.StringVar(&o.netCfg.WatchStore, "watch-store", "", "publish new store paths as they appear: signed (by a trusted key) or all")
	f.Lookup("watch-store").NoOptDefVal = daemon.WatchSigned
	f.DurationVar(&o.netCfg.WatchInterval, "watch-interval", time.Second, "how often --watch-store checks Nix's database for changes")
	f.StringVar(&o.signKey, "sign-key", "", "Nix secret key file: paths published by --watch-store and from the publish queue get a signature with it")
	f.DurationVar(&o.netCfg.StallTimeout, "stall-timeout", retrieve.DefaultStall, "end a NAR response when a block it needs makes no progress for this long (logged, counted in /metrics), so Nix moves on to its next substituter")
	f.StringArrayVar(&o.netCfg.PeerGateways, "peer-gateway", nil, "trustless gateway to fetch whole DAGs from as CARs before bitswap (repeatable), e.g. a stock kubo's http://127.0.0.1:8081; connected nixipfs peers' gateways are found without it")
	f.IntVar(&o.netCfg.Prefetch, "prefetch", 0, "fetch the paths followed manifests add in the background, this many at a time, so Nix's first request is served locally (costs the disk and bandwidth of every path they publish; 0: off)")
	f.Int64Var(&o.prefetchRate, "prefetch-rate-mb", 0, "bound --prefetch to this many MB/s in all (0: no limit)")
	f.StringVar(&o.uploadToken, "upload-token-file", "", "take uploads (nix copy --to http://HOST:PORT) from clients sending the token in this file (mode 0600) as a bearer token or basic-auth password (Nix: netrc-file); uploads must be signed by a --trusted-key, or get --sign-key's signature")
	f.BoolVar(&o.keep, "keep-served", true, "pin paths served from followed manifests and add them to ours, so they outlive their publisher")
}

// checkGatewayURL accepts http(s)://host[:port] with no path.
func checkGatewayURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || strings.Trim(u.Path, "/") != "" || u.RawQuery != "" {
		return fmt.Errorf("--peer-gateway %q: want http://HOST:PORT (a trustless gateway's base URL)", s)
	}
	return nil
}

// run opens the node and runs the daemon with the given services.
func (o *daemonOpts) run(ctx context.Context, g *globals, services func(node *ipfsnode.Node, sk *signature.SecretKey) ([]func(context.Context, daemon.Host) error, error)) error {
	keys, err := parseKeys("--trusted-key", o.trusted)
	if err != nil {
		return err
	}
	switch o.netCfg.WatchStore {
	case "", daemon.WatchSigned, daemon.WatchAll:
	default:
		return fmt.Errorf("--watch-store=%s: want signed or all", o.netCfg.WatchStore)
	}
	for _, u := range o.netCfg.PeerGateways {
		if err := checkGatewayURL(u); err != nil {
			return err
		}
	}
	if o.netCfg.Prefetch < 0 || o.prefetchRate < 0 {
		return fmt.Errorf("--prefetch=%d --prefetch-rate-mb=%d: want 0 (off) or more", o.netCfg.Prefetch, o.prefetchRate)
	}
	if o.netCfg.StallTimeout <= 0 {
		return fmt.Errorf("--stall-timeout=%s: want a positive duration", o.netCfg.StallTimeout)
	}
	if o.prerender < 0 || o.prerender > 1<<20 {
		return fmt.Errorf("--prerender=%d: want 0 (off) to %d NARs", o.prerender, 1<<20)
	}
	if o.narCache == 0 {
		if o.prerender > 0 && o.flags.Changed("prerender") {
			return errors.New("--prerender renders into the NAR cache: it needs --nar-cache-mb above 0")
		}
		o.prerender = 0
	}
	if o.narCache < 0 || o.narCache > 1<<40 {
		return fmt.Errorf("--nar-cache-mb=%d: want 0 (off) or a size in MiB", o.narCache)
	}
	if o.hotBlocks < -1 || o.hotBlocks > 1<<30 {
		return fmt.Errorf("--hot-blocks-mb=%d: want -1 (automatic), 0 (off) or a size in MiB", o.hotBlocks)
	}
	// Paths from network peers need a signature by a key Nix trusts (or
	// by a --trusted-key) unless their publisher is trusted by name;
	// watch-store=signed uses the same keys.
	var netKeys []signature.PublicKey
	if o.netCfg.Network != "" || o.netCfg.WatchStore != "" {
		nixKeys, err := g.nixStore().TrustedPublicKeys(ctx)
		if err != nil {
			return err
		}
		if netKeys, err = parseKeys("trusted-public-keys", nixKeys); err != nil {
			return err
		}
		netKeys = append(netKeys, keys...)
	}
	sk, err := loadSignKey(o.signKey)
	if err != nil {
		return err
	}
	var uploadToken string
	if o.uploadToken != "" {
		if len(keys) == 0 && sk == nil {
			return fmt.Errorf("--upload-token-file needs --trusted-key (uploads must be signed by it) or --sign-key (uploads get its signature)")
		}
		if uploadToken, err = upload.LoadToken(o.uploadToken); err != nil {
			return err
		}
	}
	remotes, err := remotepin.Open(g.remote)
	if err != nil {
		return err
	}
	node, err := g.openWith(ctx, ipfsnode.Options{Online: true, Peers: o.peers, SwarmListen: o.swarm, Discovery: o.discovery})
	if err != nil {
		return err
	}
	defer node.Close()
	if err := printPeerAddrs(ctx, node); err != nil {
		return err
	}
	cfg := o.netCfg
	cfg.DataDir, cfg.Node, cfg.Listen = g.dataDir, node, o.listen
	cfg.NARCacheSize = o.narCache << 20
	cfg.HotBlocks = o.hotBlocks << 20 // -1 stays negative: automatic
	cfg.PrefetchRate = o.prefetchRate * 1e6
	cfg.Gateway = gateway.Config{Priority: o.priority, NoZstd: o.noZstd, Prerender: o.prerender}
	cfg.Follow, cfg.FollowInterval, cfg.Trusted = o.follow, o.interval, keys
	cfg.NetworkKeys, cfg.TrustPublishers, cfg.KeepServed = netKeys, o.pubs, o.keep
	cfg.Store, cfg.SignKey, cfg.UploadToken = g.nixStore(), sk, uploadToken
	cfg.RemotePins = remotes
	cfg.Ready = func(a net.Addr) {
		fmt.Fprintf(os.Stderr, "nixipfs: gateway on http://%s\n", a)
	}
	if services != nil {
		if cfg.Services, err = services(node, sk); err != nil {
			return err
		}
	}
	return daemon.Run(ctx, cfg)
}

// printPeerAddrs prints an embedded node's addresses, the form other
// nodes pass to --peer (tests and people read them from stderr).
func printPeerAddrs(ctx context.Context, node *ipfsnode.Node) error {
	if node.Embedded() == nil {
		return nil
	}
	addrs, err := node.PeerAddrs(ctx)
	if err != nil {
		return err
	}
	for _, a := range addrs {
		fmt.Fprintf(os.Stderr, "nixipfs: ipfs peer %s\n", a)
	}
	return nil
}

func parseKeys(what string, ks []string) ([]signature.PublicKey, error) {
	var out []signature.PublicKey
	for _, k := range ks {
		pk, err := signature.ParsePublicKey(k)
		if err != nil {
			return nil, fmt.Errorf("%s %q: %w", what, k, err)
		}
		out = append(out, pk)
	}
	return out, nil
}

func newPeersCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "peers",
		Short: "List the nodes a running daemon sees on its network",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			b, err := os.ReadFile(daemon.PeersFile(g.dataDir))
			if err != nil {
				return fmt.Errorf("peers: %w (is a daemon running with --network?)", err)
			}
			var peers []network.Peer
			if err := json.Unmarshal(b, &peers); err != nil {
				return fmt.Errorf("peers: %w", err)
			}
			if asJSON {
				if peers == nil {
					peers = []network.Peer{}
				}
				return printJSON(cmd.OutOrStdout(), peers)
			}
			for _, p := range peers {
				fmt.Fprintf(cmd.OutOrStdout(), "%s %d paths, last seen %s\n", p.Name, p.Paths, p.LastSeen.Format(time.RFC3339))
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
