//! Provisioning the real-kernel VM on a fresh machine: Debian packages, virtme-ng, and a Debian
//! kernel with IPVS, cached so that later runs download nothing.
//!
//! The host's own kernel on these machines has no IPVS and no module support, so the tests boot
//! a stock Debian kernel under QEMU with virtme-ng, which shares the host's root file system
//! read-only with the guest: test binaries built on the host run inside at the same paths.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{Result, step};

/// A kernel ready to boot.
#[derive(Debug, Clone)]
pub(crate) struct Kernel {
    /// Its release, e.g. `6.1.0-56-amd64`.
    pub(crate) version: String,
    /// The image to boot.
    pub(crate) vmlinuz: PathBuf,
}

/// Debian packages the VM needs: the program that proves each is present, and why.
const PACKAGES: &[(&str, &str, &str)] = &[
    (
        "qemu-system-x86",
        "/usr/bin/qemu-system-x86_64",
        "boots the test kernel",
    ),
    (
        "udev",
        "/usr/bin/udevadm",
        "lets the guest find its virtio-serial ports (exit code, output)",
    ),
    ("kmod", "/usr/sbin/depmod", "indexes the kernel's modules"),
    (
        "busybox-static",
        "/bin/busybox",
        "virtme-ng's guest init helpers",
    ),
    (
        "ipvsadm",
        "/usr/sbin/ipvsadm",
        "the reference IPVS client tests cross-check against",
    ),
    (
        "iproute2",
        "/usr/sbin/ip",
        "used by virtme-ng's guest set-up",
    ),
    (
        "ipset",
        "/usr/sbin/ipset",
        "kube-proxy's IPVS mode, the control-plane tests' reference, programs IP sets",
    ),
    (
        "iptables",
        "/usr/sbin/iptables",
        "kube-proxy's IPVS mode, the control-plane tests' reference, writes its rules with it",
    ),
    (
        "nftables",
        "/usr/sbin/nft",
        "the reference nftables client the netfilter tests cross-check the daemon's table with",
    ),
];

/// Installs whatever is missing and returns the kernel to boot.
pub(crate) fn provision() -> Result<Kernel> {
    let mut apt_updated = false;
    ensure_packages(&mut apt_updated)?;
    let kernel = ensure_kernel(&mut apt_updated)?;
    vng_path()?;
    Ok(kernel)
}

fn run(command: &mut Command) -> Result<()> {
    let shown = format!("{command:?}");
    println!("    $ {shown}");
    let status = command
        .status()
        .map_err(|e| format!("cannot run {shown}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{shown} failed: {status}"))
    }
}

fn apt_update(done: &mut bool) -> Result<()> {
    if !*done {
        run(Command::new("apt-get").args(["update", "-qq"]))?;
        *done = true;
    }
    Ok(())
}

fn ensure_packages(apt_updated: &mut bool) -> Result<()> {
    let missing: Vec<_> = PACKAGES
        .iter()
        .filter(|(_, probe, _)| !Path::new(probe).exists())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    step(
        "installing the VM's Debian packages (the host kernel has no IPVS; tests boot one that does)",
    );
    for (name, _, why) in &missing {
        println!("    {name}: {why}");
    }
    apt_update(apt_updated)?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(missing.iter().map(|(name, _, _)| *name))
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

/// Finds `vng`, installing virtme-ng from PyPI when it is missing.
pub(crate) fn vng_path() -> Result<PathBuf> {
    let scripts = python_scripts_dir()?;
    let candidates = [
        scripts.join("vng"),
        PathBuf::from("/usr/local/bin/vng"),
        PathBuf::from("/usr/bin/vng"),
    ];
    if let Some(found) = candidates.iter().find(|p| p.exists()) {
        return Ok(found.clone());
    }
    step(
        "installing virtme-ng from PyPI (boots a kernel with the host's file system, runs one command)",
    );
    run(Command::new("python3").args([
        "-m",
        "pip",
        "install",
        "-q",
        "--disable-pip-version-check",
        "virtme-ng",
    ]))?;
    let vng = python_scripts_dir()?.join("vng");
    if vng.exists() {
        Ok(vng)
    } else {
        Err(format!(
            "virtme-ng installed but {} is missing",
            vng.display()
        ))
    }
}

fn python_scripts_dir() -> Result<PathBuf> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_path('scripts'))",
        ])
        .output()
        .map_err(|e| format!("python3 is needed to install virtme-ng: {e}"))?;
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// The cache of unpacked kernels: `$XDG_CACHE_HOME/ipvs-rs/kernels` or `~/.cache/ipvs-rs/kernels`.
fn cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/var/cache"));
    base.join("ipvs-rs").join("kernels")
}

