//! The writer's contract as a user sees it: directory errors, registration rules, label
//! checks, segment files, continuation segments, and a full filesystem.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use shmetrics_layout::DefinitionError;
use shmetrics_writer::{
    DEFAULT_BUCKETS, Difference, Error, GaugeMode, MAX_STRIPES, MetricKind, Options, Registry,
};

fn segments(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn directory_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let err = Registry::open(&missing).unwrap_err();
    assert!(
        matches!(err, Error::DirMissing(ref p) if p == &missing),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!("metrics directory {} does not exist", missing.display())
    );

    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let err = Registry::open(&file).unwrap_err();
    assert!(matches!(err, Error::NotADirectory(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("{} is not a directory", file.display())
    );
}

#[test]
fn from_env_requires_the_variable() {
    // Run in a child so the test does not race other tests on the environment.
    if std::env::var_os("SHMETRICS_TEST_FROM_ENV").is_some() {
        let err = Registry::from_env().unwrap_err();
        assert!(matches!(err, Error::DirUnset), "{err:?}");
        assert!(
            err.to_string()
                .contains("PROMETHEUS_MULTIPROC_DIR is not set")
        );
        return;
    }
    let status = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "from_env_requires_the_variable",
            "--test-threads=1",
        ])
        .env("SHMETRICS_TEST_FROM_ENV", "1")
        .env_remove("PROMETHEUS_MULTIPROC_DIR")
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn segment_file_is_private_named_and_complete() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(dir.path()).unwrap();
    let names = segments(dir.path());
    assert_eq!(names.len(), 1, "{names:?}");
    let name = &names[0];
    let pid = std::process::id();
    assert!(name.starts_with(&format!("shmetrics-{pid}-")), "{name}");
    assert!(name.ends_with("-0.shm"), "{name}");
    let meta = std::fs::metadata(dir.path().join(name)).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(meta.len(), Options::default().initial_segment_size as u64);
    assert_eq!(registry.segment_paths(), vec![dir.path().join(name)]);
}

#[test]
fn file_mode_is_configurable() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        file_mode: 0o640,
        ..Options::default()
    };
    let registry = Registry::open_with(dir.path(), options).unwrap();
    let meta = std::fs::metadata(&registry.segment_paths()[0]).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o640);
}

#[test]
fn registration_is_idempotent_and_conflicts_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(dir.path()).unwrap();
    let a = registry
        .counter("requests_total", "Requests.", &["code"])
        .unwrap();
    // `_total` is stripped, so both spellings are the same family.
    let b = registry
        .counter("requests", "Requests.", &["code"])
        .unwrap();
    a.labels(&["200"]).unwrap().inc();
    b.labels(&["200"]).unwrap().inc();
    assert_eq!(a.labels(&["200"]).unwrap().get(), 2.0);
    assert_eq!(a.def().name, "requests");

    let err = registry
        .counter("requests", "Requests.", &["method"])
        .unwrap_err();
    match &err {
        Error::Conflict {
            name,
            difference: Difference::LabelNames { before, now },
        } => {
            assert_eq!(name, "requests");
            assert_eq!(
                (before.as_slice(), now.as_slice()),
                (&["code".to_owned()][..], &["method".to_owned()][..])
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        err.to_string(),
        "metric requests is already registered with a different definition: label names (code) \
         before, (method) now"
    );
    let err = registry
        .gauge("requests", "Requests.", &["code"], GaugeMode::Sum)
        .unwrap_err();
    assert!(
        err.to_string().ends_with("type counter before, gauge now"),
        "{err}"
    );
    let err = registry
        .counter("requests", "Other help.", &["code"])
        .unwrap_err();
    assert!(
        err.to_string()
            .ends_with("help \"Requests.\" before, \"Other help.\" now"),
        "{err}"
    );
    registry.gauge("g", "G.", &[], GaugeMode::All).unwrap();
    let err = registry
        .gauge("g", "G.", &[], GaugeMode::LiveAll)
        .unwrap_err();
    assert!(
        err.to_string()
            .ends_with("gauge mode all before, liveall now"),
        "{err}"
    );
    registry.histogram("h", "H.", &[], &[0.5, 1.0]).unwrap();
    let err = registry.histogram("h", "H.", &[], &[0.25]).unwrap_err();
    assert!(
        err.to_string()
            .ends_with("buckets (0.5, 1) before, (0.25) now"),
        "{err}"
    );
}

#[test]
fn families_that_would_share_an_exposed_name_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(dir.path()).unwrap();
    registry.counter("x_total", "", &[]).unwrap();
    let err = registry
        .gauge("x_total", "", &[], GaugeMode::Sum)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "metric x_total is already registered with a different definition: both it and counter x would be exposed as x_total"
    );
    registry.histogram("lat", "", &[], &[1.0]).unwrap();
    let err = registry.counter("lat_count", "", &[]).unwrap_err();
    assert!(
        err.to_string()
            .ends_with("histogram lat would be exposed as lat_count"),
        "{err}"
    );
    let err = registry.summary("lat", "", &[]).unwrap_err();
    assert!(
        err.to_string()
            .contains("type histogram before, summary now"),
        "{err}"
    );
}

