//! Metric types and gauge merge modes, with their one-byte wire codes.

use std::fmt;
use std::str::FromStr;

/// The type of a metric family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MetricKind {
    /// A monotonically increasing value, summed over processes.
    Counter,
    /// A value that can go up and down, merged by its [`GaugeMode`].
    Gauge,
    /// Observations counted into buckets, summed per bucket over processes.
    Histogram,
    /// Observation count and sum (as `prometheus_client` keeps them in multiprocess mode).
    Summary,
    /// A set of labels describing something (`prometheus_client`'s `Info`): each series has
    /// the family's labels and the info's own; merged like a gauge of mode `mostrecent` or
    /// `livemostrecent`, the newest info per family label set.
    Info,
    /// One of a fixed list of states (`prometheus_client`'s `Enum`, OpenMetrics' stateset);
    /// merged like a gauge of mode `mostrecent` or `livemostrecent`.
    StateSet,
}

impl MetricKind {
    /// The wire code stored in family records.
    pub const fn code(self) -> u8 {
        match self {
            Self::Counter => 1,
            Self::Gauge => 2,
            Self::Histogram => 3,
            Self::Summary => 4,
            Self::Info => 5,
            Self::StateSet => 6,
        }
    }

    /// Decodes a wire code; `None` for an unknown code.
    pub const fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(Self::Counter),
            2 => Some(Self::Gauge),
            3 => Some(Self::Histogram),
            4 => Some(Self::Summary),
            5 => Some(Self::Info),
            6 => Some(Self::StateSet),
            _ => None,
        }
    }

    /// The name used in OpenMetrics' `# TYPE` lines (and in messages).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
            Self::Summary => "summary",
            Self::Info => "info",
            Self::StateSet => "stateset",
        }
    }

    /// The name used in the text format's `# TYPE` lines: OpenMetrics' info and stateset
    /// are gauges there, as `prometheus_client` writes them.
    pub const fn text_type(self) -> &'static str {
        match self {
            Self::Info | Self::StateSet => "gauge",
            _ => self.as_str(),
        }
    }

    /// Whether families of this kind have a merge mode ([`GaugeMode`]): gauges, infos and
    /// statesets.
    pub const fn has_mode(self) -> bool {
        matches!(self, Self::Gauge | Self::Info | Self::StateSet)
    }

    /// Whether `mode` is one this kind can be merged by: any for a gauge; `mostrecent` or
    /// `livemostrecent` for an info or a stateset (the newest value wins).
    pub const fn allows_mode(self, mode: GaugeMode) -> bool {
        match self {
            Self::Gauge => true,
            Self::Info | Self::StateSet => {
                matches!(mode, GaugeMode::MostRecent | GaugeMode::LiveMostRecent)
            }
            _ => false,
        }
    }

    /// The suffixes of the sample names a family of this kind writes after its name, in
    /// the order the renderers write them (a counter's family name has no `_total`; a
    /// gauge's sample is its name). OpenMetrics adds [`suffix::CREATED`] to some kinds.
    pub const fn sample_suffixes(self) -> &'static [&'static str] {
        match self {
            Self::Counter => &[suffix::TOTAL],
            Self::Gauge => &[""],
            Self::Histogram => &[suffix::BUCKET, suffix::COUNT, suffix::SUM],
            Self::Summary => &[suffix::COUNT, suffix::SUM],
            Self::Info => &[suffix::INFO],
            Self::StateSet => &[""],
        }
    }
}

/// The sample-name suffixes of the exposition formats, each spelled once.
pub mod suffix {
    /// A counter's sample.
    pub const TOTAL: &str = "_total";
    /// A histogram's cumulative bucket counts.
    pub const BUCKET: &str = "_bucket";
    /// A histogram's or a summary's observation count.
    pub const COUNT: &str = "_count";
    /// A histogram's or a summary's observation sum.
    pub const SUM: &str = "_sum";
    /// OpenMetrics' creation time of a counter, histogram or summary series.
    pub const CREATED: &str = "_created";
    /// An info's sample.
    pub const INFO: &str = "_info";
}

