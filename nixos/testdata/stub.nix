# A stand-in for nixpkgs, written for nixos/module_test.go: these machines have
# Nix but no nixpkgs. `lib` holds only what nixos/module.nix and flake.nix
# use, with nixpkgs' semantics; `evalModules` is a small module system:
# imports, option declarations with defaults and type checks (an undeclared
# option under a declared namespace is an error), mkIf, mkMerge,
# mkDefault/mkForce priorities, list concatenation, and assertions.
# Options no module declares here (systemd.*, users.*, nix.settings, ...)
# pass through as defined.
let
  inherit (builtins) isAttrs isList isString isBool isInt isFunction isPath
    attrNames concatMap filter foldl' mapAttrs all elem toJSON;

  lib = rec {
    inherit (builtins) concatStringsSep replaceStrings concatMap elem;
    isDerivation = x: isAttrs x && (x.type or null) == "derivation";
    optional = c: x: if c then [ x ] else [ ];
    optionals = c: xs: if c then xs else [ ];
    optionalAttrs = c: a: if c then a else { };
    hasPrefix = p: s: builtins.substring 0 (builtins.stringLength p) s == p;
    removePrefix = p: s:
      if hasPrefix p s then builtins.substring (builtins.stringLength p) (-1) s else s;
    escapeShellArg = a: "'" + replaceStrings [ "'" ] [ "'\\''" ] (toString a) + "'";
    escapeShellArgs = xs: concatStringsSep " " (map escapeShellArg xs);
    genAttrs = names: f: builtins.listToAttrs (map (n: { name = n; value = f n; }) names);
    licenses = {
      mit = { spdxId = "MIT"; shortName = "mit"; };
      asl20 = { spdxId = "Apache-2.0"; shortName = "asl20"; };
    };

    mkOption = attrs: attrs // { _type = "option"; };
    mkEnableOption = name: mkOption {
      type = types.bool;
      default = false;
      description = "Whether to enable ${name}.";
    };
    literalExpression = text: { _type = "literalExpression"; inherit text; };
    mkIf = condition: content: { _type = "if"; inherit condition content; };
    mkMerge = contents: { _type = "merge"; inherit contents; };
    mkOverride = priority: content: { _type = "override"; inherit priority content; };
    mkDefault = mkOverride 1000;
    mkForce = mkOverride 50;

    types = rec {
      mk = name: check: { _type = "optionType"; inherit name check; };
      str = mk "string" isString;
      bool = mk "boolean" isBool;
      path = mk "absolute path" (x: (isPath x || isString x) && builtins.substring 0 1 (toString x) == "/");
      package = mk "package" (x: isDerivation x || (isString x && hasPrefix "/nix/store/" x));
      listOf = t: mk "list of ${t.name}" (x: isList x && all t.check x);
      nullOr = t: mk "null or ${t.name}" (x: x == null || t.check x);
      enum = vs: mk "one of ${toJSON vs}" (x: elem x vs);
      ints.positive = mk "positive integer" (x: isInt x && x > 0);
      anything = mk "anything" (_: true);
    };
  };

  is = t: x: isAttrs x && (x._type or null) == t;
  absent = { _type = "absent"; };
  prio = x: if is "override" x then x.priority else 100;

  # Merges two resolved definitions: the higher priority (lower number)
  # wins; at equal priority attribute sets merge, lists concatenate, and
  # different values conflict.
  merge = path: a: b:
    if is "absent" a then b
    else if is "absent" b then a
    else if prio a < prio b then a
    else if prio b < prio a then b
    else if is "override" a then a // { content = merge path a.content b.content; }
    else if isAttrs a && isAttrs b && !lib.isDerivation a && !lib.isDerivation b then
      builtins.zipAttrsWith (n: vs: foldl' (merge "${path}.${n}") absent vs) [ a b ]
    else if isList a && isList b then a ++ b
    else if a == b then a
    else throw "The option `${path}' has conflicting definitions: ${toJSON a} and ${toJSON b}";

  # Pushes mkIf and mkMerge down to the leaves; overrides stay as markers
  # for merge.
  resolve = path: v:
    if is "if" v then (if v.condition then resolve path v.content else absent)
    else if is "merge" v then foldl' (merge path) absent (map (resolve path) v.contents)
    else if is "override" v then v // { content = resolve path v.content; }
    else if isAttrs v && !lib.isDerivation v && !(v ? _type) then
      let r = mapAttrs (n: resolve "${path}.${n}") v;
      in removeAttrs r (filter (n: is "absent" r.${n}) (attrNames r))
    else v;

  strip = v:
    if is "override" v then strip v.content
    else if isAttrs v && !lib.isDerivation v && !(v ? _type) then mapAttrs (_: strip) v
    else v;

  # Pushes mkIf, mkMerge and overrides of an attribute set down to its
  # attributes, without deciding any condition (as nixpkgs' module system
  # does, so that a module's config may depend on its own options).
  pushDown = d:
    if is "merge" d then concatMap pushDown d.contents
    else if is "if" d then map (mapAttrs (_: lib.mkIf d.condition)) (pushDown d.content)
    else if is "override" d then map (mapAttrs (_: lib.mkOverride d.priority)) (pushDown d.content)
    else [ d ];

  unique = foldl' (acc: x: if elem x acc then acc else acc ++ [ x ]) [ ];

  valueOf = path: defs: strip (foldl' (merge path) absent (map (resolve path) defs));

  # The config at a namespace from its definitions: declared options are
  # type-checked or take their default; an undeclared name is an error, but
  # at the top, where it stands for options of NixOS modules not loaded here.
  evalNode = path: decls: defs:
    let
      pushed = concatMap pushDown defs;
      at = n: concatMap (d: if d ? ${n} then [ d.${n} ] else [ ]) pushed;
      sub = n: if path == "" then n else "${path}.${n}";
      one = n:
        if decls ? ${n} then
          (if is "option" decls.${n} then evalOption (sub n) decls.${n} (at n)
           else evalNode (sub n) decls.${n} (at n))
        else if path == "" then
          # What no module defines (all definitions under false mkIfs) is null.
          (let v = valueOf n (at n); in if is "absent" v then null else v)
        else throw "The option `${sub n}' does not exist";
      names = unique (attrNames decls ++ concatMap attrNames pushed);
      undeclared = filter (n: !(decls ? ${n})) names;
    in
    # Below the top, a definition of an undeclared option fails as soon as
    # its namespace is used, as in NixOS.
    if path != "" && undeclared != [ ] then throw "The option `${sub (builtins.head undeclared)}' does not exist"
    else lib.genAttrs names one;

  evalOption = path: decl: defs:
    let v = valueOf path defs; in
    if is "absent" v then
      (if decl ? default then decl.default else throw "The option `${path}' is used but not defined")
    else if decl.type.check v then v
    else throw "The option `${path}' is not of type ${decl.type.name}: ${toJSON v}";

  evalModules = { modules, pkgs }:
    let
      load = m:
        let
          m1 = if isPath m || isString m then import m else m;
          m2 = if isFunction m1 then m1 { inherit lib pkgs config; options = { }; } else m1;
          # A module without config or options is all config (but imports).
          norm = if m2 ? config || m2 ? options then m2
            else { imports = m2.imports or [ ]; config = removeAttrs m2 [ "imports" "_file" "key" "meta" ]; };
        in
        [ norm ] ++ concatMap load (norm.imports or [ ]);
      all = concatMap load modules;
      decls = foldl' (merge "options") { } (map (m: m.options or { }) all);
      config = evalNode "" decls (map (m: m.config or { }) all);
      failed = filter (a: !a.assertion) (config.assertions or [ ]);
    in
    {
      inherit config;
      # What NixOS would refuse to build with, as it would.
      checked =
        if failed == [ ] then config
        else throw "Failed assertions:\n${lib.concatStringsSep "\n" (map (a: "- ${a.message}") failed)}";
    };

  drv = name: {
    type = "derivation";
    inherit name;
    outPath = "/nix/store/${builtins.substring 0 32 (builtins.hashString "sha256" name)}-${name}";
  };

  pkgs = rec {
    nix = drv "nix-2.8.0";
    nixipfs = drv "nixipfs-from-pkgs";
    stdenv.hostPlatform.system = "x86_64-linux";
    # buildGoModule records its arguments, for the flake test.
    buildGoModule = args: drv "${args.pname}-${args.version}" // { inherit args; };
    callPackage = fn: extra:
      let f = if isPath fn then import fn else fn;
      in f (builtins.intersectAttrs (builtins.functionArgs f) (pkgs // { inherit lib; }) // extra);
  };
in
{
  inherit lib evalModules pkgs drv;
  # The base a NixOS system gives every module that this one reads.
  base = {
    options.assertions = lib.mkOption { type = lib.types.listOf lib.types.anything; default = [ ]; };
    options.warnings = lib.mkOption { type = lib.types.listOf lib.types.str; default = [ ]; };
    config.nix.package = pkgs.nix;
  };
  nixpkgs = {
    inherit lib;
    legacyPackages = lib.genAttrs [ "x86_64-linux" "aarch64-linux" "x86_64-darwin" "aarch64-darwin" ]
      (system: pkgs // { stdenv.hostPlatform.system = system; });
  };
}
