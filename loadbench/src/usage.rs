//! What a process used, read from `/proc`: the server's own report and the driver's readings
//! of it share this.

use crate::BoxError;

/// utime + stime (clock ticks) and `VmHWM` (KiB) of process `pid`.
pub(crate) fn process_usage(pid: u32) -> Result<(u64, u64), BoxError> {
    // utime and stime: fields 14 and 15 of stat.
    let ticks = stat_ticks(pid, 14..=15)?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    Ok((ticks, hwm))
}

/// CPU time (clock ticks) of process `pid` and of its children that have exited and been
/// waited for (`utime + stime + cutime + cstime`, fields 14 to 17 of stat): PostgreSQL's
/// postmaster reaps every backend, so a connection's CPU still counts once the connection
/// has closed.
pub(crate) fn cpu_ticks_with_reaped_children(pid: u32) -> Result<u64, BoxError> {
    stat_ticks(pid, 14..=17)
}

/// The sum of the clock-tick fields `fields` (numbered as in proc(5)) of `/proc/<pid>/stat`.
fn stat_ticks(pid: u32, fields: std::ops::RangeInclusive<usize>) -> Result<u64, BoxError> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may hold spaces: the
    // first of them is field 3.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or("unreadable /proc stat")?;
    let values: Vec<&str> = after.split_whitespace().collect();
    let mut ticks = 0u64;
    for field in fields {
        // cutime and cstime are signed in proc(5); never negative in practice.
        let value: i64 = values.get(field - 3).ok_or("short /proc stat")?.parse()?;
        ticks += u64::try_from(value).unwrap_or(0);
    }
    Ok(ticks)
}
