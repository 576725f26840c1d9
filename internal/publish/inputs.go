package publish

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/ipfs/go-cid"

	"github.com/nixipfs/nixipfs/manifests"
)

// Input is one fixed-output source CacheInputs handled.
type Input struct {
	Derivation string `json:"derivation"`
	Output     string `json:"output"`
	Hash       string `json:"hash"`     // <algo>:<hex>, "r:" first for recursive
	Realised   bool   `json:"realised"` // fetched by Nix now, not found in the store
	Published  Result `json:"published"`
}

// CacheInputs makes sure every fixed-output derivation in the closure of the
// given derivations (or of the derivations of the given output paths) is in
// IPFS: an output already in the local store is published from it; a
// missing one is first realised by Nix, which downloads and checks it. Flat
// outputs are also recorded as mirrored files under their hash (so the
// hashed-mirror endpoints serve them); every output is a published store
// path, so a builder using this node's gateway as a substituter fetches it
// with no network.
func (p *Publisher) CacheInputs(ctx context.Context, args ...string) ([]Input, error) {
	var drvs []string
	for _, a := range args {
		rp, err := p.Store.Resolve(ctx, a)
		if err != nil {
			return nil, fmt.Errorf("cache-inputs: %w", err)
		}
		if !strings.HasSuffix(rp, ".drv") {
			d, err := p.Store.Deriver(ctx, rp)
			if err != nil {
				return nil, fmt.Errorf("cache-inputs: %w", err)
			}
			if d == "" {
				return nil, fmt.Errorf("cache-inputs: %s has no known deriver; pass its .drv", rp)
			}
			rp = d
		}
		drvs = append(drvs, rp)
	}
	all, err := p.Store.Derivations(ctx, drvs...)
	if err != nil {
		return nil, fmt.Errorf("cache-inputs: %w", err)
	}
	var inputs []Input
	for path, d := range all {
		for _, o := range d.Outputs {
			algo, rec, digest, ok := o.Fixed()
			if !ok {
				continue
			}
			h := algo + ":" + fmt.Sprintf("%x", digest)
			if rec {
				h = "r:" + h
			}
			inputs = append(inputs, Input{Derivation: path, Output: o.Path, Hash: h})
		}
	}
	slices.SortFunc(inputs, func(a, b Input) int { return strings.Compare(a.Output, b.Output) })
	if len(inputs) == 0 {
		return nil, nil
	}

	var outs []string
	for i := range inputs {
		valid, err := p.Store.Valid(ctx, inputs[i].Output)
		if err != nil {
			return nil, fmt.Errorf("cache-inputs: %w", err)
		}
		if !valid {
			if _, err := p.Store.Realise(ctx, inputs[i].Derivation); err != nil {
				return nil, fmt.Errorf("cache-inputs: fetch %s: %w", inputs[i].Output, err)
			}
			inputs[i].Realised = true
		}
		outs = append(outs, inputs[i].Output)
	}
	results, err := p.Publish(ctx, outs...)
	if err != nil {
		return nil, fmt.Errorf("cache-inputs: %w", err)
	}
	byPath := map[string]Result{}
	for _, r := range results {
		byPath[r.StorePath] = r
	}
	sources := map[string]cid.Cid{}
	for i := range inputs {
		inputs[i].Published = byPath[inputs[i].Output]
		d := all[inputs[i].Derivation]
		for _, o := range d.Outputs {
			if algo, rec, digest, ok := o.Fixed(); ok && !rec && o.Path == inputs[i].Output {
				// A flat output's NAR holds just the file: its DAG root is
				// the file's UnixFS CID, the same as mirror-tarballs records.
				sources[manifests.KeySource(algo, digest)] = inputs[i].Published.Root
			}
		}
	}
	if len(sources) > 0 {
		if _, err := p.Manifest.Update(ctx, sources, nil); err != nil {
			return inputs, fmt.Errorf("cache-inputs: %w", err)
		}
		if _, err := p.Manifest.Publish(ctx); err != nil {
			return inputs, fmt.Errorf("cache-inputs: %w", err)
		}
	}
	return inputs, nil
}
