//! Content negotiation for `/metrics`: which exposition format (`Accept`) and whether to
//! gzip (`Accept-Encoding`), following RFC 9110 §12.5.1 and §12.5.3.
//!
//! Each offer (OpenMetrics 1.0.0, text 0.0.4) gets the quality of the most specific media
//! range that matches it; OpenMetrics is served only when its quality is strictly higher
//! than text's, so a client that expresses no preference (`*/*`, no header, or only types
//! we do not produce) gets text.

use shmetrics_reader::Format;
use shmetrics_reader::render::Escaping;

/// One element of an `Accept` or `Accept-Encoding` list: the value before the first `;`
/// (lower-cased), its parameters other than `q` (names lower-cased), and its quality.
#[derive(Debug, PartialEq)]
struct Element {
    value: String,
    params: Vec<(String, String)>,
    q: f32,
}

/// Parses a quality value: `0`, `1` or a decimal in between (at most three decimals are
/// meaningful, more are tolerated). `None` when malformed or out of range.
fn parse_q(text: &str) -> Option<f32> {
    let q: f32 = text.trim().parse().ok()?;
    (0.0..=1.0).contains(&q).then_some(q)
}

/// Splits a comma-separated header list into elements; elements with a malformed `q` are
/// dropped (they cannot be honoured either way), empty elements are skipped.
fn elements(header: &str) -> Vec<Element> {
    let mut out = Vec::new();
    for item in header.split(',') {
        let mut parts = item.split(';');
        let value = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        if value.is_empty() {
            continue;
        }
        let mut q = Some(1.0);
        let mut params = Vec::new();
        for param in parts {
            let (name, val) = param.split_once('=').unwrap_or((param, ""));
            let name = name.trim().to_ascii_lowercase();
            let val = val.trim().trim_matches('"');
            if name == "q" {
                q = parse_q(val);
            } else if !name.is_empty() {
                params.push((name, val.to_owned()));
            }
        }
        if let Some(q) = q {
            out.push(Element { value, params, q });
        }
    }
    out
}

/// What we can produce for a format: its media type and the `version` parameter values
/// that describe output we produce (the first is what we label it with).
fn offer(format: Format) -> (&'static str, &'static [&'static str]) {
    match format {
        // Text 1.0.0 is 0.0.4 with quoted UTF-8 names (under `escaping=allow-utf-8`).
        Format::Prometheus => ("text/plain", &["0.0.4", "1.0.0"]),
        // OpenMetrics 0.0.1 is the same text format as 1.0.0; Prometheus asks for both.
        Format::OpenMetrics => ("application/openmetrics-text", &["1.0.0", "0.0.1"]),
    }
}

/// How specifically a media range matches `format`, or `None` if it does not. Higher is
/// more specific: `*/*` < `type/*` < `type/subtype` < with an acceptable version < with the
/// exact version we label the output with.
fn specificity(range: &Element, format: Format) -> Option<u8> {
    let (media, versions) = offer(format);
    let (ty, sub) = range.value.split_once('/')?;
    let (offer_ty, offer_sub) = media.split_once('/')?;
    match (ty, sub) {
        ("*", "*") => Some(0),
        (t, "*") if t == offer_ty => Some(1),
        (t, s) if t == offer_ty && s == offer_sub => {
            match range.params.iter().find(|(n, _)| n == "version") {
                None => Some(2),
                Some((_, v)) if v == versions[0] || v == "1.0.0" => Some(4),
                Some((_, v)) if versions.contains(&v.as_str()) => Some(3),
                Some(_) => None,
            }
        }
        _ => None,
    }
}

/// The quality the `Accept` ranges give `format` and the range that gave it (the most
/// specific matching range, the highest quality among equally specific ones); 0 when none
/// matches.
fn quality(ranges: &[Element], format: Format) -> (f32, Option<&Element>) {
    let mut best: Option<(u8, f32, &Element)> = None;
    for range in ranges {
        if let Some(s) = specificity(range, format) {
            best = match best {
                Some((bs, bq, b)) if bs > s || (bs == s && bq >= range.q) => Some((bs, bq, b)),
                _ => Some((s, range.q, range)),
            };
        }
    }
    best.map_or((0.0, None), |(_, q, r)| (q, Some(r)))
}

/// What a `/metrics` response is: its format and, when the client asked for one with a
/// version that has it (text or OpenMetrics 1.0.0), the escaping of names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Choice {
    /// The exposition format.
    pub format: Format,
    /// `Some` when the chosen media range had `version=1.0.0` and an `escaping` parameter:
    /// that scheme (`underscores` when unknown), named in the response's content type.
    pub escaping: Option<Escaping>,
}

impl Choice {
    /// The escaping the body is rendered with.
    pub fn escaping(self) -> Escaping {
        self.escaping.unwrap_or_default()
    }

    /// The response's exact `Content-Type`.
    pub fn content_type(self) -> String {
        match (self.format, self.escaping) {
            (format, None) => format.content_type().to_owned(),
            (Format::Prometheus, Some(e)) => {
                format!(
                    "text/plain; version=1.0.0; charset=utf-8; escaping={}",
                    e.as_str()
                )
            }
            (Format::OpenMetrics, Some(e)) => format!(
                "application/openmetrics-text; version=1.0.0; charset=utf-8; escaping={}",
                e.as_str()
            ),
        }
    }
}

