//! Scraping a node's Prometheus endpoint: a plain HTTP GET and a tolerant
//! parser of the text exposition (`name{labels} value [timestamp]`).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One series value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Metric name, with its `_sum`/`_count`/`_bucket` suffix.
    pub name: String,
    /// Label pairs, unescaped.
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: f64,
}

/// A parsed scrape.
#[derive(Clone, Debug, Default)]
pub struct Scrape(pub Vec<Sample>);

impl Scrape {
    /// Sum of every series named `name` whose labels include all of `with`;
    /// `None` when there is no such series.
    pub fn sum(&self, name: &str, with: &[(&str, &str)]) -> Option<f64> {
        let mut found = None;
        for s in self.0.iter().filter(|s| s.name == name) {
            let matches = with
                .iter()
                .all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v));
            if matches {
                *found.get_or_insert(0.0) += s.value;
            }
        }
        found
    }

    /// `(sum, count)` of a histogram or summary (labels summed over).
    pub fn sum_count(&self, name: &str, with: &[(&str, &str)]) -> Option<(f64, f64)> {
        Some((
            self.sum(&format!("{name}_sum"), with)?,
            self.sum(&format!("{name}_count"), with)?,
        ))
    }
}

/// Parses the Prometheus / OpenMetrics text format. Comments, blank lines
/// and lines it cannot read are skipped.
pub fn parse(text: &str) -> Scrape {
    Scrape(text.lines().filter_map(parse_line).collect())
}

fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let name = line[..name_end].to_owned();
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(body) = rest.strip_prefix('{') {
        let (parsed, after) = parse_labels(body)?;
        labels = parsed;
        rest = after;
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" | "Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// Reads `k="v",...}`; returns the labels and what follows the `}`.
fn parse_labels(mut s: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    loop {
        s = s.trim_start_matches([',', ' ']);
        if let Some(after) = s.strip_prefix('}') {
            return Some((labels, after));
        }
        let eq = s.find('=')?;
        let key = s[..eq].trim().to_owned();
        let mut chars = s[eq + 1..].trim_start().char_indices();
        let open = s.len() - s[eq + 1..].trim_start().len();
        if chars.next()?.1 != '"' {
            return None;
        }
        let mut value = String::new();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => {
                    end = Some(open + i + 1);
                    break;
                }
                c => value.push(c),
            }
        }
        labels.push((key, value));
        s = &s[end?..];
    }
}

/// `GET http://addr/metrics` (HTTP/1.0, so the body ends with the connection).
pub async fn fetch(addr: SocketAddr) -> anyhow::Result<Scrape> {
    let io = async {
        let mut conn = tokio::net::TcpStream::connect(addr).await?;
        conn.write_all(format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await?;
        let mut buf = Vec::new();
        conn.read_to_end(&mut buf).await?;
        anyhow::Ok(buf)
    };
    let buf = tokio::time::timeout(Duration::from_secs(10), io)
        .await
        .context("no answer within 10 s")?
        .with_context(|| format!("cannot GET http://{addr}/metrics"))?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("not an HTTP response")?;
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        bail!("http://{addr}/metrics answered {status:?}");
    }
    let chunked = head
        .lines()
        .any(|l| l.to_ascii_lowercase().replace(' ', "") == "transfer-encoding:chunked");
    Ok(parse(&if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    }))
}

/// Joins the chunks of a chunked body (tolerant: stops at anything odd).
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = size.split(';').next().unwrap_or_default().trim();
        let Ok(n) = usize::from_str_radix(size, 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

#[cfg(test)]
#[allow(non_snake_case)]
mod tests {
    use super::*;

    #[test]
    fn parse__should_read_sums_counts_and_labels_tolerantly() {
        // Given an OpenMetrics text with comments, labels holding an escaped
        // quote and a brace, a timestamp, and a line that is not a sample
        let text = concat!(
            "# TYPE tss_presign_cpu_seconds histogram\n",
            "tss_presign_cpu_seconds_sum 1.5\n",
            "tss_presign_cpu_seconds_count 3\n",
            "tss_presign_cpu_seconds_bucket{le=\"+Inf\"} 3\n",
            "tss_sign_duration_seconds_count{path=\"pool\"} 7 1700000000\n",
            "tss_sign_duration_seconds_count{path=\"full\"} 2\n",
            "tss_presign_pool_level{key_id=\"k\\\"}x\",pair=\"a+b\"} 4\n",
            "garbage line\n",
            "# EOF\n",
        );
        // When
        let s = parse(text);
        // Then
        assert_eq!(
            s.sum_count("tss_presign_cpu_seconds", &[]),
            Some((1.5, 3.0))
        );
        assert_eq!(s.sum("tss_sign_duration_seconds_count", &[]), Some(9.0));
        assert_eq!(
            s.sum("tss_sign_duration_seconds_count", &[("path", "pool")]),
            Some(7.0)
        );
        assert_eq!(
            s.sum("tss_presign_pool_level", &[("key_id", "k\"}x")]),
            Some(4.0)
        );
        assert_eq!(
            s.sum("tss_presign_cpu_seconds_bucket", &[("le", "+Inf")]),
            Some(3.0)
        );
        assert_eq!(s.sum("tss_presign_wall_seconds_sum", &[]), None);
    }

    #[test]
    fn dechunk__should_join_chunks() {
        assert_eq!(dechunk("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"), "abcde");
    }
}
