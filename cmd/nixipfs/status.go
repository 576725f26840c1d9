package main

import (
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/nixipfs/nixipfs/internal/status"
)

func newStatusCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status [--json]",
		Short: "Show the node's manifest, pins, publish queue, followed names and peers",
		Long: `Show what this node publishes and follows: its IPNS name, the manifest's
current version and latest versions, pin counts, the publish queue (entries
waiting, their retry state, entries given up on), followed names, and peers.

When a daemon runs on the data dir the live report comes from it (followed
names as resolved, gateway figures, recent publishes); otherwise the data
dir and the IPFS node are read directly.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			r, err := status.FromDaemon(ctx, g.dataDir)
			if err != nil {
				slog.Debug("status without a daemon", "err", err)
				node, err := g.open(ctx, false, nil, nil)
				if err != nil {
					return err
				}
				defer node.Close()
				r = (&status.Collector{DataDir: g.dataDir, Node: node}).Collect(ctx)
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), r)
			}
			return status.WriteText(cmd.OutOrStdout(), r)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
