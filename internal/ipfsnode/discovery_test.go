package ipfsnode

import (
	"strings"
	"testing"

	"github.com/ipfs/kubo/config"
)

// TestDiscoveryOptIn checks the config transformation only (no node is
// started: nothing here may reach beyond loopback).
func TestDiscoveryOptIn(t *testing.T) {
	closed := func(t *testing.T) []string {
		cfg, err := closedConfig(nil, "")
		if err != nil {
			t.Fatal(err)
		}
		enforceClosed(cfg)
		if len(cfg.Bootstrap) != 0 || cfg.Discovery.MDNS.Enabled || cfg.AutoConf.Enabled.WithDefault(true) {
			t.Fatalf("default config is not closed: %+v %v", cfg.Bootstrap, cfg.Discovery.MDNS.Enabled)
		}
		for _, a := range cfg.Addresses.Swarm {
			if !isLoopback(a) {
				t.Fatalf("default listens on %s", a)
			}
		}
		return cfg.Addresses.Swarm
	}
	closed(t)

	for _, c := range []struct {
		modes          []string
		mdns, bootstrp bool
	}{
		{[]string{"mdns"}, true, false},
		{[]string{"public"}, false, true},
		{[]string{"mdns", "public"}, true, true},
	} {
		cfg, _ := closedConfig(nil, "")
		enforceClosed(cfg)
		if err := applyDiscovery(cfg, c.modes, nil); err != nil {
			t.Fatal(err)
		}
		if cfg.Discovery.MDNS.Enabled != c.mdns || (len(cfg.Bootstrap) > 0) != c.bootstrp {
			t.Errorf("%v: mdns %v bootstrap %d", c.modes, cfg.Discovery.MDNS.Enabled, len(cfg.Bootstrap))
		}
		if isLoopback(cfg.Addresses.Swarm[0]) {
			t.Errorf("%v: still loopback only, other machines could not connect", c.modes)
		}
	}
	cfg, _ := closedConfig(nil, "")
	if err := applyDiscovery(cfg, []string{"dht"}, nil); err == nil || !strings.Contains(err.Error(), "dht") {
		t.Fatalf("unknown mode accepted: %v", err)
	}
	// An explicit listen address wins.
	cfg, _ = closedConfig(nil, "")
	applyDiscovery(cfg, []string{"mdns"}, []string{"/ip4/127.0.0.1/tcp/0"})
	if !isLoopback(cfg.Addresses.Swarm[0]) {
		t.Fatal("--swarm-listen overridden")
	}
}

func TestProvideRoots(t *testing.T) {
	cfg, err := closedConfig(nil, "")
	if err != nil {
		t.Fatal(err)
	}
	provideRoots(cfg)
	if got := cfg.Provide.Strategy.WithDefault(""); got != "roots" {
		t.Fatalf("new repo: Provide.Strategy %q, want roots", got)
	}
	cfg.Provide.Strategy = config.NewOptionalString("all")
	provideRoots(cfg)
	if got := cfg.Provide.Strategy.WithDefault(""); got != "all" {
		t.Fatalf("a strategy set by hand became %q", got)
	}
}
