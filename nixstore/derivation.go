package nixstore

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
)

// Derivation is what `nix show-derivation` says of a .drv.
type Derivation struct {
	Path      string              `json:"-"`
	Outputs   map[string]Output   `json:"outputs"`
	InputDrvs map[string][]string `json:"inputDrvs"`
	Builder   string              `json:"builder"`
	Env       map[string]string   `json:"env"`
}

// Output is one output of a derivation; Hash and HashAlgo are set for
// fixed-output derivations.
type Output struct {
	Path     string `json:"path"`
	HashAlgo string `json:"hashAlgo"` // "sha256" (flat) or "r:sha256" (recursive)
	Hash     string `json:"hash"`     // base16
}

// Fixed reports a fixed-output's hash: algorithm, whether it is recursive
// (a NAR hash) or flat (the file's), and the digest.
func (o Output) Fixed() (algo string, recursive bool, digest []byte, ok bool) {
	if o.HashAlgo == "" || o.Hash == "" {
		return "", false, nil, false
	}
	algo, recursive = strings.CutPrefix(o.HashAlgo, "r:")
	d, err := hex.DecodeString(o.Hash)
	if err != nil {
		return "", false, nil, false
	}
	return algo, recursive, d, true
}

// Derivations returns the derivations of the given .drv paths and of
// everything they depend on (`nix show-derivation --recursive`).
func (s *Store) Derivations(ctx context.Context, drvs ...string) (map[string]Derivation, error) {
	if len(drvs) == 0 {
		return map[string]Derivation{}, nil
	}
	out, err := s.run(ctx, "nix show-derivation "+describe(drvs), "nix", append([]string{"show-derivation", "--recursive"}, drvs...)...)
	if err != nil {
		return nil, err
	}
	var m map[string]Derivation
	if err := json.Unmarshal(out, &m); err != nil {
		return nil, fmt.Errorf("nix show-derivation %s: %w", describe(drvs), err)
	}
	for p, d := range m {
		d.Path = p
		m[p] = d
	}
	return m, nil
}

// Deriver returns the .drv that produced path, or "" if unknown.
func (s *Store) Deriver(ctx context.Context, path string) (string, error) {
	infos, err := s.PathInfos(ctx, path)
	if err != nil {
		return "", err
	}
	return infos[0].Deriver, nil
}
