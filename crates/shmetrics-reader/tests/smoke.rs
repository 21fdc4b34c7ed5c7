use shmetrics_reader::{Format, PrefixFilter, Reader};
use shmetrics_writer::{GaugeMode, Registry};

#[test]
fn smoke() {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::open(dir.path()).unwrap();
    let c = reg
        .counter(
            "req_total",
            "Requests \"served\".\nSecond line \\",
            &["code", "a"],
        )
        .unwrap();
    c.labels(&["200", "x\"y"]).unwrap().inc();
    c.labels(&["200", "x\"y"]).unwrap().inc_by(2.5);
    c.labels(&["500", "z"]).unwrap().inc();
    let g = reg
        .gauge("temp", "Temperature.", &[], GaugeMode::All)
        .unwrap();
    g.labels::<&str>(&[]).unwrap().set(21.5);
    let h = reg
        .histogram("lat_seconds", "Latency.", &["m"], &[0.1, 1.0])
        .unwrap();
    h.labels(&["a"]).unwrap().observe(0.05);
    h.labels(&["a"]).unwrap().observe(5.0);
    let s = reg.summary("sz", "Size.", &[]).unwrap();
    s.labels::<&str>(&[]).unwrap().observe(3.0);
    let mut reader = Reader::open(dir.path()).unwrap();
    for format in [Format::Prometheus, Format::OpenMetrics] {
        let mut out = Vec::new();
        let report = reader
            .scrape(format, &PrefixFilter::default(), true, &mut out)
            .unwrap();
        println!("{}", String::from_utf8(out).unwrap());
        println!("{report:?}");
    }
}
