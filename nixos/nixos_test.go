// Package nixos tests the Nix code in this directory and flake.nix with the
// real nix-instantiate. These machines have no nixpkgs, so the module is
// evaluated against testdata/stub.nix: a minimal lib (mkOption, mkIf,
// types, ...) and module system written for these tests, and a stub pkgs.
package nixos

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

// repo is the repository root; nixDir this directory.
var repo, nixDir = func() (string, string) {
	d, err := filepath.Abs(".")
	if err != nil {
		panic(err)
	}
	return filepath.Dir(d), d
}()

// nixEval evaluates expr strictly with the real nix-instantiate and
// decodes its JSON into out. The expression sees `stub` (testdata/stub.nix)
// and `module` (module.nix).
func nixEval(expr string, out any) error {
	if _, err := exec.LookPath("nix-instantiate"); err != nil {
		return fmt.Errorf("nix-instantiate is required for this test: %w", err)
	}
	full := fmt.Sprintf("let stub = import %s; module = %s; in %s",
		filepath.Join(nixDir, "testdata", "stub.nix"), filepath.Join(nixDir, "module.nix"), expr)
	cmd := exec.Command("nix-instantiate", "--eval", "--strict", "--json", "--readonly-mode", "-E", full)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%v: %s", err, stderr.String())
	}
	if err := json.Unmarshal(stdout.Bytes(), out); err != nil {
		return fmt.Errorf("decode %s: %w", stdout.String(), err)
	}
	return nil
}

// system is the part of an evaluated NixOS configuration the module sets.
type system struct {
	Systemd struct {
		Services map[string]service
		Tmpfiles struct{ Rules []string }
	}
	Users struct {
		Users  map[string]map[string]any
		Groups map[string]any
	}
	Nix struct {
		Settings map[string][]string
	}
	Environment struct{ SystemPackages []string }
	Warnings    []string
}

type service struct {
	WantedBy, After, Requires []string
	Path                      []string
	Environment               map[string]string
	ServiceConfig             map[string]any
}

// evalSystem evaluates the module with a `services.nixipfs` definition
// (Nix attribute set body) and returns the checked configuration.
func evalSystem(t *testing.T, settings string) system {
	t.Helper()
	var s system
	if err := nixEval(evalExpr(settings), &s); err != nil {
		t.Fatal(err)
	}
	return s
}

func evalExpr(settings string) string {
	return fmt.Sprintf(`let e = stub.evalModules { pkgs = stub.pkgs; modules = [ module stub.base { services.nixipfs = { %s }; } ]; };
  c = e.checked;
in { inherit (c) systemd users nix; environment = c.environment or { }; warnings = c.warnings or [ ]; }`, settings)
}

// evalFails evaluates the module and returns nix-instantiate's error.
func evalFails(t *testing.T, settings string) string {
	t.Helper()
	var s system
	err := nixEval(evalExpr(settings), &s)
	if err == nil {
		t.Fatalf("services.nixipfs = { %s } evaluated", settings)
	}
	return err.Error()
}

