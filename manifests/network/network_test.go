package network

import (
	"crypto/rand"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/ipfs/boxo/ipns"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

func newPeer(t *testing.T) peer.ID {
	_, pub, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestCheckAnnouncements(t *testing.T) {
	self, alice, mallory := newPeer(t), newPeer(t), newPeer(t)
	now := time.Now()
	var changes [][]string
	n := &Network{name: "t", self: self, opts: Options{Interval: time.Second, Timeout: 10 * time.Second,
		OnChange: func(names []string) { changes = append(changes, names) }},
		peers: map[peer.ID]*Peer{}, lastSeq: map[peer.ID]int64{}}
	msg := func(a Announcement) []byte { b, _ := json.Marshal(a); return b }
	good := Announcement{V: 1, Network: "t", Name: ipns.NameFromPeer(alice).String(), Seq: now.UnixNano(), Paths: 3}

	n.receive(alice, msg(good), now)
	if ps := n.Peers(); len(ps) != 1 || ps[0].Paths != 3 || len(changes) != 1 {
		t.Fatalf("good announcement: peers %+v, changes %v", ps, changes)
	}
	for name, c := range map[string]struct {
		from peer.ID
		data []byte
		want string
	}{
		"replayed":      {alice, msg(good), "replayed"},
		"forged":        {mallory, msg(good), "forged"},
		"oversized":     {alice, []byte(`{"v":1,"pad":"` + strings.Repeat("x", MaxMessage) + `"}`), "limit"},
		"stale":         {alice, msg(Announcement{V: 1, Network: "t", Name: good.Name, Seq: now.Add(-time.Hour).UnixNano()}), "stale"},
		"future":        {alice, msg(Announcement{V: 1, Network: "t", Name: good.Name, Seq: now.Add(time.Hour).UnixNano()}), "stale"},
		"other network": {alice, msg(Announcement{V: 1, Network: "u", Name: good.Name, Seq: now.UnixNano() + 1}), "network"},
		"bad version":   {alice, msg(Announcement{V: 2, Network: "t", Name: good.Name, Seq: now.UnixNano() + 1}), "version"},
		"malformed":     {alice, []byte("{"), "malformed"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := n.check(c.from, c.data, now)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("check: %v, want an error about %q", err, c.want)
			}
		})
	}
	if ps := n.Peers(); len(ps) != 1 || ps[0].Name != good.Name {
		t.Fatalf("ignored announcements changed the peers: %+v", ps)
	}
	// A newer announcement is taken; silence past the timeout drops the peer.
	next := good
	next.Seq, next.Paths = good.Seq+1, 4
	n.receive(alice, msg(next), now)
	if n.Peers()[0].Paths != 4 {
		t.Fatal("newer announcement not taken")
	}
	n.expire(now.Add(11 * time.Second))
	if len(n.Peers()) != 0 || len(changes) != 2 || len(changes[1]) != 0 {
		t.Fatalf("after timeout: peers %+v, changes %v", n.Peers(), changes)
	}
}

func TestTopic(t *testing.T) {
	if Topic("a") == Topic("b") || !strings.HasPrefix(Topic("a"), "/nixipfs/net/1/") {
		t.Fatal("topics")
	}
}
