package nixstore

import (
	"bytes"
	"container/heap"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/nix-community/go-nix/pkg/nixbase32"
	"github.com/nix-community/go-nix/pkg/nixhash"
)

// PathInfo is what the store knows about one valid store path: the fields of
// a narinfo that do not depend on how the NAR is compressed.
type PathInfo struct {
	Path       string   // full store path
	NarHash    string   // "sha256:<nixbase32>", the form narinfo files and signatures use
	NarSize    uint64   // size of the uncompressed NAR
	References []string // full store paths, sorted; may include Path itself
	Deriver    string   // full store path of the .drv, or "" if unknown
	Signatures []string // "keyname:base64", as in narinfo Sig lines
	CA         string   // content address ("fixed:r:sha256:…", "text:sha256:…"), or ""
}

// Fingerprint returns the string Nix signs for this path
// ("1;path;narHash;narSize;ref1,ref2,…"), to check or make Signatures.
func (p PathInfo) Fingerprint() string {
	return fmt.Sprintf("1;%s;%s;%d;%s", p.Path, p.NarHash, p.NarSize, strings.Join(p.References, ","))
}

// maxBatch bounds the paths per command line; `nix path-info` in Nix 2.8
// has no --stdin, and closures can have tens of thousands of paths.
const maxBatch = 1000

// PathInfos returns the infos of the given paths, in the same order. Paths
// may be anything Resolve accepts (store paths, symlinks to them such as
// ./result). A .drv path is described itself, not its outputs. A path that
// is not valid in the store is an error wrapping ErrInvalidPath.
func (s *Store) PathInfos(ctx context.Context, paths ...string) ([]PathInfo, error) {
	resolved, err := s.resolveAll(ctx, paths)
	if err != nil {
		return nil, err
	}
	infos, err := s.query(ctx, uniq(resolved), false)
	if err != nil {
		return nil, err
	}
	out := make([]PathInfo, len(resolved))
	for i, p := range resolved {
		info, ok := infos[p]
		if !ok {
			return nil, fmt.Errorf("nix path-info %s: no info in Nix's answer", p)
		}
		out[i] = info
	}
	return out, nil
}

// Closure returns the infos of the closure of paths (the paths and,
// recursively, everything they reference), dependencies before the paths
// that reference them. Among paths whose dependencies are all listed, the
// smallest path comes first, so the order is deterministic. The closure of a
// .drv is its build-time closure (input .drv files and sources). Invalid
// paths are reported as by PathInfos.
func (s *Store) Closure(ctx context.Context, paths ...string) ([]PathInfo, error) {
	resolved, err := s.resolveAll(ctx, paths)
	if err != nil {
		return nil, err
	}
	roots := uniq(resolved)
	infos, err := s.query(ctx, roots, true)
	if err != nil {
		return nil, err
	}
	return topoSort(infos)
}

func (s *Store) resolveAll(ctx context.Context, paths []string) ([]string, error) {
	out := make([]string, len(paths))
	for i, p := range paths {
		r, err := s.Resolve(ctx, p)
		if err != nil {
			return nil, err
		}
		out[i] = r
	}
	return out, nil
}

// query runs `nix path-info --json` on store paths, in batches.
//
// `nix` reads an argument naming a .drv as "the outputs of this derivation"
// (and would report, or with other commands build, those instead). The flag
// --derivation turns that off for .drv paths, but it also turns any other
// path into its deriver. So .drv paths and other paths are asked separately,
// the former with --derivation; both are then taken literally.
func (s *Store) query(ctx context.Context, paths []string, recursive bool) (map[string]PathInfo, error) {
	var drvs, others []string
	for _, p := range paths {
		if strings.HasSuffix(p, ".drv") {
			drvs = append(drvs, p)
		} else {
			others = append(others, p)
		}
	}
	infos := make(map[string]PathInfo, len(paths))
	for _, group := range []struct {
		paths []string
		flags []string
	}{{others, nil}, {drvs, []string{"--derivation"}}} {
		for batch := range slices.Chunk(group.paths, maxBatch) {
			// Check validity first. For an invalid path `nix path-info`
			// asks every configured substituter about it (seconds of
			// retries without network), and with --recursive or
			// --derivation it fails without saying "valid": false.
			invalid, err := s.invalid(ctx, batch)
			if err != nil {
				return nil, err
			}
			if len(invalid) > 0 {
				return nil, s.invalidError(invalid)
			}
			args := append([]string{"path-info", "--json"}, group.flags...)
			if recursive {
				args = append(args, "--recursive")
			}
			what := "nix path-info " + describe(batch)
			out, err := s.run(ctx, what, "nix", append(append(args, "--"), batch...)...)
			if err != nil {
				return nil, err
			}
			got, err := parsePathInfos(out)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", what, err)
			}
			for _, info := range got {
				if info.invalid { // deleted since the check
					return nil, s.invalidError([]string{info.Path})
				}
				infos[info.Path] = info.PathInfo
			}
		}
	}
	return infos, nil
}

// invalid returns those of paths (store paths) that are not valid.
// nix-store takes them literally, .drv or not.
func (s *Store) invalid(ctx context.Context, paths []string) ([]string, error) {
	what := "nix-store --check-validity " + describe(paths)
	out, err := s.run(ctx, what, "nix-store", append([]string{"--check-validity", "--print-invalid", "--"}, paths...)...)
	if err != nil {
		return nil, err
	}
	return strings.Fields(string(out)), nil
}

func (s *Store) invalidError(paths []string) error {
	// E.g. "/nix/store/…-foo: path not valid in store /tmp/s".
	return fmt.Errorf("%s: %w in %s", describe(paths), ErrInvalidPath, s)
}

