//! The `quorate` command line (DESIGN §8): parse arguments, load the config, call the library.
//! Errors reach stderr as one sentence with a non-zero exit, never a panic backtrace.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand, ValueEnum};

use quorate::app::App;
use quorate::config::Config;
use quorate::keys;
use quorate_core::flavor::{Flavor, Signer};

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
    /// Generate a key pair: PREFIX.sec and PREFIX.pub (nix, guix: a cache's signing key; log:
    /// a transparency log key, whose name is the log's origin).
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
    /// Report which builder attested which content for store paths, like `guix challenge`;
    /// exits 2 if builders disagree about any of them.
    Challenge {
        /// TOML configuration file (its database and caches).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Also ask the upstreams now, not only the database.
        #[arg(long)]
        live: bool,
        /// Store paths or hash parts (default: every path with recorded disagreement).
        paths: Vec<String>,
    },
    /// Check that store paths a quorate serves are in its transparency log, and that the log
    /// is consistent with the one seen before; exits 2 with "SECURITY ERROR" on a fork.
    Verify {
        /// The quorate's base URL, e.g. http://cache.lan:8080.
        #[arg(long)]
        url: String,
        /// The cache (default: the only one it serves).
        #[arg(long)]
        cache: Option<String>,
        /// Where the checkpoints seen are kept (default: $XDG_STATE_HOME/quorate/verify.json).
        #[arg(long)]
        state: Option<PathBuf>,
        /// Store paths or hash parts.
        #[arg(required = true)]
        paths: Vec<String>,
    },
    /// Copy a cache's transparency log (`mirror URL CACHE DIR`) or replay a copy offline
    /// (`check DIR`: exits 1 on any violation).
    Audit {
        #[command(subcommand)]
        action: AuditAction,
    },
    /// Vouch for store paths of the local Nix store as a builder that hosts no cache: sign
    /// their narinfos with the builder's key and push them to a quorate cache; or push the
    /// paths queued in a directory (by the post-build hook).
    Push {
        /// The quorate's base URL, or a cache's URL with its mount (http://cache.lan:8080/nix).
        #[arg(long)]
        url: String,
        /// The builder's Nix secret key file (as nix-store --generate-binary-cache-key makes).
        #[arg(long)]
        key_file: PathBuf,
        /// The cache (default: the one the URL's mount names, the only one, or the one at /).
        #[arg(long)]
        cache: Option<String>,
        /// The Nix store to read (nix-store --store), e.g. a chroot store; default: Nix's.
        #[arg(long)]
        store: Option<String>,
        /// Push the paths queued in DIR instead; exits 1 if some stay queued for later.
        #[arg(long, value_name = "DIR", conflicts_with = "paths")]
        queue: Option<PathBuf>,
        /// With --queue: keep draining it until SIGTERM/SIGINT.
        #[arg(long, requires = "queue")]
        watch: bool,
        /// Tries per batch while the quorate cannot take it (waits 1 s, 2 s, 4 s, ... between).
        #[arg(long, default_value_t = 3)]
        attempts: u32,
        /// Store paths, or links to them such as ./result.
        #[arg(required_unless_present = "queue")]
        paths: Vec<String>,
    },
    /// Validate a configuration file and exit.
    CheckConfig {
        /// TOML configuration file.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum AuditAction {
    /// Copy the log of CACHE at URL into DIR (checkpoint, vkey, tiles, entry bundles).
    Mirror {
        /// The quorate's base URL.
        url: String,
        /// The cache whose log to copy.
        cache: String,
        /// Where to put it.
        dir: PathBuf,
    },
    /// Replay the log copied in DIR: tiles, signatures, every decision under its policy.
    Check {
        /// The copy.
        dir: PathBuf,
        /// The report as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum KeyFlavor {
    Nix,
    Guix,
    /// A transparency log key (C2SP signed-note Ed25519; `--name` is the origin).
    Log,
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("quorate: {}", one_sentence(&e));
        std::process::exit(1);
    }
}

