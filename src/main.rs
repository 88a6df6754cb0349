//! The `lariat` command: run, `check`, `--upgrade`, `--version`.

use lariat::{Config, RunOptions, Signals};
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage:
  lariat [-c|--config PATH]      run; PATH defaults to $LARIAT_CONFIG, then conf/lariat.toml
  lariat check [-c PATH]         validate a config, print what it would serve, exit 0 (ok) or 1
  lariat --upgrade [-c PATH]     take over the listening sockets of a running lariat
  lariat --version";

struct Args {
    check: bool,
    upgrade: bool,
    config: Option<PathBuf>,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut out = Args {
        check: false,
        upgrade: false,
        config: None,
    };
    while let Some(a) = args.next() {
        match a.as_str() {
            "check" => out.check = true,
            "--upgrade" | "-u" => out.upgrade = true,
            "-c" | "--config" => out.config = Some(args.next().ok_or("-c needs a path")?.into()),
            s if s.starts_with("--config=") => out.config = Some(s["--config=".len()..].into()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(out)
}

fn main() -> ExitCode {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    if raw.iter().any(|a| a == "--version" || a == "-V") {
        println!("lariat {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    if raw.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let args = match parse_args(raw.into_iter()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("lariat: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let path = args
        .config
        .or_else(|| std::env::var_os("LARIAT_CONFIG").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("conf/lariat.toml"));
    let config = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("lariat: {} is not a valid config:\n{e}", path.display());
            return ExitCode::from(1);
        }
    };
    if args.check {
        println!("{}: ok\n{}", path.display(), config.summary());
        return ExitCode::SUCCESS;
    }
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| config.server.log.clone());
    env_logger::Builder::new().parse_filters(&filter).format_timestamp_millis().init();
    log::info!("lariat {} starting with {}", env!("CARGO_PKG_VERSION"), path.display());
    match lariat::run(
        config,
        RunOptions {
            config_path: Some(path),
            upgrade: args.upgrade,
            signals: Signals::Process,
        },
    ) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            eprintln!("lariat: {e}");
            ExitCode::from(1)
        }
    }
}
