//! The `lariat` command: run, `check`, `--upgrade`, `--version`.

use lariat::{Config, RunOptions, Signals};
use std::path::PathBuf;
use std::process::ExitCode;

/// mimalloc instead of glibc's malloc: Pingora allocates and frees several buffers per request,
/// and glibc's malloc/free were a tenth of lariat's CPU on the keep-alive path (bench/RESULTS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "usage:
  lariat [-c|--config PATH]      run; PATH defaults to $LARIAT_CONFIG, then conf/lariat.toml
  lariat check [-c PATH]         validate a config, print what it would serve, exit 0 (ok) or 1
  lariat healthcheck [-c PATH]   ask the running lariat's admin /healthz; exit 0 (ok) or 1 (for exec probes)
  lariat --upgrade [-c PATH]     take over the listening sockets of a running lariat
  lariat --version";

struct Args {
    check: bool,
    healthcheck: bool,
    upgrade: bool,
    config: Option<PathBuf>,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut out = Args {
        check: false,
        healthcheck: false,
        upgrade: false,
        config: None,
    };
    while let Some(a) = args.next() {
        match a.as_str() {
            "check" => out.check = true,
            "healthcheck" => out.healthcheck = true,
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
    if args.healthcheck {
        return healthcheck(&config);
    }
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

/// GET /healthz on the admin listener of the config, with a 2 s timeout: for container probes
/// when the admin listener is on loopback, where the kubelet cannot reach it.
fn healthcheck(config: &Config) -> ExitCode {
    use std::io::{Read, Write};
    let addr = config.admin.listen;
    let ask = || -> std::io::Result<String> {
        let mut s = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(2))?;
        s.set_read_timeout(Some(std::time::Duration::from_secs(2)))?;
        write!(s, "GET /healthz HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
        // The status line is all that matters; no need to wait for the connection to close.
        let mut out = Vec::new();
        let mut buf = [0u8; 512];
        while !out.contains(&b'\n') && out.len() < 4096 {
            match s.read(&mut buf)? {
                0 => break,
                n => out.extend_from_slice(&buf[..n]),
            }
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    };
    match ask() {
        Ok(r) if r.starts_with("HTTP/1.0 200") || r.starts_with("HTTP/1.1 200") => {
            println!("ok");
            ExitCode::SUCCESS
        }
        Ok(r) => {
            eprintln!("lariat healthcheck: {}", r.lines().next().unwrap_or("empty answer"));
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("lariat healthcheck: http://{addr}/healthz: {e}");
            ExitCode::from(1)
        }
    }
}
