# fetchIPFS: fetch a file by IPFS CID through an HTTP gateway, with the
# hashed-mirror layout and the original URLs as fallbacks. It needs no
# nixpkgs: every attempt is a fixed-output derivation on Nix's own
# `builtin:fetchurl` (the builder of <nix/fetchurl.nix>), run in-process by
# Nix, so it needs no shell or curl in the store or in the sandbox.
#
#   fetchIPFS = import ./nixos/fetchipfs.nix;     # or nixipfs.lib.fetchIPFS
#   src = fetchIPFS {
#     cid = "bafkrei...";                         # the file's UnixFS CID
#     url = "https://example.org/foo-1.0.tar.gz"; # and/or urls = [ ... ];
#     hash = "sha256-...";                        # or sha256 = "<base16|nix32|base64>";
#   };
#
# builtin:fetchurl reads exactly one URL per derivation (its `url`; the
# `urls` attribute is ignored by the builder, it is only there for tools such
# as nix-prefetch-url and find-tarballs.nix), after the global
# `hashed-mirrors` setting. So fetchIPFS makes one derivation per URL, in
# order:
#
#   1. <gateway>/ipfs/<cid>                 (when cid is given)
#   2. <gateway>/<algo>/<base16 hash>       (the hashed-mirror layout; flat hashes only)
#   3. each original URL, in order
#
# All of them have the same name and fixed output hash, hence the same output
# path. The result is the first one, with the whole list as `attempts`.
# Building the result alone tries only (hashed-mirrors, then) the first URL;
# to fall back, realise the attempts in order until one succeeds, e.g.
#
#   for d in $(nix-instantiate -A src.attempts); do nix-store -r "$d" && break; done
#
# after which the result (and anything that depends on it) is already valid.
# See nixos/README.md.
{
  cid ? null,
  url ? null,
  urls ? [ ],
  # An SRI hash ("sha256-<base64>") or "<algo>:<hash>"; or, for sha256, the
  # legacy attribute in base16, nix32 or base64. Empty: the build fails and
  # prints the right hash (as with fetchurl).
  hash ? "",
  sha256 ? "",
  name ? null,
  # An HTTP gateway serving /ipfs/<cid> (nixipfs daemon, kubo, any IPFS
  # gateway) and, for nixipfs, /<algo>/<hash>. null: only the original URLs.
  gateway ? "http://127.0.0.1:8080",
  # Make the file executable. As in <nix/fetchurl.nix> and nixpkgs' fetchurl,
  # the hash is then the NAR hash (outputHashMode = "recursive") and the
  # hashed-mirror attempt is left out (that layout holds flat hashes).
  executable ? false,
}:

