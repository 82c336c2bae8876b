//! Stream entry ids (`<ms>-<seq>`) as two numbers: ordered exactly as Redis orders them, the id
//! right after one (for paging without `(id`, which Redis < 6.2 lacks), and the ids that bound a
//! time. Every command that pages through a stream or bounds it by time uses these.

/// A stream entry id `<ms>-<seq>`, ordered as Redis orders them (both parts as u64, so
/// nothing is lost above 2^53 as it would be in a double).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntryId {
    /// Milliseconds since 1970: the time Redis gave the entry (or the producer's explicit id).
    pub ms: u64,
    /// Orders entries within one millisecond.
    pub seq: u64,
}

impl EntryId {
    /// The lowest id at time `at` (`<ms>-0`); times before 1970 are 0.
    pub fn first_at(at: jiff::Timestamp) -> EntryId {
        EntryId { ms: at.as_millisecond().max(0) as u64, seq: 0 }
    }

    /// The id right after this one (`seq` + 1, or the next millisecond's first); `None` after
    /// the highest possible id.
    pub fn next(self) -> Option<EntryId> {
        match self.seq.checked_add(1) {
            Some(seq) => Some(EntryId { seq, ..self }),
            None => self.ms.checked_add(1).map(|ms| EntryId { ms, seq: 0 }),
        }
    }

    /// The id right before this one; `None` before `0-0`.
    pub fn prev(self) -> Option<EntryId> {
        match self.seq.checked_sub(1) {
            Some(seq) => Some(EntryId { seq, ..self }),
            None => self.ms.checked_sub(1).map(|ms| EntryId { ms, seq: u64::MAX }),
        }
    }
}

impl EntryId {
    /// The highest id at time `at` (`<ms>-<u64::MAX>`), so a range ending there includes every
    /// entry of that millisecond; times before 1970 are 0.
    pub fn last_at(at: jiff::Timestamp) -> EntryId {
        EntryId { ms: at.as_millisecond().max(0) as u64, seq: u64::MAX }
    }
}

/// The id right after `id`, as text: where the next page of a range starts. An id that does not
/// parse, or the highest possible one, is returned as it is.
pub fn after(id: &str) -> String {
    id.parse::<EntryId>().ok().and_then(EntryId::next).map_or_else(|| id.to_string(), |next| next.to_string())
}

impl std::str::FromStr for EntryId {
    type Err = String;

    /// `<ms>-<seq>`, or `<ms>` alone (`<ms>-0`), as Redis reads an id bound.
    fn from_str(s: &str) -> Result<EntryId, String> {
        let (ms, seq) = s.split_once('-').unwrap_or((s, "0"));
        match (ms.parse(), seq.parse()) {
            (Ok(ms), Ok(seq)) => Ok(EntryId { ms, seq }),
            _ => Err(format!("'{s}' is not a stream entry id (<ms>-<seq>)")),
        }
    }
}

impl std::fmt::Display for EntryId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> EntryId {
        s.parse().unwrap()
    }

    #[test]
    fn ids_compare_by_time_then_sequence_exactly_at_the_top_of_u64() {
        assert!(id("5-18446744073709551614") < id("5-18446744073709551615"));
        assert!(id("5-18446744073709551615") < id("6-0"));
        assert!(id("9-1") < id("10-0"), "numbers, not strings");
        assert_eq!(id("7"), id("7-0"));
    }

    #[test]
    fn the_next_id_after_the_highest_sequence_is_the_next_milliseconds_first() {
        assert_eq!(id("5-18446744073709551615").next(), Some(id("6-0")));
        assert_eq!(id("5-3").next(), Some(id("5-4")));
        assert_eq!(id("18446744073709551615-18446744073709551615").next(), None);
    }

    #[test]
    fn the_id_before_a_milliseconds_first_is_the_previous_milliseconds_last() {
        assert_eq!(id("6-0").prev(), Some(id("5-18446744073709551615")));
        assert_eq!(id("0-0").prev(), None);
    }

    #[test]
    fn text_that_is_not_an_id_is_refused() {
        for bad in ["", "x-1", "1-", "1-2-3", "-1-0", "18446744073709551616-0"] {
            assert!(bad.parse::<EntryId>().is_err(), "{bad}");
        }
        assert_eq!(id("1700000000000-3").to_string(), "1700000000000-3");
    }

    #[test]
    fn a_page_starts_right_after_the_last_id_read() {
        assert_eq!(after("5-3"), "5-4");
        assert_eq!(after(&format!("5-{}", u64::MAX)), "6-0");
        assert_eq!(after("nonsense"), "nonsense");
    }
}
