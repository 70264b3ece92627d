//! Running the benchmarks: builds them in release, runs `storm` (no emulator) and each
//! `export_bench` run against a fresh emulator of its own, and records the machine.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use certflow_tests::own_emulator::Emulator;

use super::data::{RunInfo, EXPORT_CONCURRENT_FILE, EXPORT_FILE, RUN_FILE, STORM_FILE};

/// The workspace root (this crate's parent).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// cargo's target directory: `CARGO_TARGET_DIR`, else the one this binary runs from
/// (`<target>/<profile>/report`), else `<root>/target`.
pub fn target_dir(root: &Path) -> PathBuf {
    if let Some(d) = std::env::var_os("CARGO_TARGET_DIR") {
        let d = PathBuf::from(d);
        return if d.is_absolute() { d } else { root.join(d) };
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.to_path_buf()))
        .filter(|d| d.join("release").is_dir() || d.join("debug").is_dir())
        .unwrap_or_else(|| root.join("target"))
}

/// Today (UTC) as `YYYY-MM-DD`.
pub fn today() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (H. Hinnant's
/// algorithm).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// This machine: cores, CPU model, load, moto's version in the project's venv.
pub fn this_machine(root: &Path, quick: bool) -> RunInfo {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "unknown".to_string());
    let load_at_start = std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    RunInfo {
        date: today(),
        cores: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        cpu_model,
        load_at_start,
        moto_version: moto_version(root),
        quick,
        commands: vec![],
    }
}

/// moto's version from its `dist-info` directory in `<root>/.venv`.
pub fn moto_version(root: &Path) -> Option<String> {
    for lib in ["lib", "lib64"] {
        let Ok(pythons) = std::fs::read_dir(root.join(".venv").join(lib)) else {
            continue;
        };
        for py in pythons.flatten() {
            let Ok(pkgs) = std::fs::read_dir(py.path().join("site-packages")) else {
                continue;
            };
            for p in pkgs.flatten() {
                let name = p.file_name().to_string_lossy().to_string();
                if let Some(v) = name
                    .strip_prefix("moto-")
                    .and_then(|r| r.strip_suffix(".dist-info"))
                {
                    return Some(v.to_string());
                }
            }
        }
    }
    None
}

/// The sizes of a run.
pub struct Plan {
    pub storm_args: Vec<String>,
    pub export_args: Vec<String>,
    pub export_concurrent_args: Vec<String>,
}

impl Plan {
    pub fn new(quick: bool) -> Plan {
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        if quick {
            Plan {
                storm_args: strings(&[
                    "--jobs",
                    "300",
                    "--window-secs",
                    "10",
                    "--rates",
                    "500,2000,8000",
                    "--curve-secs",
                    "10",
                    "--wake-jobs",
                    "50",
                ]),
                export_args: strings(&["3", "--idle-secs", "10"]),
                export_concurrent_args: strings(&["10", "--concurrent", "10", "--idle-secs", "5"]),
            }
        } else {
            Plan {
                // storm's defaults: 2,000 jobs within 60 s, the curve at 500 to 8,000 a
                // minute, 200 jobs each with events and with polls.
                storm_args: vec![],
                // 40 jobs: enough for a steady figure on a machine shared with other work.
                export_args: strings(&["40"]),
                export_concurrent_args: strings(&["50", "--concurrent", "50"]),
            }
        }
    }
}

/// Builds the benchmarks and the worker in release, runs them, and saves their JSON and
/// `run.json` in `out`.
pub fn run_all(root: &Path, out: &Path, quick: bool) -> Result<RunInfo, String> {
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let mut info = this_machine(root, quick);
    let plan = Plan::new(quick);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let build = [
        "build",
        "--release",
        "-p",
        "certflow",
        "--bin",
        "certflow",
        "-p",
        "certflow-tests",
        "--bin",
        "storm",
        "--bin",
        "export_bench",
    ];
    eprintln!("report: cargo {}", build.join(" "));
    let status = Command::new(&cargo)
        .args(build)
        .current_dir(root)
        .status()
        .map_err(|e| format!("cargo build: {e}"))?;
    if !status.success() {
        return Err(format!("cargo build failed: {status}"));
    }
    let bin = target_dir(root).join("release");

    // The storm, in memory.
    let storm_json = out.join(STORM_FILE);
    let mut args = plan.storm_args.clone();
    args.extend(["--json".to_string(), storm_json.display().to_string()]);
    run_bench(&bin.join("storm"), &args, &[], root)?;
    info.commands.push(command_line("storm", &plan.storm_args));

    // The export runs, each on a fresh emulator.
    for (args, file) in [
        (&plan.export_args, EXPORT_FILE),
        (&plan.export_concurrent_args, EXPORT_CONCURRENT_FILE),
    ] {
        let log = out.join(format!("{file}.moto.log"));
        eprintln!("report: starting a fresh emulator (log {})", log.display());
        let emulator = Emulator::start(root, &log)?;
        let env = emulator.env();
        let mut full = args.clone();
        full.extend([
            "--worker-bin".to_string(),
            bin.join("certflow").display().to_string(),
            "--json".to_string(),
            out.join(file).display().to_string(),
        ]);
        let result = run_bench(&bin.join("export_bench"), &full, &env, root);
        emulator.stop();
        result?;
        info.commands.push(command_line("export_bench", args));
    }
    let text = serde_json::to_string_pretty(&info).map_err(|e| e.to_string())?;
    std::fs::write(out.join(RUN_FILE), text).map_err(|e| format!("run.json: {e}"))?;
    Ok(info)
}

fn command_line(bin: &str, args: &[String]) -> String {
    let mut s = format!("cargo run --release -p certflow-tests --bin {bin} --");
    for a in args {
        s.push(' ');
        s.push_str(a);
    }
    if bin == "export_bench" {
        s.push_str(" --worker-bin target/release/certflow");
    }
    s.push_str(" --json F");
    s
}

fn run_bench(
    exe: &Path,
    args: &[String],
    env: &[(&str, String)],
    root: &Path,
) -> Result<(), String> {
    eprintln!("report: {} {}", exe.display(), args.join(" "));
    let started = Instant::now();
    let mut cmd = Command::new(exe);
    cmd.args(args).current_dir(root).stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let status = cmd
        .status()
        .map_err(|e| format!("{}: {e}", exe.display()))?;
    eprintln!(
        "report: {} finished in {:.0} s ({status})",
        exe.file_name().unwrap_or_default().to_string_lossy(),
        started.elapsed().as_secs_f64()
    );
    if status.success() {
        Ok(())
    } else {
        Err(format!("{} failed: {status}", exe.display()))
    }
}
