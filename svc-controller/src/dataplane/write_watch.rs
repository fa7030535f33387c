//! Seeing IPVS writes, the dataplane's own and anyone else's, without reading the table.
//!
//! The kernel announces no IPVS change (its generic-netlink family has no multicast group,
//! and no counter moves with the table), so the only way to know that a table found right is
//! still right would be to read it again: at 10,000 virtual servers with 10 real servers
//! each, a read of every destination every sync period, on a node where nothing happens.
//!
//! Every request to the kernel's IPVS family is a generic-netlink message, though, and an
//! `nlmon` interface (`CONFIG_NLMON`) is the kernel's tap on netlink: once it is up, every
//! generic-netlink message of the network namespace is handed to it as a packet. A packet
//! socket bound to that interface, with a classic BPF filter that keeps only IPVS requests
//! that change the table (add, edit or delete a service or a destination, flush), queues
//! nothing while nobody writes; [`WriteWatch::drain`] empties the queue and says whether
//! anything came. The dataplane's own writes are left out (by the sender's port, which the
//! `ipvs` crate writes in its requests): the controller knows what they did from their
//! answers, so only another program's write makes the next pass read the table.
//!
//! What it does not see: the filter looks at the first message of each `sendmsg` only, so a
//! write sent after a read in the same call goes unseen (no known client mixes them: `ipvsadm`
//! through libnl and moby/ipvs send one request per call, this crate batches writes
//! together and reads apart), and writes through the old `setsockopt` interface
//! (`ipvsadm` built without libnl) are no netlink at all. A full pass therefore still reads
//! the table every few passes whatever the watch says (see
//! [`ReconcilerConfig::max_skipped_reads`](crate::reconcile::ReconcilerConfig::max_skipped_reads)).
//! A packet the socket has no room for is dropped, which loses nothing: it only arrives when
//! the queue already holds one, and one is all [`WriteWatch::drain`] needs.

use std::io;
use std::mem::MaybeUninit;

use ipvs::codec::constants::{
    IPVS_CMD_DEL_DEST, IPVS_CMD_DEL_SERVICE, IPVS_CMD_FLUSH, IPVS_CMD_NEW_DEST,
    IPVS_CMD_NEW_SERVICE, IPVS_CMD_SET_DEST, IPVS_CMD_SET_SERVICE,
};
use socket2::{Domain, SockAddr, SockAddrStorage, SockFilter, Socket, Type};

/// The name of the `nlmon` interface the kernel dataplane creates (up, without addresses)
/// to see IPVS writes, and deletes when it is dropped.
pub const WRITE_WATCH_INTERFACE: &str = "nlmon-ipvs";

/// What [`Dataplane::ipvs_writes`](super::Dataplane::ipvs_writes) saw since its last call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpvsWrites {
    /// No other program wrote to the IPVS table, and the watch ran all along.
    Quiet,
    /// Another program wrote, or the watch may have missed a write (it stopped and started
    /// again).
    Seen,
    /// Nothing watches the table (the dataplane cannot, or has just started to): only a read
    /// tells whether it changed.
    Unwatched,
}

/// `NETLINK_GENERIC`: the protocol number an `nlmon` packet carries in `skb->protocol`.
const NETLINK_GENERIC: u32 = 16;
/// `NLM_F_REQUEST`: set in requests, never in the kernel's answers.
const NLM_F_REQUEST: u16 = 1;
/// Offsets in a packet: the netlink header's type, flags and sender's port, then the
/// generic-netlink header's command.
const TYPE_OFFSET: u32 = 4;
const FLAGS_OFFSET: u32 = 6;
const PORT_OFFSET: u32 = 12;
const COMMAND_OFFSET: u32 = 16;
/// `SKF_AD_OFF + SKF_AD_PROTOCOL`: classic BPF's way to load `skb->protocol`.
const LOAD_PROTOCOL: u32 = 0xffff_f000;
/// How much of an accepted packet is queued: the headers are all the drain looks at.
const SNAP_LEN: u32 = 64;

// Classic BPF opcodes (linux/filter.h).
const BPF_LD_W_ABS: u16 = 0x20;
const BPF_LD_H_ABS: u16 = 0x28;
const BPF_LD_B_ABS: u16 = 0x30;
const BPF_JEQ_K: u16 = 0x15;
const BPF_JSET_K: u16 = 0x45;
const BPF_RET_K: u16 = 0x06;

