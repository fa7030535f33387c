//! Latency samples and how a figure is written.

/// Latency samples, in seconds.
#[derive(Debug, Clone, Default)]
pub struct Latencies {
    samples: Vec<f64>,
}

impl Latencies {
    /// Adds one sample.
    pub fn push(&mut self, seconds: f64) {
        self.samples.push(seconds);
    }

    /// How many samples.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// The `q` quantile by the nearest-rank method (`1.0`: the largest); NaN with no sample.
    pub fn quantile(&self, q: f64) -> f64 {
        let mut v = self.samples.clone();
        if v.is_empty() {
            return f64::NAN;
        }
        v.sort_by(f64::total_cmp);
        let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
        v[rank - 1]
    }

    /// `p50 / p99 / max`.
    pub fn describe(&self) -> String {
        format!(
            "{} / {} / {}",
            ms(self.quantile(0.5)),
            ms(self.quantile(0.99)),
            ms(self.quantile(1.0))
        )
    }
}

impl FromIterator<f64> for Latencies {
    fn from_iter<I: IntoIterator<Item = f64>>(iter: I) -> Self {
        Self {
            samples: iter.into_iter().collect(),
        }
    }
}

/// Seconds as `12.3 ms` below a second and `1.23 s` above; `n/a` for NaN.
pub fn ms(seconds: f64) -> String {
    if seconds.is_nan() {
        "n/a".into()
    } else if seconds < 1.0 {
        format!("{:.1} ms", seconds * 1e3)
    } else {
        format!("{seconds:.2} s")
    }
}

/// KiB as `12.3 MiB`.
pub fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_take_the_nearest_rank() {
        let mut l = Latencies::default();
        assert!(l.quantile(0.5).is_nan() && l.is_empty());
        for s in [0.004, 0.001, 0.003, 0.002] {
            l.push(s);
        }
        assert_eq!(l.quantile(0.5), 0.002);
        assert_eq!(l.quantile(0.99), 0.004);
        assert_eq!(l.quantile(0.0), 0.001);
        assert_eq!(l.describe(), "2.0 ms / 4.0 ms / 4.0 ms");
        assert_eq!(ms(2.5), "2.50 s");
        assert_eq!(ms(f64::NAN), "n/a");
        assert_eq!(mib(1536), "1.5 MiB");
    }
}
