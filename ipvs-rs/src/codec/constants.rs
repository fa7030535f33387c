//! The numbers of `include/uapi/linux/ip_vs.h` used on the wire.

/// Generic netlink family name.
pub const IPVS_GENL_NAME: &str = "IPVS";
/// Generic netlink family version.
pub const IPVS_GENL_VERSION: u8 = 1;

/// Command: add a service.
pub const IPVS_CMD_NEW_SERVICE: u8 = 1;
/// Command: edit a service.
pub const IPVS_CMD_SET_SERVICE: u8 = 2;
/// Command: delete a service.
pub const IPVS_CMD_DEL_SERVICE: u8 = 3;
/// Command: get one service, or dump all.
pub const IPVS_CMD_GET_SERVICE: u8 = 4;
/// Command: add a destination.
pub const IPVS_CMD_NEW_DEST: u8 = 5;
/// Command: edit a destination.
pub const IPVS_CMD_SET_DEST: u8 = 6;
/// Command: delete a destination.
pub const IPVS_CMD_DEL_DEST: u8 = 7;
/// Command: dump the destinations of a service.
pub const IPVS_CMD_GET_DEST: u8 = 8;
/// Command: start a sync daemon.
pub const IPVS_CMD_NEW_DAEMON: u8 = 9;
/// Command: stop a sync daemon.
pub const IPVS_CMD_DEL_DAEMON: u8 = 10;
/// Command: dump the sync daemons.
pub const IPVS_CMD_GET_DAEMON: u8 = 11;
/// Command: set the timeouts.
pub const IPVS_CMD_SET_CONFIG: u8 = 12;
/// Command: get the timeouts.
pub const IPVS_CMD_GET_CONFIG: u8 = 13;
/// Command of the GET_INFO reply.
pub const IPVS_CMD_SET_INFO: u8 = 14;
/// Command: get version and connection table size.
pub const IPVS_CMD_GET_INFO: u8 = 15;
/// Command: zero the counters of one service or all.
pub const IPVS_CMD_ZERO: u8 = 16;
/// Command: delete every service.
pub const IPVS_CMD_FLUSH: u8 = 17;

/// Top level: nested service.
pub const IPVS_CMD_ATTR_SERVICE: u16 = 1;
/// Top level: nested destination.
pub const IPVS_CMD_ATTR_DEST: u16 = 2;
/// Top level: nested sync daemon.
pub const IPVS_CMD_ATTR_DAEMON: u16 = 3;
/// Top level: TCP timeout (u32 seconds).
pub const IPVS_CMD_ATTR_TIMEOUT_TCP: u16 = 4;
/// Top level: TCP FIN timeout (u32 seconds).
pub const IPVS_CMD_ATTR_TIMEOUT_TCP_FIN: u16 = 5;
/// Top level: UDP timeout (u32 seconds).
pub const IPVS_CMD_ATTR_TIMEOUT_UDP: u16 = 6;

/// Service: address family (u16).
pub const IPVS_SVC_ATTR_AF: u16 = 1;
/// Service: protocol (u16).
pub const IPVS_SVC_ATTR_PROTOCOL: u16 = 2;
/// Service: address (4 or 16 bytes; replies carry 16).
pub const IPVS_SVC_ATTR_ADDR: u16 = 3;
/// Service: port (u16, network order).
pub const IPVS_SVC_ATTR_PORT: u16 = 4;
/// Service: firewall mark (u32).
pub const IPVS_SVC_ATTR_FWMARK: u16 = 5;
/// Service: scheduler name (NUL-terminated, ≤ 15 chars).
pub const IPVS_SVC_ATTR_SCHED_NAME: u16 = 6;
/// Service: flags (`struct ip_vs_flags`: u32 flags, u32 mask).
pub const IPVS_SVC_ATTR_FLAGS: u16 = 7;
/// Service: persistence timeout (u32 seconds).
pub const IPVS_SVC_ATTR_TIMEOUT: u16 = 8;
/// Service: persistence netmask (IPv4: mask, network order; IPv6: prefix length, host order).
pub const IPVS_SVC_ATTR_NETMASK: u16 = 9;
/// Service: nested 32-bit statistics.
pub const IPVS_SVC_ATTR_STATS: u16 = 10;
/// Service: persistence engine name.
pub const IPVS_SVC_ATTR_PE_NAME: u16 = 11;
/// Service: nested 64-bit statistics (4.1+).
pub const IPVS_SVC_ATTR_STATS64: u16 = 12;