/// The error and its causes, each said once: most of quorate's errors already name their
/// cause in their message, which `{:#}` would repeat.
fn one_sentence(e: &anyhow::Error) -> String {
    let mut said = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !said.contains(&cause) {
            said.push_str(": ");
            said.push_str(&cause);
        }
    }
    said
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
            serve(cfg)
        }
        Command::Keygen { flavor, name, out } => keygen(flavor, &name, &out),
        Command::CheckConfig { config } => check_config(&load(config.as_ref())?),
        Command::Challenge {
            config,
            live,
            paths,
        } => challenge(&load(config.as_ref())?, live, &paths),
        Command::Verify {
            url,
            cache,
            state,
            paths,
        } => verify(&url, cache.as_deref(), state, &paths),
        Command::Audit { action } => audit(action),
        Command::Push {
            url,
            key_file,
            cache,
            store,
            queue,
            watch,
            attempts,
            paths,
        } => {
            let key = quorate::push::read_key(&key_file)?;
            let store = quorate::push::local::LocalStore { store };
            let pusher = quorate::push::Pusher::new(&url, cache.as_deref(), key, store, attempts)?;
            match queue {
                Some(dir) => push_queue(&pusher, &dir, watch),
                None => push_paths(&pusher, &paths),
            }
        }
    }
}

fn current_thread() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// `quorate push PATHS`: a line per path on stdout; exit 1 if any was rejected.
fn push_paths(pusher: &quorate::push::Pusher, paths: &[String]) -> anyhow::Result<()> {
    let report = current_thread()?.block_on(pusher.push(paths))?;
    for (path, builders) in &report.accepted {
        println!("accepted {path} (as builder {})", builders.join(", "));
    }
    for (path, why) in &report.rejected {
        println!("rejected {path}: {why}");
    }
    if !report.rejected.is_empty() {
        bail!(
            "{} of {} path(s) rejected",
            report.rejected.len(),
            report.rejected.len() + report.accepted.len()
        );
    }
    Ok(())
}

/// How often `quorate push --queue DIR --watch` looks for new items.
const QUEUE_POLL: std::time::Duration = std::time::Duration::from_secs(5);

/// `quorate push --queue DIR [--watch]`.
fn push_queue(pusher: &quorate::push::Pusher, dir: &Path, watch: bool) -> anyhow::Result<()> {
    use quorate::push::queue;
    let rt = current_thread()?;
    if watch {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the queue {}", dir.display()))?;
        return Ok(rt.block_on(queue::watch(pusher, dir, QUEUE_POLL))?);
    }
    let drained = rt.block_on(queue::drain(pusher, dir))?;
    println!(
        "queue {}: {} item(s) pushed, {} set aside as rejected, {} left",
        dir.display(),
        drained.sent,
        drained.rejected,
        drained.left
    );
    if let Some(why) = drained.stopped {
        bail!(
            "{} item(s) stay queued in {} for a later try: {why}",
            drained.left,
            dir.display()
        );
    }
    if drained.rejected > 0 {
        bail!(
            "{} item(s) had paths rejected for good; see {}",
            drained.rejected,
            dir.join(queue::REJECTED_DIR).display()
        );
    }
    Ok(())
}

/// `quorate audit`: mirror prints the size copied; check prints the report and exits 1 on
/// a violation.
fn audit(action: AuditAction) -> anyhow::Result<()> {
    match action {
        AuditAction::Mirror { url, cache, dir } => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            let size = rt.block_on(quorate::audit::mirror(&url, &cache, &dir))?;
            println!(
                "mirrored {size} entries of {url}/tlog/{cache} into {}",
                dir.display()
            );
            Ok(())
        }
        AuditAction::Check { dir, json } => {
            let report = quorate::audit::check(&dir)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!(
                    "log {}: {} entries ({} policies, {} attestations, {} decisions), {} signatures verified again",
                    report.origin, report.size, report.policies, report.attestations,
                    report.decisions, report.signatures_verified
                );
                for e in &report.equivocations {
                    println!("equivocation: {e}");
                }
                for r in &report.reclassified {
                    println!("reclassified: {r}");
                }
                for v in &report.violations {
                    println!("VIOLATION: {v}");
                }
            }
            if !report.violations.is_empty() {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}

/// `quorate verify`: a line per path on stdout; "SECURITY ERROR" and exit 2 on a fork.
fn verify(
    url: &str,
    cache: Option<&str>,
    state: Option<PathBuf>,
    paths: &[String],
) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let state = state.unwrap_or_else(quorate::verify::default_state_file);
    let found = rt.block_on(quorate::verify::verify(url, cache, &state, paths))?;
    print!("{}", found.report);
    if let Some(fork) = found.fork {
        println!("SECURITY ERROR: {fork}");
        std::process::exit(2);
    }
    Ok(())
}

