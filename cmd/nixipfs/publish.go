package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/nixipfs/nixipfs/internal/publish"
	"github.com/nixipfs/nixipfs/internal/queue"
)

func newPublishCmd(g *globals) *cobra.Command {
	var signKey string
	var asJSON, toQueue, warnOnly bool
	cmd := &cobra.Command{
		Use:   "publish [--sign-key FILE | --queue] [--warn-only] PATH...",
		Short: "Publish the closures of store paths to IPFS",
		Long: `Publish the closure of each PATH (store paths or symlinks to them, such as
./result), dependencies first. Each path's NAR becomes a UnixFS DAG, is checked
against the NarHash Nix recorded, pinned, and recorded in the manifest with the
signatures it already has, plus one by --sign-key (a file written by
'nix key generate-secret'). Re-publishing is a no-op.

If a nixipfs daemon runs on the same --data-dir, publish uses its IPFS node.

The manifest is updated once per run (and every 64 paths on long runs) and
re-published on IPNS once at the end.

Prints one line per path of the closure: <store path> <root CID>.

With --queue, publish only records the paths in the data dir's publish queue
and returns at once, without opening the IPFS node or running Nix: the daemon
on that data dir (running now or started later) publishes them in the
background, signed with its own --sign-key, retrying with backoff. For Nix's
post-build-hook (see scripts/post-build-hook) and CI steps.

With --warn-only, a failure is printed as a warning and the exit status is 0:
a CI step whose cache push must not fail the build.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			err := runPublish(cmd, g, args, signKey, asJSON, toQueue)
			if err != nil && warnOnly {
				fmt.Fprintf(cmd.ErrOrStderr(), "nixipfs: warning: publish failed (ignored: --warn-only): %v\n", err)
				return nil
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&signKey, "sign-key", "", "Nix secret key file to add a signature with (not with --queue: the daemon signs with its own)")
	f.BoolVar(&asJSON, "json", false, "print results as JSON")
	f.BoolVar(&toQueue, "queue", false, "hand the paths to the daemon's publish queue and return at once")
	f.BoolVar(&warnOnly, "warn-only", false, "print a failure as a warning and exit 0")
	return cmd
}

func runPublish(cmd *cobra.Command, g *globals, args []string, signKey string, asJSON, toQueue bool) error {
	if toQueue {
		// One from the environment or the config file is for direct
		// publishes; one on the command line contradicts --queue.
		if g.settings != nil && g.settings.Source(cmd.Flags().Lookup("sign-key")).Kind == "flag" {
			return errors.New("--sign-key does not apply to --queue: the daemon signs queued paths with its own --sign-key")
		}
		paths, err := queue.StorePaths(g.nixStore(), args)
		if err != nil {
			return err
		}
		e, err := queue.Open(g.dataDir).Enqueue(paths)
		if err != nil {
			return err
		}
		if asJSON {
			return printJSON(cmd.OutOrStdout(), e)
		}
		fmt.Fprintf(cmd.OutOrStdout(), "queued %s: %s\n", e.ID, strings.Join(e.Paths, " "))
		return nil
	}
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
