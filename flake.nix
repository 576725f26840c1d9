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
        default = pkgs.callPackage ./nixos/package.nix { };
      });

      # services.nixipfs (nixos/module.nix), with this flake's package as the
      # default.
      nixosModules.default = { lib, pkgs, ... }: {
        imports = [ ./nixos/module.nix ];
        services.nixipfs.package = lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.default;
      };
      nixosModules.nixipfs = self.nixosModules.default;

      # pkgs.nixipfs, built with the nixpkgs it is applied to.
      overlays.default = final: prev: {
        nixipfs = final.callPackage ./nixos/package.nix { };
      };

      # fetchIPFS: a fixed-output fetch that tries the local gateway by CID,
      # then by hash, then the original URLs (see nixos/README.md).
      lib.fetchIPFS = import ./nixos/fetchipfs.nix;
    };
}
