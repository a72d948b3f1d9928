//! Certificates and keys for the control plane, made with the `openssl` CLI: a CA, the
//! apiserver's serving certificate (IP SAN 127.0.0.1, so clients verify it rather than skip
//! verification), and the service-account signing key pair.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};

const EC: [&str; 4] = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];

fn openssl(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .context("running openssl (is it installed?)")?;
    if !out.status.success() {
        bail!("openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// Writes `ca.{crt,key}`, `apiserver.{crt,key}` and `sa.{key,pub}` into `dir`.
pub fn generate(dir: &Path) -> anyhow::Result<()> {
    let mut ca = vec![
        "req",
        "-x509",
        "-nodes",
        "-days",
        "7",
        "-subj",
        "/CN=rouse-test-ca",
    ];
    ca.extend(EC);
    ca.extend(["-keyout", "ca.key", "-out", "ca.crt"]);
    ca.extend([
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(dir, &ca)?;

    let mut csr = vec!["req", "-nodes", "-subj", "/CN=kube-apiserver"];
    csr.extend(EC);
    csr.extend(["-keyout", "apiserver.key", "-out", "apiserver.csr"]);
    openssl(dir, &csr)?;
    std::fs::write(
        dir.join("apiserver.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc\n\
         basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "apiserver.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "7",
            "-out",
            "apiserver.crt",
            "-extfile",
            "apiserver.ext",
        ],
    )?;
    openssl(dir, &["genrsa", "-out", "sa.key", "2048"])?;
    openssl(dir, &["rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub"])?;
    Ok(())
}
