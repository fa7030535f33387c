//! Project commands, run as `cargo xtask <command>`.
//!
//! - `test`: every check and every test — format, clippy, unit and doc tests, docs, and the
//!   real-kernel tests (on the host when it has IPVS, otherwise in a QEMU VM it provisions).
//! - `kernel-tests`: only the real-kernel tests.
//! - `control-plane-tests`: only the tests against a real Kubernetes control plane.
//! - `demo`: the README's main job, in the real kernel.
//! - `bench`: the real-kernel benchmarks (figures, not pass/fail).
//! - `vm`: runs any command inside the VM (for debugging).
//! - `provision`: installs what the VM needs and caches the kernel, without running anything.
//! - `guest-run`: internal; runs a test plan where IPVS is (inside the VM or on the host).

mod bench;
mod cargo;
mod control_plane;
mod go_build;
mod kernel;
mod kube_router;
mod moby_peer;
mod plan;
mod provision;
mod vm;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Where the real-kernel tests run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum KernelChoice {
    /// On the host if it has IPVS and the privileges, otherwise in the VM.
    Auto,
    /// On the host; fail if it cannot.
    Host,
    /// In the VM, even if the host could.
    Vm,
    /// Do not run them (explicitly asked; the summary says so).
    Skip,
}

#[derive(Debug, Parser)]
#[command(about = "Project commands: tests with the real-kernel harness, the demo, the VM")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs every check and test: fmt, clippy, unit and doc tests, docs, real-kernel tests.
    Test {
        /// Where the real-kernel tests run (env IPVS_TEST_KERNEL).
        #[arg(long, value_enum, env = "IPVS_TEST_KERNEL", default_value = "auto")]
        kernel: KernelChoice,
    },
    /// Runs only the real-kernel tests (built first).
    KernelTests {
        /// Where they run (env IPVS_TEST_KERNEL).
        #[arg(long, value_enum, env = "IPVS_TEST_KERNEL", default_value = "auto")]
        kernel: KernelChoice,
        /// Only tests whose name contains this.
        #[arg(long)]
        filter: Option<String>,
    },
    /// Runs only the tests against a real Kubernetes control plane (built on first use).
    ControlPlaneTests {
        /// Where they run (env IPVS_TEST_KERNEL).
        #[arg(long, value_enum, env = "IPVS_TEST_KERNEL", default_value = "auto")]
        kernel: KernelChoice,
        /// Only tests whose name (after `control_plane::`) starts with this.
        #[arg(long)]
        filter: Option<String>,
    },
    /// Runs the demo: the node daemon on a manifests folder, real traffic through IPVS in namespaces.
    Demo {
        /// Where it runs (env IPVS_TEST_KERNEL; `skip` is not allowed).
        #[arg(long, value_enum, env = "IPVS_TEST_KERNEL", default_value = "auto")]
        kernel: KernelChoice,
    },
    /// Runs the real-kernel benchmarks (release build) and prints their figures.
    Bench {
        /// Where they run (env IPVS_TEST_KERNEL; `skip` is not allowed).
        #[arg(long, value_enum, env = "IPVS_TEST_KERNEL", default_value = "auto")]
        kernel: KernelChoice,
    },
    /// Runs a shell command inside the VM and returns its exit status.
    Vm {
        /// The command line, run by the guest's shell.
        command: String,
        /// Folders the guest may write to (repeatable).
        #[arg(long)]
        rwdir: Vec<std::path::PathBuf>,
    },
    /// Installs the VM's packages and caches its kernel.
    Provision,
    /// Internal: runs a plan of test binaries and programs where the kernel has IPVS.
    GuestRun {
        /// The plan (JSON) written by the host side.
        #[arg(long)]
        plan: std::path::PathBuf,
        /// Where to write the results (JSON).
        #[arg(long)]
        results: std::path::PathBuf,
        /// Running in the throw-away VM: lower the kernel's hung-task timeout so a stalled
        /// kernel call leaves its stack in the log that a failed test binary prints.
        #[arg(long)]
        in_vm: bool,
        /// The plan needs the VM's user-mode network: make sure it is configured first.
        #[arg(long)]
        network: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Test { kernel } => cargo::test_everything(kernel),
        Command::KernelTests { kernel, filter } => {
            kernel::run_kernel_tests(kernel, filter.as_deref()).map(|s| {
                println!("\n{}", s.describe());
                s.ok()
            })
        }
        Command::ControlPlaneTests { kernel, filter } => {
            kernel::run_control_plane_tests(kernel, filter.as_deref()).map(|s| {
                println!("\n{}", s.describe());
                s.ok()
            })
        }
        Command::Demo { kernel } => kernel::run_demo(kernel),
        Command::Bench { kernel } => bench::run_benchmarks(kernel),
        Command::Vm { command, rwdir } => vm::run_shell(&command, &rwdir),
        Command::Provision => provision::provision().map(|k| {
            println!("ready: kernel {} at {}", k.version, k.vmlinuz.display());
            true
        }),
        Command::GuestRun {
            plan,
            results,
            in_vm,
            network,
        } => {
            if in_vm
                && network
                && let Err(e) = vm::ensure_guest_network()
            {
                eprintln!("xtask: the guest's network: {e}");
            }
            plan::guest_run(&plan, &results, in_vm)
        }
    };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("xtask: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Errors of the project commands: a message for a person.
type Result<T, E = String> = std::result::Result<T, E>;

/// Prints a step header, the way every command announces what it runs and why.
fn step(what: &str) {
    println!("\n==> {what}");
}
