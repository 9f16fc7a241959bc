# quorate built from this repository with nixpkgs' rustPlatform (used by ../flake.nix and as
# the module's default package when nixpkgs has no `quorate`).
{
  lib,
  rustPlatform,
}:

let
  root = ../.;
in
rustPlatform.buildRustPackage {
  pname = "quorate";
  version = (lib.importTOML (root + "/Cargo.toml")).package.version;

  # The checkout less what is not source: VCS data and `result` links (cleanSource), build
  # output and local state. (cleanSourceWith rather than lib.fileset: it evaluates on Nix 2.8,
  # where tests/deploy.rs checks this file.)
  src = lib.cleanSourceWith {
    src = lib.cleanSource root;
    name = "quorate-source";
    filter =
      path: _type:
      !(lib.elem (lib.removePrefix "${toString root}/" path) [
        "target"
        "quorate-state"
      ]);
  };
  cargoLock.lockFile = root + "/Cargo.lock";

  cargoBuildFlags = [
    "--package"
    "quorate"
  ];
  # The test suite drives a real Nix client, PostgreSQL and Guile (scripts/test.sh); it does
  # not fit the build sandbox.
  doCheck = false;

  meta = {
    description = "Substitute cache proxy for Nix and Guix that serves a store path only when a quorum of independent builders agree";
    license = lib.licenses.asl20;
    mainProgram = "quorate";
    platforms = lib.platforms.linux;
  };
}