#[test]
fn pid_is_reserved_for_gauges_merged_per_process() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(dir.path()).unwrap();
    for mode in [GaugeMode::All, GaugeMode::LiveAll] {
        let err = registry.gauge("g", "", &["pid"], mode).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("label name \"pid\" is reserved for a gauge in mode {mode}")
        );
    }
    registry.gauge("g", "", &["pid"], GaugeMode::Sum).unwrap();
    registry.counter("c", "", &["pid"]).unwrap();
}

#[test]
fn invalid_definitions_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let r = Registry::open(dir.path()).unwrap();
    let cases: Vec<(Result<(), Error>, &str)> = vec![
        (r.counter("", "", &[]).map(drop), "invalid metric name \"\""),
        (
            r.counter("ok", "", &["a.b", "a_b"]).map(drop),
            "label names \"a.b\" and \"a_b\" of ok are both exposed as a_b",
        ),
        (
            r.counter("ok2", "", &["__x"]).map(drop),
            "invalid label name \"__x\" in ok2",
        ),
        (
            r.counter("ok3", "", &["a", "a"]).map(drop),
            "duplicate label name \"a\" in ok3",
        ),
        (
            r.histogram("h", "", &["le"], &[1.0]).map(drop),
            "label name \"le\" is reserved for a histogram",
        ),
        (
            r.summary("s", "", &["quantile"]).map(drop),
            "label name \"quantile\" is reserved for a summary",
        ),
        (
            r.histogram("h2", "", &[], &[2.0, 1.0]).map(drop),
            "h2: bucket bounds must be strictly increasing",
        ),
        (
            r.histogram("h3", "", &[], &[f64::NAN]).map(drop),
            "h3: bucket bounds must be finite (+Inf is implicit)",
        ),
    ];
    for (result, message) in cases {
        let err = result.unwrap_err();
        assert!(matches!(err, Error::InvalidFamily(_)), "{err:?}");
        assert_eq!(err.to_string(), message);
    }
}

