package main

import (
	"encoding/hex"
	"encoding/json"
	"fmt"

	"github.com/ipfs/go-cid"
	"github.com/nix-community/go-nix/pkg/nixbase32"
	"github.com/spf13/cobra"

	"github.com/nixipfs/nixipfs/internal/publish"
	"github.com/nixipfs/nixipfs/ipldnar"
)

func newNarCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "nar",
		Short: "Import NAR files into IPFS and render them back",
	}
	var asJSON bool
	imp := &cobra.Command{
		Use:   "import FILE|-",
		Short: "Import a NAR as a UnixFS DAG and pin it",
		Long: `Import a NAR (a file, or - for stdin) as a UnixFS DAG with the import profile
store paths use, and pin it. The NAR is checked strictly (names, order,
padding, sizes); a bad NAR is refused with an error naming the entry, and
nothing is pinned. Prints the root CID, NarHash, NarSize and BLAKE3.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, done, err := openInput(args[0])
			if err != nil {
				return fmt.Errorf("import: %w", err)
			}
			defer done()
			node, err := g.open(cmd.Context(), false, nil, nil)
			if err != nil {
				return err
			}
			defer node.Close()
			res, err := publish.ImportNAR(cmd.Context(), node, r, nil)
			if err != nil {
				return fmt.Errorf("import %s: %w", args[0], err)
			}
			out := struct {
				Root    string `json:"root"`
				NarHash string `json:"narHash"`
				NarSize uint64 `json:"narSize"`
				Blake3  string `json:"blake3"`
				Profile string `json:"profile"`
			}{res.Root.String(), "sha256:" + nixbase32.EncodeToString(res.NarHash[:]), res.NarSize, hex.EncodeToString(res.Blake3[:]), ipldnar.Profile}
			if asJSON {
				return json.NewEncoder(cmd.OutOrStdout()).Encode(out)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s %s %d blake3:%s\n", out.Root, out.NarHash, out.NarSize, out.Blake3)
			return nil
		},
	}
	imp.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	render := &cobra.Command{
		Use:   "render CID",
		Short: "Write the NAR of a UnixFS DAG to stdout",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			root, err := cid.Decode(args[0])
			if err != nil {
				return fmt.Errorf("render: CID %q: %w", args[0], err)
			}
			node, err := g.open(cmd.Context(), false, nil, nil)
			if err != nil {
				return err
			}
			defer node.Close()
			if _, err := ipldnar.Render(cmd.Context(), cmd.OutOrStdout(), root, node.API.Dag()); err != nil {
				return fmt.Errorf("render %s: %w", root, err)
			}
			return nil
		},
	}
	cmd.AddCommand(imp, render)
	return cmd
}
