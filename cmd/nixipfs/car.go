package main

import (
	"bufio"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/nixipfs/nixipfs/internal/atomicfile"
	"github.com/nixipfs/nixipfs/internal/publish"
)

func newExportCmd(g *globals) *cobra.Command {
	var carFile string
	cmd := &cobra.Command{
		Use:   "export --car FILE PATH...",
		Short: "Write published closures (DAGs and PathInfos) to a CAR file",
		Long: `Write the closure of each published store path as a CAR: the PathInfo records
(the roots) and every block they reach: the references' records and all DAGs.
Carry it to an offline machine and load it there with 'nixipfs import'.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if carFile == "" {
				return fmt.Errorf("export: --car FILE is required (- for stdout)")
			}
			node, err := g.open(cmd.Context(), false, nil, nil)
			if err != nil {
				return err
			}
			defer node.Close()
			var w io.Writer = cmd.OutOrStdout()
			var tmp *atomicfile.File
			if carFile != "-" {
				// Written beside the target and renamed at the end: a failed
				// export leaves no half CAR under the name.
				if tmp, err = atomicfile.Create(carFile, 0o644); err != nil {
					return err
				}
				defer tmp.Close()
				w = tmp
			}
			bw := bufio.NewWriterSize(w, 1<<20)
			st, err := publish.ExportCAR(cmd.Context(), node, g.manifest(node), bw, args...)
			if err == nil {
				err = bw.Flush()
			}
			if err == nil && tmp != nil {
				err = tmp.Commit()
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "exported %d blocks, %d bytes\n", st.Blocks, st.Bytes)
			return nil
		},
	}
	cmd.Flags().StringVar(&carFile, "car", "", "CAR file to write (- for stdout)")
	return cmd
}

func newImportCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "import FILE|-",
		Short: "Load a CAR written by 'nixipfs export' and serve its paths",
		Long: `Load a CAR written by 'nixipfs export'. Every block is checked against its CID,
the closure must be complete, and every path's DAG must render to the NarHash
its record gives. Only then are the paths pinned and added to the manifest, so
the gateway serves them. Works offline.`,
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
			res, err := publish.ImportCAR(cmd.Context(), node, g.manifest(node), bufio.NewReaderSize(r, 1<<20))
			if asJSON {
				if res == nil {
					res = []publish.Result{}
				}
				if jerr := printJSON(cmd.OutOrStdout(), res); jerr != nil && err == nil {
					err = jerr
				}
			} else {
				for _, p := range res {
					fmt.Fprintf(cmd.OutOrStdout(), "%s %s\n", p.StorePath, p.Root)
				}
			}
			return err
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