/// The IPVS commands that change the table.
const WRITES: [u8; 7] = [
    IPVS_CMD_NEW_SERVICE,
    IPVS_CMD_SET_SERVICE,
    IPVS_CMD_DEL_SERVICE,
    IPVS_CMD_NEW_DEST,
    IPVS_CMD_SET_DEST,
    IPVS_CMD_DEL_DEST,
    IPVS_CMD_FLUSH,
];

/// The value classic BPF's half-word load (which reads network byte order) gives for a
/// field the kernel stores in host byte order, as netlink headers are.
fn as_loaded(host: u16) -> u32 {
    u32::from(u16::from_be_bytes(host.to_ne_bytes()))
}

/// [`as_loaded`] for a word.
fn as_loaded_word(host: u32) -> u32 {
    u32::from_be_bytes(host.to_ne_bytes())
}

/// One classic BPF instruction (`struct sock_filter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Instruction {
    code: u16,
    jt: u8,
    jf: u8,
    k: u32,
}

const fn op(code: u16, jt: u8, jf: u8, k: u32) -> Instruction {
    Instruction { code, jt, jf, k }
}

/// The filter: accept (the first [`SNAP_LEN`] bytes of) a generic-netlink packet whose first
/// message is a request to the IPVS family `family_id` with one of the [`WRITES`] commands,
/// sent by another socket than the one bound to `own_port` (0: none is left out); drop
/// everything else.
fn program(family_id: u16, own_port: u32) -> Vec<Instruction> {
    let mut program = vec![
        op(BPF_LD_W_ABS, 0, 0, LOAD_PROTOCOL),
        op(BPF_JEQ_K, 0, 0, NETLINK_GENERIC),
        op(BPF_LD_H_ABS, 0, 0, TYPE_OFFSET),
        op(BPF_JEQ_K, 0, 0, as_loaded(family_id)),
        op(BPF_LD_H_ABS, 0, 0, FLAGS_OFFSET),
        op(BPF_JSET_K, 0, 0, as_loaded(NLM_F_REQUEST)),
    ];
    // A kernel-assigned port is never 0, which clients that leave it unset send.
    let port_check = (own_port != 0).then(|| {
        program.push(op(BPF_LD_W_ABS, 0, 0, PORT_OFFSET));
        program.push(op(BPF_JEQ_K, 0, 0, as_loaded_word(own_port)));
        program.len() - 1
    });
    // The command is one byte: no byte order.
    program.push(op(BPF_LD_B_ABS, 0, 0, COMMAND_OFFSET));
    let first_command = program.len();
    for command in WRITES {
        program.push(op(BPF_JEQ_K, 0, 0, u32::from(command)));
    }
    // Jumps are counted from the next instruction; the last two return (drop, accept). Each
    // check of the header drops on a mismatch, the port check on a match, each command check
    // accepts on a match.
    let reject = program.len();
    let accept = reject + 1;
    let skip = |at: usize, to: usize| u8::try_from(to - at - 1).unwrap_or(u8::MAX);
    for (at, i) in program.iter_mut().enumerate() {
        if !matches!(i.code, BPF_JEQ_K | BPF_JSET_K) {
            continue;
        }
        if at >= first_command {
            i.jt = skip(at, accept);
        } else if Some(at) == port_check {
            i.jt = skip(at, reject);
        } else {
            i.jf = skip(at, reject);
        }
    }
    program.push(op(BPF_RET_K, 0, 0, 0));
    program.push(op(BPF_RET_K, 0, 0, SNAP_LEN));
    program
}

/// A packet socket on the `nlmon` interface, filtered to IPVS writes (see the
/// [module documentation](self)).
#[derive(Debug)]
pub(crate) struct WriteWatch {
    socket: Socket,
}

impl WriteWatch {
    /// Starts watching the IPVS family `family_id` through the `nlmon` interface `index`
    /// (which must be up), leaving out the requests of the socket bound to `own_port`: from
    /// the moment this returns, every other write is queued.
    pub(crate) fn open(index: u32, family_id: u16, own_port: u32) -> io::Result<Self> {
        let all = i32::from(ETH_P_ALL.to_be());
        let socket = Socket::new(
            Domain::PACKET,
            Type::RAW.nonblocking().cloexec(),
            Some(all.into()),
        )?;
        // The filter before the bind: nothing unfiltered is ever queued.
        let filter: Vec<SockFilter> = program(family_id, own_port)
            .iter()
            .map(|i| SockFilter::new(i.code, i.jt, i.jf, i.k))
            .collect();
        socket.attach_filter(&filter)?;
        socket.bind(&link_address(index)?)?;
        Ok(Self { socket })
    }