let
  inherit (builtins)
    add bitAnd concatStringsSep div elemAt filter foldl' genList head
    listToAttrs length match mul stringLength substring throw;

  fail = msg: throw "fetchIPFS: ${msg}";

  chars = s: genList (i: substring i 1 s) (stringLength s);
  indexOf = alphabet: listToAttrs (genList (i: { name = substring i 1 alphabet; value = i; }) (stringLength alphabet));
  pow2 = n: foldl' (acc: _: mul acc 2) 1 (genList (x: x) n);
  sum = foldl' add 0;

  hexDigits = "0123456789abcdef";
  toHex = bytes: concatStringsSep "" (map (b: substring (div b 16) 1 hexDigits + substring (b - 16 * div b 16) 1 hexDigits) bytes);
  lower = builtins.replaceStrings
    [ "A" "B" "C" "D" "E" "F" ] [ "a" "b" "c" "d" "e" "f" ];

  digit = what: table: c:
    if table ? ${c} then table.${c} else fail "invalid character '${c}' in ${what} hash";

  # Nix's base32 ("nix32"): the last character holds the lowest 5 bits of
  # the hash read as a little-endian number (see Hash::to_string in Nix).
  nix32Table = indexOf "0123456789abcdfghijklmnpqrsvwxyz";
  fromNix32 = size: s:
    let
      len = stringLength s;
      d = map (digit "nix32" nix32Table) (chars s); # d (len-1-n) is digit n
      bit = b: let n = div b 5; in
        if n >= len then 0
        else bitAnd (div (elemAt d (len - 1 - n)) (pow2 (b - 5 * n))) 1;
    in genList (i: sum (genList (j: mul (bit (8 * i + j)) (pow2 j)) 8)) size;

  b64Table = indexOf "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/" // { "=" = 0; };
  fromBase64 = size: s:
    let
      v = map (digit "base64" b64Table) (chars s);
      groups = genList (g: sum (genList (k: mul (elemAt v (4 * g + k)) (pow2 (18 - 6 * k))) 4)) (div (length v) 4);
      bytes = builtins.concatMap (n: [ (div n 65536) (bitAnd (div n 256) 255) (bitAnd n 255) ]) groups;
    in genList (elemAt bytes) size;

  sizes = { md5 = 16; sha1 = 20; sha256 = 32; sha512 = 64; };

  # Hash string of a known algorithm -> base16, whatever its encoding.
  toBase16 = algo: s:
    let
      size = sizes.${algo} or (fail "unsupported hash algorithm '${algo}'");
      len = stringLength s;
    in
    if len == 2 * size && match "[0-9a-fA-F]+" s != null then lower s
    else if len == div (8 * size + 4) 5 then toHex (fromNix32 size s)
    else if len == 4 * div (size + 2) 3 then toHex (fromBase64 size s)
    else fail "'${s}' is not a ${algo} hash in base16, nix32 or base64";

  # { algo, value } of an SRI ("sha256-...") or prefixed ("sha256:...") hash.
  split = s:
    let m = match "(md5|sha1|sha256|sha512)[-:](.*)" s; in
    if m == null then null else { algo = head m; value = elemAt m 1; };

  spec =
    if hash != "" && sha256 != "" then fail "give hash or sha256, not both"
    else if hash != "" then
      let s = split hash; in
      if s == null then fail "hash '${hash}' is not an SRI hash (e.g. sha256-<base64>) or <algo>:<hash>"
      else { outputHash = hash; outputHashAlgo = ""; inherit (s) algo value; }
    else if sha256 != "" then
      let s = split sha256; in
      if s != null && s.algo != "sha256" then fail "sha256 = '${sha256}' is a ${s.algo} hash"
      else { outputHash = sha256; outputHashAlgo = "sha256"; algo = "sha256"; value = if s == null then sha256 else s.value; }
    else { outputHash = ""; outputHashAlgo = "sha256"; algo = null; value = ""; };

  strip = s: let m = match "/*(.*[^/])/*" s; in if m == null then s else head m;
  gw = if gateway == null then null else let m = match "(.*[^/])/*" gateway; in if m == null then gateway else head m;
  cid' =
    if cid == null then null
    else let m = match "(ipfs://|/ipfs/)?(.+)" cid; in strip (elemAt m 1);

  originals = (if url != null then [ url ] else [ ]) ++ urls;

  candidates =
    (if cid' != null && gw != null then [ "${gw}/ipfs/${cid'}" ] else [ ])
    ++ (if gw != null && spec.algo != null && !executable
        then [ "${gw}/${spec.algo}/${toBase16 spec.algo spec.value}" ] else [ ])
    ++ originals;

  name' =
    if name != null then name
    else if originals != [ ] then baseNameOf (head originals)
    else if cid' != null then baseNameOf cid'
    else fail "give cid or url/urls";

  attempt = u: derivation {
    name = name';
    builder = "builtin:fetchurl";
    system = "builtin";
    url = u;
    # Every URL fetchIPFS tries, in order (builtin:fetchurl reads only
    # `url`; nix-prefetch-url and find-tarballs.nix read `urls`).
    urls = candidates;
    inherit (spec) outputHash outputHashAlgo;
    outputHashMode = if executable then "recursive" else "flat";
    inherit executable;
    unpack = false;
    # No need to double the network traffic through a remote builder.
    preferLocalBuild = true;
    # As in <nix/fetchurl.nix>: proxies from the caller's environment.
    impureEnvVars = [ "http_proxy" "https_proxy" "ftp_proxy" "all_proxy" "no_proxy" ];
  };

  attempts =
    if candidates == [ ] then fail "nothing to fetch from: give cid (and a gateway) or url/urls"
    else map attempt candidates;
in
head attempts // {
  inherit attempts;
  cid = cid';
}
