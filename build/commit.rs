//! Shared by the binaries' build scripts: records the commit a binary is built from, for
//! `--version`. Outside a git checkout (a source tarball) the commit is `unknown`.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    (output.status.success() && !text.trim().is_empty()).then(|| text.trim().to_owned())
}

/// Sets `CHAT_BUILD_COMMIT` for the crate being built, and when to run again.
pub fn record() {
    // Outside a git checkout (a source tarball) the commit is unknown, not an error.
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=CHAT_BUILD_COMMIT={commit}");
    // Rebuild when HEAD moves: HEAD itself (a checkout), the branch it points at (a commit),
    // packed-refs (a branch packed by git gc). Only existing files: cargo reruns the script on
    // every build for a missing one.
    let branch = git(&["symbolic-ref", "-q", "HEAD"]);
    let watched = ["HEAD", branch.as_deref().unwrap_or("HEAD"), "packed-refs"];
    for path in watched
        .iter()
        .filter_map(|name| git(&["rev-parse", "--git-path", name]))
    {
        if std::path::Path::new(&path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=../../build/commit.rs");
}
