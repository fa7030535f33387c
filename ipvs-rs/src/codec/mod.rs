//! Sans-IO encoding and decoding of IPVS generic-netlink messages.
