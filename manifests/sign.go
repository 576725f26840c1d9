package manifests

import (
	"fmt"
	"os"
	"strings"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"
)

// LoadSecretKey reads a key file as `nix key generate-secret` writes it
// (name:base64 of the 64-byte Ed25519 private key).
func LoadSecretKey(file string) (signature.SecretKey, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return signature.SecretKey{}, fmt.Errorf("read signing key: %w", err)
	}
	sk, err := signature.LoadSecretKey(strings.TrimSpace(string(b)))
	if err != nil {
		return signature.SecretKey{}, fmt.Errorf("signing key %s: %w", file, err)
	}
	return sk, nil
}

// Sign adds sk's signature to p unless p already carries one by that key
// name. It reports whether p changed.
func (p *PathInfo) Sign(sk signature.SecretKey) (bool, error) {
	name := sk.ToPublicKey().Name
	for _, s := range p.Signatures {
		if strings.HasPrefix(s, name+":") {
			return false, nil
		}
	}
	sig, err := sk.Sign(nil, p.Fingerprint())
	if err != nil {
		return false, fmt.Errorf("sign %s: %w", p.StorePath, err)
	}
	p.Signatures = append(p.Signatures, sig.String())
	return true, nil
}

// Verify reports whether one of p's signatures verifies under one of keys.
func (p *PathInfo) Verify(keys []signature.PublicKey) bool {
	var sigs []signature.Signature
	for _, s := range p.Signatures {
		sig, err := signature.ParseSignature(s)
		if err == nil {
			sigs = append(sigs, sig)
		}
	}
	return signature.VerifyFirst(p.Fingerprint(), sigs, keys)
}