fn ensure_kernel(apt_updated: &mut bool) -> Result<Kernel> {
    let cache = cache_dir();
    if let Some(kernel) = cached_kernel(&cache) {
        println!(
            "    kernel {} from the cache ({})",
            kernel.version,
            cache.display()
        );
        install_modules(&cache.join(&kernel.version), &kernel.version)?;
        return Ok(kernel);
    }
    step("fetching a Debian kernel with IPVS (first run only; it is cached for the next ones)");
    apt_update(apt_updated)?;
    let out = Command::new("apt-cache")
        .args(["depends", "linux-image-amd64"])
        .output()
        .map_err(|e| format!("apt-cache: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let package = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Depends: "))
        .filter(|p| p.starts_with("linux-image-"))
        .ok_or_else(|| format!("cannot tell which kernel linux-image-amd64 depends on:\n{text}"))?
        .to_string();
    let version = package.trim_start_matches("linux-image-").to_string();
    let dir = cache.join(&version);
    let download = cache.join("download");
    std::fs::create_dir_all(&download).map_err(|e| format!("{}: {e}", download.display()))?;
    run(Command::new("apt-get")
        .arg("download")
        .arg(&package)
        .current_dir(&download))?;
    let deb = std::fs::read_dir(&download)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&package))
        })
        .ok_or("apt-get download left no .deb")?;
    let unpack = cache.join(format!("{version}.partial"));
    let _ = std::fs::remove_dir_all(&unpack);
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpack))?;
    run(Command::new("depmod").arg("-b").arg(&unpack).arg(&version))?;
    std::fs::rename(&unpack, &dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let _ = std::fs::remove_dir_all(&download);
    install_modules(&dir, &version)?;
    cached_kernel(&cache)
        .ok_or_else(|| format!("kernel unpacked in {} but not usable", dir.display()))
}

/// The newest complete kernel in the cache (an unfinished unpack ends in `.partial`).
fn cached_kernel(cache: &Path) -> Option<Kernel> {
    let mut found: Vec<Kernel> = std::fs::read_dir(cache)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version = e.file_name().to_string_lossy().into_owned();
            let vmlinuz = e.path().join("boot").join(format!("vmlinuz-{version}"));
            let modules = e
                .path()
                .join("lib/modules")
                .join(&version)
                .join("modules.dep");
            (vmlinuz.exists() && modules.exists()).then_some(Kernel { version, vmlinuz })
        })
        .collect();
    found.sort_by(|a, b| a.version.cmp(&b.version));
    found.pop()
}

/// The guest sees the host's root file system, so its modules must be under the host's
/// `/lib/modules/<version>` (a folder no host kernel of this version uses).
fn install_modules(unpacked: &Path, version: &str) -> Result<()> {
    let target = Path::new("/lib/modules").join(version);
    if target.join("modules.dep").exists() {
        return Ok(());
    }
    step(&format!(
        "installing the guest kernel's modules into {}",
        target.display()
    ));
    std::fs::create_dir_all("/lib/modules").map_err(|e| format!("/lib/modules: {e}"))?;
    let source = unpacked.join("lib/modules").join(version);
    run(Command::new("cp").arg("-a").arg(&source).arg(&target))
}
