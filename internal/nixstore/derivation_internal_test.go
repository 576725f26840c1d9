package nixstore

import (
	"encoding/json"
	"maps"
	"slices"
	"testing"
)

// TestDerivationJSON reads the same derivations as Nix 2.8 and Nix 2.26
// print them (`nix show-derivation --recursive`, trimmed) to the same thing.
func TestDerivationJSON(t *testing.T) {
	const v28 = `{
  "/nix/store/8nw6yaajlmvnwrjh9w9jf6f8dq1hgqq6-x.drv": {
    "outputs": {"out": {"path": "/nix/store/kydkkwrm0rpmmr3ybmrk7jhzz22988k5-x"}},
    "inputSrcs": [],
    "inputDrvs": {"/nix/store/chws044m3zach0cj8a4aw0qyyc4x5qwc-b.drv": ["out"]},
    "system": "x86_64-linux", "builder": "/bin/sh", "args": ["-c", "true"],
    "env": {"name": "x"}
  },
  "/nix/store/chws044m3zach0cj8a4aw0qyyc4x5qwc-b.drv": {
    "outputs": {"out": {"path": "/nix/store/s6z79dwplpkmhf9pazgqgnch4vk37hgm-b", "hashAlgo": "r:sha256",
      "hash": "0000000000000000000000000000000000000000000000000000000000000000"}},
    "inputSrcs": [], "inputDrvs": {}, "system": "builtin", "builder": "builtin:fetchurl", "args": [],
    "env": {"name": "b"}
  }
}`
	const v226 = `{
  "/nix/store/8nw6yaajlmvnwrjh9w9jf6f8dq1hgqq6-x.drv": {
    "args": ["-c", "true"], "builder": "/bin/sh", "env": {"name": "x"},
    "inputDrvs": {"/nix/store/chws044m3zach0cj8a4aw0qyyc4x5qwc-b.drv": {"dynamicOutputs": {}, "outputs": ["out"]}},
    "inputSrcs": [], "name": "x",
    "outputs": {"out": {"path": "/nix/store/kydkkwrm0rpmmr3ybmrk7jhzz22988k5-x"}},
    "system": "x86_64-linux"
  },
  "/nix/store/chws044m3zach0cj8a4aw0qyyc4x5qwc-b.drv": {
    "args": [], "builder": "builtin:fetchurl", "env": {"name": "b"}, "inputDrvs": {}, "inputSrcs": [], "name": "b",
    "outputs": {"out": {"hash": "0000000000000000000000000000000000000000000000000000000000000000",
      "hashAlgo": "sha256", "method": "nar", "path": "/nix/store/s6z79dwplpkmhf9pazgqgnch4vk37hgm-b"}},
    "system": "builtin"
  }
}`
	var a, b map[string]Derivation
	if err := json.Unmarshal([]byte(v28), &a); err != nil {
		t.Fatalf("2.8: %v", err)
	}
	if err := json.Unmarshal([]byte(v226), &b); err != nil {
		t.Fatalf("2.26: %v", err)
	}
	for p, da := range a {
		db := b[p]
		if !slices.Equal(slices.Sorted(maps.Keys(da.InputDrvs)), slices.Sorted(maps.Keys(db.InputDrvs))) ||
			!maps.EqualFunc(da.InputDrvs, db.InputDrvs, slices.Equal) || !maps.Equal(da.Outputs, db.Outputs) ||
			da.Builder != db.Builder || da.System != db.System || !maps.Equal(da.Env, db.Env) {
			t.Errorf("%s:\n2.8  %+v\n2.26 %+v", p, da, db)
		}
	}
	fixed := b["/nix/store/chws044m3zach0cj8a4aw0qyyc4x5qwc-b.drv"].Outputs["out"]
	if algo, recursive, digest, ok := fixed.Fixed(); !ok || algo != "sha256" || !recursive || len(digest) != 32 {
		t.Errorf("2.26 fixed output: %q %v %x %v", algo, recursive, digest, ok)
	}
	if input := b["/nix/store/8nw6yaajlmvnwrjh9w9jf6f8dq1hgqq6-x.drv"].InputDrvs["/nix/store/chws044m3zach0cj8a4aw0qyyc4x5qwc-b.drv"]; !slices.Equal(input, []string{"out"}) {
		t.Errorf("2.26 inputDrvs outputs %v", input)
	}

	for name, bad := range map[string]string{
		"dynamic outputs": `{"inputDrvs": {"/nix/store/a.drv": {"outputs": [], "dynamicOutputs": {"out": {"outputs": ["x"], "dynamicOutputs": {}}}}}}`,
		"unknown method":  `{"outputs": {"out": {"path": "/nix/store/p", "hashAlgo": "sha256", "method": "git", "hash": "00"}}}`,
		"not a list":      `{"inputDrvs": {"/nix/store/a.drv": "out"}}`,
	} {
		var d Derivation
		if err := json.Unmarshal([]byte(bad), &d); err == nil {
			t.Errorf("%s: decoded to %+v, want an error", name, d)
		}
	}
}
