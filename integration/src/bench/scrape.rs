//! A process's Prometheus metrics, as text scraped from `/metrics`: the series a benchmark
//! reads, by name, summed or maximised over label sets.

/// One scrape of a `/metrics` page.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    /// `(series, value)`: the series with its labels, as written (`name{a="b"}`).
    samples: Vec<(String, f64)>,
    /// The metric families declared (`# TYPE name kind`), with their kind.
    families: Vec<(String, String)>,
}

impl Scrape {
    /// Scrapes `http://addr/metrics` from the calling thread's network namespace.
    pub fn read(addr: std::net::SocketAddr) -> std::io::Result<Self> {
        let (_, body) = crate::daemon::http_get_here(addr, "/metrics")?;
        Ok(Self::parse(&body))
    }

    /// Parses the text exposition format; lines that are not samples or `# TYPE` are skipped.
    pub fn parse(text: &str) -> Self {
        let mut scrape = Self::default();
        for line in text.lines() {
            if let Some(declared) = line.strip_prefix("# TYPE ") {
                if let Some((name, kind)) = declared.split_once(' ') {
                    scrape.families.push((name.to_owned(), kind.to_owned()));
                }
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            if let Ok(value) = value.parse::<f64>() {
                scrape.samples.push((series.to_owned(), value));
            }
        }
        scrape
    }

    /// The value of one series, written as exposed (`name` or `name{label="value"}`).
    pub fn value(&self, series: &str) -> Option<f64> {
        self.samples
            .iter()
            .find(|(s, _)| s == series)
            .map(|(_, v)| *v)
    }

    /// Every label set of metric `name` (the part in braces, empty without labels) with its
    /// value.
    pub fn labelled<'a>(&'a self, name: &'a str) -> impl Iterator<Item = (&'a str, f64)> + 'a {
        self.samples.iter().filter_map(move |(series, value)| {
            let (bare, labels) = series.split_once('{').unwrap_or((series, ""));
            (bare == name).then(|| (labels.trim_end_matches('}'), *value))
        })
    }

    /// The sum of metric `name` over its label sets (0 when absent).
    pub fn sum(&self, name: &str) -> f64 {
        self.labelled(name).map(|(_, v)| v).sum()
    }

    /// The largest value of metric `name` over its label sets (0 when absent).
    pub fn max(&self, name: &str) -> f64 {
        self.labelled(name).map(|(_, v)| v).fold(0.0, f64::max)
    }

    /// Whether a family of this name is declared (`# TYPE`), with or without samples.
    pub fn declares(&self, family: &str) -> bool {
        self.families.iter().any(|(name, _)| name == family)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_are_read_by_name_and_over_label_sets() {
        let text = "# HELP x_total Things.\n# TYPE x counter\nx_total{kind=\"a\"} 2\n\
                    x_total{kind=\"b\"} 3\nlast{ip_family=\"IPv4\"} 10.5\nlast{ip_family=\"IPv6\"} 9\n\
                    plain 7\nbroken line\n";
        let s = Scrape::parse(text);
        assert_eq!(s.value("plain"), Some(7.0));
        assert_eq!(s.value("x_total{kind=\"b\"}"), Some(3.0));
        assert_eq!(s.sum("x_total"), 5.0);
        assert_eq!(s.max("last"), 10.5);
        assert_eq!(s.sum("absent"), 0.0);
        assert!(s.declares("x") && !s.declares("x_total"));
        let kinds: Vec<&str> = s.labelled("x_total").map(|(l, _)| l).collect();
        assert_eq!(kinds, ["kind=\"a\"", "kind=\"b\""]);
    }
}
