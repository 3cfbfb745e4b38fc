//! Loopback ports for servers a test starts itself (the demo, PostgreSQL, NATS nodes).
//!
//! A port from `bind(127.0.0.1:0)` comes from the kernel's ephemeral range, the same range
//! every outgoing connection's local port comes from. Between the moment a test reads it and
//! the moment its server binds it (or binds it again, after a kill), any connection on the
//! machine may take it: CI once lost a NATS node that way, its monitor port held for a whole
//! minute by another cluster's route connection. So ports are handed out *below* that range,
//! where the kernel never assigns one: each port is given once per process, and is checked
//! free when given (another process may use the same band).
//!
//! `audit-store`'s integration tests include this file by path, so it stays free of the rest
//! of this crate.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};

/// The lowest port handed out: above the well-known and registered services tests might meet.
const BAND_START: u32 = 12_000;
/// Where the band ends when the kernel's ephemeral range cannot be read (Linux's default start).
const EPHEMERAL_DEFAULT: u32 = 32_768;

/// Offset into the band of the next port this process hands out.
static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);

/// A loopback port that is free now, outside the kernel's ephemeral range where it can; no
/// other call in this process returns it again (until the band wraps).
///
/// ```
/// let a = audit_tests::free_port();
/// let b = audit_tests::free_port();
/// assert_ne!(a, b);
/// std::net::TcpListener::bind(("127.0.0.1", a)).expect("handed out free");
/// ```
pub fn free_port() -> u16 {
    let end = ephemeral_start().min(u32::from(u16::MAX));
    if end <= BAND_START + 1_000 {
        // A kernel whose ephemeral range starts low leaves no band: take one of its ports.
        return kernel_port();
    }
    let band = end - BAND_START;
    let _ = NEXT.compare_exchange(
        u32::MAX,
        start_offset(band),
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..band {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed) % band;
        let port = u16::try_from(BAND_START + offset).expect("the band ends below 65536");
        if port != 4222 && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    kernel_port()
}

/// Where the kernel's ephemeral range starts (`/proc/sys/net/ipv4/ip_local_port_range`).
fn ephemeral_start() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(EPHEMERAL_DEFAULT)
}

/// A start in the band that differs between processes, so two test binaries run side by side
/// rarely probe the same ports.
fn start_offset(band: u32) -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    (std::process::id().wrapping_mul(7_919) ^ nanos) % band
}

/// A port the kernel picks (from its ephemeral range).
fn kernel_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_below_the_ephemeral_range_and_free() {
        let ports: Vec<u16> = (0..200).map(|_| free_port()).collect();
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(
            unique.len(),
            ports.len(),
            "a port handed out twice: {ports:?}"
        );
        let end = ephemeral_start();
        if end > BAND_START + 1_000 {
            assert!(
                ports
                    .iter()
                    .all(|p| (BAND_START..end).contains(&u32::from(*p))),
                "a port outside {BAND_START}..{end}: {ports:?}"
            );
        }
        for port in ports.iter().take(20) {
            TcpListener::bind(("127.0.0.1", *port)).expect("a handed-out port is free");
        }
    }
}
