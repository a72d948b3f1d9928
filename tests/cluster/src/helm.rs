//! The real `helm` (helm.sh/helm/v3/cmd/helm, pinned in `tests/cluster/build-helm.sh`), built
//! from its Go module on first use and cached outside the repository, like the control plane.
//!
//! ```text
//! let helm = rouse_testcluster::helm::binary()?;
//! Command::new(helm).args(["lint", "--strict", "charts/rouse"]);
//! ```

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The helm binary, built once per process by the build script (a no-op when cached).
/// `ROUSE_HELM` names an existing binary instead.
pub fn binary() -> anyhow::Result<&'static Path> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let r = BIN.get_or_init(|| {
        if let Some(path) = std::env::var_os("ROUSE_HELM") {
            return Ok(PathBuf::from(path));
        }
        let path =
            crate::run_build_script(&Path::new(env!("CARGO_MANIFEST_DIR")).join("build-helm.sh"))?;
        if path.is_file() {
            Ok(path)
        } else {
            Err(format!("{} missing", path.display()))
        }
    });
    r.as_deref().map_err(|e| anyhow::anyhow!("{e}"))
}
