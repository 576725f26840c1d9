package main

import (
	"fmt"
	"net"
	"os"
	"time"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"

	"github.com/spf13/cobra"

	"github.com/nixipfs/nixipfs/daemon"
	"github.com/nixipfs/nixipfs/gateway"
)

func newDaemonCmd(g *globals) *cobra.Command {
	var (
		listen   string
		peers    []string
		swarm    []string
		priority int
		noZstd   bool
		follow   []string
		trusted  []string
		interval time.Duration
	)
	cmd := &cobra.Command{
		Use:   "daemon [--listen ADDR]",
		Short: "Run the IPFS node and the Nix binary-cache gateway",
		Long: `Run the embedded IPFS node (or use --ipfs-api) and serve the Nix binary-cache
protocol on --listen: /nix-cache-info, /<hash>.narinfo and the NAR URLs they
name. Point Nix at it with 'substituters = http://127.0.0.1:8080'.

The gateway listens on 127.0.0.1 unless you name another address. The embedded
IPFS node listens on loopback only and meets only the --peer addresses given.
While the daemon runs, other nixipfs commands on the same --data-dir use its
IPFS node through a unix socket in the data dir.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			var keys []signature.PublicKey
			for _, k := range trusted {
				pk, err := signature.ParsePublicKey(k)
				if err != nil {
					return fmt.Errorf("--trusted-key %q: %w", k, err)
				}
				keys = append(keys, pk)
			}
			node, err := g.open(ctx, true, peers, swarm)
			if err != nil {
				return err
			}
			defer node.Close()
			if node.Embedded() != nil {
				addrs, err := node.PeerAddrs(ctx)
				if err != nil {
					return err
				}
				for _, a := range addrs {
					fmt.Fprintf(os.Stderr, "nixipfs: ipfs peer %s\n", a)
				}
			}
			return daemon.Run(ctx, daemon.Config{
				DataDir:        g.dataDir,
				Node:           node,
				Listen:         listen,
				Gateway:        gateway.Config{Priority: priority, NoZstd: noZstd},
				Follow:         follow,
				FollowInterval: interval,
				Trusted:        keys,
				Ready: func(a net.Addr) {
					fmt.Fprintf(os.Stderr, "nixipfs: gateway on http://%s\n", a)
				},
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&listen, "listen", envOr("NIXIPFS_LISTEN", "127.0.0.1:8080"), "gateway listen address")
	f.StringArrayVar(&peers, "peer", nil, "IPFS peer multiaddr to connect to (repeatable), e.g. /ip4/127.0.0.1/tcp/4001/p2p/12D3...")
	f.StringArrayVar(&swarm, "swarm-listen", nil, "IPFS swarm listen multiaddr (repeatable; default /ip4/127.0.0.1/tcp/0)")
	f.IntVar(&priority, "priority", 30, "nix-cache-info Priority (lower wins; cache.nixos.org is 40)")
	f.BoolVar(&noZstd, "no-zstd", false, "never answer with Content-Encoding: zstd")
	f.StringArrayVar(&follow, "follow", nil, "IPNS name of a manifest to follow (repeatable; also: nixipfs follow add)")
	f.DurationVar(&interval, "follow-interval", time.Second, "how often followed names are resolved")
	f.StringArrayVar(&trusted, "trusted-key", nil, "only serve paths signed by this key (name:base64, repeatable; default: serve all)")
	return cmd
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
