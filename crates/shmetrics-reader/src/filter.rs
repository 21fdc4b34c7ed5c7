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

    /// Whether family `name` is kept.
    pub fn keeps(&self, name: &str) -> bool {
        self.prefixes.is_empty() || self.prefixes.iter().any(|p| name.starts_with(p.as_str()))
    }
}
