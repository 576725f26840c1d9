package builder

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	coreiface "github.com/ipfs/kubo/core/coreiface"
	"github.com/nix-community/go-nix/pkg/narinfo/signature"
)

// transport sends and receives the job messages of one network.
type transport struct {
	api     coreiface.CoreAPI
	network string
	self    string // our peer id
	key     *signature.SecretKey
	check   Checker

	mu  sync.Mutex // serialises sends, so seq increases in sending order
	seq int64
}

func newTransport(ctx context.Context, api coreiface.CoreAPI, network string, key *signature.SecretKey) (*transport, error) {
	if network == "" {
		return nil, fmt.Errorf("builds need a network name")
	}
	self, err := api.Key().Self(ctx)
	if err != nil {
		return nil, fmt.Errorf("builds: node identity: %w", err)
	}
	return &transport{api: api, network: network, self: self.ID().String(), key: key, check: Checker{Network: network}}, nil
}

// send fills in the envelope, signs and publishes m.
func (t *transport) send(ctx context.Context, m Message) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	seq := time.Now().UnixNano()
	if seq <= t.seq {
		seq = t.seq + 1
	}
	t.seq = seq
	m.V, m.Network, m.From, m.Seq = Version, t.network, t.self, seq
	if t.key != nil {
		if err := m.Sign(*t.key); err != nil {
			return err
		}
	}
	if err := t.api.PubSub().Publish(ctx, Topic(t.network), m.Encode()); err != nil {
		return fmt.Errorf("send %s for %s: %w", m.Kind, m.Job, err)
	}
	return nil
}

// sendLogged sends m and logs a failure: every message that matters is
// sent again, so one lost send is not an error.
func (t *transport) sendLogged(ctx context.Context, m Message) {
	if err := t.send(ctx, m); err != nil && ctx.Err() == nil {
		slog.Warn("builds: send", "kind", m.Kind, "job", m.Job, "err", err)
	}
}

// listen delivers each checked message from another peer to fn until ctx
// ends. Refused messages are logged and dropped.
func (t *transport) listen(ctx context.Context, fn func(Message)) error {
	sub, err := t.api.PubSub().Subscribe(ctx, Topic(t.network))
	if err != nil {
		return fmt.Errorf("builds: subscribe to network %s: %w", t.network, err)
	}
	defer sub.Close()
	for {
		msg, err := sub.Next(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("builds: network %s: %w", t.network, err)
		}
		from := msg.From().String()
		if from == t.self {
			continue
		}
		m, err := t.check.Check(from, msg.Data(), time.Now())
		if err != nil {
			slog.Warn("builds: message rejected", "from", from, "err", err)
			continue
		}
		fn(m)
	}
}
