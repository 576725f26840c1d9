// Package mirror will put fixed-output sources into IPFS: mirror-tarballs
// (nixpkgs' find-tarballs.nix output) and cache-inputs. Not implemented yet;
// it comes with the source-mirror issue.
package mirror
