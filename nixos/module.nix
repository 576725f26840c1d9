# NixOS module: services.nixipfs runs `nixipfs daemon` (the IPFS node and the
# binary-cache gateway) and, optionally, `nixipfs builder`, as a dedicated
# user in hardened systemd units. substituter.enable points the local Nix at
# the gateway.
{ config, lib, pkgs, ... }:

let
  inherit (lib) mkOption mkEnableOption mkIf mkMerge types literalExpression;
  cfg = config.services.nixipfs;

  # systemd expands %-specifiers in ExecStart, even inside quotes; values
  # from options are taken literally.
  literal = s: builtins.replaceStrings [ "%" ] [ "%%" ] (toString s);
  repeated = flag: values: lib.concatMap (v: [ "--${flag}" (literal v) ]) values;

  # The local Nix reaches a wildcard listen address on loopback.
  listenParts = builtins.match "(.*):([0-9]+)" cfg.listen;
  gatewayHost =
    let host = builtins.elemAt listenParts 0;
    in if host == "" || host == "0.0.0.0" then "127.0.0.1"
    else if host == "[::]" then "[::1]"
    else host;
  gatewayURL = "http://${gatewayHost}:${builtins.elemAt listenParts 1}";

  inStateDir = lib.hasPrefix "/var/lib/" cfg.dataDir;

  global = [ "--data-dir" (literal cfg.dataDir) ];

  # A builder is a daemon that also builds: one unit, one IPFS node, one
  # gateway (its substituter), with `builder` in place of `daemon`.
  daemonArgs = [ "${cfg.package}/bin/nixipfs" ] ++ global
    ++ [ (if cfg.builder.enable then "builder" else "daemon") "--listen" (literal cfg.listen) ]
    ++ lib.optionals (cfg.network != null) [ "--network" (literal cfg.network) ]
    ++ repeated "peer" cfg.peers
    ++ repeated "follow" cfg.follow
    ++ repeated "swarm-listen" cfg.swarmListen
    ++ lib.optional (cfg.watchStore != null) "--watch-store=${cfg.watchStore}"
    # The key reaches the service as a credential: the file can stay
    # root-only, and never enters the Nix store.
    ++ lib.optionals (cfg.signKeyFile != null) [ "--sign-key" "%d/sign-key" ]
    ++ lib.optionals cfg.builder.enable (repeated "systems" cfg.builder.systems
      ++ repeated "features" cfg.builder.features
      ++ [ "--max-jobs" (toString cfg.builder.maxJobs) ]
      ++ cfg.builder.extraFlags)
    ++ cfg.extraFlags;

  # What both units share: the user, the state, and a sandbox that leaves
  # them the data dir, loopback and the network, and the nix-daemon socket.
  hardening = {
    User = "nixipfs";
    Group = "nixipfs";
    UMask = "0077";
    Restart = "on-failure";
    RestartSec = "5s";
    LimitNOFILE = 65536;
    NoNewPrivileges = true;
    ProtectSystem = "strict";
    ProtectHome = true;
    PrivateTmp = true;
    PrivateDevices = true;
    ProtectKernelTunables = true;
    ProtectKernelModules = true;
    ProtectKernelLogs = true;
    ProtectControlGroups = true;
    ProtectClock = true;
    ProtectHostname = true;
    ProtectProc = "invisible";
    RestrictNamespaces = true;
    RestrictRealtime = true;
    RestrictSUIDSGID = true;
    LockPersonality = true;
    MemoryDenyWriteExecute = true;
    RemoveIPC = true;
    CapabilityBoundingSet = "";
    AmbientCapabilities = "";
    # AF_NETLINK: libp2p reads the routing table and interface addresses.
    RestrictAddressFamilies = [ "AF_UNIX" "AF_INET" "AF_INET6" "AF_NETLINK" ];
    SystemCallArchitectures = "native";
    SystemCallFilter = [ "@system-service" "~@privileged" ];
    CacheDirectory = "nixipfs";
  } // (if inStateDir then {
    StateDirectory = lib.removePrefix "/var/lib/" cfg.dataDir;
    StateDirectoryMode = "0700";
  } else {
    ReadWritePaths = [ cfg.dataDir ];
  });

  # The nix CLI (which nixipfs runs) keeps its cache out of the data dir.
  environment = {
    HOME = cfg.dataDir;
    XDG_CACHE_HOME = "/var/cache/nixipfs";
  };
