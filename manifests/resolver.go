package manifests

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/ipfs/go-cid"
	coreiface "github.com/ipfs/kubo/core/coreiface"
	"github.com/ipfs/kubo/core/coreiface/options"
	"github.com/nix-community/go-nix/pkg/narinfo/signature"

	lru "github.com/hashicorp/golang-lru/v2"
)

// Resolver answers narinfo lookups from this node's own manifest, then the
// followed ones, in order. It reads only local blocks (an offline view of
// the node): a path whose records are not here yet is a fast "not found",
// never a wait on the network.
type Resolver struct {
	local    *Local
	follower *Follower
	offline  coreiface.CoreAPI
	policy   Policy

	manifests *lru.Cache[cid.Cid, *Manifest]
	infos     *lru.Cache[cid.Cid, *PathInfo]
	// followed remembers records recently answered from followed
	// manifests, by DAG root, so that a NAR served from one can be traced
	// back to its record (NAR URLs name only the root).
	followed *lru.Cache[cid.Cid, *PathInfo]
	// answers remembers Lookup's answers, found or not, by hash part, for
	// as long as the manifests searched stay the same versions: a repeated
	// narinfo costs no HAMT walk.
	answers *lru.Cache[string, answer]
}

type answer struct {
	versions string // the versions searched, as versionsKey gives them
	p        *PathInfo
	source   string // the manifest it came from ("" for ours)
}

// Policy says which paths need a signature by a trusted key to be served.
type Policy struct {
	// Trusted, when set, is required of every path (--trusted-key).
	Trusted []signature.PublicKey
	// NetworkKeys are required of paths from manifests followed because a
	// network announced them (default: Nix's trusted-public-keys), unless
	// TrustPublisher says their publisher is trusted as such.
	NetworkKeys    []signature.PublicKey
	IsNetwork      func(name string) bool
	TrustPublisher func(name string) bool
}

// allows reports whether p, found in the manifest named source ("" for our
// own), may be served.
func (pol Policy) allows(source string, p *PathInfo) bool {
	if len(pol.Trusted) > 0 && !p.Verify(pol.Trusted) {
		return false
	}
	if source != "" && pol.IsNetwork != nil && pol.IsNetwork(source) {
		if pol.TrustPublisher != nil && pol.TrustPublisher(source) {
			return true
		}
		return p.Verify(pol.NetworkKeys)
	}
	return true
}

// NewResolver returns a resolver. follower may be nil.
func NewResolver(api coreiface.CoreAPI, local *Local, follower *Follower, policy Policy) (*Resolver, error) {
	off, err := api.WithOptions(options.Api.Offline(true))
	if err != nil {
		return nil, fmt.Errorf("offline view of the IPFS node: %w", err)
	}
	ms, _ := lru.New[cid.Cid, *Manifest](64)
	is, _ := lru.New[cid.Cid, *PathInfo](16384)
	fs, _ := lru.New[cid.Cid, *PathInfo](4096)
	as, _ := lru.New[string, answer](65536)
	return &Resolver{local: local, follower: follower, offline: off, policy: policy, manifests: ms, infos: is, followed: fs, answers: as}, nil
}

// versionsKey names a list of versions, to tell whether a remembered
// answer is still current.
func versionsKey(vs []Followed) string {
	var b strings.Builder
	for _, v := range vs {
		b.WriteString(v.Name)
		b.WriteByte('=')
		b.WriteString(v.Version.KeyString())
		b.WriteByte(0)
	}
	return b.String()
}

// versions lists the manifests to search, own (name "") first.
func (r *Resolver) versions() []Followed {
	var vs []Followed
	if v, err := r.local.CurrentVersion(); err == nil && v.Defined() {
		vs = append(vs, Followed{Version: v})
	} else if err != nil {
		slog.Warn("own manifest", "err", err)
	}
	if r.follower != nil {
		vs = append(vs, r.follower.Versions()...)
	}
	return vs
}

func (r *Resolver) manifest(ctx context.Context, v cid.Cid) (*Manifest, error) {
	if m, ok := r.manifests.Get(v); ok {
		return m, nil
	}
	m, err := LoadManifest(ctx, r.offline.Dag(), v)
	if err != nil {
		return nil, err
	}
	r.manifests.Add(v, m)
	return m, nil
}

