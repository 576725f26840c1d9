package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestBadFlagsChangeNothing: a bad value is refused naming the flag, before
// anything is created in the data dir.
func TestBadFlagsChangeNothing(t *testing.T) {
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	tokens := t.TempDir()
	open := filepath.Join(tokens, "open")
	short := filepath.Join(tokens, "short")
	for f, mode := range map[string]os.FileMode{open: 0o644, short: 0o600} {
		body := "a-long-enough-token-0123456789"
		if f == short {
			body = "short"
		}
		if err := os.WriteFile(f, []byte(body), mode); err != nil {
			t.Fatal(err)
		}
	}
	key := "k:" + strings.Repeat("A", 43) + "="
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"daemon", "--nar-cache-mb", "-1"}, "--nar-cache-mb=-1"},
		{[]string{"daemon", "--prerender", "-1"}, "--prerender=-1"},
		{[]string{"daemon", "--prerender", "64", "--nar-cache-mb", "0"}, "needs --nar-cache-mb above 0"},
		{[]string{"daemon", "--watch-store=sometimes"}, "--watch-store=sometimes"},
		{[]string{"daemon", "--trusted-key", "nonsense"}, "--trusted-key"},
		{[]string{"daemon", "--upload-token-file", short}, "needs --trusted-key"},
		{[]string{"daemon", "--upload-token-file", open, "--trusted-key", key}, "chmod 600"},
		{[]string{"daemon", "--upload-token-file", short, "--trusted-key", key}, "at least 16 characters"},
		{[]string{"daemon", "--upload-token-file", filepath.Join(tokens, "missing"), "--trusted-key", key}, "upload token"},
		{[]string{"builder", "--network", "n"}, "--sign-key is required"},
		{[]string{"builder", "--sign-key", "k"}, "--network is required"},
		{[]string{"build", "/nix/store/0c4lyy5ds26hl3ic84crvck6al33xh3a-a.drv"}, "--network is required"},
		{[]string{"build", "--network", "n", "/tmp/x.drv"}, "not a .drv store path"},
		{[]string{"build", "--network", "n", "--trusted-builder-key", "bad"}, "--trusted-builder-key"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "data")
			root := newRoot()
			root.SetArgs(append([]string{"--data-dir", dir}, tt.args...))
			root.SetOut(&strings.Builder{})
			root.SetErr(&strings.Builder{})
			err := root.ExecuteContext(context.Background())
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error containing %q", err, tt.want)
			}
			if _, err := os.Stat(dir); !os.IsNotExist(err) {
				t.Fatalf("the data dir was created (%v)", err)
			}
		})
	}
}
