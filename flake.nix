{
  description = "kdbuild: a declarative, Nix-like build system for ML training pipelines (with the KD-GAT pipeline)";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.05";
    flake-utils.url = "github:numtide/flake-utils";
  };

  outputs = { self, nixpkgs, flake-utils }:
    flake-utils.lib.eachDefaultSystem (system:
      let
        pkgs = import nixpkgs { inherit system; };
        manifest = (pkgs.lib.importTOML ./Cargo.toml).package;
      in
      {
        # `nix build`: the kdbuild binary. Tests run through `.ci/run` (they need the real CAN
        # data beside the checkout and a SLURM cluster), not in the Nix sandbox.
        packages.default = pkgs.rustPlatform.buildRustPackage {
          pname = manifest.name;
          version = manifest.version;
          src = pkgs.lib.cleanSource ./.;
          cargoLock.lockFile = ./Cargo.lock;
          doCheck = false;
          meta = {
            description = manifest.description;
            mainProgram = "kdbuild";
          };
        };

        # `nix develop`: the pinned toolchain and the tools the tests and reports use.
        devShells.default = pkgs.mkShell {
          packages = with pkgs; [
            rustc
            cargo
            clippy
            rustfmt
            rust-analyzer
            graphviz   # kdbuild graph --format svg, the report's DAG
            sqlite     # inspecting store/db.sqlite by hand
            slurm      # sbatch, squeue, sacct, scancel for --executor slurm
            chromium   # headless rendering tests of the HTML report
            python3    # benches/ (Snakemake and PyTorch Geometric side by side)
          ];
          RUST_BACKTRACE = "1";
        };
      });
}
