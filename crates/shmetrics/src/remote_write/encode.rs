//! Families to a Prometheus remote write 1.0 request: a protobuf `WriteRequest` (the
//! `prometheus.WriteRequest` of `remote.proto`: `TimeSeries` of `Label`s and one `Sample`
//! each, and a `MetricMetadata` per family), snappy-compressed in the block format.
//!
//! The samples are the text format's, so a receiver stores what a scrape would have shown:
//! `name_total` for a counter, `_bucket` (cumulative, `le` as the exposition writes it),
//! `_count` and `_sum` for a histogram, `_count` and `_sum` for a summary, `name_info` for
//! an info, one sample per state for a stateset; a `pid` label where the exposition has
//! one. External labels are added to every series unless it has a label of that name.
//! Every sample is the cumulative value at the collection's timestamp, so a request sent
//! twice (a retry whose first answer was lost) writes the same points again.

use shmetrics_layout::MetricKind;
use shmetrics_reader::snapshot::{Family, Series, Value};

/// An encoded request: the compressed body and what it holds.
#[derive(Clone, Debug)]
pub(crate) struct Encoded {
    /// The snappy-compressed `WriteRequest`.
    pub(crate) body: Vec<u8>,
    /// Samples in it.
    pub(crate) samples: u64,
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A length-delimited field (wire type 2).
fn bytes_field(field: u32, bytes: &[u8], out: &mut Vec<u8>) {
    varint(u64::from(field << 3 | 2), out);
    varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

/// `Label { string name = 1; string value = 2; }`.
fn label(name: &str, value: &str, scratch: &mut Vec<u8>, out: &mut Vec<u8>) {
    scratch.clear();
    bytes_field(1, name.as_bytes(), scratch);
    bytes_field(2, value.as_bytes(), scratch);
    bytes_field(1, scratch, out);
}

/// Builds the `WriteRequest` one time series at a time.
struct Writer<'e> {
    external: &'e [(String, String)],
    timestamp_ms: i64,
    request: Vec<u8>,
    series: Vec<u8>,
    scratch: Vec<u8>,
    samples: u64,
}

impl Writer<'_> {
    /// Appends one time series: `name` with the series' labels, `extra` (such as `le`),
    /// its pid and the external labels, sorted by name as the protocol requires.
    fn sample(&mut self, name: &str, series: &Series, extra: Option<(&str, &str)>, value: f64) {
        let pid = series.pid.map(|p| p.to_string());
        let mut labels: Vec<(&str, &str)> =
            Vec::with_capacity(series.labels.pairs.len() + 3 + self.external.len());
        labels.push(("__name__", name));
        labels.extend(series.labels.pairs.iter().map(|(n, v)| (&**n, &**v)));
        labels.extend(extra);
        if let Some(pid) = &pid {
            labels.push(("pid", pid));
        }
        let own = labels.len();
        for (n, v) in self.external {
            if !labels[..own].iter().any(|(have, _)| have == n) {
                labels.push((n, v));
            }
        }
        labels.sort_unstable_by(|a, b| a.0.cmp(b.0));
        self.series.clear();
        for (n, v) in &labels {
            label(n, v, &mut self.scratch, &mut self.series);
        }
        // `Sample { double value = 1; int64 timestamp = 2; }`.
        self.scratch.clear();
        varint(1 << 3 | 1, &mut self.scratch);
        self.scratch.extend_from_slice(&value.to_le_bytes());
        varint(2 << 3, &mut self.scratch);
        varint(self.timestamp_ms as u64, &mut self.scratch);
        bytes_field(2, &self.scratch, &mut self.series);
        bytes_field(1, &self.series, &mut self.request);
        self.samples += 1;
    }

    /// `MetricMetadata { type = 1; metric_family_name = 2; help = 4; }`.
    fn metadata(&mut self, family: &Family, name: &str) {
        let kind = match family.kind {
            MetricKind::Counter => 1,
            MetricKind::Gauge => 2,
            MetricKind::Histogram => 3,
            MetricKind::Summary => 5,
            MetricKind::Info => 6,
            MetricKind::StateSet => 7,
        };
        self.scratch.clear();
        varint(1 << 3, &mut self.scratch);
        varint(kind, &mut self.scratch);
        bytes_field(2, name.as_bytes(), &mut self.scratch);
        bytes_field(4, family.help.as_bytes(), &mut self.scratch);
        let scratch = std::mem::take(&mut self.scratch);
        bytes_field(3, &scratch, &mut self.request);
        self.scratch = scratch;
    }

