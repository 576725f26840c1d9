package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/nixipfs/nixipfs/internal/publish"
)

func newCacheInputsCmd(g *globals) *cobra.Command {
	var signKey string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "cache-inputs DRV|PATH...",
		Short: "Put every fixed-output source of some derivations into IPFS",
		Long: `Find every fixed-output derivation (fetchurl, fetchzip, ...) in the closure of
the given derivations, or of the derivations of the given output paths. Publish
each output: from the local store if it is there, otherwise after Nix has
downloaded and checked it. Flat outputs are also recorded under their hash, so
the gateway serves them as a hashed mirror (hashed-mirrors = http://127.0.0.1:8080).
A CI runner using this node's gateway as a substituter then fetches every input
from IPFS.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			sk, err := loadSignKey(signKey)
			if err != nil {
				return err
			}
			node, err := g.open(cmd.Context(), false, nil, nil)
			if err != nil {
				return err
			}
			defer node.Close()
			p := &publish.Publisher{Node: node, Store: g.nixStore(), Manifest: g.manifest(node), SignKey: sk}
			inputs, err := p.CacheInputs(cmd.Context(), args...)
			if asJSON {
				if inputs == nil {
					inputs = []publish.Input{}
				}
				if jerr := printJSON(cmd.OutOrStdout(), inputs); jerr != nil && err == nil {
					err = jerr
				}
				return err
			}
			for _, in := range inputs {
				fmt.Fprintf(cmd.OutOrStdout(), "%s %s %s\n", in.Output, in.Hash, in.Published.Root)
			}
			return err
		},
	}
	cmd.Flags().StringVar(&signKey, "sign-key", "", "Nix secret key file to add a signature with")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
