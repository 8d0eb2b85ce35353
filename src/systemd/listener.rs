//! Who answers on a TCP address: the listening sockets a connection to it can reach (from
//! the kernel's socket tables, `/proc/thread-self/net/tcp` and `tcp6`) and whether one
//! process holds them (the `socket:[INODE]` links under `/proc/PID/fd`). The settle watch
//! counts kubelet's healthz answer only when kubelet's own main process holds every such
//! socket: any local user can listen on a free port and answer whatever suits them.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

/// TCP state `LISTEN` in the socket tables.
const TCP_LISTEN: &str = "0A";

/// A listening socket as the kernel's table shows it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Listener {
    pub inode: u64,
    pub uid: u32,
    pub local: SocketAddr,
}

/// Whether a process holds the sockets that answer on an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// Every listening socket that can answer belongs to the process.
    Process,
    /// Nothing listens there.
    NoListener,
    /// Some socket that can answer is not the process's (or its fds could not be read).
    Other { why: String },
}

/// `0100007F` (IPv4) or four such words (IPv6) as the kernel prints them: each 32-bit word
/// in the machine's byte order.
fn parse_addr(hex: &str) -> Option<IpAddr> {
    let word = |i: usize| -> Option<[u8; 4]> {
        let w = hex.get(i * 8..i * 8 + 8)?;
        u32::from_str_radix(w, 16).ok().map(u32::to_ne_bytes)
    };
    match hex.len() {
        8 => Some(IpAddr::V4(Ipv4Addr::from(word(0)?))),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            Some(IpAddr::V6(Ipv6Addr::from(bytes)))
        }
        _ => None,
    }
}

/// Whether a socket listening on `local` can take a connection to `target`: same port, and
/// the same address or a wildcard (`0.0.0.0`, `::`, or `::ffff:a.b.c.d` for an IPv4 target).
fn reaches(local: SocketAddr, target: SocketAddr) -> bool {
    if local.port() != target.port() {
        return false;
    }
    match (local.ip(), target.ip()) {
        (IpAddr::V4(l), IpAddr::V4(t)) => l == t || l.is_unspecified(),
        (IpAddr::V6(l), IpAddr::V4(t)) => l.is_unspecified() || l.to_ipv4_mapped() == Some(t),
        (IpAddr::V6(l), IpAddr::V6(t)) => l == t || l.is_unspecified(),
        (IpAddr::V4(l), IpAddr::V6(t)) => t
            .to_ipv4_mapped()
            .is_some_and(|t| l == t || l.is_unspecified()),
    }
}

/// The listening sockets in one socket table (`/proc/net/tcp` or `tcp6` text) that can
/// take a connection to `target` (pure, for tests).
pub fn parse_listeners(table: &str, target: SocketAddr) -> Vec<Listener> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 || f[3] != TCP_LISTEN {
                return None;
            }
            let (addr, port) = f[1].split_once(':')?;
            let local = SocketAddr::new(parse_addr(addr)?, u16::from_str_radix(port, 16).ok()?);
            if !reaches(local, target) {
                return None;
            }
            Some(Listener {
                inode: f[9].parse().ok()?,
                uid: f[7].parse().ok()?,
                local,
            })
        })
        .collect()
}

/// The socket tables of this thread's network namespace (`/proc/net` is the process
/// leader's; `thread-self` needs Linux 3.17, else `self`).
fn table_dir() -> PathBuf {
    let thread = Path::new("/proc/thread-self/net");
    if thread.is_dir() {
        thread.to_path_buf()
    } else {
        PathBuf::from("/proc/self/net")
    }
}

/// The listening sockets that can take a connection to `target`, sorted.
pub fn listeners(target: SocketAddr) -> io::Result<Vec<Listener>> {
    let dir = table_dir();
    let mut out = Vec::new();
    for table in ["tcp", "tcp6"] {
        match fs::read_to_string(dir.join(table)) {
            Ok(text) => out.extend(parse_listeners(&text, target)),
            // no IPv6 in this kernel
            Err(e) if e.kind() == io::ErrorKind::NotFound && table == "tcp6" => {}
            Err(e) => return Err(e),
        }
    }
    out.sort();
    Ok(out)
}

/// The socket inodes a process holds (`socket:[INODE]` links under `/proc/PID/fd`).
pub fn socket_inodes(pid: u32) -> io::Result<BTreeSet<u64>> {
    let mut out = BTreeSet::new();
    for entry in fs::read_dir(format!("/proc/{pid}/fd"))? {
        let Ok(link) = fs::read_link(entry?.path()) else {
            continue; // closed meanwhile
        };
        let link = link.to_string_lossy();
        if let Some(inode) = link
            .strip_prefix("socket:[")
            .and_then(|l| l.strip_suffix(']'))
            .and_then(|n| n.parse().ok())
        {
            out.insert(inode);
        }
    }
    Ok(out)
}

