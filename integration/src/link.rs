//! Links, addresses, routes and sysctls inside a namespace, over rtnetlink.
//!
//! Every function here acts on the network namespace of the calling thread: call them from inside
//! [`Netns::run`](crate::Netns::run). They are blocking wrappers around `rtnetlink` (one small
//! current-thread runtime per call), which keeps test code short and sequential.

use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd};

use futures_util::TryStreamExt;
use rtnetlink::{Handle, LinkBridge, LinkUnspec, LinkVeth, RouteMessageBuilder};

use crate::Netns;

fn block_on<T>(f: impl AsyncFnOnce(Handle) -> Result<T, rtnetlink::Error>) -> io::Result<T> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let (connection, handle, _) = rtnetlink::new_connection()?;
        let task = tokio::spawn(connection);
        let result = f(handle)
            .await
            .map_err(|e| io::Error::other(format!("rtnetlink: {e}")));
        task.abort();
        result
    })
}

async fn index_of(handle: &Handle, name: &str) -> Result<u32, rtnetlink::Error> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await? {
        Some(link) => Ok(link.header.index),
        None => Err(rtnetlink::Error::RequestFailed),
    }
}

/// Brings the interface `name` up.
pub fn set_up(name: &str) -> io::Result<()> {
    block_on(async |handle| {
        let index = index_of(&handle, name).await?;
        handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
    })
}

/// Creates a veth pair: `name` stays in the calling thread's namespace, `peer` is moved into
/// `peer_ns`. Both ends are left down.
pub fn add_veth(name: &str, peer: &str, peer_ns: &Netns) -> io::Result<()> {
    let fd = peer_ns.as_fd().as_raw_fd();
    block_on(async |handle| {
        handle
            .link()
            .add(LinkVeth::new(name, peer).build())
            .execute()
            .await?;
        let index = index_of(&handle, peer).await?;
        handle
            .link()
            .set(LinkUnspec::new_with_index(index).setns_by_fd(fd).build())
            .execute()
            .await
    })
}

/// Adds `addr/prefix` to the interface `name`.
pub fn add_address(name: &str, addr: IpAddr, prefix: u8) -> io::Result<()> {
    block_on(async |handle| {
        let index = index_of(&handle, name).await?;
        handle.address().add(index, addr, prefix).execute().await
    })
}

/// Adds a default route through `gateway`.
pub fn add_default_route(gateway: IpAddr) -> io::Result<()> {
    block_on(async |handle| {
        let route = match gateway {
            IpAddr::V4(gw) => RouteMessageBuilder::<std::net::Ipv4Addr>::new()
                .gateway(gw)
                .build(),
            IpAddr::V6(gw) => RouteMessageBuilder::<std::net::Ipv6Addr>::new()
                .gateway(gw)
                .build(),
        };
        handle.route().add(route).execute().await
    })
}

/// Adds a bridge `name`, up.
pub fn add_bridge(name: &str) -> io::Result<()> {
    block_on(async |handle| {
        handle
            .link()
            .add(LinkBridge::new(name).build())
            .execute()
            .await
    })
}

/// Makes the interface `name` a port of the bridge `bridge`.
pub fn set_bridge(name: &str, bridge: &str) -> io::Result<()> {
    block_on(async |handle| {
        let index = index_of(&handle, name).await?;
        let bridge = index_of(&handle, bridge).await?;
        handle
            .link()
            .set(LinkUnspec::new_with_index(index).controller(bridge).build())
            .execute()
            .await
    })
}

/// Adds a route to `network/prefix` through `gateway` (IPv4).
pub fn add_route(
    network: std::net::Ipv4Addr,
    prefix: u8,
    gateway: std::net::Ipv4Addr,
) -> io::Result<()> {
    block_on(async |handle| {
        let route = RouteMessageBuilder::<std::net::Ipv4Addr>::new()
            .destination_prefix(network, prefix)
            .gateway(gateway)
            .build();
        handle.route().add(route).execute().await
    })
}

/// Writes a sysctl of the calling thread's namespace, e.g. `("net/ipv4/ip_forward", "1")`.
pub fn set_sysctl(key: &str, value: &str) -> io::Result<()> {
    let path = format!("/proc/sys/{key}");
    std::fs::write(&path, value).map_err(|e| io::Error::new(e.kind(), format!("{path}: {e}")))
}

/// Runs `future` to completion on a fresh current-thread runtime (for async test code inside
/// [`Netns::run`](crate::Netns::run)).
pub fn block_on_future<T>(future: impl Future<Output = T>) -> io::Result<T> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(future))
}
