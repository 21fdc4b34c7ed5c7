//! The worker's content negotiation on arbitrary `Accept` and `Accept-Encoding` values.

use shmetrics::server::negotiate::{format, gzip};
use shmetrics_reader::Format;

/// `accept_negotiation`: the input (lossily decoded as UTF-8; hyper hands the worker only
/// visible ASCII, a subset) as an `Accept` and as an `Accept-Encoding` value. Never panics,
/// and the answers obey what RFC 9110 implies whatever the syntax:
///
/// - ASCII case does not matter (media types, codings and parameter names are
///   case-insensitive; the values compared are digits);
/// - the order of list elements does not matter (a request may split a list over several
///   header lines in any order);
/// - OpenMetrics needs a range that can match it (`application/…` or `*/…`), gzip a coding
///   that names it or `*`;
/// - `text/plain;version=0.0.4` added with `q=1` means text, `gzip` added means gzip.
pub fn accept(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let answer = (format(Some(&text)), gzip(Some(&text)));
    let answers = |value: &str| (format(Some(value)), gzip(Some(value)));
    assert_eq!(answers(&text.to_ascii_uppercase()), answer, "upper case");
    assert_eq!(answers(&text.to_ascii_lowercase()), answer, "lower case");
    let reversed: Vec<&str> = text.split(',').rev().collect();
    assert_eq!(answers(&reversed.join(",")), answer, "elements reversed");
    let lower = text.to_ascii_lowercase();
    if !lower.contains("application/") && !lower.contains("*/") {
        assert_eq!(answer.0, Format::Prometheus, "nothing matches OpenMetrics");
    }
    if !lower.contains("gzip") && !lower.contains('*') {
        assert!(!answer.1, "nothing allows gzip");
    }
    assert_eq!(
        format(Some(&format!("{text},text/plain;version=0.0.4;q=1"))),
        Format::Prometheus,
        "text preferred with q=1"
    );
    assert!(gzip(Some(&format!("{text},gzip"))), "gzip named with q=1");
}