    fn family(&mut self, family: &Family) {
        let name = &*family.name;
        let (sample_name, metadata_name) = match family.kind {
            MetricKind::Counter => (format!("{name}_total"), name.to_owned()),
            MetricKind::Info => (format!("{name}_info"), format!("{name}_info")),
            _ => (name.to_owned(), name.to_owned()),
        };
        self.metadata(family, &metadata_name);
        let bucket = format!("{name}_bucket");
        let count = format!("{name}_count");
        let sum = format!("{name}_sum");
        // The `le` values, once per family, as the exposition writes them.
        let les: Vec<String> = family
            .bounds
            .iter()
            .map(|&bound| {
                let mut le = Vec::new();
                shmetrics_reader::render::write_le(bound, &mut le);
                String::from_utf8_lossy(&le).into_owned()
            })
            .chain(std::iter::once("+Inf".to_owned()))
            .collect();
        for series in &family.series {
            match &series.value {
                Value::Counter(v) | Value::Gauge(v) => self.sample(&sample_name, series, None, *v),
                Value::Info => self.sample(&sample_name, series, None, 1.0),
                Value::Histogram { buckets, sum: s } => {
                    let mut cumulative = 0u64;
                    for (n, le) in buckets.iter().zip(&les) {
                        cumulative += n;
                        self.sample(&bucket, series, Some(("le", le)), cumulative as f64);
                    }
                    self.sample(&count, series, None, cumulative as f64);
                    self.sample(&sum, series, None, *s);
                }
                Value::Summary { count: c, sum: s } => {
                    self.sample(&count, series, None, *c as f64);
                    self.sample(&sum, series, None, *s);
                }
                Value::State { states, index } => {
                    for (i, state) in states.iter().enumerate() {
                        let value = if i == *index { 1.0 } else { 0.0 };
                        self.sample(name, series, Some((name, state)), value);
                    }
                }
            }
        }
    }
}