/// Destination: address.
pub const IPVS_DEST_ATTR_ADDR: u16 = 1;
/// Destination: port (network order).
pub const IPVS_DEST_ATTR_PORT: u16 = 2;
/// Destination: forwarding method (u32).
pub const IPVS_DEST_ATTR_FWD_METHOD: u16 = 3;
/// Destination: weight (u32, ≤ i32::MAX).
pub const IPVS_DEST_ATTR_WEIGHT: u16 = 4;
/// Destination: upper threshold (u32).
pub const IPVS_DEST_ATTR_U_THRESH: u16 = 5;
/// Destination: lower threshold (u32).
pub const IPVS_DEST_ATTR_L_THRESH: u16 = 6;
/// Destination: active connections (u32, reply only).
pub const IPVS_DEST_ATTR_ACTIVE_CONNS: u16 = 7;
/// Destination: inactive connections (u32, reply only).
pub const IPVS_DEST_ATTR_INACT_CONNS: u16 = 8;
/// Destination: persistent connections (u32, reply only).
pub const IPVS_DEST_ATTR_PERSIST_CONNS: u16 = 9;
/// Destination: nested 32-bit statistics.
pub const IPVS_DEST_ATTR_STATS: u16 = 10;
/// Destination: address family (u16, 3.18+).
pub const IPVS_DEST_ATTR_ADDR_FAMILY: u16 = 11;
/// Destination: nested 64-bit statistics (4.1+).
pub const IPVS_DEST_ATTR_STATS64: u16 = 12;
/// Destination: tunnel type (u8, 5.2+).
pub const IPVS_DEST_ATTR_TUN_TYPE: u16 = 13;
/// Destination: tunnel port (u16, network order, 5.2+).
pub const IPVS_DEST_ATTR_TUN_PORT: u16 = 14;
/// Destination: tunnel flags (u16, 5.3+).
pub const IPVS_DEST_ATTR_TUN_FLAGS: u16 = 15;

/// Daemon: state (u32).
pub const IPVS_DAEMON_ATTR_STATE: u16 = 1;
/// Daemon: interface name.
pub const IPVS_DAEMON_ATTR_MCAST_IFN: u16 = 2;
/// Daemon: sync id (u32).
pub const IPVS_DAEMON_ATTR_SYNC_ID: u16 = 3;
/// Daemon: maximum sync message length (u16, 4.3+).
pub const IPVS_DAEMON_ATTR_SYNC_MAXLEN: u16 = 4;
/// Daemon: IPv4 multicast group (network order, 4.3+).
pub const IPVS_DAEMON_ATTR_MCAST_GROUP: u16 = 5;
/// Daemon: IPv6 multicast group (16 bytes, 4.3+).
pub const IPVS_DAEMON_ATTR_MCAST_GROUP6: u16 = 6;
/// Daemon: multicast port (u16, **host** order, 4.3+).
pub const IPVS_DAEMON_ATTR_MCAST_PORT: u16 = 7;
/// Daemon: multicast TTL (u8, 4.3+).
pub const IPVS_DAEMON_ATTR_MCAST_TTL: u16 = 8;

/// Stats: connections.
pub const IPVS_STATS_ATTR_CONNS: u16 = 1;
/// Stats: packets in.
pub const IPVS_STATS_ATTR_INPKTS: u16 = 2;
/// Stats: packets out.
pub const IPVS_STATS_ATTR_OUTPKTS: u16 = 3;
/// Stats: bytes in (u64 even in 32-bit STATS).
pub const IPVS_STATS_ATTR_INBYTES: u16 = 4;
/// Stats: bytes out (u64 even in 32-bit STATS).
pub const IPVS_STATS_ATTR_OUTBYTES: u16 = 5;
/// Stats: connection rate.
pub const IPVS_STATS_ATTR_CPS: u16 = 6;
/// Stats: packet-in rate.
pub const IPVS_STATS_ATTR_INPPS: u16 = 7;
/// Stats: packet-out rate.
pub const IPVS_STATS_ATTR_OUTPPS: u16 = 8;
/// Stats: byte-in rate.
pub const IPVS_STATS_ATTR_INBPS: u16 = 9;
/// Stats: byte-out rate.
pub const IPVS_STATS_ATTR_OUTBPS: u16 = 10;
/// Stats: padding for 64-bit alignment.
pub const IPVS_STATS_ATTR_PAD: u16 = 11;

/// Info: IPVS version (u32, `0x00MMmmpp`).
pub const IPVS_INFO_ATTR_VERSION: u16 = 1;
/// Info: connection table size (u32).
pub const IPVS_INFO_ATTR_CONN_TAB_SIZE: u16 = 2;

/// Forwarding: masquerading (NAT).
pub const IP_VS_CONN_F_MASQ: u32 = 0;
/// Forwarding: local node.
pub const IP_VS_CONN_F_LOCALNODE: u32 = 1;
/// Forwarding: tunnel.
pub const IP_VS_CONN_F_TUNNEL: u32 = 2;
/// Forwarding: direct routing.
pub const IP_VS_CONN_F_DROUTE: u32 = 3;
/// Forwarding: bypass.
pub const IP_VS_CONN_F_BYPASS: u32 = 4;
/// The bits of FWD_METHOD the kernel keeps.
pub const IP_VS_CONN_F_FWD_MASK: u32 = 0x7;

/// Tunnel type IPIP.
pub const IP_VS_CONN_F_TUNNEL_TYPE_IPIP: u8 = 0;
/// Tunnel type GUE.
pub const IP_VS_CONN_F_TUNNEL_TYPE_GUE: u8 = 1;
/// Tunnel type GRE.
pub const IP_VS_CONN_F_TUNNEL_TYPE_GRE: u8 = 2;
