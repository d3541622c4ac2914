//! Keeping label values bounded: whatever a client sends, each label has
//! a small, fixed set of possible values.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};

/// Value a folded label takes once its budget is spent, or when the raw
/// value is unusable.
pub const OTHER: &str = "other";

/// Longest raw value that may become a label of its own.
pub const MAX_LABEL_LEN: usize = 128;

/// The HTTP method as a label: one of the methods aiproxy serves, or
/// `OTHER` (upper case, as methods are).
pub fn method(raw: &str) -> &'static str {
    const KNOWN: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"];
    KNOWN
        .iter()
        .find(|m| m.eq_ignore_ascii_case(raw))
        .copied()
        .unwrap_or("OTHER")
}

/// The status code as a label: 100-599 as is; 0 (nothing was sent, the
/// client went away first) becomes 499 as in nginx; anything else 500.
pub fn status(code: u16) -> u16 {
    match code {
        100..=599 => code,
        0 => 499,
        _ => 500,
    }
}

/// Maps free-form strings (model names, instance ids) to label values,
/// giving each of the first `limit` distinct acceptable values a label of
/// its own and folding everything after that into [`OTHER`].
///
/// Values named up front (the configured models) always keep their own
/// label and do not use the budget. The hot path is a read lock and a
/// hash lookup returning a shared `Arc<str>`; the write lock is taken only
/// the first time a value is seen, at most `limit` times in all.
#[derive(Debug)]
pub struct LabelFolder {
    limit: usize,
    learned: RwLock<Learned>,
    other: Arc<str>,
}

#[derive(Debug, Default)]
struct Learned {
    set: HashSet<Arc<str>>,
    /// Values admitted from traffic (those named up front do not count).
    admitted: usize,
}

impl LabelFolder {
    /// A folder admitting up to `limit` values beyond `known`.
    pub fn new<I, S>(limit: usize, known: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut learned = Learned::default();
        for k in known {
            let k = k.as_ref();
            if acceptable(k) {
                learned.set.insert(Arc::from(k));
            }
        }
        Self {
            limit,
            learned: RwLock::new(learned),
            other: Arc::from(OTHER),
        }
    }

    /// The label value for `raw`.
    pub fn fold(&self, raw: &str) -> Arc<str> {
        {
            let learned = self.learned.read().unwrap_or_else(|e| e.into_inner());
            if let Some(k) = learned.set.get(raw) {
                return Arc::clone(k);
            }
            if learned.admitted >= self.limit || !acceptable(raw) {
                return Arc::clone(&self.other);
            }
        }
        let mut learned = self.learned.write().unwrap_or_else(|e| e.into_inner());
        if let Some(k) = learned.set.get(raw) {
            return Arc::clone(k);
        }
        if learned.admitted >= self.limit {
            return Arc::clone(&self.other);
        }
        let value: Arc<str> = Arc::from(raw);
        learned.set.insert(Arc::clone(&value));
        learned.admitted += 1;
        value
    }

    /// Gives `known` values a label of their own, outside the budget (the
    /// models of a reloaded configuration).
    pub fn know<S: AsRef<str>>(&self, known: &[S]) {
        let mut learned = self.learned.write().unwrap_or_else(|e| e.into_inner());
        for k in known {
            let k = k.as_ref();
            if acceptable(k) && !learned.set.contains(k) {
                learned.set.insert(Arc::from(k));
            }
        }
    }

    /// Number of distinct values that have a label of their own.
    pub fn len(&self) -> usize {
        self.learned
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .set
            .len()
    }

    /// Whether no value has a label of its own yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Whether `raw` may be a label value of its own: non-empty, short, not
/// the fold value itself, and made of the characters model names and ids
/// use (so a label never carries quotes, spaces or control characters).
fn acceptable(raw: &str) -> bool {
    !raw.is_empty()
        && raw.len() <= MAX_LABEL_LEN
        && raw != OTHER
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/@+".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values_added_later_keep_their_own_label() {
        let folder = LabelFolder::new(0, ["a"]);
        assert_eq!(&*folder.fold("b"), OTHER);
        folder.know(&["b", "bad value"]);
        assert_eq!(&*folder.fold("b"), "b");
        assert_eq!(&*folder.fold("a"), "a");
        assert_eq!(&*folder.fold("bad value"), OTHER);
        assert_eq!(&*folder.fold("c"), OTHER, "no budget for the unknown");
    }

    #[test]
    fn methods_fold_to_a_known_set() {
        assert_eq!(method("GET"), "GET");
        assert_eq!(method("post"), "POST");
        assert_eq!(method("BREW"), "OTHER");
        assert_eq!(method(""), "OTHER");
    }

    #[test]
    fn statuses_stay_three_digits() {
        assert_eq!(status(200), 200);
        assert_eq!(status(0), 499);
        assert_eq!(status(42), 500);
        assert_eq!(status(1000), 500);
    }

    #[test]
    fn folder_admits_up_to_the_limit_then_folds() {
        let f = LabelFolder::new(2, ["gpt-4o"]);
        assert_eq!(&*f.fold("gpt-4o"), "gpt-4o");
        assert_eq!(&*f.fold("a"), "a");
        assert_eq!(&*f.fold("b"), "b");
        assert_eq!(&*f.fold("c"), OTHER);
        assert_eq!(&*f.fold("a"), "a", "admitted values keep their label");
        assert_eq!(&*f.fold("gpt-4o"), "gpt-4o");
        assert_eq!(f.len(), 3);
    }

    #[test]
    fn unusable_values_fold_without_spending_the_budget() {
        let f = LabelFolder::new(1, Vec::<String>::new());
        assert_eq!(&*f.fold("bad\"quote"), OTHER);
        assert_eq!(&*f.fold("new\nline"), OTHER);
        assert_eq!(&*f.fold(""), OTHER);
        assert_eq!(&*f.fold(&"x".repeat(MAX_LABEL_LEN + 1)), OTHER);
        assert_eq!(&*f.fold("other"), OTHER);
        assert_eq!(
            &*f.fold("models/gemini-2.5-pro@001"),
            "models/gemini-2.5-pro@001"
        );
    }

    #[test]
    fn folding_is_bounded_under_concurrency() {
        let f = LabelFolder::new(100, Vec::<String>::new());
        std::thread::scope(|s| {
            for t in 0..4 {
                let f = &f;
                s.spawn(move || {
                    for i in 0..1000 {
                        f.fold(&format!("model-{t}-{i}"));
                    }
                });
            }
        });
        assert_eq!(f.len(), 100);
    }
}
