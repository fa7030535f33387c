//! The transport against the host kernel's `nlctrl` generic-netlink family
//! (present on every Linux kernel; no IPVS needed).

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::{
    os::unix::fs::MetadataExt,
    sync::mpsc,
    time::{Duration, Instant},
};

use ipvs::transport::{Connection, Namespace, Options, TransportError};
use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd, nlas::GenlCtrlAttrs};

const ENOENT: i32 = 2;
const GENL_ID_CTRL: u16 = 0x10;

fn get_family(name: &str) -> GenlCtrl {
    GenlCtrl {
        cmd: GenlCtrlCmd::GetFamily,
        nlas: vec![GenlCtrlAttrs::FamilyName(name.to_owned())],
    }
}

fn dump_families() -> GenlCtrl {
    GenlCtrl {
        cmd: GenlCtrlCmd::GetFamily,
        nlas: vec![],
    }
}

fn names(replies: &[GenlCtrl]) -> Vec<String> {
    replies
        .iter()
        .flat_map(|r| r.nlas.iter())
        .filter_map(|nla| match nla {
            GenlCtrlAttrs::FamilyName(name) => Some(name.clone()),
            _ => None,
        })
        .collect()
}

fn family_id_of(replies: &[GenlCtrl]) -> Option<u16> {
    replies
        .iter()
        .flat_map(|r| r.nlas.iter())
        .find_map(|nla| match nla {
            GenlCtrlAttrs::FamilyId(id) => Some(*id),
            _ => None,
        })
}

fn open() -> Connection<GenlCtrl> {
    Connection::open("nlctrl", Options::default()).expect("open nlctrl")
}

/// Every 100th request asks for a missing family.
fn mixed_batch(n: usize) -> Vec<GenlCtrl> {
    (0..n)
        .map(|i| {
            get_family(if i % 100 == 99 {
                "nosuchfamily"
            } else {
                "nlctrl"
            })
        })
        .collect()
}

#[test]
fn resolves_the_nlctrl_family() {
    let conn = open();
    assert_eq!(conn.family_id(), GENL_ID_CTRL);
    assert_ne!(conn.port_id(), 0);
}

