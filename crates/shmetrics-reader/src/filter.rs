//! Which families an exposition keeps.

/// Which families to keep: those whose name starts with one of the prefixes; all when the
/// list is empty. A filter keeps or drops whole families.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PrefixFilter {
    prefixes: Vec<String>,
}

impl PrefixFilter {
    /// A filter keeping families that start with any of `prefixes` (all if empty).
    pub fn new<S: Into<String>>(prefixes: impl IntoIterator<Item = S>) -> Self {
        Self {
            prefixes: prefixes.into_iter().map(Into::into).collect(),
        }
    }

    /// The prefixes, in the order given (empty: every family is kept).
    pub fn prefixes(&self) -> &[String] {
        &self.prefixes
    }

    /// The prefixes that keep none of the families `names` (a misspelt `--prefix`), in the
    /// order given.
    pub fn unmatched<'a>(&self, names: impl IntoIterator<Item = &'a str> + Clone) -> Vec<&str> {
        self.prefixes
            .iter()
            .filter(|p| !names.clone().into_iter().any(|n| n.starts_with(p.as_str())))
            .map(String::as_str)
            .collect()
    }

    /// When the prefixes keep none of the directory's families `names` (and there are some):
    /// what to tell the user, naming the prefixes (a misspelt `vlm:`, or `VLLM:`: names are
    /// case-sensitive). `None` when some family is kept, or there is no filter or no family.
    /// One of several prefixes matching nothing is normal (`vllm:` and `lmcache:` without
    /// LMCache) and says nothing.
    pub fn keeps_none_warning<'a>(
        &self,
        names: impl IntoIterator<Item = &'a str> + Clone,
    ) -> Option<String> {
        let count = names.clone().into_iter().count();
        if count == 0 || self.prefixes.is_empty() {
            return None;
        }
        let unmatched = self.unmatched(names);
        (unmatched.len() == self.prefixes.len()).then(|| {
            format!(
                "prefixes {} match none of the {count} families in the directory, so none of \
                 them is exposed (names are case-sensitive: vllm:, lmcache:, dynamo_)",
                unmatched.join(", ")
            )
        })
    }

    /// Whether family `name` is kept.
    pub fn keeps(&self, name: &str) -> bool {
        self.prefixes.is_empty() || self.prefixes.iter().any(|p| name.starts_with(p.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unmatched_prefixes_are_named() {
        let names = ["vllm:num_requests_running", "lmcache:num_hit_tokens"];
        let filter = PrefixFilter::new(["vllm:", "vlm:", "dynamo_"]);
        assert_eq!(filter.unmatched(names), ["vlm:", "dynamo_"]);
        assert!(PrefixFilter::new(["lmcache:"]).unmatched(names).is_empty());
        assert!(PrefixFilter::default().unmatched(names).is_empty());
    }

    #[test]
    fn a_filter_keeping_nothing_is_worth_a_warning() {
        let names = ["vllm:num_requests_running", "lmcache:num_hit_tokens"];
        let warning = PrefixFilter::new(["VLLM:", "vlm:"]).keeps_none_warning(names);
        assert_eq!(
            warning.as_deref(),
            Some(
                "prefixes VLLM:, vlm: match none of the 2 families in the directory, so none of \
                 them is exposed (names are case-sensitive: vllm:, lmcache:, dynamo_)"
            )
        );
        let none: [&str; 0] = [];
        for (filter, names) in [
            (PrefixFilter::new(["vllm:", "dynamo_"]), &names[..]),
            (PrefixFilter::default(), &names[..]),
            (PrefixFilter::new(["x"]), &none[..]),
        ] {
            assert_eq!(filter.keeps_none_warning(names.iter().copied()), None);
        }
    }
}