// parsedInfo is a PathInfo plus whether Nix reported the path as invalid.
type parsedInfo struct {
	PathInfo
	invalid bool
}

// jsonPathInfo is one entry of `nix path-info --json` as Nix 2.8 prints it:
//
//	[{"path":"/nix/store/…-top","narHash":"sha256-<base64>","narSize":688,
//	  "references":["/nix/store/…-dep"],"deriver":"/nix/store/…-top.drv",
//	  "registrationTime":1700000000,"ultimate":true,"signatures":["k:…"],
//	  "ca":"fixed:r:sha256:…"}]
//
// deriver, signatures, ca and ultimate are left out when empty/false, and an
// invalid path is {"path":"…","valid":false} (with exit status 0).
type jsonPathInfo struct {
	Path       string   `json:"path"`
	Valid      *bool    `json:"valid"`
	NarHash    string   `json:"narHash"`
	NarSize    uint64   `json:"narSize"`
	References []string `json:"references"`
	Deriver    string   `json:"deriver"`
	Signatures []string `json:"signatures"`
	CA         string   `json:"ca"`
}

// parsePathInfos decodes `nix path-info --json` output. Besides Nix 2.8's
// array it accepts the object keyed by path (null for invalid paths) that
// newer Nix versions print, so an upgrade does not break us silently.
func parsePathInfos(data []byte) ([]parsedInfo, error) {
	var list []jsonPathInfo
	switch trimmed := bytes.TrimSpace(data); {
	case bytes.HasPrefix(trimmed, []byte("[")):
		if err := json.Unmarshal(trimmed, &list); err != nil {
			return nil, fmt.Errorf("decode path-info JSON: %w", err)
		}
	case bytes.HasPrefix(trimmed, []byte("{")):
		var m map[string]*jsonPathInfo
		if err := json.Unmarshal(trimmed, &m); err != nil {
			return nil, fmt.Errorf("decode path-info JSON: %w", err)
		}
		for p, j := range m {
			if j == nil {
				invalid := false
				j = &jsonPathInfo{Valid: &invalid}
			}
			j.Path = p
			list = append(list, *j)
		}
	default:
		return nil, fmt.Errorf("decode path-info JSON: unexpected output %.100q", trimmed)
	}

	out := make([]parsedInfo, 0, len(list))
	for _, j := range list {
		if j.Path == "" {
			return nil, errors.New("decode path-info JSON: entry without path")
		}
		if j.Valid != nil && !*j.Valid {
			out = append(out, parsedInfo{PathInfo: PathInfo{Path: j.Path}, invalid: true})
			continue
		}
		narHash, err := normaliseHash(j.NarHash)
		if err != nil {
			return nil, fmt.Errorf("path-info of %s: narHash: %w", j.Path, err)
		}
		refs := slices.Clone(j.References)
		slices.Sort(refs)
		out = append(out, parsedInfo{PathInfo: PathInfo{
			Path:       j.Path,
			NarHash:    narHash,
			NarSize:    j.NarSize,
			References: refs,
			Deriver:    j.Deriver,
			Signatures: j.Signatures,
			CA:         j.CA,
		}})
	}
	return out, nil
}

// normaliseHash turns any hash form Nix prints (SRI "sha256-<base64>", as
// Nix 2.8's path-info does, or "sha256:<base16|nixbase32|base64>") into
// "sha256:<nixbase32>", the form of narinfo NarHash and of fingerprints.
func normaliseHash(s string) (string, error) {
	h, err := nixhash.ParseAny(s, nil)
	if err != nil {
		return "", fmt.Errorf("parse %q: %w", s, err)
	}
	return h.Algo().String() + ":" + nixbase32.EncodeToString(h.Digest()), nil
}

// topoSort orders a closure dependencies first, smallest path first among
// the ready ones (Kahn's algorithm with a min-heap). Self-references are
// ignored; any other cycle, or a reference outside the set, is an error.
func topoSort(infos map[string]PathInfo) ([]PathInfo, error) {
	pending := make(map[string]int, len(infos)) // unlisted dependencies
	dependents := make(map[string][]string, len(infos))
	ready := &stringHeap{}
	for p, info := range infos {
		for _, r := range info.References {
			if r == p {
				continue
			}
			if _, ok := infos[r]; !ok {
				return nil, fmt.Errorf("closure incomplete: %s references %s, which Nix did not list", p, r)
			}
			pending[p]++
			dependents[r] = append(dependents[r], p)
		}
		if pending[p] == 0 {
			*ready = append(*ready, p)
		}
	}
	heap.Init(ready)
	out := make([]PathInfo, 0, len(infos))
	for ready.Len() > 0 {
		p := heap.Pop(ready).(string)
		out = append(out, infos[p])
		for _, d := range dependents[p] {
			if pending[d]--; pending[d] == 0 {
				heap.Push(ready, d)
			}
		}
	}
	if len(out) != len(infos) {
		var stuck []string
		for p, n := range pending {
			if n > 0 {
				stuck = append(stuck, p)
			}
		}
		slices.Sort(stuck)
		return nil, fmt.Errorf("closure has a reference cycle among %s", describe(stuck))
	}
	return out, nil
}

type stringHeap []string

func (h stringHeap) Len() int           { return len(h) }
func (h stringHeap) Less(i, j int) bool { return h[i] < h[j] }
func (h stringHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *stringHeap) Push(x any)        { *h = append(*h, x.(string)) }
func (h *stringHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

func uniq(paths []string) []string {
	out := slices.Clone(paths)
	slices.Sort(out)
	return slices.Compact(out)
}
