//! `legacy_db`: `prometheus_client` `.db` files from arbitrary bytes.

use shmetrics_layout::{GaugeMode, MetricKind};
use shmetrics_reader::legacy::{DbName, db_used, parse_db, parse_key, translate};

/// Parsing never panics, every accepted entry lies inside the used bytes (in increasing
/// offsets), and translation into a segment image (keys decoded, families validated, values
/// stored) either succeeds or fails cleanly, for each file type.
pub fn db(data: &[u8]) {
    let Ok(used) = db_used(data, data.len() as u64) else {
        return;
    };
    assert!(used <= data.len());
    if let Ok(entries) = parse_db(data, used) {
        let mut previous = None;
        for e in &entries {
            assert!(e.offset >= 8 && e.offset < used);
            assert!(previous.is_none_or(|p| e.offset > p));
            previous = Some(e.offset);
            let _ = parse_key(e.key);
        }
    }
    for (kind, mode) in [
        (MetricKind::Counter, None),
        (MetricKind::Gauge, Some(GaugeMode::MostRecent)),
        (MetricKind::Histogram, None),
        (MetricKind::Summary, None),
    ] {
        let _ = translate(data, DbName { kind, mode, pid: 1 });
    }
}
