package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"
	"github.com/spf13/cobra"

	"github.com/nixipfs/nixipfs/builder"
	"github.com/nixipfs/nixipfs/internal/daemon"
	"github.com/nixipfs/nixipfs/internal/ipfsnode"
)

func newBuildCmd(g *globals) *cobra.Command {
	var (
		o        builder.BuildOptions
		peers    []string
		swarm    []string
		builders []string
		signKey  string
		timeout  time.Duration

		printLogs bool
	)
	cmd := &cobra.Command{
		Use:   "build --network NAME [--wait] DRV...",
		Short: "Build derivations on the network's builders",
		Long: `Build derivations on builders that joined --network (nixipfs builder), with
no SSH and no coordinator. The .drv closures and the inputs this store already
has are published; every derivation whose inputs are all available is offered
on the network, leased to the builder holding most of its inputs, and its
dependents are offered as it completes. Results are taken only from the lease
holder and only with a signature by a --trusted-builder-key (default: Nix's
trusted-public-keys), and every output's DAG is checked against its NarHash.

The queue is durable (<data-dir>/jobs): run the command again, with or without
the same DRVs, and the unfinished jobs are offered again. With --wait the
outputs are then copied into the local store and printed, as nix-build does.
The exit status is non-zero if a build failed or a job is still unbuilt when
--timeout runs out.`,
		Example: `  nixipfs build --network farm --peer /ip4/10.0.0.2/tcp/4001/p2p/12D3... \
      --trusted-builder-key builder-1:AbC... --wait $(nix-instantiate hello.nix)`,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, timeout)
				defer cancel()
			}
			keys, err := parseKeys("--trusted-builder-key", builders)
			if err != nil {
				return err
			}
			store := g.nixStore()
			if len(keys) == 0 {
				nixKeys, err := store.TrustedPublicKeys(ctx)
				if err != nil {
					return err
				}
				if keys, err = parseKeys("trusted-public-keys", nixKeys); err != nil {
					return err
				}
			}
			if o.SignKey, err = loadSignKey(signKey); err != nil {
				return err
			}
			o.Store, o.DataDir, o.TrustedBuilders, o.Drvs = store, g.dataDir, keys, args
			o.Open = func(ctx context.Context) (*ipfsnode.Node, error) {
				node, err := g.openWith(ctx, ipfsnode.Options{Online: true, Peers: peers, SwarmListen: swarm})
				if err != nil {
					return nil, err
				}
				if err := printPeerAddrs(ctx, node); err != nil {
					node.Close()
					return nil, err
				}
				return node, nil
			}
			o.Progress = func(e builder.Event) {
				fmt.Fprintf(os.Stderr, "nixipfs: %-8s %s: %s\n", e.State, e.Job, e.Note)
			}
			if printLogs {
				o.BuildLog = func(job, text string) {
					name := strings.TrimSuffix(filepath.Base(job), ".drv")
					if _, n, ok := strings.Cut(name, "-"); ok {
						name = n
					}
					for _, line := range strings.SplitAfter(text, "\n") {
						if line != "" {
							fmt.Fprintf(os.Stderr, "%s> %s", name, strings.TrimRight(line, "\n")+"\n")
						}
					}
				}
			}
			res, err := builder.Build(ctx, o)
			for _, p := range res.Outputs {
				fmt.Fprintln(cmd.OutOrStdout(), p)
			}
			for _, j := range res.Failed {
				fmt.Fprintf(os.Stderr, "nixipfs: build of %s failed: %s\n", j.Drv, j.Error)
				if j.Log != "" {
					fmt.Fprintf(os.Stderr, "nixipfs:   log: /ipfs/%s (or log/%s on a gateway of this data dir)\n", j.Log, filepath.Base(j.Drv))
				}
			}
			for _, j := range res.Pending {
				fmt.Fprintf(os.Stderr, "nixipfs: %s is still %s (needs %s); it stays queued\n", j.Drv, j.State, j.Needs())
			}
			switch {
			case err != nil && errors.Is(err, context.DeadlineExceeded) && timeout > 0:
				return fmt.Errorf("build: --timeout %s ran out with %d jobs unfinished", timeout, len(res.Pending))
			case err != nil:
				return err
			case len(res.Failed) > 0:
				return fmt.Errorf("build: %d of %d derivations failed", len(res.Failed), res.Jobs)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Network, "network", "", "network whose builders build (required)")
	f.BoolVar(&o.Wait, "wait", false, "copy the outputs into the local store and print them when done")
	f.StringArrayVar(&peers, "peer", nil, "IPFS peer multiaddr to connect to (repeatable)")
	f.StringArrayVar(&swarm, "swarm-listen", nil, "IPFS swarm listen multiaddr (repeatable; default /ip4/127.0.0.1/tcp/0)")
	f.StringArrayVar(&builders, "trusted-builder-key", nil, "key (name:base64) a builder must sign with (repeatable; default: Nix's trusted-public-keys)")
	f.StringVar(&signKey, "sign-key", "", "Nix secret key file to sign offers and assignments with (builders may insist)")
	f.DurationVar(&o.Lease, "lease", 60*time.Second, "how long a builder holds a job without a heartbeat")
	f.DurationVar(&o.Heartbeat, "heartbeat", 10*time.Second, "how often builders must say they are still building")
	f.DurationVar(&o.OfferInterval, "offer-interval", 5*time.Second, "how often unanswered offers and assignments are sent again")
	f.DurationVar(&o.ClaimWindow, "claim-window", time.Second, "how long claims are gathered before choosing a builder")
	f.DurationVar(&o.Unclaimed, "unclaimed-after", 30*time.Second, "report a job no builder has claimed after this long")
	f.IntVar(&o.MaxAttempts, "max-attempts", 5, "infrastructure failures (not build failures) before a job fails")
	f.BoolVarP(&printLogs, "print-build-logs", "L", false, "print the builders' logs as their heartbeats bring them")
	f.DurationVar(&timeout, "timeout", 0, "give up waiting after this long (the jobs stay queued); 0: no limit")
	return cmd
}