/// The amplification case: 512 buckets and 32 label values of 4 KiB would render 67 MB per
/// series. The writer refuses the family when it is registered and the label set when the
/// child is created, saying which limit.
#[test]
fn families_and_label_sets_over_the_limits_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let r = Registry::open(dir.path()).unwrap();
    let bounds: Vec<f64> = (1..=512).map(f64::from).collect();
    let err = r.histogram("wide", "", &[], &bounds).unwrap_err();
    assert!(matches!(err, Error::InvalidFamily(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        "wide has 512 buckets, more than the limit of 256"
    );
    let names: Vec<String> = (0..33).map(|i| format!("l{i}")).collect();
    let names_ref: Vec<&str> = names.iter().map(String::as_str).collect();
    let err = r.counter("many", "", &names_ref).unwrap_err();
    assert_eq!(
        err.to_string(),
        "many declares 33 labels, more than the limit of 32"
    );
    // At the limits: 256 buckets and 32 labels register.
    let h = r
        .histogram("h", "", &names_ref[..32], &bounds[..256])
        .unwrap();
    let value = "v".repeat(4096);
    let values = vec![value.as_str(); 32];
    let err = h.labels(&values).unwrap_err();
    assert!(matches!(err, Error::InvalidLabels { .. }), "{err:?}");
    // The typed reason is the error's source.
    let source = std::error::Error::source(&err).expect("a source");
    assert_eq!(
        source.downcast_ref::<DefinitionError>(),
        Some(&DefinitionError::LabelSetTooLong { bytes: 131_158 })
    );
    assert_eq!(
        err.to_string(),
        "labels of h: label names and values of 131158 bytes, more than the limit of 8192 for a \
         label set"
    );
    // 32 values that fit the label set together are taken.
    let short = "v".repeat(200);
    h.labels(&vec![short.as_str(); 32]).unwrap().observe(1.0);
    assert_eq!(h.children().len(), 1);
}

/// Names outside the classic character sets register (prometheus_client 0.26 takes any
/// UTF-8); families exposed alike do not.
#[test]
fn utf8_names_register() {
    let dir = tempfile::tempdir().unwrap();
    let r = Registry::open(dir.path()).unwrap();
    r.counter("my.dotted", "", &["lbl.x", "é"])
        .unwrap()
        .labels(&["v", "w"])
        .unwrap()
        .inc();
    let err = r.counter("my_dotted", "", &[]).unwrap_err();
    match &err {
        Error::Conflict {
            name,
            difference:
                Difference::ExposedAlike {
                    kind,
                    other,
                    exposed,
                },
        } => {
            assert_eq!(
                (name.as_str(), *kind, other.as_str()),
                ("my_dotted", MetricKind::Counter, "my.dotted")
            );
            assert_eq!(exposed, "my_dotted");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        err.to_string(),
        "metric my_dotted is already registered with a different definition: both it and \
         counter my.dotted would be exposed as my_dotted"
    );
}

#[test]
fn histogram_bounds_defaults_and_trailing_inf() {
    let dir = tempfile::tempdir().unwrap();
    let r = Registry::open(dir.path()).unwrap();
    let default = r.histogram("d_seconds", "", &[], &[]).unwrap();
    assert_eq!(&*default.def().bounds, &DEFAULT_BUCKETS[..]);
    let explicit = r
        .histogram("e_seconds", "", &[], &[0.5, 1.0, f64::INFINITY])
        .unwrap();
    assert_eq!(&*explicit.def().bounds, &[0.5, 1.0][..]);
    let child = explicit.unlabelled().unwrap();
    assert_eq!(child.bounds(), &[0.5, 1.0][..]);
}

#[test]
fn label_values_must_match_label_names() {
    let dir = tempfile::tempdir().unwrap();
    let r = Registry::open(dir.path()).unwrap();
    let family = r.counter("c", "", &["a", "b"]).unwrap();
    let err = family.labels(&["x"]).unwrap_err();
    assert!(matches!(err, Error::InvalidLabels { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "labels of c: 1 label values given for 2 label names"
    );
    let long = "v".repeat(5000);
    let err = family.labels(&["x", long.as_str()]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "labels of c: a label value of 5000 bytes, more than the limit of 4096"
    );
    // The same values resolve to the same child.
    let first: *const _ = family.labels(&["x", "y"]).unwrap();
    let again: *const _ = family.labels(&["x".to_string(), "y".to_string()]).unwrap();
    assert_eq!(first, again);
    assert_eq!(family.children().len(), 1);
}

#[test]
fn gauge_and_counter_operations() {
    let dir = tempfile::tempdir().unwrap();
    let r = Registry::open(dir.path()).unwrap();
    let g = r.gauge("g", "", &[], GaugeMode::LiveSum).unwrap();
    let g = g.unlabelled().unwrap();
    g.set(10.0);
    g.inc();
    g.dec();
    g.dec();
    g.add(2.5);
    g.sub(0.5);
    assert_eq!(g.get(), 11.0);
    let c = r.counter("c", "", &[]).unwrap();
    let c = c.unlabelled().unwrap();
    c.inc();
    c.inc_by(2.0);
    c.inc_by(0.5);
    c.inc_by(-4.0); // ignored: counters never go down
    c.inc_by(f64::NAN); // ignored
    assert_eq!(c.get(), 3.5);
}

#[test]
fn full_segments_continue_in_new_segments() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        initial_segment_size: 4096,
        ..Options::default()
    };
    let r = Registry::open_with(dir.path(), options).unwrap();
    let h = r
        .histogram("h_seconds", "Help.", &["i"], &[1.0; 0])
        .unwrap();
    let c = r.counter("c", "Help.", &["i"]).unwrap();
    for i in 0..300 {
        h.labels(&[i.to_string()]).unwrap().observe(0.1);
        c.labels(&[i.to_string()]).unwrap().inc();
    }
    let paths = r.segment_paths();
    assert!(paths.len() >= 3, "{paths:?}");
    for (i, p) in paths.iter().enumerate() {
        assert!(p.to_str().unwrap().ends_with(&format!("-{i}.shm")), "{p:?}");
    }
    // Each continuation doubles the previous size.
    let sizes: Vec<u64> = paths
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .collect();
    assert_eq!(sizes[0], 4096);
    assert_eq!(sizes[1], 8192);
    assert_eq!(r.dropped_series(), 0);
    for i in 0..300 {
        assert_eq!(c.labels(&[i.to_string()]).unwrap().get(), 1.0);
    }
}

#[test]
fn exhausted_segments_drop_series_without_failing() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        initial_segment_size: 4096,
        max_segment_size: 4096,
        max_segments: 2,
        ..Options::default()
    };
    let r = Registry::open_with(dir.path(), options).unwrap();
    let c = r.counter("c", "", &["i"]).unwrap();
    for i in 0..500 {
        let child = c.labels(&[i.to_string()]).unwrap();
        child.inc();
        assert_eq!(child.get(), 1.0, "a dropped series still counts locally");
    }
    assert_eq!(r.segment_paths().len(), 2);
    assert!(r.dropped_series() > 300, "{}", r.dropped_series());
}

