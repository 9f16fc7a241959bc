//! The `quorate` command line (DESIGN §8): parse arguments, load the config, call the library.
//! Errors reach stderr as one sentence with a non-zero exit, never a panic backtrace.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand, ValueEnum};

use quorate::config::Config;
use quorate::server;
use quorate_core::protocol::guix_key::GuixSecretKey;
use quorate_core::protocol::nix_key::NixSecretKey;

#[derive(Parser)]
#[command(
    name = "quorate",
    version,
    about = "Substitute cache proxy for Nix and Guix: serve a store path only when a quorum of independent builders agree on it"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy (without --config: one Nix cache in front of cache.nixos.org, quorum 1).
    Serve {
        /// TOML configuration file.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Listen address, overriding the config's `listen`.
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Generate a signing key pair: PREFIX.sec and PREFIX.pub.
    Keygen {
        /// Key format.
        #[arg(long, value_enum)]
        flavor: KeyFlavor,
        /// Key name (Nix: the part before ':' in `name:base64`; Guix keys have no name).
        #[arg(long)]
        name: String,
        /// Output prefix.
        #[arg(long)]
        out: PathBuf,
    },
    /// Validate a configuration file and exit.
    CheckConfig {
        /// TOML configuration file.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum KeyFlavor {
    Nix,
    Guix,
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("quorate: {e:#}");
        std::process::exit(1);
    }
}

fn load(config: Option<&PathBuf>) -> anyhow::Result<Config> {
    Ok(match config {
        Some(path) => Config::load(path)?,
        None => Config::default_config(),
    })
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { config, listen } => {
            let mut cfg = load(config.as_ref())?;
            if let Some(l) = listen {
                cfg.listen = l;
            }
            init_tracing();
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            rt.block_on(async move {
                let addr = cfg.listen;
                let app = server::App::start(cfg).await?;
                for c in &app.caches {
                    let mount = if c.config.mount.is_empty() {
                        "/"
                    } else {
                        &c.config.mount
                    };
                    println!(
                        "quorate: cache `{}` ({:?}) at http://{addr}{mount} — clients trust: {}",
                        c.config.name,
                        c.config.flavor,
                        c.public_key_text().trim()
                    );
                }
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr}"))?;
                tracing::info!("listening on http://{}", listener.local_addr()?);
                server::serve(app, listener).await?;
                Ok::<(), anyhow::Error>(())
            })
        }
        Command::Keygen { flavor, name, out } => {
            let sec = PathBuf::from(format!("{}.sec", out.display()));
            if sec.exists() {
                bail!(
                    "{} already exists; refusing to overwrite a key",
                    sec.display()
                );
            }
            let (secret, public) = match flavor {
                KeyFlavor::Nix => {
                    let key = NixSecretKey::generate(&name)?;
                    (key.to_string(), key.public().to_string())
                }
                // Guix keys carry no name; --name is accepted for symmetry and unused.
                KeyFlavor::Guix => {
                    let key = GuixSecretKey::generate()?;
                    (key.to_advanced(), key.public().to_advanced())
                }
            };
            server::write_key_pair(&sec, &secret, &public)
                .with_context(|| format!("writing {}", sec.display()))?;
            println!("{public}");
            Ok(())
        }
        Command::CheckConfig { config } => {
            let cfg = load(config.as_ref())?;
            println!(
                "config OK: {} cache(s), listen {}, database {}",
                cfg.caches.len(),
                cfg.listen,
                if cfg.database_url.starts_with("sqlite") {
                    "sqlite"
                } else {
                    "postgres"
                }
            );
            Ok(())
        }
    }
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("QUORATE_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,hyper=warn,reqwest=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
