package daemon

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"time"

	"github.com/nixipfs/nixipfs/gateway/upload"
	"github.com/nixipfs/nixipfs/internal/nixstore"
	"github.com/nixipfs/nixipfs/internal/publish"
	"github.com/nixipfs/nixipfs/ipldnar"
	"github.com/nixipfs/nixipfs/manifests"
)

// uploadStore puts the gateway's uploads through the publisher.
type uploadStore struct {
	pub    *publish.Publisher
	lookup func(ctx context.Context, hashPart string) (*manifests.PathInfo, error)
}

func (s uploadStore) Import(ctx context.Context, nar io.Reader) (upload.Pending, error) {
	u, err := s.pub.ImportUpload(ctx, nar)
	if err != nil {
		return nil, err
	}
	return uploadPending{u: u, lookup: s.lookup}, nil
}

type uploadPending struct {
	u      *publish.Upload
	lookup func(ctx context.Context, hashPart string) (*manifests.PathInfo, error)
}

func (p uploadPending) Result() ipldnar.Result { return p.u.Result }
func (p uploadPending) Discard()               { p.u.Discard() }

func (p uploadPending) Record(ctx context.Context, ni nixstore.PathInfo) error {
	_, err := p.u.Record(ctx, ni, p.lookup)
	var inv *publish.InvalidUploadError
	if errors.As(err, &inv) {
		return upload.Rejected(err)
	}
	return err
}

// publisher republishes the manifest on IPNS after changes, at most once
// per quiet period: uploads record one path per request, and one IPNS
// record per `nix copy` is enough.
type publisher struct {
	kick chan struct{}
}

func newPublisher() *publisher { return &publisher{kick: make(chan struct{}, 1)} }

// soon asks for a publish after the current burst of changes.
func (p *publisher) soon() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// run publishes with publish once no change came for quiet, or at the
// latest after most since the first of a burst.
func (p *publisher) run(ctx context.Context, quiet, most time.Duration, publish func(context.Context) (string, error)) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.kick:
		}
		deadline := time.NewTimer(most)
		idle := time.NewTimer(quiet)
	burst:
		for {
			select {
			case <-ctx.Done():
				deadline.Stop()
				idle.Stop()
				return
			case <-p.kick:
				idle.Reset(quiet)
			case <-idle.C:
				break burst
			case <-deadline.C:
				break burst
			}
		}
		deadline.Stop()
		idle.Stop()
		if name, err := publish(ctx); err != nil {
			slog.Warn("publish manifest after uploads", "err", err)
		} else {
			slog.Info("manifest published", "ipns", name)
		}
	}
}
