//! check's strict readings: PROTOCOL.md's exact words, where a client
//! would be tolerant, so a departure can be named.

use super::{Dialect, parse_index, shorten};

/// The strict reading of a list: PROTOCOL.md's exact words, `INDEX DAY
/// TIME` triples separated by single spaces, indexes positive and rising.
/// Returns the indexes.
///
/// # Errors
///
/// What departs from that form, named.
pub fn strict_listing(answer: &str) -> Result<Vec<u64>, String> {
    let words: Vec<&str> = answer.split(' ').collect();
    if words.iter().any(|w| w.is_empty()) || !words.len().is_multiple_of(3) {
        return Err(format!(
            "expected 'INDEX DAY TIME' triples separated by single spaces ({} words)",
            words.len()
        ));
    }
    let mut indexes = Vec::with_capacity(words.len() / 3);
    for triple in words.chunks_exact(3) {
        let index = parse_index(triple[0])
            .map_err(|_| format!("'{}' is not a slot index", shorten(triple[0])))?;
        if indexes.last().is_some_and(|&last| last >= index) {
            return Err(format!("index {index} is out of order"));
        }
        indexes.push(index);
    }
    Ok(indexes)
}

/// The strict reading of a list in `dialect`: a classic list also follows
/// its last triple with a space, as the seed center sends it and the seed
/// patient needs it (PROTOCOL.md).
///
/// # Errors
///
/// What departs from that form, named.
pub fn strict_listing_for(dialect: Dialect, answer: &str) -> Result<Vec<u64>, String> {
    match dialect {
        Dialect::Line => strict_listing(answer),
        Dialect::Classic => match answer.strip_suffix(' ') {
            Some(triples) => strict_listing(triples),
            None => Err(
                "expected a space after every triple, the last one too (the seed patient crashes without it)"
                    .into(),
            ),
        },
    }
}

/// The strict reading of a grant: `DOCTOR PORT` exactly.
pub fn strict_assignment(answer: &str) -> Option<(String, u16)> {
    let (doctor, port) = answer.split_once(' ')?;
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    (!doctor.is_empty() && !doctor.contains(' ')).then(|| (doctor.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_strict_list_is_exact() {
        assert_eq!(strict_listing("1 Tue 01pm 2 Mon 03pm"), Ok(vec![1, 2]));
        assert!(strict_listing("1 Tue 01pm  2 Mon 03pm").is_err());
        assert!(strict_listing("1 Tue 01pm 2 Mon").is_err());
        assert!(strict_listing("2 Tue 01pm 1 Mon 03pm").is_err());
        assert!(strict_listing("x Tue 01pm").is_err());
        assert!(strict_listing("").is_err());
    }

    #[test]
    fn the_strict_classic_list_ends_in_a_space() {
        assert_eq!(
            strict_listing_for(Dialect::Classic, "1 Tue 01pm 2 Mon 03pm "),
            Ok(vec![1, 2])
        );
        assert!(strict_listing_for(Dialect::Classic, "1 Tue 01pm 2 Mon 03pm").is_err());
        assert!(strict_listing_for(Dialect::Line, "1 Tue 01pm ").is_err());
    }

    #[test]
    fn the_strict_grant_is_doctor_and_port() {
        assert_eq!(
            strict_assignment("doc1 41720"),
            Some(("doc1".into(), 41720))
        );
        assert_eq!(strict_assignment("41720"), None);
        assert_eq!(strict_assignment("doc1 0"), None);
        assert_eq!(strict_assignment("doc1  41720"), None);
    }
}