/// Encodes `families` with `external` labels, every sample at `timestamp_ms`.
pub(crate) fn encode<'f>(
    families: impl IntoIterator<Item = &'f Family>,
    external: &[(String, String)],
    timestamp_ms: i64,
) -> Encoded {
    let mut w = Writer {
        external,
        timestamp_ms,
        request: Vec::new(),
        series: Vec::new(),
        scratch: Vec::new(),
        samples: 0,
    };
    for family in families {
        w.family(family);
    }
    let request = std::mem::take(&mut w.request);
    let body = snap::raw::Encoder::new()
        .compress_vec(&request)
        .unwrap_or_default();
    Encoded {
        body,
        samples: w.samples,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use shmetrics_reader::snapshot::SeriesLabels;

    use super::*;

    // The messages of Prometheus' `remote.proto` and `types.proto`, declared with prost,
    // decode what `encode` wrote: an independent reading of the wire format.
    #[derive(Clone, PartialEq, prost::Message)]
    struct WriteRequest {
        #[prost(message, repeated, tag = "1")]
        timeseries: Vec<TimeSeries>,
        #[prost(message, repeated, tag = "3")]
        metadata: Vec<MetricMetadata>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    struct TimeSeries {
        #[prost(message, repeated, tag = "1")]
        labels: Vec<Label>,
        #[prost(message, repeated, tag = "2")]
        samples: Vec<Sample>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    struct Label {
        #[prost(string, tag = "1")]
        name: String,
        #[prost(string, tag = "2")]
        value: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    struct Sample {
        #[prost(double, tag = "1")]
        value: f64,
        #[prost(int64, tag = "2")]
        timestamp: i64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    struct MetricMetadata {
        #[prost(int32, tag = "1")]
        r#type: i32,
        #[prost(string, tag = "2")]
        metric_family_name: String,
        #[prost(string, tag = "4")]
        help: String,
    }

    fn series(labels: &[(&str, &str)], pid: Option<u32>, value: Value) -> Series {
        Series {
            labels: Arc::new(SeriesLabels::new(
                labels
                    .iter()
                    .map(|&(n, v)| (Box::from(n), Box::from(v)))
                    .collect(),
            )),
            pid,
            created_unix_nanos: Some(1),
            exemplars: None,
            value,
        }
    }

    fn family(name: &str, kind: MetricKind, bounds: &[f64], series: Vec<Series>) -> Family {
        Family {
            name: Arc::from(name),
            kind,
            help: Arc::from(format!("Help of {name}.")),
            bounds: Arc::from(bounds),
            series,
        }
    }

    fn decode(encoded: &Encoded) -> WriteRequest {
        let raw = snap::raw::Decoder::new()
            .decompress_vec(&encoded.body)
            .unwrap();
        <WriteRequest as prost::Message>::decode(&raw[..]).unwrap()
    }

    /// `name{labels} value @timestamp` per time series.
    fn lines(request: &WriteRequest) -> Vec<String> {
        request
            .timeseries
            .iter()
            .map(|ts| {
                let labels: Vec<String> = ts
                    .labels
                    .iter()
                    .map(|l| format!("{}={}", l.name, l.value))
                    .collect();
                assert_eq!(ts.samples.len(), 1);
                format!(
                    "{} {} @{}",
                    labels.join(","),
                    ts.samples[0].value,
                    ts.samples[0].timestamp
                )
            })
            .collect()
    }

    #[test]
    fn every_kind_as_the_text_format_names_its_samples() {
        let families = vec![
            family(
                "vllm:requests",
                MetricKind::Counter,
                &[],
                vec![series(&[("model", "m\"1")], None, Value::Counter(2.5))],
            ),
            family(
                "g",
                MetricKind::Gauge,
                &[],
                vec![series(&[], Some(42), Value::Gauge(-1.0))],
            ),
            family(
                "h",
                MetricKind::Histogram,
                &[0.1, 1.0],
                vec![series(
                    &[("a", "x")],
                    None,
                    Value::Histogram {
                        buckets: vec![1, 0, 2],
                        sum: 4.5,
                    },
                )],
            ),
            family(
                "s",
                MetricKind::Summary,
                &[],
                vec![series(&[], None, Value::Summary { count: 3, sum: 1.5 })],
            ),
            family(
                "build",
                MetricKind::Info,
                &[],
                vec![series(&[("version", "1.2")], None, Value::Info)],
            ),
            family(
                "mode",
                MetricKind::StateSet,
                &[],
                vec![series(
                    &[],
                    None,
                    Value::State {
                        states: Arc::from(vec!["a".to_owned(), "b".to_owned()]),
                        index: 1,
                    },
                )],
            ),
        ];
        let external = vec![
            ("cluster".to_owned(), "c1".to_owned()),
            ("a".to_owned(), "never over a series label".to_owned()),
        ];
        let encoded = encode(&families, &external, 1_700_000_000_123);
        let request = decode(&encoded);
        assert_eq!(encoded.samples, 12);
        let ts = "@1700000000123";
        let want = [
            "__name__=vllm:requests_total,a=never over a series label,cluster=c1,model=m\"1 2.5",
            "__name__=g,a=never over a series label,cluster=c1,pid=42 -1",
            "__name__=h_bucket,a=x,cluster=c1,le=0.1 1",
            "__name__=h_bucket,a=x,cluster=c1,le=1.0 1",
            "__name__=h_bucket,a=x,cluster=c1,le=+Inf 3",
            "__name__=h_count,a=x,cluster=c1 3",
            "__name__=h_sum,a=x,cluster=c1 4.5",
            "__name__=s_count,a=never over a series label,cluster=c1 3",
            "__name__=s_sum,a=never over a series label,cluster=c1 1.5",
            "__name__=build_info,a=never over a series label,cluster=c1,version=1.2 1",
            "__name__=mode,a=never over a series label,cluster=c1,mode=a 0",
            "__name__=mode,a=never over a series label,cluster=c1,mode=b 1",
        ];
        let got = lines(&request);
        for (i, line) in want.iter().enumerate() {
            assert_eq!(got[i], format!("{line} {ts}"), "series {i}");
        }
        assert_eq!(got.len(), want.len());
        let metadata: Vec<(i32, &str)> = request
            .metadata
            .iter()
            .map(|m| (m.r#type, m.metric_family_name.as_str()))
            .collect();
        assert_eq!(
            metadata,
            [
                (1, "vllm:requests"),
                (2, "g"),
                (3, "h"),
                (5, "s"),
                (6, "build_info"),
                (7, "mode")
            ]
        );
        assert_eq!(request.metadata[0].help, "Help of vllm:requests.");
    }
}
