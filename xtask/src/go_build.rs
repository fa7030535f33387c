//! Go programs the tests and benchmarks run beside ours, built from their Go modules at the
//! versions the project's small Go modules under `integration/go/` pin.
//!
//! Each is built on first use and cached under `$XDG_CACHE_HOME/ipvs-rs/go/` (or
//! `~/.cache/ipvs-rs/go/`), keyed by the pinned version and a hash of the module's files
//! (`go.mod`, `go.sum`, `*.go`): a later run builds nothing, an edit of a pin rebuilds. Go's own
//! caches (`GOMODCACHE`, `GOCACHE`) keep the downloaded modules and compiled packages, so a
//! rebuild after a small change is quick too. The binaries are static (`CGO_ENABLED=0`), so they
//! run the same in the VM as on the host.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::{Result, step};

/// A Go module of the project's and the programs built from it.
pub(crate) struct GoProgram {
    /// Its folder under `integration/go/`, also the cache entry's prefix.
    pub(crate) folder: &'static str,
    /// The dependency whose pinned version names the cache entry (and the messages).
    pub(crate) module: &'static str,
    /// `(package, binary name)` pairs to build; `"."` is the module's own `main` package.
    pub(crate) binaries: &'static [(&'static str, &'static str)],
    /// Extra `-ldflags`, given the pinned version (a version stamp, for example).
    pub(crate) ldflags: fn(&str) -> String,
    /// Why it is built, for the message printed before a build.
    pub(crate) why: &'static str,
}

/// The binaries of one built [`GoProgram`].
pub(crate) struct Built {
    /// The folder that holds them, each under its binary name.
    pub(crate) dir: PathBuf,
    /// The pinned version of [`GoProgram::module`].
    pub(crate) version: String,
}

impl Built {
    /// The path of the binary `name`.
    pub(crate) fn binary(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// The module's folder in the repository.
fn source_dir(folder: &str) -> PathBuf {
    let xtask = Path::new(env!("CARGO_MANIFEST_DIR"));
    xtask
        .parent()
        .unwrap_or(xtask)
        .join("integration")
        .join("go")
        .join(folder)
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

/// The module's source files (`go.mod`, `go.sum`, `*.go`), sorted by name.
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
pub(crate) fn go_command() -> Option<PathBuf> {
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

/// The binary `name` of a benchmark's peer `program`, built if the cache does not hold it;
/// `Ok(None)` when Go is not installed, said with `without` (what the benchmark runs
/// without).
pub(crate) fn optional_binary(
    program: &GoProgram,
    name: &str,
    without: &str,
) -> Result<Option<PathBuf>> {
    match ensure_built(program)? {
        Some(built) => Ok(Some(built.binary(name))),
        None => {
            println!(
                "    no `go` command (PATH, /usr/local/go/bin): the benchmark runs without {without}"
            );
            Ok(None)
        }
    }
}

/// The program's binaries, built if the cache does not hold this version and source yet.
/// `Ok(None)` when Go is not installed; the caller decides whether that is an error.
pub(crate) fn ensure_built(program: &GoProgram) -> Result<Option<Built>> {
    let dir = source_dir(program.folder);
    let files = source_files(&dir)?;
    let go_mod = files
        .iter()
        .find(|(name, _)| name == "go.mod")
        .map(|(_, bytes)| String::from_utf8_lossy(bytes).into_owned())
        .ok_or_else(|| format!("{}: no go.mod", dir.display()))?;
    let module = program.module;
    let version = pinned_version(&go_mod, module)
        .ok_or_else(|| format!("{}/go.mod does not require {module}", dir.display()))?;
    let key = format!("{}-{version}-{:016x}", program.folder, source_hash(&files));
    let out = cache_dir().join(&key);
    let names: Vec<&str> = program.binaries.iter().map(|(_, name)| *name).collect();
    if names.iter().all(|name| out.join(name).is_file()) {
        println!(
            "    {} ({module} {version}) from the cache: {}",
            names.join(", "),
            out.display()
        );
        return Ok(Some(Built { dir: out, version }));
    }
    let Some(go) = go_command() else {
        return Ok(None);
    };
    step(&format!(
        "building {} ({module} {version}, {}) {}: not in the cache for this version and source \
         ({key}); the next runs reuse it",
        names.join(", "),
        dir.display(),
        program.why,
    ));
    // Built into a folder beside the final one, then renamed: an interrupted build leaves
    // nothing a later run would take for a finished one.
    let partial = cache_dir().join(format!("{key}.partial"));
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&partial).map_err(|e| format!("{}: {e}", partial.display()))?;
    let started = Instant::now();
    for (package, name) in program.binaries {
        let mut command = Command::new(&go);
        command
            .args(["build", "-mod=readonly", "-trimpath", "-buildvcs=false"])
            .arg(format!("-ldflags=-s -w {}", (program.ldflags)(&version)))
            .arg("-o")
            .arg(partial.join(name))
            .arg(package)
            .current_dir(&dir)
            .env("CGO_ENABLED", "0")
            // The go.mod files name the Go they need; never fetch another toolchain.
            .env("GOTOOLCHAIN", "local");
        println!("    {command:?}");
        let status = command
            .status()
            .map_err(|e| format!("{}: {e}", go.display()))?;
        if !status.success() {
            return Err(format!("building {name} ({package}) failed: {status}"));
        }
    }
    let _ = std::fs::remove_dir_all(&out);
    std::fs::rename(&partial, &out).map_err(|e| format!("{}: {e}", out.display()))?;
    println!(
        "    built {} in {:.0}s: {}",
        names.join(", "),
        started.elapsed().as_secs_f64(),
        out.display()
    );
    Ok(Some(Built { dir: out, version }))
}

/// No extra `-ldflags`.
pub(crate) fn no_ldflags(_version: &str) -> String {
    String::new()
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