    /// Empties the queue: whether anything was in it. An error means the watch is broken
    /// (the interface went down or away: the kernel reports `ENETDOWN` once) and may have
    /// missed writes.
    pub(crate) fn drain(&mut self) -> io::Result<bool> {
        let mut buf = [MaybeUninit::<u8>::uninit(); SNAP_LEN as usize];
        let mut seen = false;
        loop {
            match self.socket.recv(&mut buf) {
                Ok(_) => seen = true,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(seen),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// `ETH_P_ALL` (in host byte order): a packet socket bound with it sees what the interface
/// sends, and an `nlmon` interface only sends.
const ETH_P_ALL: u16 = 0x0003;

/// The `sockaddr_ll` that binds a packet socket to the interface `index`, all protocols.
fn link_address(index: u32) -> io::Result<SockAddr> {
    let invalid = || io::Error::from(io::ErrorKind::InvalidInput);
    let ifindex = i32::try_from(index).map_err(|_| invalid())?;
    let family = u16::try_from(libc::AF_PACKET).map_err(|_| invalid())?;
    let len = u32::try_from(std::mem::size_of::<libc::sockaddr_ll>()).map_err(|_| invalid())?;
    let mut storage = SockAddrStorage::zeroed();
    // SAFETY: `sockaddr_ll` is one of this platform's socket address types, as `view_as`
    // requires; the storage is zeroed, which is a valid `sockaddr_ll`.
    let address: &mut libc::sockaddr_ll = unsafe { storage.view_as() };
    address.sll_family = family;
    address.sll_protocol = ETH_P_ALL.to_be();
    address.sll_ifindex = ifindex;
    // SAFETY: the storage holds an initialised `sockaddr_ll` of `len` bytes, and its family
    // field says so.
    Ok(unsafe { SockAddr::new(storage, len) })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the kernel's classic BPF makes of `program` for a packet (the instructions the
    /// filter uses, with the kernel's rules: loads in network byte order, a load past the
    /// end drops the packet), `protocol` being `skb->protocol`.
    fn run(program: &[Instruction], protocol: u32, packet: &[u8]) -> u32 {
        let mut a = 0u32;
        let mut pc = 0usize;
        loop {
            let Instruction { code, jt, jf, k } = program[pc];
            pc += 1;
            let load = |n: usize| {
                let at = k as usize;
                packet
                    .get(at..at + n)
                    .map(|b| b.iter().fold(0u32, |v, b| (v << 8) | u32::from(*b)))
            };
            match code {
                BPF_LD_W_ABS if k == LOAD_PROTOCOL => a = protocol,
                BPF_LD_W_ABS | BPF_LD_H_ABS | BPF_LD_B_ABS => {
                    let width = match code {
                        BPF_LD_W_ABS => 4,
                        BPF_LD_H_ABS => 2,
                        _ => 1,
                    };
                    match load(width) {
                        Some(v) => a = v,
                        None => return 0,
                    }
                }
                BPF_JEQ_K => pc += usize::from(if a == k { jt } else { jf }),
                BPF_JSET_K => pc += usize::from(if a & k != 0 { jt } else { jf }),
                BPF_RET_K => return k,
                other => panic!("instruction {other:#x} is outside the filter's subset"),
            }
        }
    }

    /// A generic-netlink message as a client sends it: header in host byte order, then the
    /// generic-netlink header and one attribute's worth of payload.
    fn message(family: u16, flags: u16, command: u8) -> Vec<u8> {
        sent_by(0, family, flags, command)
    }

    /// [`message`] from the socket bound to `port`.
    fn sent_by(port: u32, family: u16, flags: u16, command: u8) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&28u32.to_ne_bytes());
        m.extend_from_slice(&family.to_ne_bytes());
        m.extend_from_slice(&flags.to_ne_bytes());
        m.extend_from_slice(&7u32.to_ne_bytes()); // sequence
        m.extend_from_slice(&port.to_ne_bytes());
        m.extend_from_slice(&[command, 1, 0, 0]); // command, version, reserved
        m.extend_from_slice(&[8, 0, 1, 0, 0, 0, 0, 0]);
        m
    }

    const IPVS: u16 = 0x24;
    /// The watching controller's own socket.
    const OWN: u32 = 0x8000_1234;
    const ACK: u16 = 4;
    const DUMP: u16 = 0x300;

    #[test]
    fn the_filter_keeps_ipvs_requests_that_change_the_table_and_nothing_else() {
        let program = program(IPVS, OWN);
        let generic = NETLINK_GENERIC;
        let keep = |packet: &[u8], protocol| run(&program, protocol, packet) != 0;
        for command in WRITES {
            assert!(keep(&message(IPVS, NLM_F_REQUEST | ACK, command), generic));
            assert!(keep(&message(IPVS, NLM_F_REQUEST, command), generic));
        }
        assert_eq!(
            run(&program, generic, &message(IPVS, 5, IPVS_CMD_NEW_DEST)),
            SNAP_LEN
        );
        // Reads: GET_SERVICE, GET_DEST, GET_INFO, GET_CONFIG, GET_DAEMON, as dumps or not.
        for command in [4, 8, 15, 13, 11] {
            assert!(!keep(
                &message(IPVS, NLM_F_REQUEST | DUMP, command),
                generic
            ));
            assert!(!keep(&message(IPVS, NLM_F_REQUEST, command), generic));
        }
        // Zeroing counters, sync daemons and timeouts leave the table as it is.
        for command in [16, 9, 10, 12] {
            assert!(!keep(&message(IPVS, NLM_F_REQUEST, command), generic));
        }
        // The kernel's answers (a dump's messages carry NEW_SERVICE / NEW_DEST, no REQUEST).
        assert!(!keep(&message(IPVS, 2, IPVS_CMD_NEW_SERVICE), generic));
        assert!(!keep(&message(IPVS, 0, IPVS_CMD_NEW_DEST), generic));
        // Another family, and the same numbers in another netlink protocol (rtnetlink's
        // RTM_NEWLINK is 16 = 0x10, nftables' messages have their own types).
        assert!(!keep(
            &message(IPVS + 1, NLM_F_REQUEST, IPVS_CMD_NEW_SERVICE),
            generic
        ));
        assert!(!keep(
            &message(IPVS, NLM_F_REQUEST, IPVS_CMD_NEW_SERVICE),
            0
        ));
        assert!(!keep(
            &message(IPVS, NLM_F_REQUEST, IPVS_CMD_NEW_SERVICE),
            12
        ));
        // Other programs' writes whatever port they send, the controller's own not.
        let add = IPVS_CMD_NEW_SERVICE;
        assert!(keep(&sent_by(4242, IPVS, NLM_F_REQUEST, add), generic));
        assert!(keep(&sent_by(OWN + 1, IPVS, NLM_F_REQUEST, add), generic));
        assert!(!keep(&sent_by(OWN, IPVS, NLM_F_REQUEST, add), generic));
        assert!(!keep(
            &sent_by(OWN, IPVS, NLM_F_REQUEST, IPVS_CMD_FLUSH),
            generic
        ));
        // Without a port of its own, nothing is left out (port 0 is what moby/ipvs sends).
        let everyone = super::program(IPVS, 0);
        assert_ne!(run(&everyone, generic, &sent_by(0, IPVS, 1, add)), 0);
        assert_ne!(run(&everyone, generic, &sent_by(OWN, IPVS, 1, add)), 0);
        // Truncated packets are dropped, as the kernel drops a load past the end.
        assert!(!keep(
            &message(IPVS, NLM_F_REQUEST, IPVS_CMD_NEW_SERVICE)[..12],
            generic
        ));
        assert!(!keep(&[], generic));
    }

    #[test]
    fn a_family_id_above_255_is_matched_in_both_bytes() {
        let program = program(0x1024, OWN);
        let generic = NETLINK_GENERIC;
        assert_ne!(
            run(&program, generic, &message(0x1024, 1, IPVS_CMD_FLUSH)),
            0
        );
        assert_eq!(
            run(&program, generic, &message(0x0024, 1, IPVS_CMD_FLUSH)),
            0
        );
        assert_eq!(
            run(&program, generic, &message(0x2410, 1, IPVS_CMD_FLUSH)),
            0
        );
    }

    #[test]
    fn every_jump_lands_inside_the_program() {
        for program in [program(IPVS, OWN), program(IPVS, 0)] {
            for (at, i) in program.iter().enumerate() {
                if matches!(i.code, BPF_JEQ_K | BPF_JSET_K) {
                    assert!(at + 1 + usize::from(i.jt) < program.len());
                    assert!(at + 1 + usize::from(i.jf) < program.len());
                }
            }
            assert_eq!(program.last().map(|i| i.code), Some(BPF_RET_K));
        }
    }
}
