//! Per-metric settings chosen by name: an exact name wins over a prefix, a longer prefix
//! over a shorter one, and the default applies to the rest.

use std::collections::HashMap;

/// Settings of type `T` by metric name or name prefix, with a default.
#[derive(Clone, Debug)]
pub(crate) struct Rules<T> {
    default: T,
    exact: HashMap<String, T>,
    /// Sorted longest first, so the first match is the longest.
    prefixes: Vec<(String, T)>,
}

impl<T> Rules<T> {
    pub(crate) fn new(default: T) -> Self {
        Self {
            default,
            exact: HashMap::new(),
            prefixes: Vec::new(),
        }
    }

    pub(crate) fn set_default(&mut self, value: T) {
        self.default = value;
    }

    pub(crate) fn set_exact(&mut self, name: String, value: T) {
        self.exact.insert(name, value);
    }

    pub(crate) fn set_prefix(&mut self, prefix: String, value: T) {
        self.prefixes.retain(|(p, _)| *p != prefix);
        self.prefixes.push((prefix, value));
        self.prefixes
            .sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
    }

    /// The setting for `name`.
    pub(crate) fn get(&self, name: &str) -> &T {
        self.exact
            .get(name)
            .or_else(|| {
                self.prefixes
                    .iter()
                    .find(|(p, _)| name.starts_with(p.as_str()))
                    .map(|(_, v)| v)
            })
            .unwrap_or(&self.default)
    }

    /// Every value set, default first.
    pub(crate) fn values(&self) -> impl Iterator<Item = &T> {
        std::iter::once(&self.default)
            .chain(self.exact.values())
            .chain(self.prefixes.iter().map(|(_, v)| v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_beats_longest_prefix_beats_default() {
        let mut rules = Rules::new(0);
        rules.set_prefix("vllm:".into(), 1);
        rules.set_prefix("vllm:request_".into(), 2);
        rules.set_exact("vllm:request_latency".into(), 3);
        rules.set_prefix("vllm:".into(), 4); // replaces the earlier rule
        assert_eq!(*rules.get("other"), 0);
        assert_eq!(*rules.get("vllm:tokens"), 4);
        assert_eq!(*rules.get("vllm:request_queue"), 2);
        assert_eq!(*rules.get("vllm:request_latency"), 3);
        assert_eq!(*rules.get("vllm:request_latency_x"), 2);
        rules.set_default(9);
        assert_eq!(*rules.get("other"), 9);
        assert_eq!(rules.values().count(), 4);
    }
}