/// A tmpfs too small for a segment: opening fails with `NoSpace` and leaves nothing
/// behind; a continuation that does not fit drops series instead of raising SIGBUS.
/// Mounting needs root, as in CI.
#[test]
fn full_filesystem_fails_at_creation() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test mounts a tmpfs and must run as root (CI does)"
    );
    let base = tempfile::tempdir().unwrap();
    let mount = base.path().join("tiny");
    std::fs::create_dir(&mount).unwrap();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=300k", "tmpfs"])
        .arg(&mount)
        .status()
        .unwrap()
        .success();
    assert!(ok, "mount tmpfs failed");
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0).status();
        }
    }
    let _guard = Unmount(&mount);

    let big = Options {
        initial_segment_size: 1024 * 1024,
        ..Options::default()
    };
    let err = Registry::open_with(&mount, big).unwrap_err();
    assert!(
        matches!(err, Error::NoSpace { size: 1048576, .. }),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with("no space left to reserve 1048576 bytes for segment")
    );
    assert_eq!(
        segments(&mount),
        Vec::<String>::new(),
        "nothing left behind"
    );

    // 256 KiB fits; its 512 KiB continuation does not.
    let r = Registry::open(&mount).unwrap();
    let c = r.counter("c", "", &["i"]).unwrap();
    let mut i = 0;
    while r.dropped_series() == 0 {
        c.labels(&[i.to_string()]).unwrap().inc();
        i += 1;
        assert!(i < 100_000, "never ran out of space");
    }
    assert_eq!(r.segment_paths().len(), 1);
    // Every page of the mapped segment is backed: touching all series cannot SIGBUS.
    for j in 0..i {
        c.labels(&[j.to_string()]).unwrap().inc();
    }
    assert_eq!(segments(&mount).len(), 1);
}