impl fmt::Display for MetricKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the values of one gauge series from several processes are merged; the ten modes of
/// `prometheus_client`'s multiprocess mode. The `Live*` variants ignore dead processes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GaugeMode {
    /// One series per process, labelled `pid`, dead processes included.
    All,
    /// One series per live process, labelled `pid`.
    LiveAll,
    /// The smallest value over all processes.
    Min,
    /// The smallest value over live processes.
    LiveMin,
    /// The largest value over all processes.
    Max,
    /// The largest value over live processes.
    LiveMax,
    /// The sum over all processes.
    Sum,
    /// The sum over live processes.
    LiveSum,
    /// The value written most recently, by any process.
    MostRecent,
    /// The value written most recently by a live process.
    LiveMostRecent,
}

impl GaugeMode {
    /// Every mode, in wire-code order.
    pub const ALL: [GaugeMode; 10] = [
        Self::All,
        Self::LiveAll,
        Self::Min,
        Self::LiveMin,
        Self::Max,
        Self::LiveMax,
        Self::Sum,
        Self::LiveSum,
        Self::MostRecent,
        Self::LiveMostRecent,
    ];

    /// The wire code stored in family records.
    pub const fn code(self) -> u8 {
        match self {
            Self::All => 0,
            Self::LiveAll => 1,
            Self::Min => 2,
            Self::LiveMin => 3,
            Self::Max => 4,
            Self::LiveMax => 5,
            Self::Sum => 6,
            Self::LiveSum => 7,
            Self::MostRecent => 8,
            Self::LiveMostRecent => 9,
        }
    }

    /// Decodes a wire code; `None` for an unknown code.
    pub const fn from_code(code: u8) -> Option<Self> {
        if (code as usize) < Self::ALL.len() {
            Some(Self::ALL[code as usize])
        } else {
            None
        }
    }

    /// The `prometheus_client` spelling (`"livesum"`, `"mostrecent"`, ...).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::LiveAll => "liveall",
            Self::Min => "min",
            Self::LiveMin => "livemin",
            Self::Max => "max",
            Self::LiveMax => "livemax",
            Self::Sum => "sum",
            Self::LiveSum => "livesum",
            Self::MostRecent => "mostrecent",
            Self::LiveMostRecent => "livemostrecent",
        }
    }

    /// Whether only live processes contribute.
    pub const fn live_only(self) -> bool {
        matches!(
            self,
            Self::LiveAll | Self::LiveMin | Self::LiveMax | Self::LiveSum | Self::LiveMostRecent
        )
    }

    /// Whether each write must carry a timestamp (the `mostrecent` modes).
    pub const fn needs_timestamp(self) -> bool {
        matches!(self, Self::MostRecent | Self::LiveMostRecent)
    }
}

impl fmt::Display for GaugeMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error for an unknown gauge mode name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownGaugeMode(pub String);

impl fmt::Display for UnknownGaugeMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown gauge mode {:?}; expected one of all, liveall, min, livemin, max, livemax, sum, livesum, mostrecent, livemostrecent",
            self.0
        )
    }
}

impl std::error::Error for UnknownGaugeMode {}

impl FromStr for GaugeMode {
    type Err = UnknownGaugeMode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| UnknownGaugeMode(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for mode in GaugeMode::ALL {
            assert_eq!(GaugeMode::from_code(mode.code()), Some(mode));
            assert_eq!(mode.as_str().parse::<GaugeMode>(), Ok(mode));
        }
        assert_eq!(GaugeMode::from_code(10), None);
        for kind in [
            MetricKind::Counter,
            MetricKind::Gauge,
            MetricKind::Histogram,
            MetricKind::Summary,
            MetricKind::Info,
            MetricKind::StateSet,
        ] {
            assert_eq!(MetricKind::from_code(kind.code()), Some(kind));
        }
        assert_eq!(MetricKind::from_code(7), None);
        assert_eq!(MetricKind::from_code(0), None);
        assert!("latest".parse::<GaugeMode>().is_err());
    }

    #[test]
    fn live_modes() {
        let live: Vec<_> = GaugeMode::ALL
            .into_iter()
            .filter(|m| m.live_only())
            .collect();
        assert_eq!(
            live,
            [
                GaugeMode::LiveAll,
                GaugeMode::LiveMin,
                GaugeMode::LiveMax,
                GaugeMode::LiveSum,
                GaugeMode::LiveMostRecent
            ]
        );
    }
}
