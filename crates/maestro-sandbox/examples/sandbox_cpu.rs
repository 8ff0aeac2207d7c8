//! The machine's CPU per sandbox running `true`: the shim executed for each sandbox (as
//! `mc submit` does) against the shim forked by a launcher (as `mc serve` does), in turns.
//! `bench/sandbox.sh` runs it; by hand:
//!
//! ```text
//! cargo run --release -p maestro-sandbox --example sandbox_cpu -- MC WORKSPACE [RUNS]
//! ```
//!
//! `MC` is an `mc` binary (the shim and the launcher are its hidden arguments), `WORKSPACE` an
//! existing directory outside `/tmp`. The figure is machine-wide (`/proc/stat`), so it counts
//! the shim, the namespace's init and `true` wherever they run; run it on an idle machine.

use std::ffi::OsStr;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use maestro_sandbox::{Launcher, NetworkMode, SandboxError, SandboxPlan};

const SHIM: &str = "__maestro-sandbox-shim";
const LAUNCHER: &str = "__maestro-sandbox-launcher";
const ENVIRONMENT: [(&str, &str); 1] = [("PATH", "/usr/local/bin:/usr/bin:/bin")];

/// Busy and total clock ticks of the whole machine so far.
fn ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|field| field.parse().ok())
        .collect();
    let total: u64 = fields.iter().sum();
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

async fn executed(mc: &Path, plan: &SandboxPlan) -> Result<(), SandboxError> {
    let (command, mut control) = maestro_sandbox::command(mc, &[SHIM], plan)?;
    let mut command = tokio::process::Command::from(command);
    command
        .env_clear()
        .envs(ENVIRONMENT)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    let mut child = command.spawn().map_err(|source| SandboxError::Io {
        what: "cannot start the shim",
        source,
    })?;
    drop(command);
    control.wait_started().await?;
    child.wait().await.map_err(|source| SandboxError::Io {
        what: "cannot wait for the shim",
        source,
    })?;
    control.finish().await.map(drop)
}

async fn launched(launcher: &Launcher, plan: &SandboxPlan) -> Result<(), SandboxError> {
    let environment = ENVIRONMENT
        .iter()
        .map(|(name, value)| (OsStr::new(*name), OsStr::new(*value)));
    let (mut shim, mut control) = launcher.launch(plan, environment).await?;
    drop(shim.take_output());
    control.wait_started().await?;
    shim.wait().await.map_err(|source| SandboxError::Io {
        what: "cannot wait for the shim",
        source,
    })?;
    control.finish().await.map(drop)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(mc), Some(workspace)) = (args.next(), args.next()) else {
        return Err("usage: sandbox_cpu MC WORKSPACE [RUNS]".into());
    };
    let runs: u32 = args
        .next()
        .map(|runs| runs.parse())
        .transpose()?
        .unwrap_or(500);
    let mc = Path::new(&mc);
    let plan = SandboxPlan {
        argv: vec!["true".to_owned()],
        workdir: workspace.clone().into(),
        workspace: workspace.into(),
        writable: Vec::new(),
        read_only: Vec::new(),
        expose: Vec::new(),
        network: NetworkMode::Host,
        host: None,
        hold: false,
    };
    let launcher = Launcher::start(mc, &[LAUNCHER])?;
    for round in 1..=2 {
        for mode in ["executed", "launched"] {
            let run = async || match mode {
                "executed" => executed(mc, &plan).await,
                _ => launched(&launcher, &plan).await,
            };
            for _ in 0..20 {
                run().await?;
            }
            let (busy, _) = ticks();
            let started = Instant::now();
            for _ in 0..runs {
                run().await?;
            }
            let wall = started.elapsed();
            // The inits the shims did not wait for are still exiting: let them finish inside
            // the measurement.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let (busy_after, _) = ticks();
            let ms_per_tick = 1000.0 / 100.0; // USER_HZ
            println!(
                "round {round}, {mode:>8}: {:.2} ms of CPU, {:.2} ms of wall time per sandbox ({runs} runs)",
                (busy_after - busy) as f64 * ms_per_tick / f64::from(runs),
                wall.as_secs_f64() * 1000.0 / f64::from(runs),
            );
        }
    }
    Ok(())
}