/// `unlabelled()` is the one child of a family without labels, and refuses a family with
/// labels as `labels` with no values does.
#[test]
fn unlabelled_children() {
    let dir = tempfile::tempdir().unwrap();
    let r = Registry::open(dir.path()).unwrap();
    let plain = r.counter("plain", "", &[]).unwrap();
    plain.unlabelled().unwrap().inc_by(2.0);
    assert_eq!(plain.unlabelled().unwrap().get(), 2.0);
    let h = r.histogram("h", "", &[], &[1.0]).unwrap();
    h.unlabelled().unwrap().observe(0.5);
    let totals = h.unlabelled().unwrap().get();
    assert_eq!(
        totals,
        shmetrics_writer::HistogramTotals {
            buckets: vec![1, 0],
            sum: 0.5
        }
    );
    let labelled = r.counter("labelled", "", &["k"]).unwrap();
    let err = labelled.unlabelled().unwrap_err();
    assert_eq!(
        err.to_string(),
        "labels of labelled: 0 label values given for 1 label names"
    );
}

/// Label values come as any iterable of strings: a slice, an array, a `Vec` by value, an
/// iterator; each names the same child, and a wrong count is refused whatever the form.
#[test]
fn label_values_from_any_iterable() {
    let dir = tempfile::tempdir().unwrap();
    let r = Registry::open(dir.path()).unwrap();
    let family = r.counter("req", "", &["method", "code"]).unwrap();
    family.labels(&["get", "200"]).unwrap().inc();
    family.labels(["get", "200"]).unwrap().inc();
    family
        .labels(vec!["get".to_string(), "200".to_string()])
        .unwrap()
        .inc();
    let owned = [String::from("get"), String::from("200")];
    family.labels(owned.iter()).unwrap().inc();
    family.labels("get 200".split(' ')).unwrap().inc();
    assert_eq!(family.children().len(), 1);
    assert_eq!(family.labels(["get", "200"]).unwrap().get(), 5.0);
    let err = family.labels(["get"].iter()).unwrap_err();
    assert!(matches!(err, Error::InvalidLabels { .. }), "{err:?}");
    let err = family.labels(["get", "200", "x"]).unwrap_err();
    assert!(matches!(err, Error::InvalidLabels { .. }), "{err:?}");
}

#[test]
fn options_out_of_range_are_refused_with_what_was_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let defaults = Options::default();
    assert!(defaults.contention_stripes.is_power_of_two());
    assert!((2..=16).contains(&defaults.contention_stripes));
    let refused = [
        Options {
            contention_stripes: 0,
            ..defaults.clone()
        },
        Options {
            contention_stripes: 3,
            ..defaults.clone()
        },
        Options {
            contention_stripes: MAX_STRIPES * 2,
            ..defaults.clone()
        },
        Options {
            initial_segment_size: 5000,
            ..defaults.clone()
        },
        Options {
            max_segments: 0,
            ..defaults.clone()
        },
    ];
    for options in refused {
        let err = Registry::open_with(dir.path(), options.clone()).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidOptions { options: o } if **o == options),
            "{err}"
        );
        let message = err.to_string();
        assert!(
            message.contains("contention_stripes a power of two up to 64"),
            "{message}"
        );
    }
    // Nothing was created for a refused registry.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    for stripes in [1, 2, MAX_STRIPES] {
        let options = Options {
            contention_stripes: stripes,
            ..defaults.clone()
        };
        Registry::open_with(dir.path(), options).unwrap();
    }
}
