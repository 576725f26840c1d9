package secretfile

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRead(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		mode os.FileMode
		ok   bool
	}{{0o600, true}, {0o400, true}, {0o640, false}, {0o604, false}, {0o644, false}} {
		name := filepath.Join(dir, c.mode.String())
		if err := os.WriteFile(name, []byte("s3cret"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(name, c.mode); err != nil {
			t.Fatal(err)
		}
		b, err := Read(name)
		switch {
		case c.ok && (err != nil || string(b) != "s3cret"):
			t.Errorf("mode %v: %q, %v", c.mode, b, err)
		case !c.ok && (err == nil || !strings.Contains(err.Error(), "chmod 600")):
			t.Errorf("mode %v: read anyway (%v)", c.mode, err)
		}
	}
	if _, err := Read(filepath.Join(dir, "missing")); err == nil {
		t.Error("a missing file was read")
	}
}
