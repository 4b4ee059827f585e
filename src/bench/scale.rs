//! The scale case: `medsim simulate` at each `--scale` N in a process of
//! its own, its time per patient and peak memory.

use std::process::{Command, Stdio};

use anyhow::Context as _;

use super::Scale;
use crate::stats;

/// `medsim simulate --patients N --slots N --choice random` in a process of
/// its own, so its peak RSS is its own.
pub(super) fn scale_run(patients: usize) -> anyhow::Result<Scale> {
    let exe = std::env::current_exe().context("finding the medsim binary")?;
    let n = patients.to_string();
    let output = Command::new(exe)
        .args([
            "simulate",
            "--patients",
            &n,
            "--slots",
            &n,
            "--choice",
            "random",
            "--seed",
            "1",
            "--json",
        ])
        .stdin(Stdio::null())
        .output()
        .context("running simulate")?;
    let report: crate::sim::Report = serde_json::from_slice(&output.stdout).with_context(|| {
        format!(
            "simulate --patients {patients} printed no report: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    })?;
    let wall = report.wall_seconds;
    let us_per_patient = wall * 1e6 / patients.max(1) as f64;
    Ok(Scale {
        patients,
        wall_seconds: wall,
        us_per_patient,
        runs_us_per_patient: vec![us_per_patient],
        vs_smallest: 1.0,
        peak_rss_mib: report.peak_rss_kib.map(|k| k as f64 / 1024.0),
        invariants_ok: output.status.success(),
    })
}

/// The median run of several at one N, with every run's time and the
/// largest peak.
pub(super) fn median_scale(mut runs: Vec<Scale>) -> Scale {
    runs.sort_by(|a, b| a.us_per_patient.total_cmp(&b.us_per_patient));
    let all: Vec<f64> = runs.iter().map(|r| r.us_per_patient).collect();
    let peak = runs.iter().filter_map(|r| r.peak_rss_mib).reduce(f64::max);
    let ok = runs.iter().all(|r| r.invariants_ok);
    let mut median = runs.swap_remove(runs.len() / 2);
    median.runs_us_per_patient = all;
    median.peak_rss_mib = peak;
    median.invariants_ok = ok;
    median
}

/// VmRSS (MiB) and Threads of a process, from /proc.
pub(super) fn process_size(pid: u32) -> Option<(f64, u64)> {
    let pid = pid.to_string();
    let rss_kib = stats::proc_status(&pid, "VmRSS:")?;
    Some((
        rss_kib as f64 / 1024.0,
        stats::proc_status(&pid, "Threads:")?,
    ))
}
