package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/nix-community/go-nix/pkg/nixbase32"
	"github.com/spf13/cobra"

	"github.com/nixipfs/nixipfs/gateway"
	"github.com/nixipfs/nixipfs/internal/ipfsnode"
	"github.com/nixipfs/nixipfs/internal/publish"
	"github.com/nixipfs/nixipfs/internal/remotepin"
	"github.com/nixipfs/nixipfs/manifests"
)

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func newFollowCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "follow add|rm|ls [IPNS-NAME]",
		Short: "Follow other nodes' manifests by IPNS name",
		Long: `Record IPNS names of other nixipfs nodes' manifests in the data dir. A running
daemon picks changes up within seconds: it resolves each name, fetches the
manifest's changed records from its peers, and its gateway then answers narinfo
for those paths too (its own manifest first, then followed ones in order).
The same can be given to the daemon as --follow NAME.`,
	}
	edit := func(add bool) *cobra.Command {
		use, short := "rm IPNS-NAME", "Stop following a name"
		if add {
			use, short = "add IPNS-NAME", "Follow a name"
		}
		return &cobra.Command{
			Use: use, Short: short, Args: cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				changed, err := manifests.EditFollowList(g.dataDir, args[0], add)
				if err != nil {
					return err
				}
				if !changed {
					fmt.Fprintln(cmd.ErrOrStderr(), "nothing to change")
				}
				return nil
			},
		}
	}
	var asJSON bool
	ls := &cobra.Command{
		Use: "ls", Short: "List followed names", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			names, err := manifests.ReadFollowList(g.dataDir)
			if err != nil {
				return err
			}
			if asJSON {
				if names == nil {
					names = []string{}
				}
				return printJSON(cmd.OutOrStdout(), names)
			}
			for _, n := range names {
				fmt.Fprintln(cmd.OutOrStdout(), n)
			}
			return nil
		},
	}
	ls.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.AddCommand(edit(true), edit(false), ls)
	return cmd
}

func newManifestCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "manifest show|get|diff|history",
		Short: "Inspect this node's manifest",
		Long: `The manifest is a HAMT mapping store-path hashes (p/<hash>), NarHashes
(sha256/<nix32>) and BLAKE3 hashes (blake3/<hex>) to PathInfo records. Each
version links its predecessor and is published under the node's IPNS name.`,
	}
	cmd.PersistentFlags().BoolVar(&asJSON, "json", false, "print JSON")

	// withManifest opens the node and the current manifest (or --version).
	withManifest := func(ctx context.Context, version string, fn func(*ipfsnode.Node, *manifests.Local, *manifests.Manifest) error) error {
		node, err := g.open(ctx, false, nil, nil)
		if err != nil {
			return err
		}
		defer node.Close()
		local := g.manifest(node)
		m, err := loadVersion(ctx, node, local, version)
		if err != nil {
			return err
		}
		return fn(node, local, m)
	}

	show := &cobra.Command{
		Use: "show", Short: "Show the IPNS name and the current version", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withManifest(cmd.Context(), "", func(node *ipfsnode.Node, local *manifests.Local, m *manifests.Manifest) error {
				name, err := local.Name(cmd.Context())
				if err != nil {
					return err
				}
				follows, err := manifests.ReadFollowList(g.dataDir)
				if err != nil {
					return err
				}
				info := m.Info()
				out := struct {
					Name    string   `json:"name"`
					Version string   `json:"version,omitempty"`
					Seq     int64    `json:"seq"`
					Paths   int64    `json:"paths"`
					Time    string   `json:"time,omitempty"`
					Follows []string `json:"follows"`
				}{Name: name, Seq: info.Seq, Paths: info.Count, Time: info.Time, Follows: follows}
				if v := m.Version(); v.Defined() {
					out.Version = v.String()
				}
				if out.Follows == nil {
					out.Follows = []string{}
				}
				if asJSON {
					return printJSON(cmd.OutOrStdout(), out)
				}
				w := cmd.OutOrStdout()
				fmt.Fprintf(w, "name:    /ipns/%s\nversion: %s\nseq:     %d\npaths:   %d\ntime:    %s\n", out.Name, out.Version, out.Seq, out.Paths, out.Time)
				for _, f := range out.Follows {
					fmt.Fprintf(w, "follows: /ipns/%s\n", f)
				}
				return nil
			})
		},
	}

	var version string
	get := &cobra.Command{
		Use:   "get KEY",
		Short: "Show the record under a key: a store path, its hash, or p/…, sha256/…, blake3/…, src/<algo>/<hex>",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			key := manifestKey(args[0])
			return withManifest(cmd.Context(), version, func(node *ipfsnode.Node, _ *manifests.Local, m *manifests.Manifest) error {
				c, err := m.Get(cmd.Context(), key)
				if err != nil {
					return fmt.Errorf("get %s: %w", key, err)
				}
				if strings.HasPrefix(key, "src/") {
					// Mirrored files are recorded as their UnixFS root.
					if asJSON {
						return printJSON(cmd.OutOrStdout(), map[string]string{"key": key, "root": c.String()})
					}
					fmt.Fprintf(cmd.OutOrStdout(), "Root: %s\n", c)
					return nil
				}
				p, err := manifests.Load(cmd.Context(), node.API, c)
				if err != nil {
					return err
				}
				if asJSON {
					return printJSON(cmd.OutOrStdout(), recordJSON(c, p))
				}
				fmt.Fprintf(cmd.OutOrStdout(), "PathInfo: %s\nRoot: %s\nBLAKE3: %s\nProfile: %s\n%s",
					c, p.Root, hex.EncodeToString(p.Blake3), p.Profile, gateway.NarInfo(p))
				return nil
			})
		},
	}
	get.Flags().StringVar(&version, "version", "", "manifest version CID to read (default: current)")

	diff := &cobra.Command{
		Use:   "diff A B",
		Short: "List the entries that differ between two versions (CIDs, or 'current')",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			return withManifest(ctx, args[0], func(node *ipfsnode.Node, local *manifests.Local, a *manifests.Manifest) error {
				b, err := loadVersion(ctx, node, local, args[1])
				if err != nil {
					return err
				}
				changes, err := manifests.DiffManifests(ctx, a, b)
				if err != nil {
					return err
				}
				if asJSON {
					type change struct {
						Key string `json:"key"`
						Old string `json:"old,omitempty"`
						New string `json:"new,omitempty"`
					}
					out := []change{}
					for _, ch := range changes {
						out = append(out, change{ch.Key, cidString(ch.Old), cidString(ch.New)})
					}
					return printJSON(cmd.OutOrStdout(), out)
				}
				for _, ch := range changes {
					switch {
					case !ch.Old.Defined():
						fmt.Fprintf(cmd.OutOrStdout(), "+ %s %s\n", ch.Key, ch.New)
					case !ch.New.Defined():
						fmt.Fprintf(cmd.OutOrStdout(), "- %s %s\n", ch.Key, ch.Old)
					default:
						fmt.Fprintf(cmd.OutOrStdout(), "~ %s %s -> %s\n", ch.Key, ch.Old, ch.New)
					}
				}
				return nil
			})
		},
	}

	var limit int
	history := &cobra.Command{
		Use: "history", Short: "List versions, newest first", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withManifest(cmd.Context(), "", func(node *ipfsnode.Node, _ *manifests.Local, m *manifests.Manifest) error {
				if !m.Version().Defined() {
					if asJSON {
						return printJSON(cmd.OutOrStdout(), []any{})
					}
					return nil
				}
				recs, err := manifests.History(cmd.Context(), node.API.Dag(), m.Version(), limit)
				if err != nil {
					return err
				}
				if asJSON {
					type ver struct {
						Version string `json:"version"`
						Seq     int64  `json:"seq"`
						Paths   int64  `json:"paths"`
						Time    string `json:"time"`
					}
					out := []ver{}
					for _, r := range recs {
						out = append(out, ver{r.CID.String(), r.Seq, r.Count, r.Time})
					}
					return printJSON(cmd.OutOrStdout(), out)
				}
				for _, r := range recs {
					fmt.Fprintf(cmd.OutOrStdout(), "%d %s %s %d paths\n", r.Seq, r.CID, r.Time, r.Count)
				}
				return nil
			})
		},
	}
	history.Flags().IntVar(&limit, "limit", 0, "at most this many versions (0: all)")
	rm := &cobra.Command{
		Use:   "rm PATH...",
		Short: "Drop store paths from the manifest (their pins stay until 'nixipfs gc')",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			node, err := g.open(cmd.Context(), false, nil, nil)
			if err != nil {
				return err
			}
			defer node.Close()
			removed, err := publish.Unpublish(cmd.Context(), node, g.manifest(node), args...)
			for _, p := range removed {
				fmt.Fprintln(cmd.OutOrStdout(), p)
			}
			return err
		},
	}
	cmd.AddCommand(show, get, diff, history, rm)
	return cmd
}

