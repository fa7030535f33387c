//! `ipvs-list`: the IPVS table, like `ipvsadm -Ln`, through the `ipvs` library.
//!
//! ```text
//! ipvs-list [--stats | --rate] [--json] [--netns PATH]
//! ```
//!
//! Needs CAP_NET_ADMIN. `--netns` lists another network namespace (e.g. `/run/netns/lb`).

use std::process::ExitCode;

use examples::listing::{self, Columns};
use ipvs::Ipvs;

const USAGE: &str = "usage: ipvs-list [--stats | --rate] [--json] [--netns PATH]";

fn main() -> ExitCode {
    let mut columns = Columns::Connections;
    let mut json = false;
    let mut netns = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--stats" => columns = Columns::Stats,
            "--rate" => columns = Columns::Rates,
            "--json" => json = true,
            "--netns" => match args.next() {
                Some(path) => netns = Some(path),
                None => return usage("--netns needs a path"),
            },
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other => return usage(&format!("unknown argument {other:?}")),
        }
    }
    let opened = match netns {
        Some(path) => Ipvs::in_namespace(path),
        None => Ipvs::open(),
    };
    let table = opened.and_then(|mut ipvs| listing::read(&mut ipvs));
    match table {
        Ok((info, table)) => {
            if json {
                println!("{:#}", listing::render_json(&info, &table));
            } else {
                print!("{}", listing::render_text(&info, &table, columns));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ipvs-list: {e}");
            ExitCode::FAILURE
        }
    }
}

fn usage(problem: &str) -> ExitCode {
    eprintln!("ipvs-list: {problem}\n{USAGE}");
    ExitCode::from(2)
}