#[test]
fn missing_family_is_family_not_found() {
    match Connection::<GenlCtrl>::open("nosuchfamily", Options::default()) {
        Err(TransportError::FamilyNotFound { name }) => assert_eq!(name, "nosuchfamily"),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn single_request_returns_the_reply() {
    let mut conn = open();
    let replies = conn.request(get_family("nlctrl"), 0).unwrap();
    assert_eq!(names(&replies), ["nlctrl"]);
    assert_eq!(family_id_of(&replies), Some(GENL_ID_CTRL));
}

#[test]
fn dump_lists_all_families() {
    let mut conn = open();
    let replies = conn.dump(dump_families()).unwrap();
    let names = names(&replies);
    assert!(names.iter().any(|n| n == "nlctrl"), "{names:?}");
    // The dump is repeatable on the same connection.
    let again = conn.dump(dump_families()).unwrap();
    assert_eq!(again.len(), replies.len());
}

#[test]
fn kernel_error_carries_errno() {
    let mut conn = open();
    match conn.request(get_family("nosuchfamily"), 0) {
        Err(TransportError::Kernel(e)) => {
            assert_eq!(e.errno(), ENOENT);
            assert_eq!(e.to_io_error().raw_os_error(), Some(ENOENT));
            eprintln!("kernel error: {e}");
        }
        other => panic!("unexpected {other:?}"),
    }
    // The connection is still usable afterwards.
    assert_eq!(
        names(&conn.request(get_family("nlctrl"), 0).unwrap()),
        ["nlctrl"]
    );
}

#[test]
fn extended_ack_message_and_offset_are_carried() {
    let mut conn = open();
    // The controller's policy caps family names at 15 characters.
    match conn.request(get_family("a-family-name-far-too-long"), 0) {
        Err(TransportError::Kernel(e)) => {
            assert_eq!(e.errno(), 22);
            eprintln!("kernel error: {e}");
            // Older kernels (< 4.12) send no extended ACK.
            if let Some(offset) = e.offset() {
                // nlmsghdr (16) + genlmsghdr (4): the first attribute.
                assert_eq!(offset, 20);
                assert!(e.message().is_some());
            }
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn receive_queue_overrun_is_reported_and_survivable() {
    // A tiny receive buffer and a cost estimate that lets a chunk overflow it.
    let options = Options::default()
        .with_recv_buffer(8 << 10)
        .with_batch_reply_cost(1)
        .with_max_batch(1000);
    let mut conn = Connection::<GenlCtrl>::open("nlctrl", options).unwrap();
    assert!(matches!(
        conn.batch(mixed_batch(1000)),
        Err(TransportError::Overrun)
    ));
    assert_eq!(
        names(&conn.request(get_family("nlctrl"), 0).unwrap()),
        ["nlctrl"]
    );
}

#[test]
fn batch_of_2000_fails_exactly_the_missing_ones_in_order() {
    let mut conn = open();
    let results = conn.batch(mixed_batch(2000)).unwrap();
    assert_eq!(results.len(), 2000);
    for (i, result) in results.iter().enumerate() {
        if i % 100 == 99 {
            assert_eq!(result.as_ref().unwrap_err().errno(), ENOENT, "request {i}");
        } else {
            let replies = result
                .as_ref()
                .unwrap_or_else(|e| panic!("request {i}: {e}"));
            assert_eq!(family_id_of(replies), Some(GENL_ID_CTRL), "request {i}");
        }
    }
}

#[test]
fn small_chunks_still_give_every_result_in_order() {
    let options = Options::default().with_max_batch(7);
    let mut conn = Connection::<GenlCtrl>::open("nlctrl", options).unwrap();
    assert_eq!(conn.batch_chunk_size(), 7);
    let results = conn.batch(mixed_batch(300)).unwrap();
    let failed: Vec<usize> = results
        .iter()
        .enumerate()
        .filter(|(_, r)| r.is_err())
        .map(|(i, _)| i)
        .collect();
    assert_eq!(failed, [99, 199, 299]);
}

/// Makes the kernel's replies to a connection vanish while it lives: a classic BPF socket
/// filter that keeps no byte of any datagram. The kernel drops filtered replies silently,
/// which is the one way a netlink request goes unanswered.
struct Silence(std::os::fd::RawFd);

/// Sets a `SOL_SOCKET` option of `fd` to `value`.
fn set_socket_option<T>(fd: std::os::fd::RawFd, option: libc::c_int, value: &T) {
    // SAFETY: `fd` is an open socket borrowed from a live connection; `value` is a valid `T`
    // whose size is passed, and the kernel only reads (and copies) it.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            option,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    assert_eq!(
        rc,
        0,
        "setsockopt {option}: {}",
        std::io::Error::last_os_error()
    );
}

impl Silence {
    fn on(socket: &impl std::os::fd::AsFd) -> Self {
        use std::os::fd::AsRawFd;
        let fd = socket.as_fd().as_raw_fd();
        // `ret #0`: accept zero bytes, i.e. drop.
        let mut drop_all = [libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: 0,
        }];
        let program = libc::sock_fprog {
            len: 1,
            filter: drop_all.as_mut_ptr(),
        };
        set_socket_option(fd, libc::SO_ATTACH_FILTER, &program);
        Self(fd)
    }
}

impl Drop for Silence {
    fn drop(&mut self) {
        // The value is ignored by SO_DETACH_FILTER; the connection outlives this guard.
        set_socket_option(self.0, libc::SO_DETACH_FILTER, &0 as &libc::c_int);
    }
}

#[test]
fn an_answer_already_queued_counts_however_short_the_deadline() {
    // The kernel runs a request inside `sendmsg`: by the time the deadline is first looked
    // at, the answer is queued. A request the kernel took long over (a handler waiting for a
    // busy lock) succeeded; reporting a timeout would be wrong.
    let mut conn = open();
    conn.set_timeout(Duration::from_nanos(1));
    assert_eq!(
        names(&conn.request(get_family("nlctrl"), 0).unwrap()),
        ["nlctrl"]
    );
    let results = conn.batch(mixed_batch(2000)).unwrap();
    assert_eq!(results.len(), 2000);
    assert_eq!(results.iter().filter(|r| r.is_err()).count(), 20);
    assert!(names(&conn.dump(dump_families()).unwrap()).contains(&"nlctrl".to_owned()));
}

#[test]
fn silence_times_out_and_leaves_the_connection_usable() {
    let mut conn = open();
    conn.set_timeout(Duration::from_millis(50));
    {
        let _silence = Silence::on(&conn);
        match conn.batch(mixed_batch(2000)) {
            Err(TransportError::Timeout { pending, .. }) => assert!(pending > 0),
            other => panic!("expected a timeout, got {:?}", other.map(|r| r.len())),
        }
        assert!(matches!(
            conn.request(get_family("nlctrl"), 0),
            Err(TransportError::Timeout { pending: 1, .. })
        ));
    }
    conn.set_timeout(Duration::from_secs(5));
    assert_eq!(
        names(&conn.request(get_family("nlctrl"), 0).unwrap()),
        ["nlctrl"]
    );
    let results = conn.batch(mixed_batch(500)).unwrap();
    assert_eq!(results.iter().filter(|r| r.is_err()).count(), 5);
    assert!(names(&conn.dump(dump_families()).unwrap()).contains(&"nlctrl".to_owned()));
}

#[test]
fn a_request_left_unanswered_is_known_at_once_without_a_deadline() {
    // The kernel queues its answer inside `sendmsg`; when there is none (a handler that
    // returned EINTR, e.g. stopping a sync daemon whose thread had not run), nothing will
    // come. A filter that drops every answer stands in for that kernel here: the call says
    // `None` although the deadline is an hour away (waiting for it would hang this test).
    let mut conn = open();
    conn.set_timeout(Duration::from_secs(3600));
    {
        let _silence = Silence::on(&conn);
        assert!(
            conn.request_allowing_silence(get_family("nlctrl"))
                .unwrap()
                .is_none()
        );
    }
    // Answered: its payloads, and an errno as the kernel's error.
    let answer = conn.request_allowing_silence(get_family("nlctrl")).unwrap();
    assert_eq!(names(&answer.expect("answered")), ["nlctrl"]);
    assert!(matches!(
        conn.request_allowing_silence(get_family("no-such-family-xyz")),
        Err(TransportError::Kernel(_))
    ));
    // The connection goes on as usual.
    conn.set_timeout(Duration::from_secs(5));
    let results = conn.batch(mixed_batch(500)).unwrap();
    assert_eq!(results.iter().filter(|r| r.is_err()).count(), 5);
}

fn netns_inode(path: &str) -> u64 {
    std::fs::metadata(path).expect("stat namespace").ino()
}

/// Runs `f` with the path of a fresh network namespace held by a helper thread.
fn with_fresh_netns(f: impl FnOnce(String)) {
    let (tx, rx) = mpsc::channel();
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
        let path = format!(
            "/proc/{}/task/{}/ns/net",
            std::process::id(),
            nix::unistd::gettid()
        );
        tx.send(path).expect("send namespace path");
        let _ = stop_rx.recv();
    });
    let path = rx.recv().expect("namespace thread died");
    f(path);
    stop_tx.send(()).expect("namespace thread died");
    holder.join().expect("namespace thread panicked");
}

/// Needs CAP_SYS_ADMIN to create a namespace, so it runs under the real-kernel harness
/// (`cargo xtask test`) rather than skipping itself under a plain `cargo test`.
mod real_kernel {
    #[test]
    #[ignore = "real kernel: run by cargo xtask test"]
    fn opens_a_connection_in_another_namespace() {
        super::opens_a_connection_in_another_namespace();
    }
}

fn opens_a_connection_in_another_namespace() {
    with_fresh_netns(|path| {
        let before = netns_inode("/proc/thread-self/ns/net");
        let target = netns_inode(&path);
        assert_ne!(before, target);

        let options = Options::default().with_namespace(Namespace::Path(path.clone().into()));
        let mut conn = Connection::<GenlCtrl>::open("nlctrl", options).unwrap();
        assert_eq!(
            names(&conn.request(get_family("nlctrl"), 0).unwrap()),
            ["nlctrl"]
        );
        assert_eq!(netns_inode("/proc/thread-self/ns/net"), before);

        let fd = std::fs::File::open(&path).unwrap().into();
        let options = Options::default().with_namespace(Namespace::Fd(fd));
        let mut conn = Connection::<GenlCtrl>::open("nlctrl", options).unwrap();
        assert!(names(&conn.dump(dump_families()).unwrap()).contains(&"nlctrl".to_owned()));
        assert_eq!(netns_inode("/proc/thread-self/ns/net"), before);
    });
}

#[test]
fn missing_namespace_path_is_an_io_error() {
    let options = Options::default().with_namespace(Namespace::Path("/nonexistent/ns".into()));
    assert!(matches!(
        Connection::<GenlCtrl>::open("nlctrl", options),
        Err(TransportError::Io {
            operation: "open namespace",
            ..
        })
    ));
}

/// Not an assertion: prints requests/second of one 2,000-request batch against 2,000
/// sequential requests, for requests answered with a reply plus an ACK (GETFAMILY of
/// `nlctrl`) and for requests answered by an error message only (a missing family; the
/// shape of IPVS writes, which are answered by an ACK only). Run with `--nocapture`
/// (and `--release` for meaningful figures).
#[test]
fn measure_batch_vs_sequential() {
    const N: usize = 2000;
    let mut conn = open();
    for (label, name) in [("reply+ack", "nlctrl"), ("error-only", "nosuchfamily")] {
        let requests: Vec<GenlCtrl> = (0..N).map(|_| get_family(name)).collect();
        // Warm up.
        let _ = conn.batch(requests.clone()).expect("batch");

        let mut best_batch = Duration::MAX;
        let mut best_seq = Duration::MAX;
        for _ in 0..5 {
            let start = Instant::now();
            let results = conn.batch(requests.clone()).expect("batch");
            best_batch = best_batch.min(start.elapsed());
            assert_eq!(results.len(), N);

            let start = Instant::now();
            for request in requests.iter().cloned() {
                let _ = conn.request(request, 0);
            }
            best_seq = best_seq.min(start.elapsed());
        }
        let rate = |d: Duration| N as f64 / d.as_secs_f64();
        eprintln!(
            "nlctrl GETFAMILY x{N} ({label}): batch {best_batch:?} ({:.0} req/s, chunk {}), \
             sequential {best_seq:?} ({:.0} req/s), speed-up {:.1}x",
            rate(best_batch),
            conn.batch_chunk_size(),
            rate(best_seq),
            best_seq.as_secs_f64() / best_batch.as_secs_f64()
        );
    }
}

#[cfg(feature = "tokio")]
mod async_connection {
    use std::future::Future;

    use ipvs::transport::AsyncConnection;

    use super::*;

    async fn open() -> AsyncConnection<GenlCtrl> {
        AsyncConnection::open("nlctrl", Options::default())
            .await
            .expect("open nlctrl")
    }

    #[tokio::test]
    async fn resolves_requests_and_dumps() {
        let mut conn = open().await;
        assert_eq!(conn.family_id(), GENL_ID_CTRL);
        assert_eq!(
            names(&conn.request(get_family("nlctrl"), 0).await.unwrap()),
            ["nlctrl"]
        );
        let all = names(&conn.dump(dump_families()).await.unwrap());
        assert!(all.iter().any(|n| n == "nlctrl"), "{all:?}");
        match conn.request(get_family("nosuchfamily"), 0).await {
            Err(TransportError::Kernel(e)) => assert_eq!(e.errno(), ENOENT),
            other => panic!("unexpected {other:?}"),
        }
        match AsyncConnection::<GenlCtrl>::open("nosuchfamily", Options::default()).await {
            Err(TransportError::FamilyNotFound { name }) => assert_eq!(name, "nosuchfamily"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn batch_of_2000() {
        let mut conn = open().await;
        let results = conn.batch(mixed_batch(2000)).await.unwrap();
        let failed: Vec<usize> = results
            .iter()
            .enumerate()
            .filter(|(_, r)| r.is_err())
            .map(|(i, _)| i)
            .collect();
        assert_eq!(failed, (0..20).map(|k| k * 100 + 99).collect::<Vec<_>>());
        assert!(
            results
                .iter()
                .flatten()
                .all(|r| family_id_of(r) == Some(GENL_ID_CTRL))
        );
    }

    #[tokio::test]
    async fn an_answer_already_queued_counts_however_short_the_deadline() {
        let mut conn = open().await;
        conn.set_timeout(Duration::from_nanos(1));
        assert_eq!(
            names(&conn.request(get_family("nlctrl"), 0).await.unwrap()),
            ["nlctrl"]
        );
        let results = conn.batch(mixed_batch(2000)).await.unwrap();
        assert_eq!(results.iter().filter(|r| r.is_err()).count(), 20);
        assert!(names(&conn.dump(dump_families()).await.unwrap()).contains(&"nlctrl".to_owned()));
    }

    #[tokio::test]
    async fn a_request_left_unanswered_is_known_at_once_without_a_deadline() {
        let mut conn = open().await;
        conn.set_timeout(Duration::from_secs(3600));
        {
            let _silence = super::Silence::on(&conn);
            assert!(
                conn.request_allowing_silence(get_family("nlctrl"))
                    .await
                    .unwrap()
                    .is_none()
            );
        }
        let answer = conn
            .request_allowing_silence(get_family("nlctrl"))
            .await
            .unwrap();
        assert_eq!(names(&answer.expect("answered")), ["nlctrl"]);
        conn.set_timeout(Duration::from_secs(5));
        let results = conn.batch(mixed_batch(500)).await.unwrap();
        assert_eq!(results.iter().filter(|r| r.is_err()).count(), 5);
    }

    #[tokio::test]
    async fn timeout_and_cancellation_leave_the_connection_usable() {
        let mut conn = open().await;
        conn.set_timeout(Duration::from_millis(50));
        {
            let _silence = super::Silence::on(&conn);
            assert!(matches!(
                conn.batch(mixed_batch(2000)).await,
                Err(TransportError::Timeout { .. })
            ));
        }
        conn.set_timeout(Duration::from_secs(5));
        assert_eq!(
            names(&conn.request(get_family("nlctrl"), 0).await.unwrap()),
            ["nlctrl"]
        );

        // A dropped (cancelled) call: its replies are flushed by the next call.
        {
            let call = conn.batch(mixed_batch(1000));
            tokio::pin!(call);
            let waker = std::task::Waker::noop();
            let _ = call
                .as_mut()
                .poll(&mut std::task::Context::from_waker(waker));
        }
        let results = conn.batch(mixed_batch(200)).await.unwrap();
        assert_eq!(results.iter().filter(|r| r.is_err()).count(), 2);
    }
}
