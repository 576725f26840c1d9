package ipfsnode

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/ipfs/boxo/path"
	pin "github.com/ipfs/boxo/pinning/pinner"
	"github.com/ipfs/go-cid"
	"github.com/ipfs/kubo/core/coreiface/options"
)

// pinArgsPerRequest bounds the CIDs of one pin/add RPC request: they travel
// in its URL.
const pinArgsPerRequest = 256

// autosyncer is boxo's dspinner: by default it syncs the datastore after
// every pin and unpin, two or three fsyncs per CID through kubo's pin API.
type autosyncer interface {
	SetAutosync(bool) bool
}

// batchPins runs f with the embedded pinner's autosync off and flushes once
// after it, so that f's pins cost one sync in all. Every other writer of pins
// (kubo's pin API, PinWritten, imports) flushes by itself, so nothing relies
// on autosync while it is off.
func (n *Node) batchPins(ctx context.Context, f func(pin.Pinner) error) error {
	p := n.embedded.Pinning
	if a, ok := p.(autosyncer); ok {
		// Serialised, so that concurrent batches restore what they found.
		n.pinBatch.Lock()
		defer n.pinBatch.Unlock()
		prev := a.SetAutosync(false)
		defer a.SetAutosync(prev)
	}
	ferr := f(p)
	if err := p.Flush(ctx); err != nil {
		return errors.Join(ferr, fmt.Errorf("flush pins: %w", err))
	}
	return ferr
}

// PinDirect pins each of cids directly (not what it links), all in one
// flush: when it returns nil the pins, and the blocks written before them,
// are durable. As for PinWritten, the embedded node does not read the blocks
// back, so hold PinLock from before they were written (or checked present)
// until it returns. An external node pins them in a few requests.
func (n *Node) PinDirect(ctx context.Context, cids []cid.Cid) error {
	if len(cids) == 0 {
		return nil
	}
	if n.embedded == nil {
		for start := 0; start < len(cids); start += pinArgsPerRequest {
			chunk := cids[start:min(start+pinArgsPerRequest, len(cids))]
			args := make([]string, len(chunk))
			for i, c := range chunk {
				args[i] = c.String()
			}
			if err := n.rpc.Request("pin/add", args...).Option("recursive", false).Exec(ctx, nil); err != nil {
				return fmt.Errorf("pin %d blocks: %w", len(cids), err)
			}
		}
		return nil
	}
	err := n.batchPins(ctx, func(p pin.Pinner) error {
		for _, c := range cids {
			if err := p.PinWithMode(ctx, c, pin.Direct, ""); err != nil {
				return fmt.Errorf("pin %s: %w", c, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("pin %d blocks: %w", len(cids), err)
	}
	return nil
}

// Unpin removes the pins of cids (recursive pins too when recursive is
// set), with one flush on the embedded node. A CID that is not pinned, or
// fails to unpin, is logged and skipped: what is left is an extra pin, never
// a missing one. It returns how many were unpinned.
func (n *Node) Unpin(ctx context.Context, cids []cid.Cid, recursive bool) (int, error) {
	if len(cids) == 0 {
		return 0, nil
	}
	done := 0
	skip := func(c cid.Cid, err error) {
		slog.Debug("unpin", "cid", c, "err", err)
	}
	if n.embedded == nil {
		for _, c := range cids {
			if err := n.API.Pin().Rm(ctx, path.FromCid(c), options.Pin.RmRecursive(recursive)); err != nil {
				skip(c, err)
				continue
			}
			done++
		}
		return done, nil
	}
	defer n.PinLock(ctx)() // as kubo's pin rm: GC must not see a half-flushed pin set
	err := n.batchPins(ctx, func(p pin.Pinner) error {
		for _, c := range cids {
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := p.Unpin(ctx, c, recursive); err != nil {
				skip(c, err)
				continue
			}
			done++
		}
		return nil
	})
	if err != nil {
		return done, fmt.Errorf("unpin %d blocks: %w", len(cids), err)
	}
	return done, nil
}
