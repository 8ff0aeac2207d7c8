//! Brings the loopback interface of a new network namespace up with one rtnetlink message.
//!
//! A new network namespace has `lo` down; `ip link set lo up` is this one `RTM_NEWLINK`
//! request. Building the 32 bytes by hand keeps it safe code and spares a netlink crate.

use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType, recv, send, socket,
};

/// `RTM_NEWLINK` from `<linux/rtnetlink.h>`.
const RTM_NEWLINK: u16 = 16;
/// `NLMSG_ERROR`: the kernel's answer, an acknowledgement when its error is 0.
const NLMSG_ERROR: u16 = 2;
/// `NLM_F_REQUEST | NLM_F_ACK`.
const REQUEST_WITH_ACK: u16 = 1 | 4;
/// `IFF_UP`.
const IFF_UP: u32 = 1;
/// `sizeof(struct nlmsghdr) + sizeof(struct ifinfomsg)`.
const MESSAGE_BYTES: usize = 32;

/// Sets `IFF_UP` on `lo` in the calling process's network namespace.
pub(crate) fn loopback_up() -> Result<(), Errno> {
    let index = nix::net::if_::if_nametoindex("lo")?;
    let socket = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkRoute,
    )?;
    // Without an address, a netlink message goes to the kernel.
    send(
        std::os::fd::AsRawFd::as_raw_fd(&socket),
        &link_up_request(index),
        MsgFlags::empty(),
    )?;
    let mut answer = [0u8; 256];
    let count = recv(
        std::os::fd::AsRawFd::as_raw_fd(&socket),
        &mut answer,
        MsgFlags::empty(),
    )?;
    parse_ack(&answer[..count])
}

/// The request: a `nlmsghdr` followed by an `ifinfomsg`, in native byte order.
fn link_up_request(index: u32) -> [u8; MESSAGE_BYTES] {
    let mut message = [0u8; MESSAGE_BYTES];
    message[0..4].copy_from_slice(&(MESSAGE_BYTES as u32).to_ne_bytes());
    message[4..6].copy_from_slice(&RTM_NEWLINK.to_ne_bytes());
    message[6..8].copy_from_slice(&REQUEST_WITH_ACK.to_ne_bytes());
    message[8..12].copy_from_slice(&1u32.to_ne_bytes()); // sequence number
    // 12..16: port id 0 (the kernel fills it in); 16: AF_UNSPEC; 17: padding; 18..20: type.
    message[20..24].copy_from_slice(&index.to_ne_bytes());
    message[24..28].copy_from_slice(&IFF_UP.to_ne_bytes()); // flags
    message[28..32].copy_from_slice(&IFF_UP.to_ne_bytes()); // change mask
    message
}

/// Reads the kernel's `NLMSG_ERROR` answer: error 0 is success, else a negated errno.
fn parse_ack(answer: &[u8]) -> Result<(), Errno> {
    if answer.len() < 20 {
        return Err(Errno::EPROTO);
    }
    let kind = u16::from_ne_bytes([answer[4], answer[5]]);
    let error = i32::from_ne_bytes([answer[16], answer[17], answer[18], answer[19]]);
    match (kind, error) {
        (NLMSG_ERROR, 0) => Ok(()),
        (NLMSG_ERROR, error) => Err(Errno::from_raw(-error)),
        _ => Err(Errno::EPROTO),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_says_lo_up() {
        let message = link_up_request(1);
        assert_eq!(u32::from_ne_bytes(message[0..4].try_into().unwrap()), 32);
        assert_eq!(u16::from_ne_bytes([message[4], message[5]]), RTM_NEWLINK);
        assert_eq!(i32::from_ne_bytes(message[20..24].try_into().unwrap()), 1);
    }

    #[test]
    fn an_error_answer_is_its_errno() {
        let mut answer = [0u8; 36];
        answer[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        answer[16..20].copy_from_slice(&(-1i32).to_ne_bytes());
        assert_eq!(parse_ack(&answer), Err(Errno::EPERM));
        answer[16..20].copy_from_slice(&0i32.to_ne_bytes());
        assert_eq!(parse_ack(&answer), Ok(()));
        assert_eq!(parse_ack(&answer[..8]), Err(Errno::EPROTO));
    }
}
