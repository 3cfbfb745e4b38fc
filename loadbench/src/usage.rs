//! What a process used, read from `/proc`: the server's own report and the driver's readings
//! of it share this.

use crate::BoxError;

/// utime + stime (clock ticks) and `VmHWM` (KiB) of process `pid`.
pub(crate) fn process_usage(pid: u32) -> Result<(u64, u64), BoxError> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or("unreadable /proc stat")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat; `after` starts at field 3.
    let utime: u64 = fields.get(11).ok_or("no utime")?.parse()?;
    let stime: u64 = fields.get(12).ok_or("no stime")?.parse()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    Ok((utime + stime, hwm))
}

/// CPU time (clock ticks) of process `pid` and of its children that have exited and been
/// waited for (`utime + stime + cutime + cstime`): PostgreSQL's postmaster reaps every
/// backend, so a connection's CPU still counts once the connection has closed.
pub(crate) fn cpu_ticks_with_reaped_children(pid: u32) -> Result<u64, BoxError> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or("unreadable /proc stat")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime, stime, cutime, cstime are fields 14 to 17 of stat; `after` starts at field 3.
    let mut ticks = 0u64;
    for i in 11..=14 {
        let value: i64 = fields.get(i).ok_or("short /proc stat")?.parse()?;
        ticks += u64::try_from(value).unwrap_or(0);
    }
    Ok(ticks)
}
