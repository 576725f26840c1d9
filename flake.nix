{
  description = "nixipfs: an IPFS-backed content store, binary cache and source mirror for Nix";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" "x86_64-darwin" "aarch64-darwin" ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      packages = forAllSystems (pkgs: {
        default = pkgs.buildGoModule {
          pname = "nixipfs";
          version = "0.1.0";
          src = self;
          # NAR hash of `go mod vendor` for this go.mod/go.sum; update when
          # dependencies change (nix build prints the right one on mismatch).
          vendorHash = "sha256-XWf27ip1f7CvBD2fPkSObrBWV8eMSXvwyW5Zkl1g5rE=";
          subPackages = [ "cmd/nixipfs" ];
          env.CGO_ENABLED = 0;
          # The integration tests need a kubo binary, Nix as root and a
          # loopback-only network namespace: they run in CI (scripts/test).
          doCheck = false;
          meta = {
            description = "IPFS-backed binary cache and content store for Nix";
            mainProgram = "nixipfs";
          };
        };
      });

      # fetchIPFS: a fixed-output fetch that tries the local gateway by CID,
      # then by hash, then the original URLs (see nixos/README.md).
      lib.fetchIPFS = import ./nixos/fetchipfs.nix;

      overlays.default = final: prev: {
        nixipfs = self.packages.${prev.stdenv.hostPlatform.system}.default;
      };
    };
}
