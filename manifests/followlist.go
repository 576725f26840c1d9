package manifests

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/ipfs/boxo/ipns"

	"github.com/nixipfs/nixipfs/internal/atomicfile"
)

// The follow list is the set of IPNS names `nixipfs follow add` recorded in
// the data dir; the daemon re-reads it while running.

func followFile(dataDir string) string { return filepath.Join(dataDir, "follow.json") }

// ParseName checks an IPNS name (k51…, or /ipns/k51…) and returns it bare.
func ParseName(s string) (string, error) {
	n, err := ipns.NameFromString(strings.TrimPrefix(strings.TrimSpace(s), "/ipns/"))
	if err != nil {
		return "", fmt.Errorf("IPNS name %q: %w", s, err)
	}
	return n.String(), nil
}

// ReadFollowList returns the recorded names, in the order they were added.
func ReadFollowList(dataDir string) ([]string, error) {
	return readJSONFile[[]string](followFile(dataDir), "follow list")
}

// readJSONFile decodes the JSON in file (what it holds, for errors); a
// missing file is T's zero value.
func readJSONFile[T any](file, what string) (T, error) {
	var v T
	b, err := os.ReadFile(file)
	if errors.Is(err, fs.ErrNotExist) {
		return v, nil
	}
	if err != nil {
		return v, fmt.Errorf("read %s: %w", what, err)
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return v, fmt.Errorf("%s %s: %w", what, file, err)
	}
	return v, nil
}

// EditFollowList adds or removes a name; it reports whether the list changed.
func EditFollowList(dataDir, name string, add bool) (bool, error) {
	name, err := ParseName(name)
	if err != nil {
		return false, err
	}
	names, err := ReadFollowList(dataDir)
	if err != nil {
		return false, err
	}
	i := slices.Index(names, name)
	switch {
	case add && i < 0:
		names = append(names, name)
	case !add && i >= 0:
		names = slices.Delete(names, i, i+1)
	default:
		return false, nil
	}
	b, _ := json.MarshalIndent(names, "", "  ")
	return true, atomicfile.WriteFile(followFile(dataDir), append(b, '\n'), 0o600)
}
