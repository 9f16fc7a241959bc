{
  description = "quorate: a Nix and Guix substitute cache proxy that serves a store path only when a quorum of independent builders agree";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs =
    { self, nixpkgs }:
    let
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forEachSystem = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      packages = forEachSystem (pkgs: rec {
        quorate = pkgs.callPackage ./nixos-module/package.nix { };
        default = quorate;
      });

      overlays.default = final: _prev: {
        quorate = final.callPackage ./nixos-module/package.nix { };
      };

      # services.quorate, running this flake's build of quorate unless told otherwise.
      nixosModules.default =
        { lib, pkgs, ... }:
        {
          imports = [ ./nixos-module ];
          services.quorate.package = lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.quorate;
        };
      nixosModules.quorate = self.nixosModules.default;
    };
}
