//! An open-loop HTTP load generator (bench, not a test): GETs a URL at a fixed rate,
//! whatever the server's latency, and reports latency percentiles measured from each
//! request's *intended* start time, so a server that falls behind shows it in the tail
//! (no coordinated omission, the wrk2 way).
//!
//! ```sh
//! cargo run --release --example openloop -- URL RATE SECONDS [CONNS]
//! ```
//!
//! A dedicated thread keeps the schedule (request i is due at start + i / RATE; it sleeps,
//! never spins, so that it leaves the CPUs to the server) and hands each due request to the
//! async runtime (one worker thread), which sends it on one of at most CONNS (64)
//! keep-alive connections; a request that finds all of them busy waits for one, and that
//! wait counts in its latency. Prints `key=value` lines: requests, errors (non-200 or
//! failed), the achieved rate, latency p50/p90/p99/p99.9/max in ms, the schedule's own
//! lag (how late the generator handed requests over: its floor), and `cdf_ms`, the latency
//! at quantiles from 0.01 to 1 (`q:ms,...`, for bench/nixbench.py's chart).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, Semaphore};

type Error = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    if !(4..=5).contains(&args.len()) {
        return Err("usage: openloop URL RATE SECONDS [CONNS]".into());
    }
    let url = args[1].clone();
    let rate: f64 = args[2].parse()?;
    let seconds: f64 = args[3].parse()?;
    let conns: usize = args.get(4).map_or(Ok(64), |c| c.parse())?;
    if rate <= 0.0 || seconds <= 0.0 || conns == 0 {
        return Err("RATE, SECONDS and CONNS must be positive".into());
    }
    let total = (rate * seconds).round() as u64;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let (tx, mut rx) = mpsc::unbounded_channel::<Instant>();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(conns)
        .timeout(Duration::from_secs(10))
        .build()?;

    // Warm the connections (and the server's answer) before the clock starts.
    runtime.block_on(async {
        let mut warm = Vec::new();
        for _ in 0..conns {
            let (client, url) = (client.clone(), url.clone());
            warm.push(tokio::spawn(async move {
                let r = client.get(&url).send().await?;
                if !r.status().is_success() {
                    return Err(Error::from(format!("{url}: {}", r.status())));
                }
                r.bytes().await?;
                Ok(())
            }));
        }
        for w in warm {
            w.await??;
        }
        Ok::<_, Error>(())
    })?;

    let start = Instant::now() + Duration::from_millis(50);
    let scheduler = std::thread::spawn(move || {
        let mut lag = Vec::with_capacity(total as usize);
        for i in 0..total {
            let due = start + Duration::from_secs_f64(i as f64 / rate);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            lag.push(Instant::now().saturating_duration_since(due).as_micros() as u64);
            if tx.send(due).is_err() {
                break;
            }
        }
        lag
    });

    let (latencies, errors) = runtime.block_on(async move {
        let slots = Arc::new(Semaphore::new(conns));
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Result<u64, ()>>();
        let mut sent = 0u64;
        while let Some(due) = rx.recv().await {
            sent += 1;
            let (client, url, slots, done) =
                (client.clone(), url.clone(), slots.clone(), done_tx.clone());
            tokio::spawn(async move {
                let Ok(_slot) = slots.acquire_owned().await else {
                    return;
                };
                let ok = match client.get(&url).send().await {
                    Ok(r) if r.status() == reqwest::StatusCode::OK => r.bytes().await.is_ok(),
                    _ => false,
                };
                let micros = Instant::now().saturating_duration_since(due).as_micros() as u64;
                let _ = done.send(if ok { Ok(micros) } else { Err(()) });
            });
        }
        drop(done_tx);
        let mut latencies = Vec::with_capacity(sent as usize);
        let mut errors = 0u64;
        while let Some(r) = done_rx.recv().await {
            match r {
                Ok(micros) => latencies.push(micros),
                Err(()) => errors += 1,
            }
        }
        (latencies, errors)
    });
    let elapsed = start.elapsed().as_secs_f64();
    let mut lag = scheduler.join().map_err(|_| "scheduler thread panicked")?;
    let mut latencies = latencies;
    latencies.sort_unstable();
    lag.sort_unstable();

    let ms = |v: &[u64], q: f64| -> String {
        if v.is_empty() {
            return "n/a".into();
        }
        let i = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1;
        format!("{:.3}", v[i] as f64 / 1000.0)
    };
    println!("requests={}", latencies.len() as u64 + errors);
    println!("errors={errors}");
    println!("target_rate={rate}");
    println!(
        "achieved_rate={:.0}",
        (latencies.len() as u64 + errors) as f64 / elapsed
    );
    for (name, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p999", 0.999)] {
        println!("{name}_ms={}", ms(&latencies, q));
    }
    println!("max_ms={}", ms(&latencies, 1.0));
    println!("lag_p50_ms={}", ms(&lag, 0.5));
    println!("lag_p99_ms={}", ms(&lag, 0.99));
    // The whole distribution, for a chart: latency at each of these quantiles.
    let quantiles = [
        0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.97, 0.99, 0.995, 0.999,
        0.9995, 0.9999, 1.0,
    ];
    let cdf: Vec<String> = quantiles
        .iter()
        .map(|&q| format!("{q}:{}", ms(&latencies, q)))
        .collect();
    println!("cdf_ms={}", cdf.join(","));
    Ok(())
}