func newGCCmd(g *globals) *cobra.Command {
	var opts publish.GCOptions
	var asJSON, collect bool
	cmd := &cobra.Command{
		Use:   "gc [--min-replicas N] [--apply [--collect]]",
		Short: "Unpin paths dropped from the manifest once enough peers replicate them",
		Long: `Find the paths this node pinned that its manifest no longer holds (see
'nixipfs manifest rm') and unpin each one only if at least --min-replicas other
peers provide its DAG (a provider search among the peers this node knows) or,
with --pin-cluster, at least that many cluster peers hold it pinned.
Without --apply it only prints what it would do. Unpinning frees nothing by
itself: with --apply --collect it then runs the IPFS node's repo GC, which
deletes every block no pin holds (on the embedded node's pebble datastore the
space comes back as it compacts). Run it against the daemon's node (while the
daemon runs) so that the provider search can reach peers.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if opts.MinReplicas < 1 {
				return fmt.Errorf("--min-replicas %d: must be at least 1", opts.MinReplicas)
			}
			if collect && !opts.Apply {
				return errors.New("--collect deletes blocks: it needs --apply")
			}
			var err error
			if opts.Remotes, err = remotepin.Open(g.remote); err != nil {
				return err
			}
			node, err := g.open(cmd.Context(), false, nil, nil)
			if err != nil {
				return err
			}
			defer node.Close()
			items, err := publish.GC(cmd.Context(), node, g.manifest(node), opts)
			if err == nil && collect {
				var removed int
				removed, err = node.CollectGarbage(cmd.Context())
				fmt.Fprintf(cmd.ErrOrStderr(), "repo gc: removed %d blocks\n", removed)
			}
			if asJSON {
				if items == nil {
					items = []publish.GCItem{}
				}
				if jerr := printJSON(cmd.OutOrStdout(), items); jerr != nil && err == nil {
					err = jerr
				}
				return err
			}
			var freed int64
			for _, it := range items {
				fmt.Fprintf(cmd.OutOrStdout(), "%s %d replicas: %s\n", it.StorePath, it.Replicas, it.Reason)
				if it.Unpinned || (!opts.Apply && it.Replicas >= opts.MinReplicas) {
					freed += it.NarSize
				}
			}
			verb := "would unpin"
			if opts.Apply {
				verb = "unpinned"
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "%s about %d bytes (NAR size)\n", verb, freed)
			return err
		},
	}
	f := cmd.Flags()
	f.IntVar(&opts.MinReplicas, "min-replicas", 1, "other copies a path needs before it is unpinned: peers providing it, or (with --pin-cluster) cluster peers holding it pinned")
	f.BoolVar(&opts.Apply, "apply", false, "unpin (default: dry run)")
	f.BoolVar(&collect, "collect", false, "with --apply: then run the IPFS repo GC, deleting every unpinned block")
	f.DurationVar(&opts.Timeout, "timeout", 10*time.Second, "provider search time per path")
	f.BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// loadVersion loads the manifest version a CID argument names ("" or
// "current": the current one).
func loadVersion(ctx context.Context, node *ipfsnode.Node, local *manifests.Local, arg string) (*manifests.Manifest, error) {
	if arg == "" || arg == "current" {
		return local.Current(ctx)
	}
	c, err := cid.Decode(arg)
	if err != nil {
		return nil, fmt.Errorf("version %q: %w", arg, err)
	}
	return manifests.LoadManifest(ctx, node.API.Dag(), c)
}

// manifestKey turns a store path or hash into its manifest key; anything
// with a slash that is not a store path is taken as a key as it is.
func manifestKey(arg string) string {
	if strings.HasPrefix(arg, "/nix/store/") || manifests.ValidHashPart(arg) {
		return manifests.KeyStorePath(manifests.HashPart(arg))
	}
	if strings.HasPrefix(arg, "sha256:") {
		if h, err := nixbase32.DecodeString(strings.TrimPrefix(arg, "sha256:")); err == nil {
			return manifests.KeyNarHash(h)
		}
	}
	return arg
}

func cidString(c cid.Cid) string {
	if !c.Defined() {
		return ""
	}
	return c.String()
}

func recordJSON(c cid.Cid, p *manifests.PathInfo) any {
	refs := []string{}
	refs = append(refs, p.ReferenceNames()...)
	out := map[string]any{
		"pathInfo":   c.String(),
		"storePath":  p.StorePath,
		"root":       p.Root.String(),
		"narHash":    p.NarHashString(),
		"narSize":    p.NarSize,
		"blake3":     hex.EncodeToString(p.Blake3),
		"references": refs,
		"signatures": append([]string{}, p.Signatures...),
		"profile":    p.Profile,
	}
	if p.Deriver != nil {
		out["deriver"] = *p.Deriver
	}
	if p.ContentAddress != nil {
		out["ca"] = *p.ContentAddress
	}
	return out
}
