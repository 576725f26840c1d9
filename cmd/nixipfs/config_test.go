package main

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/nixipfs/nixipfs/internal/config"
)

var update = flag.Bool("update", false, "rewrite docs/configuration.md's configuration reference")

// TestEveryFlagIsAKey: every flag of every command (but --help and
// --config) is a config key with its own variable, so flags added later
// are configurable with no further work.
func TestEveryFlagIsAKey(t *testing.T) {
	root := newRoot()
	keys, err := config.Keys(root)
	if err != nil {
		t.Fatal(err)
	}
	have := map[*pflag.Flag]bool{}
	for _, k := range keys {
		have[k.Flag] = true
	}
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Name() == "config" {
			return // config show|reference: about the configuration
		}
		c.LocalFlags().VisitAll(func(f *pflag.Flag) {
			if f.Name != "help" && f.Name != "config" && !have[f] {
				t.Errorf("%s --%s has no config key", c.CommandPath(), f.Name)
			}
		})
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
	if len(keys) < 40 {
		t.Fatalf("only %d keys", len(keys))
	}
}

const (
	refBegin = "<!-- config reference: begin (go test ./cmd/nixipfs -run TestReadmeReference -update) -->\n"
	refEnd   = "<!-- config reference: end -->\n"
)

// TestReadmeReference checks that the README's table of keys is the one
// the flag tree gives; -update rewrites it.
func TestReadmeReference(t *testing.T) {
	keys, err := config.Keys(newRoot())
	if err != nil {
		t.Fatal(err)
	}
	var want bytes.Buffer
	if err := config.WriteReference(&want, keys); err != nil {
		t.Fatal(err)
	}
	readme := filepath.Join("..", "..", "docs", "configuration.md")
	b, err := os.ReadFile(readme)
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	i, j := strings.Index(text, refBegin), strings.Index(text, refEnd)
	if i < 0 || j < i {
		t.Fatalf("docs/configuration.md lacks the markers %q and %q", refBegin, refEnd)
	}
	got := text[i+len(refBegin) : j]
	if got == want.String() {
		return
	}
	if *update {
		text = text[:i+len(refBegin)] + want.String() + text[j:]
		if err := os.WriteFile(readme, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Errorf("docs/configuration.md's configuration reference is stale; run go test ./cmd/nixipfs -run TestReadmeReference -update\nwant:\n%s", want.String())
}
