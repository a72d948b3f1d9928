//! What the runner needs from the machine, checked before any scenario starts, so a newcomer
//! without nginx reads "nginx: apt-get install nginx" instead of `taskset: failed to execute
//! nginx` halfway through a run.

use std::path::{Path, PathBuf};

/// One thing the runner needs, and how a person gets it.
pub struct Need {
    pub name: &'static str,
    /// Found if any of these is a file (absolute) or a program on `PATH` (bare name).
    pub any_of: &'static [&'static str],
    pub why: &'static str,
    pub how: &'static str,
}

/// Everything the scenarios use that the runner does not build itself (oha and the KEDA
/// interceptor are built by `build-tools.sh`, which needs cargo and Go).
pub const NEEDS: &[Need] = &[
    Need {
        name: "nginx",
        any_of: &["/usr/sbin/nginx", "nginx"],
        why: "the baseline proxy of `warm` (the runner starts its own, never a service)",
        how: "apt-get install nginx (then `systemctl disable --now nginx` if it started one)",
    },
    Need {
        name: "DejaVu Sans",
        any_of: &rouse_e2e::plot::FONT_FILES,
        why: "the text of every plot",
        how: "apt-get install fonts-dejavu-core",
    },
    Need {
        name: "go",
        any_of: &["go"],
        why: "builds the KEDA interceptor, nats-server and the Kubernetes control plane",
        how: "install Go from https://go.dev/dl/ (the reference runs used go1.26)",
    },
    Need {
        name: "taskset",
        any_of: &["taskset"],
        why: "pins the load generator and the system under test to separate CPUs",
        how: "apt-get install util-linux",
    },
    Need {
        name: "unshare",
        any_of: &["unshare"],
        why: "gives the KEDA interceptor its own /etc/hosts (cluster DNS names → loopback)",
        how: "apt-get install util-linux",
    },
];

/// Whether `candidate` exists: an absolute path as a file, a bare name as a file in one of
/// `path`'s directories.
fn found(candidate: &str, path: &[PathBuf]) -> bool {
    let c = Path::new(candidate);
    if c.is_absolute() {
        c.is_file()
    } else {
        path.iter().any(|dir| dir.join(c).is_file())
    }
}

/// The needs none of whose candidates is present, given the directories of `PATH`.
pub fn missing<'a>(needs: &'a [Need], path: &[PathBuf]) -> Vec<&'a Need> {
    needs
        .iter()
        .filter(|n| !n.any_of.iter().any(|c| found(c, path)))
        .collect()
}

/// Checks [`NEEDS`] against this process's `PATH`; the text to print when something is missing.
pub fn check() -> Result<(), String> {
    let path: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    let gone = missing(NEEDS, &path);
    if gone.is_empty() {
        return Ok(());
    }
    let mut text = String::from("missing what the load tests need:\n");
    for n in gone {
        text.push_str(&format!("  {}: {} — {}\n", n.name, n.why, n.how));
    }
    Err(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A program is found on the given PATH, an absolute file wherever it is; what is found by
    /// neither is reported with how to get it.
    #[test]
    fn a_missing_tool_is_named_with_how_to_get_it() {
        let dir = std::env::temp_dir().join(format!("rouse-preflight-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("present-tool"), b"").expect("file");
        let abs = dir.join("abs-file");
        std::fs::write(&abs, b"").expect("file");
        let abs: &'static str = Box::leak(abs.display().to_string().into_boxed_str());
        let needs = [
            Need {
                name: "on-path",
                any_of: &["present-tool"],
                why: "w",
                how: "h",
            },
            Need {
                name: "absolute",
                any_of: Box::leak(vec!["/nonexistent/x", abs].into_boxed_slice()),
                why: "w",
                how: "h",
            },
            Need {
                name: "absent",
                any_of: &["absent-tool", "/nonexistent/y"],
                why: "w",
                how: "apt-get install absent",
            },
        ];
        let gone: Vec<&str> = missing(&needs, std::slice::from_ref(&dir))
            .iter()
            .map(|n| n.name)
            .collect();
        assert_eq!(gone, ["absent"]);
        assert_eq!(
            missing(&needs, &[])
                .iter()
                .map(|n| n.name)
                .collect::<Vec<_>>(),
            ["on-path", "absent"],
            "without the directory on PATH the program is not found"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
