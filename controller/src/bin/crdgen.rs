//! Prints Rouse's CRDs as YAML. Regenerate the committed copy with
//! `cargo run -p rouse-controller --bin crdgen > manifests/crds/rouse.dev.yaml`; a test in
//! rouse-core fails when they differ.

use std::process::ExitCode;

fn main() -> ExitCode {
    match rouse_core::crd::crds_yaml() {
        Ok(yaml) => {
            print!("{yaml}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("crdgen: {e}");
            ExitCode::FAILURE
        }
    }
}
