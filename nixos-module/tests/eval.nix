# Evaluates services.quorate for one configuration the way NixOS would, with nixpkgs `lib`
# (vendored in ./nixpkgs-lib) and the stand-ins of ./stub.nix. Failed assertions abort the
# evaluation with their messages, as they abort `nixos-rebuild`.
#
#   nix-instantiate --eval --strict --json --readonly-mode nixos-module/tests/eval.nix \
#     --arg configuration '{ services.quorate.enable = true; }'
{
  configuration ? { },
}:

let
  lib = import ./nixpkgs-lib/lib;
  evaluated = lib.evalModules {
    modules = [
      ../default.nix
      ./stub.nix
      configuration
    ];
  };
  inherit (evaluated) config;
  failed = map (a: a.message) (lib.filter (a: !a.assertion) config.assertions);
in
if failed != [ ] then
  throw "\nFailed assertions:\n${lib.concatMapStrings (m: "- ${m}\n") failed}"
else
  {
    unit = config.systemd.services.quorate or null;
    settings = config.services.quorate.renderedSettings;
    configFile = "${config.services.quorate.configFile}";
    postgresql = config.services.postgresql;
    firewall = config.networking.firewall.allowedTCPPorts;
    inherit (config) warnings;
  }
