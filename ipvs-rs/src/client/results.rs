//! [`BatchResults`]: what a batch of operations returns, one result per operation, held as the
//! failures alone.

use super::error::{Error, Result};

/// The results of a batch of operations ([`Ipvs::apply_batch`](crate::Ipvs::apply_batch)):
/// one per operation, in the operations' order, kept as the failed ones alone, so that a
/// batch of 60,000 operations that all succeed returns a few words instead of 60,000
/// results (an [`Error`] is about a hundred bytes).
///
/// Read it as the sequence of results ([`BatchResults::iter`], or owned through
/// `IntoIterator`), by position ([`BatchResults::get`]), or by its failures
/// ([`BatchResults::failures`]).
///
/// ```
/// # fn show(results: ipvs::BatchResults, ops: &[ipvs::codec::Operation]) {
/// if !results.all_succeeded() {
///     for (index, error) in results.failures() {
///         eprintln!("{:?}: {error}", ops[index]);
///     }
/// }
/// # }
/// ```
#[derive(Debug, Default)]
pub struct BatchResults {
    len: usize,
    /// The failed operations' positions (increasing) and errors.
    failures: Vec<(usize, Error)>,
}

impl BatchResults {
    /// Adds the next operation's result.
    pub(crate) fn push(&mut self, result: Result<()>) {
        if let Err(e) = result {
            self.failures.push((self.len, e));
        }
        self.len += 1;
    }

    /// How many results: one per operation.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the batch had no operation.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether every operation succeeded.
    pub fn all_succeeded(&self) -> bool {
        self.failures.is_empty()
    }

    /// The failed operations: each one's position in the batch and its error, in order.
    pub fn failures(&self) -> impl ExactSizeIterator<Item = (usize, &Error)> + '_ {
        self.failures.iter().map(|(index, error)| (*index, error))
    }

    /// The failed operations, owned (see [`BatchResults::failures`]).
    pub fn into_failures(self) -> Vec<(usize, Error)> {
        self.failures
    }

    /// The result of the operation at `index`; `None` past the last one.
    pub fn get(&self, index: usize) -> Option<std::result::Result<(), &Error>> {
        if index >= self.len {
            return None;
        }
        Some(
            match self.failures.binary_search_by_key(&index, |(at, _)| *at) {
                Ok(found) => Err(&self.failures[found].1),
                Err(_) => Ok(()),
            },
        )
    }

    /// Every result, in the operations' order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = std::result::Result<(), &Error>> + '_ {
        let mut failures = self.failures.iter().peekable();
        (0..self.len).map(
            move |index| match failures.next_if(|(at, _)| *at == index) {
                Some((_, error)) => Err(error),
                None => Ok(()),
            },
        )
    }
}

impl IntoIterator for BatchResults {
    type Item = Result<()>;
    type IntoIter = IntoIter;

    /// Every result, owned, in the operations' order.
    fn into_iter(self) -> IntoIter {
        IntoIter {
            index: 0,
            len: self.len,
            failures: self.failures.into_iter().peekable(),
        }
    }
}

/// The results of a [`BatchResults`], owned, in order.
#[derive(Debug)]
pub struct IntoIter {
    index: usize,
    len: usize,
    failures: std::iter::Peekable<std::vec::IntoIter<(usize, Error)>>,
}

impl Iterator for IntoIter {
    type Item = Result<()>;

    fn next(&mut self) -> Option<Result<()>> {
        if self.index >= self.len {
            return None;
        }
        let index = self.index;
        self.index += 1;
        Some(match self.failures.next_if(|(at, _)| *at == index) {
            Some((_, error)) => Err(error),
            None => Ok(()),
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.len - self.index;
        (left, Some(left))
    }
}

impl ExactSizeIterator for IntoIter {}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(what: &str) -> Error {
        Error::Transport {
            operation: what.into(),
            source: crate::transport::TransportError::Protocol {
                description: "test".into(),
            },
        }
    }

    fn sample() -> BatchResults {
        let mut results = BatchResults::default();
        for i in 0..6 {
            results.push(if i == 1 || i == 4 {
                Err(failure(&format!("op {i}")))
            } else {
                Ok(())
            });
        }
        results
    }

    #[test]
    fn the_results_read_the_same_every_way() {
        let results = sample();
        assert_eq!(results.len(), 6);
        assert!(!results.all_succeeded());
        let oks: Vec<bool> = results.iter().map(|r| r.is_ok()).collect();
        assert_eq!(oks, [true, false, true, true, false, true]);
        for (i, ok) in oks.iter().enumerate() {
            assert_eq!(results.get(i).map(|r| r.is_ok()), Some(*ok));
        }
        assert!(results.get(6).is_none());
        let failed: Vec<(usize, String)> = results
            .failures()
            .map(|(i, e)| (i, e.to_string()))
            .collect();
        assert_eq!(failed[0].0, 1);
        assert!(failed[1].1.starts_with("op 4"), "{failed:?}");
        let owned: Vec<String> = results
            .into_iter()
            .map(|r| r.map_or_else(|e| e.to_string(), |()| "ok".into()))
            .collect();
        assert_eq!(owned.len(), 6);
        assert!(owned[4].starts_with("op 4"));
        assert_eq!(owned[5], "ok");
    }

    #[test]
    fn successes_take_no_room() {
        let mut results = BatchResults::default();
        for _ in 0..100_000 {
            results.push(Ok(()));
        }
        assert!(results.all_succeeded());
        assert_eq!(results.len(), 100_000);
        assert_eq!(results.failures.capacity(), 0);
        assert_eq!(results.into_iter().len(), 100_000);
        assert!(BatchResults::default().is_empty());
    }
}
