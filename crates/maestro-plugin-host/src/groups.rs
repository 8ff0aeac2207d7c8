//! Process groups the host may kill: the plugin's own, and those a plugin reports in `started`.
//!
//! A `pgid` in a `started` reply is plugin-supplied data, so it is believed only when the host can
//! see for itself that it names a process group the plugin created: the number is greater than 1
//! and `/proc/<pgid>/stat` shows a process that leads its own group (pgrp == pid) and descends
//! from the plugin process (its parent, or its parent's parent, and so on, is the plugin). Anything
//! else (a negative number, 0, 1, a pid of an unrelated process, a number that only means something
//! on a remote machine) is ignored with a warning and never signalled.
//!
//! Each accepted group is remembered with its leader's start time, and checked again just before
//! it is killed, so a group number that was freed and reused by an unrelated process in the
//! meantime is left alone. (Linux never reuses a number while any process still uses it as its
//! process group id, so a group whose leader is gone but whose members live on keeps its number.)

use std::path::Path;

use rustix::process::{Pid, Signal};

/// How many parent links are followed to find the plugin above a reported group leader.
const MAX_ANCESTRY: usize = 64;

/// A pid the kernel could give a process: 1 or more. `None` for 0 and negative numbers, which
/// mean "my group" or "every process" to `kill(2)`.
pub(crate) fn positive_pid(raw: i32) -> Option<Pid> {
    if raw > 0 { Pid::from_raw(raw) } else { None }
}

/// What `/proc/<pid>/stat` says about one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcStat {
    pub(crate) pid: i32,
    pub(crate) ppid: i32,
    pub(crate) pgrp: i32,
    /// Clock ticks after boot at which the process started (field 22).
    pub(crate) start_time: u64,
}

/// Parse the content of a `/proc/<pid>/stat` file. The command name (field 2) is in parentheses
/// and may hold spaces and parentheses itself, so fields are counted from its last `)`.
pub(crate) fn parse_stat(text: &str) -> Option<ProcStat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let pid = text.get(..open)?.trim().parse().ok()?;
    // After ")": state(3) ppid(4) pgrp(5) session(6) tty_nr(7) tpgid(8) flags(9) minflt(10)
    // cminflt(11) majflt(12) cmajflt(13) utime(14) stime(15) cutime(16) cstime(17) priority(18)
    // nice(19) num_threads(20) itrealvalue(21) starttime(22).
    let rest: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    Some(ProcStat {
        pid,
        ppid: rest.get(1)?.parse().ok()?,
        pgrp: rest.get(2)?.parse().ok()?,
        start_time: rest.get(19)?.parse().ok()?,
    })
}

/// `/proc/<pid>/stat` of process `pid`, or `None` when there is no such process (or no `/proc`).
pub(crate) fn stat(pid: i32) -> Option<ProcStat> {
    if pid <= 0 {
        return None;
    }
    let text =
        std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("stat")).ok()?;
    parse_stat(&text).filter(|stat| stat.pid == pid)
}

/// A process group the host checked and may kill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Group {
    pgid: Pid,
    /// The leader's start time when the group was checked, when `/proc` could tell it.
    leader_start: Option<u64>,
}

/// Why a reported `pgid` is not believed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Rejected {
    /// No process has that pid on this machine (any more): nothing to kill, nothing to warn
    /// about (a quick task may be over and reaped before its `started` reply is read).
    Gone,
    /// The number names something the plugin did not create; never signal it.
    NotThePlugins(String),
}

impl Group {
    /// The plugin's own process group: its process was started by the host in a group of its own,
    /// so its pid is the group id.
    pub(crate) fn of_child(pid: u32) -> Option<Self> {
        let raw = i32::try_from(pid).ok()?;
        let pgid = positive_pid(raw)?;
        Some(Self {
            pgid,
            leader_start: stat(raw).map(|stat| stat.start_time),
        })
    }

    /// Check `reported`, a `pgid` from a `started` reply of the plugin whose process is
    /// `plugin_pid` (see the module documentation).
    pub(crate) fn reported(reported: i32, plugin_pid: i32) -> Result<Self, Rejected> {
        let Some(pgid) = positive_pid(reported).filter(|_| reported > 1 && plugin_pid > 1) else {
            return Err(Rejected::NotThePlugins(format!(
                "{reported} is not a process group a task can have"
            )));
        };
        if reported == plugin_pid {
            return Err(Rejected::NotThePlugins(format!(
                "{reported} is the plugin's own process group, not a task's"
            )));
        }
        // A process whose group reads as 0 or -1 is being released after its exit (its links to
        // its group are already cut): a quick task that is over, like one already gone.
        let Some(leader) = stat(reported).filter(|leader| leader.pgrp > 0) else {
            return Err(Rejected::Gone);
        };
        if leader.pgrp != reported {
            return Err(Rejected::NotThePlugins(format!(
                "process {reported} does not lead a process group (its group is {})",
                leader.pgrp
            )));
        }
        let mut parent = leader.ppid;
        for _ in 0..MAX_ANCESTRY {
            if parent == plugin_pid {
                return Ok(Self {
                    pgid,
                    leader_start: Some(leader.start_time),
                });
            }
            if parent <= 1 {
                break;
            }
            match stat(parent) {
                Some(up) => parent = up.ppid,
                None => break,
            }
        }
        Err(Rejected::NotThePlugins(format!(
            "process {reported} was not started by the plugin (process {plugin_pid})"
        )))
    }

