//! The benchmark report: one command runs the benchmarks and writes `docs/benchmarks.md`
//! with PNG plots in `docs/img/`.
//!
//! ```text
//! cargo run --release -p certflow-tests --bin report             # full sizes
//! cargo run --release -p certflow-tests --bin report -- --quick  # small sizes
//! cargo run --release -p certflow-tests --bin report -- --from DIR   # render saved JSON
//! ```
//!
//! It builds `certflow`, `storm` and `export_bench` in release, runs `storm --json` (in
//! memory), then `export_bench 40` and `export_bench 50 --concurrent 50` (each with
//! `--json`, each on a fresh moto server of its own, stopped afterwards), saves their
//! JSON with `run.json` (the machine and the commands) in `target/report/<time>/`, and
//! renders the page and its plots from them.

#[path = "../report/mod.rs"]
mod report;

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::Parser;
use report::data::Inputs;
use report::{render, run};

/// Runs the benchmarks and writes docs/benchmarks.md with its PNG plots in docs/img/.
///
/// Runs storm, then export_bench on a fresh emulator per run (all built in release), so that
/// the published page comes from one command on one machine.
#[derive(Parser)]
#[command(name = "report", args_override_self = true)]
struct Args {
    /// Small sizes (storm 300 jobs over 10 s, export_bench 3 and 10 --concurrent 10), to
    /// check the report itself
    #[arg(long)]
    quick: bool,
    /// Render from saved JSON (storm.json, export.json, export-concurrent.json, run.json)
    /// without running anything
    #[arg(long, value_name = "DIR")]
    from: Option<PathBuf>,
    /// The markdown to write
    #[arg(
        long,
        value_name = "FILE",
        default_value_os_t = run::workspace_root().join("docs/benchmarks.md"),
    )]
    out: PathBuf,
    /// Where the PNGs go, linked relative to FILE
    #[arg(
        long = "img-dir",
        value_name = "DIR",
        default_value_os_t = run::workspace_root().join("docs/img"),
    )]
    img_dir: PathBuf,
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("report: {e}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<(), String> {
    let args = Args::parse();
    let root = run::workspace_root();
    let dir = match &args.from {
        Some(dir) => dir.clone(),
        None => {
            let secs = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let dir = run::target_dir(&root).join("report").join(format!(
                "{}-{:02}{:02}{:02}",
                run::today(),
                secs / 3600 % 24,
                secs / 60 % 60,
                secs % 60
            ));
            run::run_all(&root, &dir, args.quick)?;
            eprintln!(
                "report: results saved in {} (render again with --from)",
                dir.display()
            );
            dir
        }
    };
    let inputs = Inputs::read_dir(&dir, || run::this_machine(&root, args.quick))?;
    if inputs.sample {
        eprintln!(
            "report: WARNING: {} holds hand-written samples, not measurements",
            dir.display()
        );
    }
    render::plots(&inputs, &args.img_dir)?;
    let img_rel = relative(&args.out, &args.img_dir);
    let md = render::markdown(&inputs, &img_rel);
    if let Some(parent) = args.out.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    std::fs::write(&args.out, md).map_err(|e| format!("{}: {e}", args.out.display()))?;
    eprintln!(
        "report: wrote {} and its plots in {}",
        args.out.display(),
        args.img_dir.display()
    );
    Ok(())
}

/// `img_dir` relative to the directory of `doc` when it is below it (the usual
/// `docs/img` beside `docs/benchmarks.md`), else its absolute path.
fn relative(doc: &std::path::Path, img_dir: &std::path::Path) -> String {
    let base = doc.parent().unwrap_or(std::path::Path::new(""));
    let abs = |p: &std::path::Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    match abs(img_dir).strip_prefix(abs(base)) {
        Ok(rel) if !rel.as_os_str().is_empty() => rel.display().to_string(),
        Ok(_) => ".".to_string(),
        Err(_) => img_dir.display().to_string(),
    }
}
