package nixstore

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
)

// Derivation is what `nix show-derivation` says of a .drv.
type Derivation struct {
	Path      string              `json:"-"`
	Outputs   map[string]Output   `json:"outputs"`
	InputDrvs map[string][]string `json:"inputDrvs"`
	InputSrcs []string            `json:"inputSrcs"`
	System    string              `json:"system"`
	Builder   string              `json:"builder"`
	Env       map[string]string   `json:"env"`
}

// UnmarshalJSON reads a derivation as Nix 2.8 prints it and as newer Nix
// (2.26 among them) does, where inputDrvs maps each .drv to
// {"outputs": [...], "dynamicOutputs": {}} rather than to its outputs.
func (d *Derivation) UnmarshalJSON(b []byte) error {
	type plain Derivation
	var v struct {
		plain
		InputDrvs map[string]json.RawMessage `json:"inputDrvs"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*d = Derivation(v.plain)
	d.InputDrvs = make(map[string][]string, len(v.InputDrvs))
	for drv, raw := range v.InputDrvs {
		var outputs []string
		if err := json.Unmarshal(raw, &outputs); err == nil {
			d.InputDrvs[drv] = outputs
			continue
		}
		var in struct {
			Outputs        []string                   `json:"outputs"`
			DynamicOutputs map[string]json.RawMessage `json:"dynamicOutputs"`
		}
		if err := json.Unmarshal(raw, &in); err != nil {
			return fmt.Errorf("inputDrvs %s: %w", drv, err)
		}
		if len(in.DynamicOutputs) > 0 {
			return fmt.Errorf("inputDrvs %s: dynamic derivation outputs are not supported", drv)
		}
		d.InputDrvs[drv] = in.Outputs
	}
	return nil
}

// RequiredFeatures lists the system features a builder must support to
// build d (requiredSystemFeatures; structured-attrs derivations are not
// read).
func (d Derivation) RequiredFeatures() []string {
	return strings.Fields(d.Env["requiredSystemFeatures"])
}

// OutputPaths lists d's output paths, sorted by output name.
func (d Derivation) OutputPaths() []string {
	names := make([]string, 0, len(d.Outputs))
	for n := range d.Outputs {
		names = append(names, n)
	}
	slices.Sort(names)
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = d.Outputs[n].Path
	}
	return out
}

// Output is one output of a derivation; Hash and HashAlgo are set for
// fixed-output derivations.
type Output struct {
	Path     string `json:"path"`
	HashAlgo string `json:"hashAlgo"` // "sha256" (flat) or "r:sha256" (recursive)
	Hash     string `json:"hash"`     // base16
}

// UnmarshalJSON reads an output as Nix 2.8 prints it (hashAlgo "r:sha256")
// and as newer Nix does (hashAlgo "sha256" with method "nar"), keeping
// HashAlgo in the former form.
func (o *Output) UnmarshalJSON(b []byte) error {
	type plain Output
	var v struct {
		plain
		Method string `json:"method"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*o = Output(v.plain)
	switch v.Method {
	case "", "flat":
	case "nar":
		o.HashAlgo = "r:" + o.HashAlgo
	case "text":
		o.HashAlgo = "text:" + o.HashAlgo
	default:
		return fmt.Errorf("output %s: unknown content-addressing method %q", o.Path, v.Method)
	}
	return nil
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

// TrustedPublicKeys returns Nix's trusted-public-keys setting (the keys a
// path copied from another store must be signed by).
func (s *Store) TrustedPublicKeys(ctx context.Context) ([]string, error) {
	out, err := s.run(ctx, "nix show-config", "nix", "show-config", "--json")
	if err != nil {
		return nil, err
	}
	var cfg map[string]struct {
		Value json.RawMessage `json:"value"`
	}
	if err := json.Unmarshal(out, &cfg); err != nil {
		return nil, fmt.Errorf("nix show-config: %w", err)
	}
	var keys []string
	if v, ok := cfg["trusted-public-keys"]; ok {
		if err := json.Unmarshal(v.Value, &keys); err != nil {
			return nil, fmt.Errorf("nix show-config: trusted-public-keys: %w", err)
		}
	}
	return keys, nil
}

// Dirs returns the real directory holding the store's paths and Nix's
// database directory: /nix/store and /nix/var/nix/db for the default
// store, under the root of a chroot store.
func (s *Store) Dirs() (storeDir, dbDir string) {
	root := s.chrootDir()
	return root + "/nix/store", root + "/nix/var/nix/db"
}