// Lookup returns the PathInfo of a store-path hash, or an error wrapping
// ErrNotFound.
func (r *Resolver) Lookup(ctx context.Context, hashPart string) (*PathInfo, error) {
	if !ValidHashPart(hashPart) {
		return nil, fmt.Errorf("lookup %q: %w", hashPart, ErrNotFound)
	}
	vs := r.versions()
	vkey := versionsKey(vs)
	if a, ok := r.answers.Get(hashPart); ok && a.versions == vkey {
		switch {
		case a.p == nil:
			return nil, fmt.Errorf("lookup %s: %w", hashPart, ErrNotFound)
		case r.policy.allows(a.source, a.p): // asked again: whom it trusts may change
			if a.source != "" {
				r.followed.Add(a.p.Root, a.p)
			}
			return a.p, nil
		}
	}
	key := KeyStorePath(hashPart)
	var found *PathInfo
	var source string
	settled := true // false: the answer may change with the same versions
	complete := r.eachIn(ctx, vs, key, func(src Followed, c cid.Cid) bool {
		p, err := r.pathInfo(ctx, c)
		if err != nil {
			// A malformed or missing record is reported and skipped; the
			// next manifest may still have the path.
			slog.Warn("PathInfo unusable", "key", key, "cid", c, "err", err)
			settled = false // its block may arrive
			return false
		}
		if HashPart(p.StorePath) != hashPart {
			slog.Warn("PathInfo filed under the wrong key", "key", key, "storePath", p.StorePath)
			return false
		}
		if !r.policy.allows(src.Name, p) {
			slog.Info("path has no trusted signature", "storePath", p.StorePath, "manifest", src.Name)
			settled = false // whom the policy trusts may change
			return false
		}
		if src.Name != "" {
			r.followed.Add(p.Root, p)
		}
		found, source = p, src.Name
		return true
	})
	// An answer that depended on an unreadable manifest or record is not
	// remembered: the blocks may arrive.
	if complete && settled {
		r.answers.Add(hashPart, answer{versions: vkey, p: found, source: source})
	}
	if found != nil {
		return found, nil
	}
	return nil, fmt.Errorf("lookup %s: %w", hashPart, ErrNotFound)
}

func (r *Resolver) pathInfo(ctx context.Context, c cid.Cid) (*PathInfo, error) {
	if p, ok := r.infos.Get(c); ok {
		return p, nil
	}
	p, err := Load(ctx, r.offline, c)
	if err != nil {
		return nil, err
	}
	r.infos.Add(c, p)
	return p, nil
}

// Source returns the UnixFS root of a mirrored file by one of its hashes,
// or an error wrapping ErrNotFound.
func (r *Resolver) Source(ctx context.Context, algo string, digest []byte) (cid.Cid, error) {
	return r.first(ctx, "source", KeySource(algo, digest))
}

// Log returns the UnixFS root of the build log of the .drv whose hash part
// is given, or an error wrapping ErrNotFound.
func (r *Resolver) Log(ctx context.Context, drvHashPart string) (cid.Cid, error) {
	return r.first(ctx, "log", KeyLog(drvHashPart))
}

// first returns the first manifest's value for key (what names the kind
// of entry in the error).
func (r *Resolver) first(ctx context.Context, what, key string) (cid.Cid, error) {
	var found cid.Cid
	r.each(ctx, key, func(_ Followed, c cid.Cid) bool {
		found = c
		return true
	})
	if !found.Defined() {
		return cid.Undef, fmt.Errorf("%s %s: %w", what, key, ErrNotFound)
	}
	return found, nil
}

// each calls fn with every manifest's entry for key, own manifest first,
// until fn returns true. Unreadable manifests are logged and skipped.
func (r *Resolver) each(ctx context.Context, key string, fn func(src Followed, c cid.Cid) bool) {
	r.eachIn(ctx, r.versions(), key, fn)
}

// eachIn is each over the versions vs. It reports whether every manifest
// it had to search could be read.
func (r *Resolver) eachIn(ctx context.Context, vs []Followed, key string, fn func(src Followed, c cid.Cid) bool) bool {
	complete := true
	for _, src := range vs {
		m, err := r.manifest(ctx, src.Version)
		if err != nil {
			slog.Warn("manifest unreadable", "version", src.Version, "err", err)
			complete = false
			continue
		}
		c, err := m.Get(ctx, key)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			slog.Warn("manifest lookup", "version", src.Version, "key", key, "err", err)
			complete = false
			continue
		}
		if fn(src, c) {
			return complete
		}
	}
	return complete
}

// FollowedRecord returns the record of a NAR recently answered from a
// followed manifest, if its root and NarHash match.
func (r *Resolver) FollowedRecord(root cid.Cid, narHash []byte) (*PathInfo, bool) {
	p, ok := r.followed.Get(root)
	if !ok || string(p.NarHash) != string(narHash) {
		return nil, false
	}
	return p, true
}
