//! CPU time and load from `/proc` (no `unsafe`: the workspace forbids it, so no `getrusage`).

use std::path::Path;
use std::process::Command;

/// CPU time so far, in clock ticks: this process, the children it reaped (the reference
/// tools), and a PostgreSQL server's processes.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Cpu {
    /// This process: user + system ticks.
    pub(crate) own: u64,
    /// This process's reaped children: user + system ticks.
    pub(crate) children: u64,
    /// The system-time part of `own`.
    pub(crate) own_sys: u64,
    /// The system-time part of `children`.
    pub(crate) children_sys: u64,
    /// The PostgreSQL server's postmaster, with the children it reaped, and its live children.
    pub(crate) server: Option<u64>,
}

impl Cpu {
    /// A reading before the measured work. The server is read first: the walk over `/proc`
    /// that finds its processes costs this process CPU, which is not the work's.
    pub(crate) fn before(server: Option<u32>) -> Self {
        let server = server.and_then(postgres_ticks);
        Self {
            server,
            ..Self::own()
        }
    }

    /// A reading after the measured work: this process first, for the same reason.
    pub(crate) fn after(server: Option<u32>) -> Self {
        let own = Self::own();
        Self {
            server: server.and_then(postgres_ticks),
            ..own
        }
    }

    fn own() -> Self {
        let [utime, stime, cutime, cstime] =
            stat_ticks(Path::new("/proc/self/stat")).unwrap_or_default();
        Self {
            own: utime + stime,
            children: cutime + cstime,
            own_sys: stime,
            children_sys: cstime,
            server: None,
        }
    }

    /// What was spent between `before` and this reading.
    pub(crate) fn since(self, before: Self) -> Self {
        Self {
            own: self.own.saturating_sub(before.own),
            children: self.children.saturating_sub(before.children),
            own_sys: self.own_sys.saturating_sub(before.own_sys),
            children_sys: self.children_sys.saturating_sub(before.children_sys),
            server: self
                .server
                .zip(before.server)
                .map(|(a, b)| a.saturating_sub(b)),
        }
    }
}

/// utime, stime, cutime, cstime of `/proc/<pid>/stat`, in clock ticks.
fn stat_ticks(path: &Path) -> Option<[u64; 4]> {
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the command name (which may hold spaces), from field 3 (state) on.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some([field(14)?, field(15)?, field(16)?, field(17)?])
}

/// CPU ticks of one PostgreSQL server: its postmaster (with the children it reaped: exited
/// backends, autovacuum workers) and its live children. Other servers on the machine (tests
/// start their own) are not counted.
pub(crate) fn postgres_ticks(postmaster: u32) -> Option<u64> {
    let mut total: u64 = stat_ticks(Path::new(&format!("/proc/{postmaster}/stat")))?
        .iter()
        .sum();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if parent_pid(&entry.path()) == Some(postmaster)
            && let Some(t) = stat_ticks(&entry.path().join("stat"))
        {
            total += t.iter().sum::<u64>();
        }
    }
    Some(total)
}

/// Field 4 of `/proc/<pid>/stat`.
pub(crate) fn parent_pid(dir: &Path) -> Option<u32> {
    let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The postmaster of the backend process `backend`, when it runs on this machine.
pub(crate) fn local_postmaster(backend: i32) -> Option<u32> {
    parent_pid(Path::new(&format!("/proc/{backend}")))
        .filter(|pm| postgres_ticks(*pm).is_some())
        .filter(|pm| {
            std::fs::read_to_string(format!("/proc/{pm}/comm"))
                .is_ok_and(|c| c.trim_end() == "postgres")
        })
}

/// Clock ticks per second (`getconf CLK_TCK`, else 100).
pub(crate) fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// `ticks` per row, in µs.
pub(crate) fn per_row(ticks: u64, ticks_per_second: f64, rows: u64) -> f64 {
    ticks as f64 * 1e6 / ticks_per_second / rows.max(1) as f64
}

/// The three load averages of `/proc/loadavg`, or `unknown`.
pub(crate) fn load_averages() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// The one-minute load average, or `?`.
pub(crate) fn load1() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .next()
        .unwrap_or("?")
        .to_owned()
}

/// The load averages and `uptime`'s line, to print with the figures.
pub(crate) fn load() -> String {
    let loadavg = load_averages();
    let uptime = Command::new("uptime")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    if uptime.is_empty() {
        format!("load average {loadavg}")
    } else {
        format!("load average {loadavg} (uptime: {uptime})")
    }
}
