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
}
