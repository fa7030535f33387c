//! Netlink sockets: a blocking and an async connection over one sans-IO exchange core.