func newBuilderCmd(g *globals) *cobra.Command {
	var (
		d         daemonOpts
		systems   []string
		features  []string
		mandatory []string
		maxJobs   int
		inputKeys []string
		reqKeys   []string
	)
	cmd := &cobra.Command{
		Use:   "builder --network NAME --sign-key FILE [--systems S] [--features F] [--max-jobs N]",
		Short: "Build jobs offered on a network",
		Long: `Run a daemon (see nixipfs daemon; all its flags apply) that also builds: it
claims the jobs offered on --network whose system it has and whose required
features it supports (and that ask for each --mandatory-features), bidding with
how much of the inputs it already holds. An assigned job's .drv closure and
inputs come through this daemon's own gateway as the substituter; Nix builds it
locally (no build hook); the outputs are published signed with --sign-key and
reported to the requester, and the build log is kept in IPFS and served at
log/<drv>. Inputs built by others must be signed by a key Nix trusts, by a
--trusted-input-key, or by our own key.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if d.netCfg.Network == "" {
				return errors.New("builder: --network is required")
			}
			if d.signKey == "" {
				return errors.New("builder: --sign-key is required: outputs are signed with it")
			}
			reqs, err := parseKeys("--trusted-requester-key", reqKeys)
			if err != nil {
				return err
			}
			if _, err := parseKeys("--trusted-input-key", inputKeys); err != nil {
				return err
			}
			nixKeys, err := g.nixStore().TrustedPublicKeys(cmd.Context())
			if err != nil {
				return err
			}
			return d.run(cmd.Context(), g, func(node *ipfsnode.Node, sk *signature.SecretKey) ([]func(context.Context, daemon.Host) error, error) {
				return []func(context.Context, daemon.Host) error{func(ctx context.Context, h daemon.Host) error {
					w, err := builder.NewWorker(ctx, builder.WorkerConfig{
						Node: node, Network: d.netCfg.Network, Store: g.nixStore(), Manifest: g.manifest(node),
						SignKey: *sk, Systems: splitList(systems), Features: splitList(features), Mandatory: splitList(mandatory),
						MaxJobs: maxJobs, TrustedKeys: append(nixKeys, inputKeys...), TrustedRequesters: reqs,
						Substituter: h.GatewayURL, Follow: h.Follow, WorkDir: filepath.Join(g.dataDir, "builds"),
						JobStates: func(state string, n int) { h.Metrics.JobStates.WithLabelValues(state).Set(float64(n)) },
					})
					if err != nil {
						return err
					}
					return w.Run(ctx)
				}}, nil
			})
		},
	}
	f := cmd.Flags()
	d.addFlags(f)
	f.StringSliceVar(&systems, "systems", []string{nixSystem()}, "systems this builder builds for (comma-separated)")
	f.StringSliceVar(&features, "features", nil, "system features supported, e.g. kvm,big-parallel (comma-separated)")
	f.StringSliceVar(&mandatory, "mandatory-features", nil, "features a job must require to be built here (comma-separated)")
	f.IntVar(&maxJobs, "max-jobs", 1, "jobs built at the same time")
	f.StringArrayVar(&inputKeys, "trusted-input-key", nil, "also accept inputs signed by this key (name:base64, repeatable)")
	f.StringArrayVar(&reqKeys, "trusted-requester-key", nil, "only take jobs from requesters signing with this key (repeatable; default: any)")
	return cmd
}

func newJobsCmd(g *globals) *cobra.Command {
	var (
		asJSON bool
		clear  bool
	)
	cmd := &cobra.Command{
		Use:   "jobs",
		Short: "List the build queue (nixipfs build)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			q, err := builder.OpenQueue(g.dataDir)
			if err != nil {
				return err
			}
			if clear {
				n, err := q.RemoveFinal()
				if err != nil {
					return err
				}
				fmt.Fprintf(os.Stderr, "nixipfs: removed %d finished jobs\n", n)
			}
			jobs, err := q.List()
			if err != nil {
				return err
			}
			if asJSON {
				if jobs == nil {
					jobs = []*builder.Job{}
				}
				return printJSON(cmd.OutOrStdout(), jobs)
			}
			printJobs(cmd.OutOrStdout(), jobs)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().BoolVar(&clear, "clear-finished", false, "first remove built and failed jobs from the queue")
	return cmd
}

func printJobs(w io.Writer, jobs []*builder.Job) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STATE\tDERIVATION\tBUILDER\tNOTE")
	for _, j := range jobs {
		note := j.Error
		if j.State == builder.Offered || j.State == builder.Waiting {
			note = "needs " + j.Needs()
		}
		b := j.Builder
		if len(b) > 16 {
			b = "…" + b[len(b)-12:]
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", j.State, filepath.Base(j.Drv), b, note)
	}
	tw.Flush()
}

// splitList drops empty items (--features "" means none).
func splitList(xs []string) []string {
	var out []string
	for _, x := range xs {
		if x = strings.TrimSpace(x); x != "" {
			out = append(out, x)
		}
	}
	return out
}

// nixSystem is Nix's name for the system this binary runs on.
func nixSystem() string {
	arch := map[string]string{"amd64": "x86_64", "arm64": "aarch64", "386": "i686", "riscv64": "riscv64"}[runtime.GOARCH]
	if arch == "" {
		arch = runtime.GOARCH
	}
	return arch + "-" + runtime.GOOS
}
