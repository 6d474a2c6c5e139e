//! What the numbers were measured on, and the function binary's size and memory.

use std::path::Path;
use std::time::SystemTime;

use aws_sdk_dynamodb::primitives::{DateTime, DateTimeFormat};

#[derive(Debug, Clone)]
pub struct Machine {
    pub uname: String,
    pub cores: usize,
    pub cpu_model: String,
    /// RFC 3339, UTC.
    pub date: String,
    /// The commit the function binary was built from, as far as the working tree says.
    pub source: String,
}

impl Machine {
    pub fn describe() -> Machine {
        let uname = std::process::Command::new("uname")
            .arg("-a")
            .output()
            .ok()
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
            .unwrap_or_else(|| "unknown (uname failed)".into());
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| {
                info.lines()
                    .find(|line| line.starts_with("model name"))
                    .and_then(|line| line.split_once(':'))
                    .map(|(_, model)| model.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".into());
        Machine {
            uname,
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu_model,
            date: now_to_the_second(),
            source: function_source(),
        }
    }
}

/// `commit abc1234`, plus a note when the function's sources (`src/`) differ from it.
fn function_source() -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let Some(commit) = git(&["rev-parse", "--short", "HEAD"]) else {
        return "unknown (not a git checkout)".into();
    };
    let changed = git(&["status", "--porcelain", "--", "src"]);
    match changed {
        Some(changed) if !changed.is_empty() => format!(
            "commit `{commit}` plus uncommitted changes to {} files in `src/`",
            changed.lines().count()
        ),
        _ => format!("commit `{commit}`"),
    }
}

/// The 1, 5 and 15 minute load averages (`/proc/loadavg`): other work on the machine shows
/// in the timings.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|line| {
            line.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|| "unknown".into())
}

/// `2026-11-28T17:31:43Z`
fn now_to_the_second() -> String {
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    DateTime::from_secs(secs as i64)
        .fmt(DateTimeFormat::DateTime)
        .unwrap_or_default()
}

#[derive(Debug, Clone, Copy)]
pub struct BinaryFile {
    pub bytes: u64,
    /// No `.symtab` section name in the file: the symbol table was stripped.
    pub stripped: bool,
}

pub fn binary_file(path: &Path) -> BinaryFile {
    let content = std::fs::read(path).unwrap_or_default();
    BinaryFile {
        bytes: content.len() as u64,
        stripped: !content.windows(8).any(|w| w == b".symtab\0"),
    }
}

/// The process's peak resident set (`VmHWM`), in bytes.
pub fn peak_rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
