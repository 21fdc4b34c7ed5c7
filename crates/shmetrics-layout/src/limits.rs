//! Exposition limits: the most labels, label bytes and buckets one family or series may
//! have. No real workload comes near them (the widest histogram of vLLM, LMCache and Dynamo
//! has 22 buckets, and their label sets hold at most 5 short values); they exist so that one
//! series renders in a bounded number of bytes, [`MAX_SERIES_TEXT`], whatever a process
//! declares. A writer refuses a family or label set over a limit when it is registered or
//! created; a reader leaves out, and reports, what another tool wrote over them.
//! `docs/limits.md` lists them with the budgets a scrape applies on top.

use crate::DefinitionError;

/// Most labels one family may declare.
pub const MAX_LABELS: usize = 32;
/// Longest label value, in bytes.
pub const MAX_LABEL_VALUE_LEN: usize = 4 * 1024;
/// Most bytes of label names and values together in one series.
pub const MAX_LABEL_SET_LEN: usize = 8 * 1024;
/// Most finite bucket bounds one histogram may declare.
pub const MAX_BUCKETS: usize = 256;
/// Most states one stateset may declare.
pub const MAX_STATES: usize = MAX_BUCKETS;
/// Longest state, in bytes.
pub const MAX_STATE_LEN: usize = 256;

/// An upper bound of the bytes one series renders in either format: its sample lines
/// (`MAX_BUCKETS` + 1 buckets, `_count`, `_sum`, `_created`; a stateset's at most
/// [`MAX_STATES`] states), each at most a name, a suffix, the label set escaped (every byte
/// doubled at worst, plus quotes, `=` and commas), a `pid` label, the `le` label or a state
/// label, and a value. About 4.4 MiB.
pub const MAX_SERIES_TEXT: usize = {
    let name = crate::names::MAX_NAME_LEN + crate::suffix::BUCKET.len();
    let labels = 2 * MAX_LABEL_SET_LEN + 4 * MAX_LABELS + "{}".len();
    let pid = ",pid=\"4294967295\"".len();
    // The widest extra label: a bucket's `le`, or a stateset's state under the family's
    // name (escaped, every byte doubled at worst).
    let le = {
        let le = ",le=\"-1.7976931348623157e+308\"".len();
        let state = 1 + 2 * crate::names::MAX_NAME_LEN + 3 + 2 * MAX_STATE_LEN;
        if le > state { le } else { state }
    };
    let value = " -1.7976931348623157e+308\n".len();
    (MAX_BUCKETS + 4) * (name + labels + pid + le + value)
};

const _: () = assert!(
    MAX_SERIES_TEXT < 5 << 20,
    "one series renders in under 5 MiB"
);

/// Checks a family's label names and buckets against the limits; the error says which
/// limit and by how much.
pub fn check_family(
    name: &str,
    label_names: &[String],
    bounds: &[f64],
) -> Result<(), DefinitionError> {
    let family = || Box::from(name);
    if label_names.len() > MAX_LABELS {
        return Err(DefinitionError::TooManyLabels {
            family: family(),
            count: label_names.len(),
        });
    }
    if bounds.len() > MAX_BUCKETS {
        return Err(DefinitionError::TooManyBuckets {
            family: family(),
            count: bounds.len(),
        });
    }
    let bytes: usize = label_names.iter().map(String::len).sum();
    if bytes > MAX_LABEL_SET_LEN {
        return Err(DefinitionError::LabelNamesTooLong {
            family: family(),
            bytes,
        });
    }
    Ok(())
}

/// Checks a stateset's states against the limits (none for other kinds).
pub fn check_states(name: &str, states: &[String]) -> Result<(), DefinitionError> {
    if states.len() > MAX_STATES {
        return Err(DefinitionError::TooManyStates {
            family: Box::from(name),
            count: states.len(),
        });
    }
    if let Some(s) = states.iter().find(|s| s.len() > MAX_STATE_LEN) {
        return Err(DefinitionError::StateTooLong {
            family: Box::from(name),
            len: s.len(),
        });
    }
    Ok(())
}

/// Checks an info series' labels (its family's values, then its own names and values)
/// against the limits: at most [`MAX_LABELS`] labels, [`MAX_LABEL_SET_LEN`] bytes.
pub fn check_info_set<S: AsRef<str>>(
    label_names: &[String],
    values: &[S],
) -> Result<(), DefinitionError> {
    let count = label_names.len() + values.len().saturating_sub(label_names.len()) / 2;
    if count > MAX_LABELS {
        return Err(DefinitionError::TooManyInfoLabels { count });
    }
    // Names and values alike are bytes of the set.
    check_label_set(label_names, values)
}

/// Checks one series' label values (as many as `label_names`) against the limits.
pub fn check_label_set<S: AsRef<str>>(
    label_names: &[String],
    values: &[S],
) -> Result<(), DefinitionError> {
    let mut bytes: usize = label_names.iter().map(String::len).sum();
    for v in values {
        let len = v.as_ref().len();
        if len > MAX_LABEL_VALUE_LEN {
            return Err(DefinitionError::LabelValueTooLong { len });
        }
        bytes += len;
    }
    if bytes > MAX_LABEL_SET_LEN {
        return Err(DefinitionError::LabelSetTooLong { bytes });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize, len: usize) -> Vec<String> {
        (0..n).map(|i| format!("{i:0>len$}")).collect()
    }

    /// The error's message, as users see it.
    fn message<T>(r: Result<T, DefinitionError>) -> String {
        r.err().expect("an error").to_string()
    }

    #[test]
    fn families_at_the_limits_pass_and_one_more_fails() {
        let bounds: Vec<f64> = (0..MAX_BUCKETS).map(|i| i as f64).collect();
        assert_eq!(check_family("h", &names(MAX_LABELS, 8), &bounds), Ok(()));
        let over = check_family("h", &names(MAX_LABELS + 1, 8), &[]);
        assert_eq!(
            over,
            Err(DefinitionError::TooManyLabels {
                family: "h".into(),
                count: 33
            })
        );
        assert_eq!(
            message(over),
            "h declares 33 labels, more than the limit of 32"
        );
        let over: Vec<f64> = (0..=MAX_BUCKETS).map(|i| i as f64).collect();
        assert_eq!(
            message(check_family("h", &[], &over)),
            "h has 257 buckets, more than the limit of 256"
        );
        // 32 names of 257 bytes: more name bytes than a whole label set may hold.
        let long = names(MAX_LABELS, 257);
        assert_eq!(
            message(check_family("h", &long, &[])),
            "the label names of h take 8224 bytes, more than the limit of 8192 for a label set"
        );
    }

    #[test]
    fn label_sets_are_limited_per_value_and_in_total() {
        let two = names(2, 1);
        let max = "v".repeat(MAX_LABEL_VALUE_LEN);
        assert_eq!(check_label_set(&two, &[&max, "x"]), Ok(()));
        assert_eq!(
            message(check_label_set(&two, &[format!("{max}v"), String::new()])),
            "a label value of 4097 bytes, more than the limit of 4096"
        );
        // Two values at the limit plus the names' 2 bytes: 8194 > 8192.
        assert_eq!(
            check_label_set(&two, &[&max, &max]),
            Err(DefinitionError::LabelSetTooLong { bytes: 8194 })
        );
        assert_eq!(
            message(check_label_set(&two, &[&max, &max])),
            "label names and values of 8194 bytes, more than the limit of 8192 for a label set"
        );
    }
}