/// The format and escaping to answer with, given the request's `Accept` header (absent:
/// text 0.0.4, names escaped with underscores).
pub fn negotiate(accept: Option<&str>) -> Choice {
    let Some(accept) = accept else {
        return Choice {
            format: Format::Prometheus,
            escaping: None,
        };
    };
    let ranges = elements(accept);
    let (om, om_range) = quality(&ranges, Format::OpenMetrics);
    let (text, text_range) = quality(&ranges, Format::Prometheus);
    let (format, range) = if om > text {
        (Format::OpenMetrics, om_range)
    } else {
        (Format::Prometheus, text_range)
    };
    let param = |name: &str| {
        range.and_then(|r| {
            r.params
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        })
    };
    // Named only when asked for, so clients that never ask (Prometheus 2) see the content
    // types they always saw; an unknown scheme gets the default, named.
    let escaping = param("escaping")
        .filter(|_| param("version") == Some("1.0.0"))
        .map(|e| Escaping::parse(e).unwrap_or_default());
    Choice { format, escaping }
}

/// The format to answer with, given the request's `Accept` header (absent: text).
pub fn format(accept: Option<&str>) -> Format {
    negotiate(accept).format
}

/// Whether the response may be gzip-compressed, given `Accept-Encoding`: `gzip` (or
/// `x-gzip`) with a quality above 0, or, when gzip is not named, `*` above 0.
pub fn gzip(accept_encoding: Option<&str>) -> bool {
    let Some(header) = accept_encoding else {
        return false;
    };
    let codings = elements(header);
    let named = codings
        .iter()
        .filter(|c| c.value == "gzip" || c.value == "x-gzip")
        .map(|c| c.q)
        .reduce(f32::max);
    let q = named.or_else(|| {
        codings
            .iter()
            .filter(|c| c.value == "*")
            .map(|c| c.q)
            .reduce(f32::max)
    });
    q.is_some_and(|q| q > 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROMETHEUS_2: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    const PROMETHEUS_2_OLD: &str =
        "application/openmetrics-text; version=0.0.1,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    const PROMETHEUS_3: &str = "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,text/plain;version=0.0.4;q=0.2,*/*;q=0.1";
    const PROMETHEUS_TEXT_ONLY: &str = "text/plain;version=0.0.4;q=1,*/*;q=0.1";

    #[test]
    fn real_accept_headers() {
        let cases: &[(Option<&str>, Format)] = &[
            (Some(PROMETHEUS_2), Format::OpenMetrics),
            (Some(PROMETHEUS_2_OLD), Format::OpenMetrics),
            (Some(PROMETHEUS_3), Format::OpenMetrics),
            (Some(PROMETHEUS_TEXT_ONLY), Format::Prometheus),
            (Some("text/plain;version=0.0.4"), Format::Prometheus),
            (Some("*/*"), Format::Prometheus),
            (None, Format::Prometheus),
            (Some(""), Format::Prometheus),
            (Some("application/json"), Format::Prometheus),
            (Some("application/openmetrics-text"), Format::OpenMetrics),
            (
                Some("Application/OpenMetrics-Text; Version=\"1.0.0\""),
                Format::OpenMetrics,
            ),
            (Some("application/openmetrics-text;q=0"), Format::Prometheus),
            (
                Some("application/openmetrics-text;q=0,*/*"),
                Format::Prometheus,
            ),
            (
                Some("text/plain;q=0.5,application/openmetrics-text;q=0.6"),
                Format::OpenMetrics,
            ),
            // Equal preference: text.
            (
                Some("text/plain,application/openmetrics-text"),
                Format::Prometheus,
            ),
            // A version we do not produce does not match.
            (
                Some("application/openmetrics-text;version=2.0.0,text/plain;q=0.1"),
                Format::Prometheus,
            ),
            // `application/*` matches OpenMetrics only.
            (Some("application/*,text/plain;q=0.9"), Format::OpenMetrics),
            // The more specific range decides, even with a lower q.
            (
                Some(
                    "application/openmetrics-text;version=1.0.0;q=0.2,application/*;q=1,text/plain;q=0.3",
                ),
                Format::Prometheus,
            ),
            // A malformed q drops its element.
            (
                Some("application/openmetrics-text;q=abc,text/plain;q=0.1"),
                Format::Prometheus,
            ),
            (
                Some("application/openmetrics-text;q=1.5,text/plain;q=0.1"),
                Format::Prometheus,
            ),
        ];
        for (header, want) in cases {
            assert_eq!(format(*header), *want, "Accept: {header:?}");
        }
    }

    #[test]
    fn elements_parse_parameters_and_quality() {
        assert_eq!(
            elements(" text/plain ; version=0.0.4 ; q=0.5 , ,*/*;q=0.1"),
            vec![
                Element {
                    value: "text/plain".into(),
                    params: vec![("version".into(), "0.0.4".into())],
                    q: 0.5
                },
                Element {
                    value: "*/*".into(),
                    params: vec![],
                    q: 0.1
                },
            ]
        );
    }

    #[test]
    fn accept_encoding() {
        let cases: &[(Option<&str>, bool)] = &[
            (None, false),
            (Some(""), false),
            (Some("gzip"), true),
            (Some("GZIP"), true),
            (Some("x-gzip"), true),
            (Some("gzip, deflate, br"), true),
            (Some("br;q=1.0, gzip;q=0.8, *;q=0.1"), true),
            (Some("identity"), false),
            (Some("gzip;q=0"), false),
            (Some("gzip;q=0.000"), false),
            (Some("*"), true),
            (Some("*;q=0"), false),
            (Some("gzip;q=0, *"), false),
            (Some("deflate"), false),
        ];
        for (header, want) in cases {
            assert_eq!(gzip(*header), *want, "Accept-Encoding: {header:?}");
        }
    }
}
