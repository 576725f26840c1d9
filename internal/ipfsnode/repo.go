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

// Storage says what the node stores blocks in and how many bytes its repo
// takes on disk. An embedded node names its datastore type (PebbleType,
// "flatfs" in kubo's default layout); an external one says only "external".
func (n *Node) Storage(ctx context.Context) (datastore string, bytes uint64, err error) {
	if n.embedded == nil {
		var st struct{ RepoSize uint64 }
		if err := n.rpc.Request("repo/stat").Option("size-only", true).Exec(ctx, &st); err != nil {
			return "external", 0, fmt.Errorf("repo stat: %w", err)
		}
		return "external", st.RepoSize, nil
	}
	datastore = DatastoreFlatfs
	if cfg, err := n.embedded.Repo.Config(); err == nil && cfg.Datastore.Spec["type"] == PebbleType {
		datastore = PebbleType
	}
	bytes, err = n.embedded.Repo.GetStorageUsage(ctx)
	if err != nil {
		return datastore, 0, fmt.Errorf("repo size: %w", err)
	}
	return datastore, bytes, nil
}
