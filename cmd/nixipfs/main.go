// Command nixipfs is an IPFS-backed content store, binary cache and source
// mirror for Nix. This package only parses flags and calls the packages that
// do the work.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"
	"github.com/spf13/cobra"

	"github.com/nixipfs/nixipfs/internal/config"
	"github.com/nixipfs/nixipfs/internal/ipfsnode"
	"github.com/nixipfs/nixipfs/internal/nixstore"
	"github.com/nixipfs/nixipfs/internal/remotepin"
	"github.com/nixipfs/nixipfs/manifests"
)

// globals are the flags every command shares.
type globals struct {
	config    string // --config
	settings  *config.Config
	dataDir   string
	ipfsAPI   string
	datastore string
	store     string
	logFormat string
	verbose   bool
	remote    remotepin.Options
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRoot().ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "nixipfs:", err)
		os.Exit(1)
	}
}

func newRoot() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:   "nixipfs",
		Short: "IPFS-backed binary cache and content store for Nix",
		Long: `nixipfs stores Nix store paths as UnixFS DAGs in an IPFS node and serves them
to stock Nix through the binary-cache protocol.

By default it runs an embedded IPFS node whose repo lives under --data-dir. That
node is closed: no bootstrap peers, no mDNS, loopback addresses only. Nothing
leaves the machine until you name peers. Use --ipfs-api to use an external kubo
daemon instead.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if err := g.configure(cmd); err != nil {
				return err
			}
			return g.setupLogging()
		},
	}
	pf := root.PersistentFlags()
	pf.StringVar(&g.config, "config", "", "config file (default $XDG_CONFIG_HOME/nixipfs/config.toml, else ~/.config/nixipfs/config.toml)")
	pf.StringVar(&g.dataDir, "data-dir", defaultDataDir(), "data directory (embedded IPFS repo, manifest index)")
	pf.StringVar(&g.datastore, "datastore", ipfsnode.DatastorePebble, "storage of a NEW embedded IPFS repo: pebble (one zstd-compressed database) or flatfs (kubo's default: a file per block, uncompressed; the stock ipfs command can open it). An existing repo keeps its own")
	pf.StringVar(&g.ipfsAPI, "ipfs-api", "", "multiaddr of an external kubo RPC API, e.g. /ip4/127.0.0.1/tcp/5001 (default: embedded node)")
	pf.StringVar(&g.store, "store", "", "Nix store to read from (passed to nix as --store; default: the local store)")
	pf.StringVar(&g.logFormat, "log-format", "text", "log format: text or json")
	pf.BoolVarP(&g.verbose, "verbose", "v", false, "debug logging")
	pf.StringVar(&g.remote.Cluster, "pin-cluster", "", "IPFS Cluster REST API URL, e.g. http://127.0.0.1:9094: the daemon pins every recorded path there too, and gc counts the cluster's copies")
	pf.StringVar(&g.remote.ClusterAuthFile, "pin-cluster-auth-file", "", "file holding user:password for --pin-cluster's basic auth (mode 600)")
	pf.IntVar(&g.remote.Replication, "pin-replication", 2, "cluster peers that hold each pin (replication-min and -max; -1: every peer)")
	pf.StringVar(&g.remote.Service, "pin-service", "", "IPFS Pinning Service API URL: the daemon pins every recorded path there too")
	pf.StringVar(&g.remote.ServiceTokenFile, "pin-service-token-file", "", "file holding --pin-service's access token (mode 600)")
	root.AddCommand(newPublishCmd(g), newDaemonCmd(g), newNarCmd(g), newFollowCmd(g), newManifestCmd(g), newExportCmd(g), newImportCmd(g), newGCCmd(g), newCacheInputsCmd(g), newMirrorCmd(g), newPeersCmd(g), newConfigCmd(g), newKeysCmd(),
		newBuildCmd(g), newBuilderCmd(g), newJobsCmd(g), newStatusCmd(g))
	markConfigFlags(root)
	linkDocs(root)
	return root
}

// docPages names the manual page (docs/ in the source tree) that explains
// each command; its help ends with a pointer to it.
var docPages = map[string]string{
	"publish":         "docs/operations.md",
	"daemon":          "docs/networks.md and docs/gateway.md",
	"nar":             "docs/gateway.md",
	"follow":          "docs/networks.md",
	"peers":           "docs/networks.md",
	"manifest":        "docs/gateway.md",
	"export":          "docs/gateway.md",
	"import":          "docs/gateway.md",
	"gc":              "docs/gateway.md",
	"cache-inputs":    "docs/mirror.md",
	"mirror-tarballs": "docs/mirror.md",
	"config":          "docs/configuration.md",
	"keys":            "docs/configuration.md",
	"build":           "docs/builds.md",
	"builder":         "docs/builds.md",
	"jobs":            "docs/builds.md",
	"status":          "docs/operations.md",
}

func linkDocs(root *cobra.Command) {
	for _, c := range root.Commands() {
		page, ok := docPages[c.Name()]
		if !ok {
			continue
		}
		long := c.Long
		if long == "" {
			long = c.Short + "."
		}
		c.Long = long + "\n\nMore: " + page + " in the nixipfs source."
	}
}

func defaultDataDir() string {
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "nixipfs")
	}
	if home, err := os.UserHomeDir(); err == nil {
		return filepath.Join(home, ".local", "share", "nixipfs")
	}
	return ".nixipfs"
}

func (g *globals) setupLogging() error {
	opts := &slog.HandlerOptions{Level: slog.LevelInfo}
	if g.verbose {
		opts.Level = slog.LevelDebug
	}
	switch g.logFormat {
	case "text":
		slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, opts)))
	case "json":
		slog.SetDefault(slog.New(slog.NewJSONHandler(os.Stderr, opts)))
	default:
		return fmt.Errorf("--log-format %q: want text or json", g.logFormat)
	}
	return nil
}

// open opens the data dir and the IPFS node.
func (g *globals) open(ctx context.Context, online bool, peers, swarm []string) (*ipfsnode.Node, error) {
	return g.openWith(ctx, ipfsnode.Options{Online: online, Peers: peers, SwarmListen: swarm})
}

// openWith fills in the data dir and --ipfs-api and opens the node.
func (g *globals) openWith(ctx context.Context, opts ipfsnode.Options) (*ipfsnode.Node, error) {
	if err := os.MkdirAll(g.dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	opts.DataDir, opts.APIAddr, opts.Datastore = g.dataDir, g.ipfsAPI, g.datastore
	return ipfsnode.Open(ctx, opts)
}

// manifest opens this node's own manifest.
func (g *globals) manifest(node *ipfsnode.Node) *manifests.Local {
	return manifests.OpenLocalNode(g.dataDir, node)
}

func (g *globals) nixStore() *nixstore.Store { return nixstore.New(g.store) }

// openInput opens a file argument, or standard input for "-".
func openInput(arg string) (io.Reader, func(), error) {
	if arg == "-" {
		return os.Stdin, func() {}, nil
	}
	f, err := os.Open(arg)
	if err != nil {
		return nil, nil, err
	}
	return f, func() { f.Close() }, nil
}

// loadSignKey reads a --sign-key file; an empty name means no key.
func loadSignKey(file string) (*signature.SecretKey, error) {
	if file == "" {
		return nil, nil
	}
	k, err := manifests.LoadSecretKey(file)
	if err != nil {
		return nil, err
	}
	return &k, nil
}
