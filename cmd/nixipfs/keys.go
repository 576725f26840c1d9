package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/nixipfs/nixipfs/internal/nixkey"
)

func newKeysCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "keys generate NAME", Short: "Nix signing keys"}
	var out string
	var asJSON bool
	gen := &cobra.Command{
		Use:   "generate NAME [--out DIR]",
		Short: "Write a new Nix signing key pair, NAME.sec (mode 0600) and NAME.pub",
		Long: `Write a new Ed25519 key pair named NAME into --out: NAME.sec (mode 0600), for
--sign-key and Nix's secret-key-files, and NAME.pub, for trusted-public-keys.
The files are what 'nix-store --generate-binary-cache-key' writes. A name
such as cache.example.org-1 says whose key it is and allows a successor.
Existing files are never overwritten.

Prints the public key.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := nixkey.Generate(out, args[0])
			if err != nil {
				return fmt.Errorf("keys generate: %w", err)
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), f)
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "nixipfs: wrote %s (mode 0600) and %s\n", f.Secret, f.Public)
			fmt.Fprintln(cmd.OutOrStdout(), f.Key)
			return nil
		},
	}
	gen.Flags().StringVar(&out, "out", ".", "directory to write the key files to")
	gen.Flags().BoolVar(&asJSON, "json", false, "print the file names and the public key as JSON")
	cmd.AddCommand(gen)
	return cmd
}
