//! What a run prints: latency percentiles, CPU per lease, and the machine's load (this
//! machine is shared, and a figure means little without it).

use std::time::Duration;

/// User plus system CPU time of a process (`self` or a pid) so far, from
/// `/proc/PID/stat` (Linux; clock ticks of 1/100 s, the kernel's fixed `USER_HZ`).
pub fn process_cpu(pid: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at field 3.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

/// The load averages (1, 5, 15 minutes) from `/proc/loadavg`.
pub fn load() -> String {
    std::fs::read_to_string("/proc/loadavg").map_or_else(
        |_| "unknown".to_owned(),
        |text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        },
    )
}

/// Latencies, sorted once, asked for percentiles.
pub struct Latencies(Vec<Duration>);

impl Latencies {
    /// Sorts `samples`.
    pub fn new(mut samples: Vec<Duration>) -> Self {
        samples.sort();
        Self(samples)
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The `p` quantile (0..=1) in milliseconds; NaN without samples.
    pub fn ms(&self, p: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        let at = ((self.0.len() as f64 * p) as usize).min(self.0.len() - 1);
        self.0[at].as_secs_f64() * 1e3
    }

    /// "p50 … p99 … max …", in milliseconds.
    pub fn summary(&self) -> String {
        format!(
            "p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
            self.ms(0.5),
            self.ms(0.99),
            self.ms(1.0)
        )
    }
}

/// CPU time per lease, in microseconds.
pub fn per_lease_us(cpu: Duration, leases: usize) -> f64 {
    cpu.as_secs_f64() * 1e6 / leases.max(1) as f64
}
