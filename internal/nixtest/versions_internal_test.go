package nixtest

import "testing"

func TestVersionName(t *testing.T) {
	for _, tc := range []struct{ out, name, full string }{
		{"nix (Nix) 2.8.0\n", "nix-2.8", "2.8.0"},
		{"nix-store (Nix) 2.26.3\n", "nix-2.26", "2.26.3"},
		{"nix (Nix) 2.30.0pre20250101_abcdef", "nix-2.30", "2.30.0pre20250101_abcdef"},
	} {
		name, full, err := versionName(tc.out)
		if err != nil || name != tc.name || full != tc.full {
			t.Errorf("versionName(%q) = %q, %q, %v; want %q, %q", tc.out, name, full, err, tc.name, tc.full)
		}
	}
	for _, bad := range []string{"", "nix (Nix)\n", "Lix 2.91.1", "nix (Nix) 2\n"} {
		if name, _, err := versionName(bad); err == nil {
			t.Errorf("versionName(%q) = %q, want an error", bad, name)
		}
	}
}