// argv splits an ExecStart line as systemd does for the quoting that
// lib.escapeShellArgs produces (single quotes, '\” for a quote).
func argv(t *testing.T, line string) []string {
	t.Helper()
	var out []string
	var cur strings.Builder
	inWord, quoted := false, false
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case quoted && c == '\'':
			quoted = false
		case quoted:
			cur.WriteByte(c)
		case c == '\'':
			quoted, inWord = true, true
		case c == '\\' && i+1 < len(line):
			i++
			cur.WriteByte(line[i])
			inWord = true
		case c == ' ':
			if inWord {
				out = append(out, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	if quoted {
		t.Fatalf("unterminated quote in %q", line)
	}
	if inWord {
		out = append(out, cur.String())
	}
	return out
}

const stubPkg = "/nix/store/0b44e67154f4075f1afeaa79b2d8381e-nixipfs-from-pkgs"

func TestModuleDefaults(t *testing.T) {
	s := evalSystem(t, "enable = true;")
	d, ok := s.Systemd.Services["nixipfs"]
	if !ok {
		t.Fatalf("no nixipfs service: %+v", s.Systemd.Services)
	}
	want := []string{stubPkg + "/bin/nixipfs", "--data-dir", "/var/lib/nixipfs", "daemon", "--listen", "127.0.0.1:8080"}
	if got := argv(t, d.ServiceConfig["ExecStart"].(string)); !reflect.DeepEqual(got, want) {
		t.Errorf("ExecStart %q, want %q", got, want)
	}
	// Hardening: a dedicated user, a read-only system, no privileges.
	for k, v := range map[string]any{
		"User": "nixipfs", "Group": "nixipfs", "StateDirectory": "nixipfs", "StateDirectoryMode": "0700",
		"ProtectSystem": "strict", "ProtectHome": true, "PrivateTmp": true, "PrivateDevices": true,
		"NoNewPrivileges": true, "CapabilityBoundingSet": "", "RestrictSUIDSGID": true,
		"MemoryDenyWriteExecute": true, "UMask": "0077", "SystemCallArchitectures": "native",
	} {
		if got := d.ServiceConfig[k]; !reflect.DeepEqual(got, v) {
			t.Errorf("serviceConfig.%s = %#v, want %#v", k, got, v)
		}
	}
	if _, ok := d.ServiceConfig["ReadWritePaths"]; ok {
		t.Error("ReadWritePaths set for a data dir under /var/lib")
	}
	if !reflect.DeepEqual(d.WantedBy, []string{"multi-user.target"}) || !reflect.DeepEqual(d.Path, []string{"/nix/store/97e87dce7ce50a54d00d9705b89ccaa5-nix-2.8.0"}) {
		t.Errorf("wantedBy %v, path %v", d.WantedBy, d.Path)
	}
	if u := s.Users.Users["nixipfs"]; u["isSystemUser"] != true || u["group"] != "nixipfs" {
		t.Errorf("users.users.nixipfs = %v", u)
	}
	if _, ok := s.Users.Groups["nixipfs"]; !ok {
		t.Error("no nixipfs group")
	}
	if _, ok := s.Systemd.Services["nixipfs-builder"]; ok {
		t.Error("builder unit without builder.enable")
	}
	if len(s.Nix.Settings) != 0 {
		t.Errorf("nix.settings without substituter.enable: %v", s.Nix.Settings)
	}
	if !reflect.DeepEqual(s.Environment.SystemPackages, []string{stubPkg}) {
		t.Errorf("systemPackages %v", s.Environment.SystemPackages)
	}
}

func TestModuleFull(t *testing.T) {
	s := evalSystem(t, `
      enable = true;
      listen = "0.0.0.0:9090";
      network = "home%net";
      peers = [ "/ip4/127.0.0.1/tcp/4001/p2p/A" "/ip4/127.0.0.1/tcp/4002/p2p/B" ];
      follow = [ "k51follow" ];
      swarmListen = [ "/ip4/0.0.0.0/tcp/4001" ];
      watchStore = "signed";
      signKeyFile = "/run/keys/nixipfs.sec";
      publicKey = "cache.example.org-1:AAAA";
      extraFlags = [ "--priority" "20" ];
      builder = { enable = true; systems = [ "x86_64-linux" "aarch64-linux" ]; features = [ "kvm" ]; maxJobs = 4; };
      substituter.enable = true;`)
	d := s.Systemd.Services["nixipfs"]
	// With builder.enable the one unit runs `nixipfs builder`: a daemon
	// that also builds, its own gateway being its substituter.
	want := []string{stubPkg + "/bin/nixipfs", "--data-dir", "/var/lib/nixipfs", "builder", "--listen", "0.0.0.0:9090",
		"--network", "home%%net", // systemd turns %% back into %
		"--peer", "/ip4/127.0.0.1/tcp/4001/p2p/A", "--peer", "/ip4/127.0.0.1/tcp/4002/p2p/B",
		"--follow", "k51follow", "--swarm-listen", "/ip4/0.0.0.0/tcp/4001", "--watch-store=signed",
		"--sign-key", "%d/sign-key",
		"--systems", "x86_64-linux", "--systems", "aarch64-linux", "--features", "kvm", "--max-jobs", "4",
		"--priority", "20"}
	if got := argv(t, d.ServiceConfig["ExecStart"].(string)); !reflect.DeepEqual(got, want) {
		t.Errorf("ExecStart\n got %q\nwant %q", got, want)
	}
	// The key reaches the unit as a credential (%d is its directory).
	if got := d.ServiceConfig["LoadCredential"]; !reflect.DeepEqual(got, []any{"sign-key:/run/keys/nixipfs.sec"}) {
		t.Errorf("LoadCredential = %v", got)
	}
	if _, ok := s.Systemd.Services["nixipfs-builder"]; ok {
		t.Error("a second unit for the builder")
	}
	// A wildcard listen address is reached on loopback.
	if got := s.Nix.Settings["substituters"]; !reflect.DeepEqual(got, []string{"http://127.0.0.1:9090"}) {
		t.Errorf("substituters %v", got)
	}
	if got := s.Nix.Settings["trusted-public-keys"]; !reflect.DeepEqual(got, []string{"cache.example.org-1:AAAA"}) {
		t.Errorf("trusted-public-keys %v", got)
	}
	if len(s.Warnings) != 0 {
		t.Errorf("warnings %v", s.Warnings)
	}
}

func TestModuleSubstituterAddresses(t *testing.T) {
	for listen, url := range map[string]string{
		"127.0.0.1:8080": "http://127.0.0.1:8080",
		"[::]:8080":      "http://[::1]:8080",
		"[::1]:8081":     "http://[::1]:8081",
		"192.0.2.1:80":   "http://192.0.2.1:80",
	} {
		s := evalSystem(t, fmt.Sprintf(`enable = true; listen = %q; substituter.enable = true;`, listen))
		if got := s.Nix.Settings["substituters"]; !reflect.DeepEqual(got, []string{url}) {
			t.Errorf("listen %s: substituters %v, want %s", listen, got, url)
		}
		if got := s.Nix.Settings["trusted-public-keys"]; len(got) != 0 {
			t.Errorf("listen %s: trusted-public-keys %v without publicKey", listen, got)
		}
	}
	s := evalSystem(t, `enable = true; substituter.enable = true; signKeyFile = "/run/k";`)
	if len(s.Warnings) != 1 || !strings.Contains(s.Warnings[0], "publicKey") {
		t.Errorf("no warning about the missing publicKey: %v", s.Warnings)
	}
}

func TestModuleDataDirOutsideVarLib(t *testing.T) {
	s := evalSystem(t, `enable = true; dataDir = "/srv/nixipfs";`)
	d := s.Systemd.Services["nixipfs"]
	if _, ok := d.ServiceConfig["StateDirectory"]; ok {
		t.Error("StateDirectory for a data dir outside /var/lib")
	}
	if got := d.ServiceConfig["ReadWritePaths"]; !reflect.DeepEqual(got, []any{"/srv/nixipfs"}) {
		t.Errorf("ReadWritePaths %v", got)
	}
	if !reflect.DeepEqual(s.Systemd.Tmpfiles.Rules, []string{"d /srv/nixipfs 0700 nixipfs nixipfs - -"}) {
		t.Errorf("tmpfiles %v", s.Systemd.Tmpfiles.Rules)
	}
	if got := argv(t, d.ServiceConfig["ExecStart"].(string)); got[2] != "/srv/nixipfs" {
		t.Errorf("ExecStart %q", got)
	}
}

func TestModuleDisabled(t *testing.T) {
	s := evalSystem(t, `enable = false; network = "home"; substituter.enable = true; builder.enable = true;`)
	if len(s.Systemd.Services) != 0 || len(s.Users.Users) != 0 || len(s.Nix.Settings) != 0 {
		t.Fatalf("a disabled module configures: %+v", s)
	}
}

func TestModuleRefusesBadSettings(t *testing.T) {
	for settings, want := range map[string]string{
		`enable = true; builder.enable = true;`:                                                        "builder.enable needs services.nixipfs.network",
		`enable = true; listen = "8080";`:                                                              `listen = "8080": want host:port`,
		`enable = true; peers = "/ip4/127.0.0.1";`:                                                     "services.nixipfs.peers' is not of type list of string",
		`enable = true; watchStore = "some";`:                                                          "services.nixipfs.watchStore' is not of type null or one of",
		`enable = true; network = "n"; builder.enable = true;`:                                         "builder.enable needs services.nixipfs.signKeyFile",
		`enable = true; network = "n"; signKeyFile = "/k"; builder = { enable = true; maxJobs = 0; };`: "services.nixipfs.builder.maxJobs' is not of type positive integer",
		`enable = true; dataDir = "relative";`:                                                         "services.nixipfs.dataDir' is not of type absolute path",
		`enable = true; listenAddress = "127.0.0.1:1";`:                                                "services.nixipfs.listenAddress' does not exist",
	} {
		if got := evalFails(t, settings); !strings.Contains(got, want) {
			t.Errorf("%s: error %s\nwant one with %q", settings, got, want)
		}
	}
}

// TestNixFilesParse parses every Nix file of the repository.
func TestNixFilesParse(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join(nixDir, "*.nix"))
	files = append(files, filepath.Join(repo, "flake.nix"), filepath.Join(nixDir, "testdata", "stub.nix"))
	for _, f := range files {
		if out, err := exec.Command("nix-instantiate", "--parse", f).CombinedOutput(); err != nil {
			t.Errorf("nix-instantiate --parse %s: %v\n%s", f, err, out)
		}
	}
	if len(files) < 5 {
		t.Fatalf("only %d Nix files: %v", len(files), files)
	}
}

// TestFlakeOutputs calls flake.nix's outputs with the stub nixpkgs as its
// input and checks each output.
func TestFlakeOutputs(t *testing.T) {
	expr := fmt.Sprintf(`let
  flake = import %[1]s/flake.nix;
  self = flake.outputs { inherit self; nixpkgs = stub.nixpkgs; } // { outPath = %[1]s; };
  pkg = self.packages.x86_64-linux.default;
  withModule = extra: (stub.evalModules { pkgs = stub.pkgs; modules = [ self.nixosModules.default stub.base extra ]; }).checked;
  overlaid = self.overlays.default stub.pkgs stub.pkgs;
in {
  systems = builtins.attrNames self.packages;
  package = { inherit (pkg) name; out = pkg.outPath; inherit (pkg.args) pname version vendorHash subPackages;
    src = toString pkg.args.src; mainProgram = pkg.args.meta.mainProgram; };
  moduleExec = (withModule { services.nixipfs.enable = true; }).systemd.services.nixipfs.serviceConfig.ExecStart;
  overriddenExec = (withModule { services.nixipfs = { enable = true; package = stub.drv "mine"; }; }).systemd.services.nixipfs.serviceConfig.ExecStart;
  aliasExec = ((stub.evalModules { pkgs = stub.pkgs; modules = [ self.nixosModules.nixipfs stub.base { services.nixipfs.enable = true; } ]; }).checked).systemd.services.nixipfs.serviceConfig.ExecStart;
  overlay = overlaid.nixipfs.name;
  flakeInputs = builtins.attrNames flake.inputs;
  nixpkgsURL = flake.inputs.nixpkgs.url;
  fetchIPFS = builtins.isFunction self.lib.fetchIPFS;
  fetchName = (self.lib.fetchIPFS { cid = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"; url = "http://127.0.0.1:1/x.tar.gz"; sha256 = "%[2]s"; }).name;
}`, repo, strings.Repeat("0", 64))
	var got struct {
		Systems []string
		Package struct {
			Name, Out, Pname, Version, VendorHash, Src, MainProgram string
			SubPackages                                             []string
		}
		ModuleExec, OverriddenExec string
		AliasExec                  string
		Overlay                    string
		FlakeInputs                []string
		NixpkgsURL                 string
		FetchIPFS                  bool
		FetchName                  string
	}
	if err := nixEval(expr, &got); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.Systems, []string{"aarch64-darwin", "aarch64-linux", "x86_64-darwin", "x86_64-linux"}) {
		t.Errorf("packages for %v", got.Systems)
	}
	p := got.Package
	if p.Pname != "nixipfs" || p.Name != "nixipfs-0.1.0" || p.Src != repo || p.MainProgram != "nixipfs" ||
		!reflect.DeepEqual(p.SubPackages, []string{"cmd/nixipfs"}) || !strings.HasPrefix(p.VendorHash, "sha256-") {
		t.Errorf("packages.default: %+v", p)
	}
	// The flake's module runs the flake's package unless told otherwise.
	if !strings.HasPrefix(got.ModuleExec, "'"+p.Out+"/bin/nixipfs' ") {
		t.Errorf("nixosModules.default runs %s, want %s", got.ModuleExec, p.Out)
	}
	if !strings.Contains(got.OverriddenExec, "-mine/bin/nixipfs") {
		t.Errorf("services.nixipfs.package does not override the flake's: %s", got.OverriddenExec)
	}
	if got.AliasExec != got.ModuleExec || got.Overlay != "nixipfs-0.1.0" || !got.FetchIPFS || got.FetchName != "x.tar.gz" {
		t.Errorf("flake outputs: %+v", got)
	}
	if !reflect.DeepEqual(got.FlakeInputs, []string{"nixpkgs"}) || !strings.HasPrefix(got.NixpkgsURL, "github:NixOS/nixpkgs/") {
		t.Errorf("inputs %v %s", got.FlakeInputs, got.NixpkgsURL)
	}
}

