package main

import (
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/nixipfs/nixipfs/internal/publish"
	"github.com/nixipfs/nixipfs/mirror"
)

func newMirrorCmd(g *globals) *cobra.Command {
	var (
		opts        mirror.Options
		mirrorsFile string
		asJSON      bool
	)
	cmd := &cobra.Command{
		Use:   "mirror-tarballs FILE|-",
		Short: "Mirror the fixed-output sources listed by nixpkgs' find-tarballs.nix",
		Long: `Read the JSON list that nixpkgs' maintainers/scripts/find-tarballs.nix prints
(entries {urls, hash, isPatch, type, name} or the older {url, hash, type, name};
hashes in nix32, base16, base64 or SRI). Download each file not mirrored yet,
trying its URLs in order (mirror:// through --mirrors), check its hash while
downloading, add it to IPFS as a flat store path holding it would be, and
record it under its md5, sha1, sha256 and sha512. The gateway then serves it
at /<algo>/<hash>, the layout of tarballs.nixos.org. Patches are skipped, as
upstream does. The manifest is re-published once at the end.

Prints a summary; --json prints the full report (failures with the URLs tried).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			r, done, err := openInput(args[0])
			if err != nil {
				return fmt.Errorf("mirror-tarballs: %w", err)
			}
			defer done()
			entries, bad, err := mirror.ParseList(r)
			if err != nil {
				return fmt.Errorf("mirror-tarballs %s: %w", args[0], err)
			}
			for _, e := range bad {
				fmt.Fprintf(cmd.ErrOrStderr(), "nixipfs: skipping %v\n", e)
			}
			if mirrorsFile != "" {
				if opts.Mirrors, err = mirror.LoadMirrors(ctx, mirrorsFile); err != nil {
					return err
				}
			}
			node, err := g.open(ctx, false, nil, nil)
			if err != nil {
				return err
			}
			defer node.Close()
			sink := &publish.MirrorSink{Node: node, Manifest: g.manifest(node)}
			if opts.Retries == 0 {
				opts.Retries = -1 // the package reads 0 as "default"
			}
			if opts.TempDir == "" {
				opts.TempDir = g.dataDir
			}
			if term.IsTerminal(int(os.Stderr.Fd())) {
				opts.Progress = mirrorProgress
			}
			report, err := mirror.Mirror(ctx, entries, sink, opts)
			if cerr := sink.Close(ctx); err == nil {
				err = cerr
			}
			if asJSON {
				if jerr := printJSON(cmd.OutOrStdout(), report); jerr != nil && err == nil {
					err = jerr
				}
			} else {
				for _, res := range report.Results {
					if res.Status == "failed" {
						fmt.Fprintf(cmd.OutOrStdout(), "failed: entry %d %s: %s\n", res.Entry.Index, res.Entry.Name, res.Err)
					}
				}
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "mirrored %d, already there %d, patches skipped %d, failed %d, malformed %d; %d bytes in %s\n",
				report.Mirrored, report.Skipped, report.Patches, report.Failed, len(bad), report.Bytes, report.Duration.Round(time.Millisecond))
			if err == nil && report.Failed > 0 {
				err = fmt.Errorf("mirror-tarballs: %d entries failed", report.Failed)
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&mirrorsFile, "mirrors", "", "mirrors for mirror:// URLs: nixpkgs' mirrors.nix, or JSON {name: [base URLs]}")
	f.IntVar(&opts.Concurrency, "jobs", 4, "parallel downloads")
	f.IntVar(&opts.Retries, "retries", 3, "retries per URL on transient errors")
	f.Int64Var(&opts.MaxSize, "max-size", 4<<30, "largest file to download, in bytes")
	f.DurationVar(&opts.Timeout, "timeout", 10*time.Minute, "time limit for one download attempt")
	f.DurationVar(&opts.StallTimeout, "stall-timeout", time.Minute, "give up an attempt that receives nothing for this long")
	f.BoolVar(&asJSON, "json", false, "print the report as JSON")
	return cmd
}

func mirrorProgress(p mirror.Progress) {
	fmt.Fprintf(os.Stderr, "\r\033[K%d/%d files, %d failed, %.1f MB, %.1f MB/s", p.Done, p.Total, p.Failed, float64(p.Bytes)/1e6, p.Rate/1e6)
}