    /// The group id.
    pub(crate) fn pgid(&self) -> i32 {
        self.pgid.as_raw_nonzero().get()
    }

    /// Whether the number still names the group that was checked: its leader is the same process
    /// (same start time), or the leader is gone (then the number is still the group's while any
    /// member lives, and names nothing otherwise).
    fn still_ours(&self) -> bool {
        match (stat(self.pgid()), self.leader_start) {
            (None, _) => true,
            (Some(now), Some(then)) => now.start_time == then && now.pgrp == now.pid,
            (Some(now), None) => now.pgrp == now.pid,
        }
    }

    /// Send `SIGKILL` to every process of the group, unless its number was reused meanwhile.
    pub(crate) fn kill(&self) {
        if self.still_ours() {
            // ESRCH (already gone) is the common, harmless failure.
            let _ = rustix::process::kill_process_group(self.pgid, Signal::KILL);
        } else {
            tracing::debug!(
                pgid = self.pgid(),
                "process group number reused by another process; not killed"
            );
        }
    }

    /// Whether any process is still in the group.
    pub(crate) fn alive(&self) -> bool {
        self.still_ours() && rustix::process::test_kill_process_group(self.pgid).is_ok()
    }

    /// The live (not zombie) processes of the group, as `pid 123 (sleep)`, from `/proc`; empty
    /// when the number was reused by another process meanwhile.
    pub(crate) fn members(&self) -> Vec<String> {
        if !self.still_ours() {
            return Vec::new();
        }
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        let mut members = Vec::new();
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|name| name.parse::<i32>().ok())
            else {
                continue;
            };
            let Ok(text) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            let (Some(stat), Some(open), Some(close)) =
                (parse_stat(&text), text.find('('), text.rfind(')'))
            else {
                continue;
            };
            let state = text
                .get(close + 1..)
                .and_then(|rest| rest.split_whitespace().next());
            if stat.pid != pid || stat.pgrp != self.pgid() || matches!(state, Some("Z" | "X")) {
                continue;
            }
            let command: String = text
                .get(open + 1..close)
                .unwrap_or_default()
                .chars()
                .filter(|c| !c.is_control())
                .collect();
            members.push(format!("pid {pid} ({command})"));
        }
        members
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};

    use super::*;

    #[test]
    fn stat_lines_with_odd_command_names_parse() {
        let line =
            "4242 (a) b (c)) S 17 4242 4242 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 987654 0 0";
        assert_eq!(
            parse_stat(line),
            Some(ProcStat {
                pid: 4242,
                ppid: 17,
                pgrp: 4242,
                start_time: 987_654
            })
        );
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("12 (x) S 1 2"), None);
        let me = stat(i32::try_from(std::process::id()).unwrap()).unwrap();
        assert_eq!(me.pid, i32::try_from(std::process::id()).unwrap());
    }

    #[test]
    fn numbers_no_task_can_have_are_rejected_without_a_panic() {
        let me = i32::try_from(std::process::id()).unwrap();
        for bad in [i32::MIN, -999_999, -1, 0, 1] {
            assert!(
                matches!(Group::reported(bad, me), Err(Rejected::NotThePlugins(_))),
                "{bad}"
            );
            assert!(positive_pid(bad).is_none() || bad == 1);
        }
        assert!(matches!(
            Group::reported(me, me),
            Err(Rejected::NotThePlugins(_))
        ));
    }

    #[test]
    fn only_groups_led_by_a_descendant_of_the_plugin_are_believed() {
        let me = i32::try_from(std::process::id()).unwrap();
        // A child of this process leading its own group: believed for "plugin" = this process.
        let mut leader = Command::new("sleep")
            .arg("30")
            .process_group(0)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let leader_pid = i32::try_from(leader.id()).unwrap();
        let group = Group::reported(leader_pid, me).unwrap();
        assert_eq!(group.pgid(), leader_pid);
        assert!(group.alive());
        // The same group claimed by another "plugin" (an unrelated process): refused.
        let mut stranger = Command::new("sleep")
            .arg("30")
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let stranger_pid = i32::try_from(stranger.id()).unwrap();
        assert!(matches!(
            Group::reported(leader_pid, stranger_pid),
            Err(Rejected::NotThePlugins(_))
        ));
        let _ = stranger.kill();
        let _ = stranger.wait();
        // A child that does not lead a group: refused.
        let mut member = Command::new("sleep")
            .arg("30")
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let member_pid = i32::try_from(member.id()).unwrap();
        assert!(matches!(
            Group::reported(member_pid, me),
            Err(Rejected::NotThePlugins(_))
        ));
        let _ = member.kill();
        let _ = member.wait();
        group.kill();
        let _ = leader.wait();
        assert!(!group.alive());
        // Reaped and gone: nothing to believe, nothing to warn about.
        assert_eq!(Group::reported(leader_pid, me), Err(Rejected::Gone));
    }

    #[test]
    fn a_reused_group_number_is_not_killed() {
        let mut other = Command::new("sleep")
            .arg("30")
            .process_group(0)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let pid = i32::try_from(other.id()).unwrap();
        // A record of "the same number" whose leader started at another time.
        let stale = Group {
            pgid: positive_pid(pid).unwrap(),
            leader_start: stat(pid).map(|s| s.start_time + 1),
        };
        stale.kill();
        assert!(
            other.try_wait().unwrap().is_none(),
            "an unrelated group was killed"
        );
        let _ = other.kill();
        let _ = other.wait();
    }
}
