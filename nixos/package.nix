# The nixipfs package, for callPackage (flake.nix's packages.default and
# overlays.default).
{ lib, buildGoModule }:

buildGoModule {
  pname = "nixipfs";
  version = "0.1.0";
  src = ./..;
  # NAR hash of `go mod vendor` for this go.mod/go.sum; update when
  # dependencies change (TestFlakeVendorHash in nixos/ checks it; nix build
  # also prints the right one on a mismatch).
  vendorHash = "sha256-ZhCVrHVF2hgqYuPHmEoSVEoJmsh1tdsArKS1NHAAWcI=";
  subPackages = [ "cmd/nixipfs" ];
  env.CGO_ENABLED = 0;
  # The integration tests need a kubo binary, Nix as root and a
  # loopback-only network namespace: they run in CI (scripts/test).
  doCheck = false;
  meta = {
    description = "IPFS-backed binary cache and content store for Nix";
    license = with lib.licenses; [ mit asl20 ];
    mainProgram = "nixipfs";
  };
}
