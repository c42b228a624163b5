//! `tailLines` on a large log: the agent's backwards read (one block at a
//! time from the end) against the baseline it replaced, reading the whole
//! file and scanning it, on the same 1 GiB file in one run. Reports the time
//! of each and how much the process's peak memory grew with each (the
//! backwards read runs first, so the baseline's peak does not hide it).
//!
//! `CORRAL_BENCH_LOG_MIB` (default 1024) sets the file's size.
//! Run: `cargo bench -p corral-node-agent --bench log_tail`

use std::io::Write;
use std::time::Instant;

use anyhow::Result;
use corral_node_agent::logs::{tail_offset, tail_start};
use tokio::io::AsyncReadExt;

/// This process's peak resident memory so far, MiB.
fn peak_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

#[tokio::main]
async fn main() -> Result<()> {
    let mib: usize = std::env::var("CORRAL_BENCH_LOG_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("stdout");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path)?);
        let line = "a line of task output, about as long as a log line usually is .....\n";
        let mut written = 0;
        let mut i = 0u64;
        while written < mib * 1024 * 1024 {
            let l = format!("{i:>10} {line}");
            f.write_all(l.as_bytes())?;
            written += l.len();
            i += 1;
        }
        f.flush()?;
    }
    let lines = 100;
    println!("a {mib} MiB log, its last {lines} lines:");

    let before = peak_mib();
    let start = Instant::now();
    let mut file = tokio::fs::File::open(&path).await?;
    let at = tail_start(&mut file, lines).await?;
    let mut tail = Vec::new();
    tokio::io::AsyncSeekExt::seek(&mut file, std::io::SeekFrom::Start(at)).await?;
    file.read_to_end(&mut tail).await?;
    let backwards = start.elapsed();
    let backwards_peak = peak_mib() - before;

    let before = peak_mib();
    let start = Instant::now();
    let mut all = Vec::new();
    tokio::fs::File::open(&path)
        .await?
        .read_to_end(&mut all)
        .await?;
    let whole_at = tail_offset(&all, lines);
    let whole = start.elapsed();
    let whole_peak = peak_mib() - before;
    assert_eq!(&all[whole_at..], &tail[..], "both find the same lines");
    drop(all);

    println!(
        "  backwards from the end: {:.3} ms, peak memory +{backwards_peak:.1} MiB",
        backwards.as_secs_f64() * 1e3
    );
    println!(
        "  baseline, whole file read: {:.0} ms, peak memory +{whole_peak:.0} MiB",
        whole.as_secs_f64() * 1e3
    );
    println!(
        "  {:.0}× faster",
        whole.as_secs_f64() / backwards.as_secs_f64()
    );
    Ok(())
}
