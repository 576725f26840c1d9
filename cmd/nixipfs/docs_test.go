package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Every command's help ends with the manual page that explains it, and that
// page exists.
func TestHelpNamesDocs(t *testing.T) {
	root := newRoot()
	seen := map[string]bool{}
	for _, c := range root.Commands() {
		page, ok := docPages[c.Name()]
		if !ok {
			continue
		}
		seen[c.Name()] = true
		if !strings.HasSuffix(c.Long, "More: "+page+" in the nixipfs source.") {
			t.Errorf("%s --help does not end with its page %s", c.Name(), page)
		}
		for _, f := range strings.Fields(page) {
			if !strings.HasPrefix(f, "docs/") {
				continue
			}
			if _, err := os.Stat(filepath.Join("..", "..", f)); err != nil {
				t.Errorf("%s --help names %s: %v", c.Name(), f, err)
			}
		}
	}
	for name := range docPages {
		if !seen[name] {
			t.Errorf("docPages names %q, which is no command", name)
		}
	}
}