/// Whether `pid` holds every listening socket in `listeners` (pid 0: no process).
pub fn held_by(listeners: &[Listener], pid: u32) -> Holder {
    if listeners.is_empty() {
        return Holder::NoListener;
    }
    let other = |why: String| Holder::Other { why };
    if pid == 0 {
        return other("the unit has no main process".to_string());
    }
    let held = match socket_inodes(pid) {
        Ok(held) => held,
        Err(e) => return other(format!("cannot read /proc/{pid}/fd: {e}")),
    };
    let foreign: Vec<String> = listeners
        .iter()
        .filter(|l| !held.contains(&l.inode))
        .map(describe)
        .collect();
    if foreign.is_empty() {
        Holder::Process
    } else {
        other(format!("not held by process {pid}: {}", foreign.join(", ")))
    }
}

/// `socket 1234 on 127.0.0.1:10248 (uid 65534)`.
pub fn describe(l: &Listener) -> String {
    format!("socket {} on {} (uid {})", l.inode, l.local, l.uid)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEALTHZ: &str = "127.0.0.1:10248";

    fn table(lines: &[&str]) -> String {
        let mut t = String::from(
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n",
        );
        for l in lines {
            t.push_str(l);
            t.push('\n');
        }
        t
    }

    fn native(ip: [u8; 4]) -> String {
        format!("{:08X}", u32::from_ne_bytes(ip))
    }

    #[test]
    fn listeners_that_can_answer() {
        let target: SocketAddr = HEALTHZ.parse().unwrap();
        let lo = native([127, 0, 0, 1]);
        let any = native([0, 0, 0, 0]);
        let other = native([10, 0, 0, 5]);
        let row = |addr: &str, port: u16, st: &str, uid: u32, inode: u64| {
            format!(
                "   0: {addr}:{port:04X} 00000000:0000 {st} 00000000:00000000 00:00000000 00000000 {uid:>5}        0 {inode} 1 0000000000000000 100 0 0 10 0"
            )
        };
        let v4 = table(&[
            &row(&lo, 10248, "0A", 0, 11),
            &row(&any, 10248, "0A", 65534, 12),
            &row(&other, 10248, "0A", 0, 13),
            &row(&lo, 10250, "0A", 0, 14),
            // an established connection to the port, not a listener
            &row(&lo, 10248, "01", 0, 15),
        ]);
        let got: Vec<(u64, u32)> = parse_listeners(&v4, target)
            .iter()
            .map(|l| (l.inode, l.uid))
            .collect();
        assert_eq!(got, vec![(11, 0), (12, 65534)]);

        // an IPv6 address is four native-endian words, the last two given here
        let addr6 = |w3: [u8; 4], w4: [u8; 4]| [[0; 4], [0; 4], w3, w4].map(native).concat();
        let any6 = "0".repeat(32);
        let mapped = addr6([0, 0, 0xff, 0xff], [127, 0, 0, 1]);
        let loop6 = addr6([0, 0, 0, 0], [0, 0, 0, 1]);
        let v6 = table(&[
            &row(&any6, 10248, "0A", 1000, 21),
            &row(&mapped, 10248, "0A", 1000, 22),
            &row(&loop6, 10248, "0A", 1000, 23),
        ]);
        let got: Vec<u64> = parse_listeners(&v6, target)
            .iter()
            .map(|l| l.inode)
            .collect();
        assert_eq!(
            got,
            vec![21, 22],
            "::, ::ffff:127.0.0.1 reach it; ::1 does not"
        );
        assert_eq!(parse_listeners("", target), vec![]);
        assert_eq!(parse_listeners(&table(&["garbage"]), target), vec![]);
    }

    #[test]
    fn this_process_holds_its_listener_and_pid_0_holds_nothing() {
        let sock = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = sock.local_addr().unwrap();
        let found = listeners(addr).unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].local, addr);
        assert_eq!(held_by(&found, std::process::id()), Holder::Process);
        assert!(matches!(held_by(&found, 0), Holder::Other { .. }));
        let inode = found[0].inode;
        drop(sock);
        // gone; another test of this binary may bind the freed port at once, so the check is
        // on this socket, not on the port
        let after = listeners(addr).unwrap();
        assert!(after.iter().all(|l| l.inode != inode), "{after:?}");
        if after.is_empty() {
            assert_eq!(held_by(&after, std::process::id()), Holder::NoListener);
        }
    }
}
