package remotepin

import (
	"errors"
	"fmt"

	"github.com/nixipfs/nixipfs/internal/secretfile"
)

// Options are the remotes a node is configured with.
type Options struct {
	Cluster         string // IPFS Cluster REST API URL
	ClusterAuthFile string // "user:password" for its basic auth
	// Replication is how many cluster peers hold each pin (-1: all).
	Replication      int
	Service          string // Pinning Service API URL
	ServiceTokenFile string // its bearer token
}

// Open returns the configured remotes (none when no URL is set). A secret
// file must not be readable by group or others: refusing it is how a
// leaked token is noticed before it is used.
func Open(o Options) ([]Remote, error) {
	var out []Remote
	if o.Cluster != "" {
		auth := ""
		if o.ClusterAuthFile != "" {
			var err error
			if auth, err = readSecret(o.ClusterAuthFile); err != nil {
				return nil, fmt.Errorf("pin cluster auth: %w", err)
			}
		}
		c, err := NewCluster(o.Cluster, auth, o.Replication)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	} else if o.ClusterAuthFile != "" {
		return nil, errors.New("a pin cluster auth file without a pin cluster URL")
	}
	if o.Service != "" {
		if o.ServiceTokenFile == "" {
			return nil, fmt.Errorf("pin service %s: no token file", o.Service)
		}
		tok, err := readSecret(o.ServiceTokenFile)
		if err != nil {
			return nil, fmt.Errorf("pin service token: %w", err)
		}
		s, err := NewService(o.Service, tok)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	} else if o.ServiceTokenFile != "" {
		return nil, errors.New("a pin service token file without a pin service URL")
	}
	return out, nil
}

func readSecret(name string) (string, error) {
	b, err := secretfile.Read(name)
	return string(b), err
}