// TestFlakeVendorHash checks package.nix's vendorHash: the NAR hash of what
// `go mod vendor` writes for this go.mod, which buildGoModule's vendor
// derivation produces. It goes stale whenever dependencies change.
func TestFlakeVendorHash(t *testing.T) {
	var hash string
	if err := nixEval(fmt.Sprintf(`(stub.pkgs.callPackage %s { }).args.vendorHash`, filepath.Join(nixDir, "package.nix")), &hash); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "vendor")
	vendor := exec.Command("go", "mod", "vendor", "-o", dir)
	vendor.Dir = repo
	// Modules come from the cache: the tests run with no network.
	vendor.Env = append(os.Environ(), "GOFLAGS=-mod=readonly", "GOPROXY=off")
	if out, err := vendor.CombinedOutput(); err != nil {
		t.Fatalf("go mod vendor: %v\n%s", err, out)
	}
	var stderr bytes.Buffer
	nixHash := exec.Command("nix", "--extra-experimental-features", "nix-command", "hash", "path", dir)
	nixHash.Stderr = &stderr
	out, err := nixHash.Output()
	if err != nil {
		t.Fatalf("nix hash path: %v\n%s", err, stderr.String())
	}
	want := strings.TrimSpace(string(out))
	if !regexp.MustCompile(`^sha256-[A-Za-z0-9+/]{43}=$`).MatchString(want) {
		t.Fatalf("nix hash path printed %q", want)
	}
	if hash != want {
		t.Errorf("nixos/package.nix has vendorHash = %q; go mod vendor gives %q: update it", hash, want)
	}
}
