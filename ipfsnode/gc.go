package ipfsnode

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/ipfs/go-cid"
	"github.com/ipfs/kubo/core/corerepo"
)

// CollectGarbage runs the node's repo garbage collector: every block that no
// pin holds (directly or through a recursive pin) is deleted. It returns how
// many blocks went. Imports in flight are safe: they hold the GC lock
// (PinLock) until their root is pinned. With the pebble datastore the space
// comes back as pebble compacts, not at once.
func (n *Node) CollectGarbage(ctx context.Context) (int, error) {
	if n.embedded != nil {
		removed := 0
		err := corerepo.CollectResult(ctx, corerepo.GarbageCollectAsync(n.embedded, ctx), func(_ cid.Cid) { removed++ })
		if err != nil {
			return removed, fmt.Errorf("repo gc: %w", err)
		}
		return removed, nil
	}
	resp, err := n.rpc.Request("repo/gc").Send(ctx)
	if err != nil {
		return 0, fmt.Errorf("repo gc: %w", err)
	}
	defer resp.Close()
	if resp.Error != nil {
		return 0, fmt.Errorf("repo gc: %w", resp.Error)
	}
	removed := 0
	dec := json.NewDecoder(resp.Output)
	var errs []error
	for {
		var r struct {
			Key   map[string]string
			Error string
		}
		if err := dec.Decode(&r); err == io.EOF {
			break
		} else if err != nil {
			return removed, fmt.Errorf("repo gc: read kubo's answer: %w", err)
		}
		if r.Error != "" {
			errs = append(errs, errors.New(r.Error))
		} else if r.Key != nil {
			removed++
		}
	}
	if len(errs) > 0 {
		return removed, fmt.Errorf("repo gc: %w", errors.Join(errs...))
	}
	return removed, nil
}
