# The rest of NixOS, as far as services.quorate touches it, for evaluating the module with
# nixpkgs `lib` alone (tests/deploy.rs; no nixpkgs checkout, no network).
#
# Declared here: the options the module sets outside itself (assertions, warnings, systemd
# units, PostgreSQL, the firewall, system packages), typed loosely so that whatever the module
# writes is kept as written and can be inspected. Stood in for: the few `pkgs` functions it
# calls. The stand-ins make derivations that are never built: `formats.toml` would run
# json2toml in nixpkgs, so the tests render `renderedSettings` to TOML themselves and run
# `quorate check-config` on it, which is what the module's check derivation does.
{ lib, ... }:

let
  inherit (lib) mkOption types;

  # A derivation that evaluates (it has an out path) but is never built here.
  standIn =
    name: attrs:
    derivation (
      {
        inherit name;
        system = "x86_64-linux";
        builder = "/bin/sh";
        args = [
          "-c"
          "exit 1"
        ];
      }
      // attrs
    );

  loose = mkOption {
    type = types.attrsOf types.anything;
    default = { };
  };
in
{
  options = {
    assertions = mkOption {
      type = types.listOf types.unspecified;
      default = [ ];
    };
    warnings = mkOption {
      type = types.listOf types.str;
      default = [ ];
    };
    systemd.services = loose;
    services.postgresql = loose;
    networking.firewall.allowedTCPPorts = mkOption {
      type = types.listOf types.port;
      default = [ ];
    };
    environment.systemPackages = mkOption {
      type = types.listOf types.package;
      default = [ ];
    };
  };

  config._module.args.pkgs = {
    quorate = standIn "quorate-0.1.0" { };
    formats.toml = _: {
      generate = name: value: standIn name { json = builtins.toJSON value; };
    };
    runCommand = name: env: script: standIn name (env // { inherit script; });
  };
}
