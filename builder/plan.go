package builder

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nixipfs/nixipfs/internal/nixstore"
)

// Plan is what a build request needs: the jobs to queue, and the paths to
// publish first so that builders can fetch them (the .drv closures, and the
// outputs of input derivations the local store already has).
type Plan struct {
	Jobs    []*Job
	Publish []string
	// Ready are requested derivations whose outputs are all valid already.
	Ready []string
}

// MakePlan works out which derivations of the graphs of drvs must be built:
// a derivation is built when one of its outputs is missing from store and it
// is requested or an input of a derivation that is built. The outputs of the
// other inputs are published instead.
func MakePlan(ctx context.Context, store *nixstore.Store, drvs []string) (*Plan, error) {
	derivs, err := store.Derivations(ctx, drvs...)
	if err != nil {
		return nil, fmt.Errorf("plan build: %w", err)
	}
	var outs []string
	for _, d := range derivs {
		outs = append(outs, d.OutputPaths()...)
	}
	invalid, err := store.Invalid(ctx, outs)
	if err != nil {
		return nil, fmt.Errorf("plan build: %w", err)
	}
	missing := map[string]bool{}
	for _, p := range invalid {
		missing[p] = true
	}
	needs := func(d nixstore.Derivation) bool {
		return slices.ContainsFunc(d.OutputPaths(), func(p string) bool { return missing[p] })
	}

	plan := &Plan{Publish: slices.Clone(drvs)}
	jobs := map[string]*Job{}
	now := time.Now().UTC()
	var visit func(drv string, requested bool) error
	visit = func(drv string, requested bool) error {
		if j, ok := jobs[drv]; ok {
			j.Requested = j.Requested || requested
			return nil
		}
		d, ok := derivs[drv]
		if !ok {
			return fmt.Errorf("plan build: nix show-derivation did not describe %s", drv)
		}
		j := &Job{Drv: drv, System: d.System, Features: d.RequiredFeatures(), Outputs: d.OutputPaths(),
			Requested: requested, State: Waiting, Queued: now, Updated: now}
		jobs[drv] = j
		j.Inputs = append(j.Inputs, d.InputSrcs...)
		inputs := make([]string, 0, len(d.InputDrvs))
		for in := range d.InputDrvs {
			inputs = append(inputs, in)
		}
		slices.Sort(inputs)
		for _, in := range inputs {
			id, ok := derivs[in]
			if !ok {
				return fmt.Errorf("plan build: nix show-derivation did not describe %s", in)
			}
			for _, name := range d.InputDrvs[in] {
				if o, ok := id.Outputs[name]; ok {
					j.Inputs = append(j.Inputs, o.Path)
				}
			}
			if needs(id) {
				j.Deps = append(j.Deps, in)
				if err := visit(in, false); err != nil {
					return err
				}
				continue
			}
			for _, name := range d.InputDrvs[in] {
				if o, ok := id.Outputs[name]; ok {
					plan.Publish = append(plan.Publish, o.Path)
				}
			}
		}
		return nil
	}
	for _, drv := range drvs {
		d, ok := derivs[drv]
		if !ok {
			return nil, fmt.Errorf("plan build: %s is not a derivation", drv)
		}
		if !needs(d) {
			plan.Ready = append(plan.Ready, drv)
			continue
		}
		if err := visit(drv, true); err != nil {
			return nil, err
		}
	}
	for _, j := range jobs {
		slices.Sort(j.Inputs)
		j.Inputs = slices.Compact(j.Inputs)
		plan.Jobs = append(plan.Jobs, j)
	}
	slices.SortFunc(plan.Jobs, func(a, b *Job) int { return strings.Compare(a.Drv, b.Drv) })
	slices.Sort(plan.Publish)
	plan.Publish = slices.Compact(plan.Publish)
	return plan, nil
}
