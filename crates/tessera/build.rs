//! Stamps the commit the binary was built from into `tessera --version`:
//! `TESSERA_COMMIT` when set (an image built without `.git`, by
//! `docker build --build-arg TESSERA_COMMIT=…`), else `git rev-parse`, else
//! `unknown`. A tree with uncommitted changes is marked `-modified`.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn main() {
    println!("cargo:rerun-if-env-changed=TESSERA_COMMIT");
    let commit = match std::env::var("TESSERA_COMMIT") {
        Ok(c) if !c.trim().is_empty() => c.trim().to_owned(),
        _ => match git(&["rev-parse", "--short=12", "HEAD"]) {
            Some(head) => {
                // Rebuilt when HEAD moves or the branch gets a commit.
                if let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]) {
                    for watched in ["HEAD", "refs/heads", "packed-refs"] {
                        let path = std::path::Path::new(&dir).join(watched);
                        if path.exists() {
                            println!("cargo:rerun-if-changed={}", path.display());
                        }
                    }
                }
                let clean = Command::new("git")
                    .args(["diff", "--quiet", "HEAD", "--"])
                    .status()
                    .is_ok_and(|s| s.success());
                if clean {
                    head
                } else {
                    format!("{head}-modified")
                }
            }
            None => "unknown".to_owned(),
        },
    };
    println!("cargo:rustc-env=TESSERA_COMMIT={commit}");
}
