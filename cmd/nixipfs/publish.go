package main

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/nixipfs/nixipfs/publish"
)

func newPublishCmd(g *globals) *cobra.Command {
	var signKey string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "publish [--sign-key FILE] PATH...",
		Short: "Publish the closures of store paths to IPFS",
		Long: `Publish the closure of each PATH (store paths or symlinks to them, such as
./result), dependencies first. Each path's NAR becomes a UnixFS DAG, is checked
against the NarHash Nix recorded, pinned, and recorded in the manifest with the
signatures it already has, plus one by --sign-key (a file written by
'nix key generate-secret'). Re-publishing is a no-op.

If a nixipfs daemon runs on the same --data-dir, publish uses its IPFS node.

The manifest is updated once per run (and every 64 paths on long runs) and
re-published on IPNS once at the end.

Prints one line per path of the closure: <store path> <root CID>.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			sk, err := loadSignKey(signKey)
			if err != nil {
				return err
			}
			node, err := g.open(ctx, false, nil, nil)
			if err != nil {
				return err
			}
			defer node.Close()
			p := &publish.Publisher{Node: node, Store: g.nixStore(), Manifest: g.manifest(node), SignKey: sk}
			if term.IsTerminal(int(os.Stderr.Fd())) {
				p.Progress = progressBar
			}
			results, err := p.Publish(ctx, args...)
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				if results == nil {
					results = []publish.Result{}
				}
				if jerr := enc.Encode(results); jerr != nil && err == nil {
					err = jerr
				}
			} else {
				for _, r := range results {
					fmt.Fprintf(cmd.OutOrStdout(), "%s %s\n", r.StorePath, r.Root)
				}
			}
			return err
		},
	}
	cmd.Flags().StringVar(&signKey, "sign-key", "", "Nix secret key file to add a signature with")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print results as JSON")
	return cmd
}

// progressBar draws one status line on stderr.
func progressBar(e publish.Event) {
	const width = 30
	if e.Total == 0 {
		return
	}
	filled := width * e.Done / e.Total
	bar := make([]byte, width)
	for i := range bar {
		bar[i] = ' '
		if i < filled {
			bar[i] = '#'
		}
	}
	if e.Done == e.Total {
		fmt.Fprintf(os.Stderr, "\r\033[K[%s] %d/%d done\n", bar, e.Done, e.Total)
		return
	}
	fmt.Fprintf(os.Stderr, "\r\033[K[%s] %d/%d %s (%d bytes)", bar, e.Done, e.Total, e.StorePath, e.NarSize)
}
