// Package mirror mirrors fixed-output sources: it reads the list that
// nixpkgs' maintainers/scripts/find-tarballs.nix prints (ParseList),
// resolves mirror:// URLs (LoadMirrors, Mirrors.Expand), downloads each file
// the Sink does not have yet, hashing it with md5, sha1, sha256 and sha512
// in one pass, verifies it against the entry's hash and only then hands it
// to the Sink (Mirror). The Sink is where IPFS and the manifest come in;
// this package has no IPFS code.
//
// Hashes are parsed as Nix parses them (ParseHash): SRI, "algo:digest", or a
// bare base16, nix32 or base64 digest with its algorithm given separately.
//
// Only http, https, ftp and mirror:// URLs are fetched, as on
// tarballs.nixos.org; entries marked isPatch are skipped, since their
// output is not the file that was downloaded.
package mirror
