//! Small measuring helpers: percentiles, rates, resident memory, and the benchmark payload.

use std::time::Duration;

use giamsat_types::NewEvent;

/// Rounds to three decimals so the JSON lines stay readable.
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

pub fn rate(count: usize, seconds: f64) -> f64 {
    (count as f64 / seconds).round()
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Nearest-rank percentile (`p` in 0..=100) of unsorted samples; 0 for none.
pub fn percentile(samples: &mut [f64], p: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    samples.sort_unstable_by(f64::total_cmp);
    let rank = ((p / 100.0) * samples.len() as f64).ceil() as usize;
    round3(samples[rank.clamp(1, samples.len()) - 1])
}

/// A `Vm...:` line of /proc/self/status in MiB (`None` off Linux).
pub fn proc_status_mib(field: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: f64 = line
        .trim_start_matches(field)
        .trim_start_matches(':')
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(round3(kib / 1024.0))
}

/// CPU time (user + system) this process has used so far, in seconds (`None` off Linux). Reads
/// `/proc/self/stat`, whose times are in clock ticks of 1/100 s on Linux (`USER_HZ`).
pub fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may hold spaces; the fields after it start past its `)`.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of the line (utime, stime) are the 12th and 13th after the name.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// CPU time (user + system) all processes of the machine have used since boot, in seconds
/// (`None` off Linux): the `cpu` line of `/proc/stat` minus its idle and iowait columns. Over an
/// interval, compared with [`process_cpu_seconds`], it shows whether other processes competed
/// for the cores (both are tick-sampled, so they agree only to a few per cent).
pub fn host_cpu_busy_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice, already in user/nice]
    let busy: u64 = ticks.iter().take(8).sum::<u64>() - ticks.get(3)? - ticks.get(4)?;
    Some(busy as f64 / 100.0)
}

/// The benchmark event: about 100 bytes of canonical JSON with some Vietnamese text, so that
/// multi-byte UTF-8 goes through validation, hashing and storage like real data does.
pub fn payload(writer: usize, seq: usize) -> NewEvent {
    NewEvent::new(
        "BenchEvent",
        &serde_json::json!({
            "writer": writer,
            "seq": seq,
            "note": "Giám sát quy trình: đơn hàng đã được duyệt",
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&mut v, 50.0), 50.0);
        assert_eq!(percentile(&mut v, 99.0), 99.0);
        assert_eq!(percentile(&mut v, 100.0), 100.0);
        assert_eq!(percentile(&mut [], 50.0), 0.0);
    }

    #[test]
    fn payload_is_about_100_bytes() {
        let n = payload(15, 19_999).data().len();
        assert!((80..=120).contains(&n), "{n}");
    }
}