in
{
  options.services.nixipfs = {
    enable = mkEnableOption "nixipfs, the IPFS-backed binary cache and content store for Nix";

    package = mkOption {
      type = types.package;
      default = pkgs.nixipfs;
      defaultText = literalExpression "pkgs.nixipfs";
      description = "The nixipfs package (the flake's nixosModules.default sets its own).";
    };

    dataDir = mkOption {
      type = types.path;
      default = "/var/lib/nixipfs";
      description = ''
        Data directory: the embedded IPFS repo, the manifest index, the API socket.
        Under /var/lib it is the units' StateDirectory; elsewhere it is created by
        tmpfiles and made writable with ReadWritePaths.
      '';
    };

    listen = mkOption {
      type = types.str;
      default = "127.0.0.1:8080";
      example = "0.0.0.0:8080";
      description = "Gateway (binary-cache HTTP) listen address, host:port.";
    };

    network = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "home";
      description = ''
        Join this nixipfs network: announce this node's manifest and follow the ones
        announced there. Peers still come from `peers`.
      '';
    };

    peers = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "/ip4/192.0.2.7/tcp/4001/p2p/12D3KooW..." ];
      description = "IPFS peer multiaddrs to connect to. Nothing else is dialled unless asked.";
    };

    follow = mkOption {
      type = types.listOf types.str;
      default = [ ];
      description = "IPNS names of other nodes' manifests to serve too.";
    };

    swarmListen = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "/ip4/0.0.0.0/tcp/4001" ];
      description = ''
        IPFS swarm listen multiaddrs. The default is loopback only: other machines'
        nodes reach this one only if it listens on a routable address.
      '';
    };

    watchStore = mkOption {
      type = types.nullOr (types.enum [ "signed" "all" ]);
      default = null;
      description = ''
        Publish new paths of the local store as they appear: those signed by a
        trusted key, or all.
      '';
    };

    signKeyFile = mkOption {
      type = types.nullOr types.path;
      default = null;
      example = "/run/keys/nixipfs.sec";
      description = ''
        Nix secret key file (`nixipfs keys generate`): watchStore adds a signature
        with it. It is passed to the unit as a systemd credential, so it can stay
        readable by root only. Give it as a string so that it is not copied to the store.
      '';
    };

    publicKey = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "cache.example.org-1:AbC...=";
      description = "The public key of signKeyFile; substituter.enable makes the local Nix trust it.";
    };

    extraFlags = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "--priority" "20" ];
      description = "More flags for `nixipfs daemon` (see the configuration reference).";
    };

    builder = {
      enable = mkEnableOption "`nixipfs builder`: build jobs from the network with the local Nix";

      systems = mkOption {
        type = types.listOf types.str;
        default = [ pkgs.stdenv.hostPlatform.system ];
        defaultText = literalExpression "[ pkgs.stdenv.hostPlatform.system ]";
        description = "Systems this builder builds for.";
      };

      features = mkOption {
        type = types.listOf types.str;
        default = [ ];
        example = [ "kvm" "big-parallel" ];
        description = "System features this builder offers.";
      };

      maxJobs = mkOption {
        type = types.ints.positive;
        default = 1;
        description = "Jobs built at once.";
      };

      extraFlags = mkOption {
        type = types.listOf types.str;
        default = [ ];
        description = "More flags for `nixipfs builder`.";
      };
    };

    substituter.enable = mkEnableOption ''
      the gateway as a substituter of the local Nix: it is added to
      nix.settings.substituters, and publicKey to trusted-public-keys
    '';
  };

  config = mkIf cfg.enable (mkMerge [
    {
      assertions = [
        {
          assertion = listenParts != null;
          message = "services.nixipfs.listen = \"${cfg.listen}\": want host:port";
        }
        {
          assertion = cfg.builder.enable -> cfg.network != null;
          message = "services.nixipfs.builder.enable needs services.nixipfs.network: jobs come from the network";
        }
        {
          assertion = cfg.builder.enable -> cfg.signKeyFile != null;
          message = "services.nixipfs.builder.enable needs services.nixipfs.signKeyFile: builders sign what they build";
        }
      ];
      warnings = lib.optional (cfg.substituter.enable && cfg.signKeyFile != null && cfg.publicKey == null)
        "services.nixipfs.publicKey is not set: the local Nix will not trust paths signed only by signKeyFile";

      users.users.nixipfs = {
        isSystemUser = true;
        group = "nixipfs";
        home = cfg.dataDir;
        description = "nixipfs daemon";
      };
      users.groups.nixipfs = { };

      environment.systemPackages = [ cfg.package ];

      systemd.services.nixipfs = {
        description = "nixipfs: IPFS node and Nix binary-cache gateway";
        wantedBy = [ "multi-user.target" ];
        wants = [ "network-online.target" ];
        after = [ "network-online.target" "nix-daemon.socket" ];
        path = [ config.nix.package ];
        inherit environment;
        serviceConfig = hardening // {
          ExecStart = lib.escapeShellArgs daemonArgs;
        } // lib.optionalAttrs (cfg.signKeyFile != null) {
          LoadCredential = [ "sign-key:${toString cfg.signKeyFile}" ];
        };
      };
    }

    (mkIf (!inStateDir) {
      systemd.tmpfiles.rules = [ "d ${cfg.dataDir} 0700 nixipfs nixipfs - -" ];
    })

    (mkIf cfg.substituter.enable {
      nix.settings.substituters = [ gatewayURL ];
      nix.settings.trusted-public-keys = lib.optional (cfg.publicKey != null) cfg.publicKey;
    })
  ]);
}