/// `quorate challenge`: the report on stdout; exit 2 when builders disagree.
fn challenge(cfg: &Config, live: bool, paths: &[String]) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let found = rt.block_on(async {
        let db = quorate::db::Db::connect(&cfg.database_url).await?;
        let found = quorate::challenge::challenge(cfg, &db, live, paths).await;
        db.close().await;
        anyhow::Ok(found?)
    })?;
    print!("{}", found.report);
    if found.disagreement {
        println!("builders disagree about at least one path");
        std::process::exit(2);
    }
    println!("no disagreement found");
    Ok(())
}

/// `quorate check-config`: the file's meaning (done by loading it), and every cache's
/// signing key: an existing one must be a key of the cache's flavor that not every user can
/// read; a missing one is noted (`serve` generates it on first start).
fn check_config(cfg: &Config) -> anyhow::Result<()> {
    for cache in &cfg.caches {
        let path = &cache.signing_key_file;
        if path.exists() {
            keys::read_existing(path, cache.flavor)?;
        } else {
            println!(
                "note: cache `{}`: signing key {} does not exist yet; `quorate serve` will generate it",
                cache.name,
                path.display()
            );
        }
    }
    let database = if cfg.database_url.starts_with("sqlite") {
        "sqlite"
    } else {
        "postgres"
    };
    println!(
        "config OK: {} cache(s), listen {}, database {database}",
        cfg.caches.len(),
        cfg.listen,
    );
    Ok(())
}

/// `quorate serve`: start, print what clients must trust, serve until SIGTERM/SIGINT.
fn serve(cfg: Config) -> anyhow::Result<()> {
    init_tracing();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let addr = cfg.listen;
        // Bound before any start-up work: a port already taken is reported at once, before
        // the state directory, the database or a key is touched.
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        quorate::serve::raise_open_file_limit();
        let app = App::start(cfg).await?;
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
                c.front.public_key_text().trim()
            );
        }
        tracing::info!("listening on http://{}", listener.local_addr()?);
        quorate::serve::serve(app, listener).await?;
        Ok(())
    })
}

/// `quorate keygen`: a key pair in the flavor's own format, never over an existing key.
fn keygen(flavor: KeyFlavor, name: &str, out: &Path) -> anyhow::Result<()> {
    let sec = PathBuf::from(format!("{}.sec", out.display()));
    if sec.exists() {
        bail!(
            "{} already exists; refusing to overwrite a key",
            sec.display()
        );
    }
    let flavor = match flavor {
        KeyFlavor::Log => {
            let key = quorate_core::tlog::note::SignerKey::generate(name)?;
            let vkey = key.verifier().to_string();
            keys::write_key_pair(&sec, &format!("{key}\n"), &format!("{vkey}\n"))
                .with_context(|| format!("writing {}", sec.display()))?;
            println!("{vkey}");
            return Ok(());
        }
        KeyFlavor::Nix => Flavor::Nix,
        // Guix keys carry no name; --name is accepted for symmetry and unused.
        KeyFlavor::Guix => Flavor::Guix,
    };
    let key = Signer::generate(flavor, name)?;
    keys::write_key_pair(&sec, &key.secret_text(), &key.public_text())
        .with_context(|| format!("writing {}", sec.display()))?;
    println!("{}", key.public_text());
    Ok(())
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
