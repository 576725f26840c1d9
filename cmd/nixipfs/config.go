package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/nixipfs/nixipfs/internal/config"
)

// markConfigFlags annotates the flags the config package treats specially:
// --config names the file, so it is not a key of it; --data-dir's default
// depends on the home directory, so the reference names the rule instead.
func markConfigFlags(root *cobra.Command) {
	pf := root.PersistentFlags()
	_ = pf.SetAnnotation("config", config.Annotation, []string{"skip"})
	_ = pf.SetAnnotation("data-dir", config.DefaultText, []string{"$XDG_DATA_HOME/nixipfs, else ~/.local/share/nixipfs"})
}

// configure reads the config file (--config, else $NIXIPFS_CONFIG, else the
// default file if it exists) and the environment into cmd's flags that the
// command line left unset.
func (g *globals) configure(cmd *cobra.Command) error {
	if config.Builtin(cmd) {
		return nil // help and shell completion read no configuration
	}
	file, required := g.config, cmd.Flags().Changed("config")
	if !required {
		if v := os.Getenv(config.EnvPrefix + "CONFIG"); v != "" {
			file, required = v, true
		} else {
			file = config.DefaultFile(os.LookupEnv)
		}
	}
	g.config = file
	c, err := config.Load(cmd.Root(), file, required, os.LookupEnv)
	if err != nil {
		return err
	}
	g.settings = c
	return c.Apply(cmd)
}

func newConfigCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config show",
		Short: "Show the effective configuration",
		Long: `Every flag of every command can also be set in the config file and by an
environment variable. The command line wins over the environment, which wins
over the file, which wins over the flag's default.

The file is TOML: global flags are top-level keys, a command's flags go in a
table named after it:

  data-dir = "/var/lib/nixipfs"

  [daemon]
  listen = "127.0.0.1:8080"
  peer = ["/ip4/192.0.2.7/tcp/4001/p2p/12D3..."]

  [follow.ls]
  json = true

The variable of a key is NIXIPFS_ and the key in upper case, with '.' and '-'
as '_': NIXIPFS_DATA_DIR, NIXIPFS_DAEMON_LISTEN. Lists are comma-separated
there. An empty variable counts as unset. A key the file does not know is an
error, so a typo never goes unnoticed.`,
		Annotations: map[string]string{config.Annotation: "skip"},
	}
	var asJSON bool
	show := &cobra.Command{
		Use:   "show",
		Short: "Print every key's effective value and where it came from",
		Long: `Print every key, with the value a command would use and where it came from
(flag, env VARIABLE, file PATH or default), as a config file.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			settings, err := g.settings.Settings()
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				if settings == nil {
					settings = []config.Setting{}
				}
				return printJSON(out, struct {
					File     string           `json:"file"`
					Read     bool             `json:"read"`
					Settings []config.Setting `json:"settings"`
				}{g.config, g.settings.File() != "", settings})
			}
			if g.settings.File() != "" {
				fmt.Fprintf(out, "# config file: %s\n", g.config)
			} else {
				fmt.Fprintf(out, "# config file: none (%s does not exist)\n", g.config)
			}
			return config.WriteTOML(out, settings)
		},
	}
	show.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	ref := &cobra.Command{
		Use:    "reference",
		Short:  "Print the Markdown table of every key (for docs/configuration.md)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			keys, err := config.Keys(cmd.Root())
			if err != nil {
				return err
			}
			return config.WriteReference(cmd.OutOrStdout(), keys)
		},
	}
	cmd.AddCommand(show, ref)
	return cmd
}
