//! The library benchmark's moby/ipvs peer: a small Go program of the project's
//! (`integration/go/mobyipvs-peer/`), built from its Go module at the version its `go.mod` pins.
//!
//! It is built on first use and cached under `$XDG_CACHE_HOME/ipvs-rs/go/` (or
//! `~/.cache/ipvs-rs/go/`), keyed by the pinned moby/ipvs version and a hash of the program's
//! source (`go.mod`, `go.sum`, `*.go`), so a later run builds nothing and an edit rebuilds it.
//! Only `cargo xtask bench` asks for it: the tests never need Go. Without Go the benchmark runs
//! without this peer and says so.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{Result, step};

/// The Go module path of the peer's dependency.
const MODULE: &str = "github.com/moby/ipvs";

/// The program's folder in the repository.
fn source_dir() -> PathBuf {
    let xtask = Path::new(env!("CARGO_MANIFEST_DIR"));
    xtask
        .parent()
        .unwrap_or(xtask)
        .join("integration")
        .join("go")
        .join("mobyipvs-peer")
}

/// `$XDG_CACHE_HOME/ipvs-rs/go` or `~/.cache/ipvs-rs/go`.
fn cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/var/cache"));
    base.join("ipvs-rs").join("go")
}

/// The version of `module` that `go_mod` (a `go.mod`'s text) requires, if any.
fn pinned_version(go_mod: &str, module: &str) -> Option<String> {
    go_mod.lines().find_map(|line| {
        let line = line.trim().trim_start_matches("require").trim();
        let mut words = line.split_whitespace();
        (words.next() == Some(module))
            .then(|| words.next().map(str::to_string))
            .flatten()
    })
}

/// FNV-1a (64 bits) over the files' names and contents, in name order: a key that stays the
/// same across toolchains, unlike the standard library's hasher.
fn source_hash(files: &[(String, Vec<u8>)]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for (name, bytes) in files {
        for b in name
            .bytes()
            .chain([0])
            .chain(bytes.iter().copied())
            .chain([0])
        {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

/// The program's source files (`go.mod`, `go.sum`, `*.go`), sorted by name.
fn source_files(dir: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let path = entry.map_err(|e| e.to_string())?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if name == "go.mod" || name == "go.sum" || name.ends_with(".go") {
            let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            files.push((name.to_string(), bytes));
        }
    }
    files.sort();
    Ok(files)
}

/// The `go` command: on the `PATH`, or where the official tarball installs it.
fn go_command() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("go"))
            .find(|p| p.is_file())
    });
    on_path.or_else(|| {
        let fallback = PathBuf::from("/usr/local/go/bin/go");
        fallback.is_file().then_some(fallback)
    })
}

/// The peer's binary, built if the cache does not hold this version and source yet. `Ok(None)`
/// when Go is not installed: the benchmark then runs without this peer.
pub(crate) fn ensure_built() -> Result<Option<PathBuf>> {
    let dir = source_dir();
    let files = source_files(&dir)?;
    let go_mod = files
        .iter()
        .find(|(name, _)| name == "go.mod")
        .map(|(_, bytes)| String::from_utf8_lossy(bytes).into_owned())
        .ok_or_else(|| format!("{}: no go.mod", dir.display()))?;
    let version = pinned_version(&go_mod, MODULE)
        .ok_or_else(|| format!("{}/go.mod does not require {MODULE}", dir.display()))?;
    let key = format!("mobyipvs-peer-{version}-{:016x}", source_hash(&files));
    let binary = cache_dir().join(&key).join("mobyipvs-peer");
    if binary.is_file() {
        println!(
            "    the moby/ipvs peer ({MODULE} {version}) from the cache: {}",
            binary.display()
        );
        return Ok(Some(binary));
    }
    let Some(go) = go_command() else {
        println!(
            "    no `go` command (PATH, /usr/local/go/bin): the benchmark runs without the moby/ipvs peer"
        );
        return Ok(None);
    };
    step(&format!(
        "building the moby/ipvs peer ({MODULE} {version}, {}): not in the cache for this \
         version and source ({key}); the next runs reuse it",
        dir.display()
    ));
    let parent = binary.parent().ok_or("cache path without a folder")?;
    std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    // Built beside its final name, then renamed: an interrupted build leaves no binary that a
    // later run would take for a finished one.
    let partial = parent.join("mobyipvs-peer.partial");
    let mut command = Command::new(&go);
    command
        .args([
            "build",
            "-mod=readonly",
            "-trimpath",
            "-buildvcs=false",
            "-o",
        ])
        .arg(&partial)
        .arg(".")
        .current_dir(&dir)
        // Static, so it runs the same in the VM as on the host.
        .env("CGO_ENABLED", "0");
    println!("    {command:?}");
    let status = command
        .status()
        .map_err(|e| format!("{}: {e}", go.display()))?;
    if !status.success() {
        return Err(format!("building the moby/ipvs peer failed: {status}"));
    }
    std::fs::rename(&partial, &binary).map_err(|e| format!("{}: {e}", binary.display()))?;
    println!("    built {}", binary.display());
    Ok(Some(binary))
}

#[cfg(test)]
mod tests {
    use super::{pinned_version, source_hash};

    #[test]
    fn reads_the_pinned_version() {
        let single = "module m\n\ngo 1.22\n\nrequire github.com/moby/ipvs v1.1.0\n";
        assert_eq!(
            pinned_version(single, "github.com/moby/ipvs").as_deref(),
            Some("v1.1.0")
        );
        let block =
            "require (\n\tgithub.com/moby/ipvsx v9\n\tgithub.com/moby/ipvs v1.0.2 // indirect\n)\n";
        assert_eq!(
            pinned_version(block, "github.com/moby/ipvs").as_deref(),
            Some("v1.0.2")
        );
        assert_eq!(pinned_version("module m\n", "github.com/moby/ipvs"), None);
    }

    #[test]
    fn the_key_changes_with_any_file() {
        let files = |a: &str, b: &str| {
            vec![
                ("go.mod".to_string(), a.into()),
                ("main.go".to_string(), b.into()),
            ]
        };
        let base = source_hash(&files("x", "y"));
        assert_eq!(base, source_hash(&files("x", "y")));
        assert_ne!(base, source_hash(&files("x", "z")));
        // A byte moved from one file to the next is a different source.
        assert_ne!(base, source_hash(&files("xy", "")));
    }
}
