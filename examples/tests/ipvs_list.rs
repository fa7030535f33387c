//! `ipvs-list` against the real kernel: it shows what ipvsadm programmed, as text and JSON.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod real_kernel {
    use std::process::Command;

    use integration::Netns;

    fn run(cmd: &str, args: &[&str]) -> String {
        let out = Command::new(cmd).args(args).output().unwrap();
        assert!(out.status.success(), "{cmd} {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs a listing until two in a row agree (at most five): the kernel resumes a service dump
    /// by position in a hash table shared by every namespace, so tests running beside this one
    /// can make a single dump repeat or skip a service.
    fn stable(cmd: &str, args: &[&str]) -> String {
        let mut last = run(cmd, args);
        for _ in 0..4 {
            let again = run(cmd, args);
            if again == last {
                break;
            }
            last = again;
        }
        last
    }

    #[test]
    #[ignore = "real kernel: run by cargo xtask test"]
    fn lists_what_ipvsadm_programmed() {
        let ns = Netns::new("ipvs-list").unwrap();
        let exe = env!("CARGO_BIN_EXE_ipvs-list");
        let (text, stats, json, ipvsadm) = ns
            .run(|| {
                run(
                    "ipvsadm",
                    &["-A", "-t", "198.51.100.10:80", "-s", "wrr", "-p", "60"],
                );
                run(
                    "ipvsadm",
                    &[
                        "-a",
                        "-t",
                        "198.51.100.10:80",
                        "-r",
                        "203.0.113.2:8080",
                        "-m",
                        "-w",
                        "3",
                    ],
                );
                run("ipvsadm", &["-A", "-f", "7", "-s", "rr"]);
                run(
                    "ipvsadm",
                    &[
                        "-a",
                        "-f",
                        "7",
                        "-r",
                        "203.0.113.9",
                        "-i",
                        "--tun-type",
                        "gre",
                    ],
                );
                (
                    stable(exe, &[]),
                    run(exe, &["--stats"]),
                    stable(exe, &["--json"]),
                    stable("ipvsadm", &["-Ln"]),
                )
            })
            .unwrap();
        // The same rows as ipvsadm, column for column.
        let rows = |s: &str| -> Vec<String> {
            s.lines()
                .skip(3)
                .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
                .collect()
        };
        assert_eq!(
            rows(&text),
            rows(&ipvsadm),
            "ours:\n{text}\nipvsadm:\n{ipvsadm}"
        );
        assert!(
            text.starts_with("IP Virtual Server version 1.2.1"),
            "{text}"
        );
        assert!(stats.contains("Conns"), "{stats}");
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        let services = value["services"].as_array().unwrap();
        assert_eq!(services.len(), 2);
        let web = services
            .iter()
            .find(|s| s["service"]["port"] == 80)
            .unwrap();
        assert_eq!(web["scheduler"], "wrr");
        assert_eq!(web["persistence"]["timeout_seconds"], 60);
        assert_eq!(web["destinations"][0]["weight"], 3);
        assert_eq!(web["destinations"][0]["forwarding"], "masq");
        let fw = services
            .iter()
            .find(|s| s["service"]["fwmark"] == 7)
            .unwrap();
        assert_eq!(fw["destinations"][0]["tunnel"]["type"], "gre");
    }
}
