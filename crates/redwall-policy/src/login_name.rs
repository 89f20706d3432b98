//! The one spelling of a login name that the throttle counts against.
//!
//! A directory compares login names with its matching rules, so every
//! spelling it treats as the same user must land on the same throttle record;
//! otherwise each spelling gets its own free failures. LDAP's usual rules for
//! `uid`, `cn` and `mail` (caseIgnoreMatch, caseIgnoreIA5Match) prepare both
//! sides as RFC 4518 says: compatibility normalisation (NFKC), some
//! characters mapped to nothing and every kind of space to a space, case
//! folded, and spaces made insignificant (none leading or trailing, a run
//! inside counting as one). Local accounts compare lowercased, which this
//! includes. Merging more spellings than a directory does only makes the
//! throttle stricter, never looser.

use unicode_normalization::UnicodeNormalization;

/// The normalised form of `name` (see the module documentation).
pub fn throttle_name(name: &str) -> String {
    let mapped: String = name
        .chars()
        .filter(|c| !maps_to_nothing(*c))
        .map(|c| if is_space(c) { ' ' } else { c })
        .collect();
    // Case folding after NFKC, then NFKC again: lowercasing can produce
    // sequences that compose differently.
    let folded: String = mapped.nfkc().collect::<String>().to_lowercase();
    let folded: String = folded.nfkc().collect();
    let mut out = String::with_capacity(folded.len());
    for word in folded.split(' ').filter(|w| !w.is_empty()) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

/// RFC 4518 2.2: soft hyphen, joiners, variation selectors, object
/// replacement, byte order mark and control characters other than the
/// spacing ones are removed before comparing.
fn maps_to_nothing(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{1806}'
            | '\u{180B}'..='\u{180E}'
            | '\u{200B}'..='\u{200D}'
            | '\u{2060}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{FFFC}'
    ) || (c.is_control() && !is_space(c))
}

/// RFC 4518 2.2: tab, line and form feeds, carriage return, next line and
/// every space separator map to SPACE.
fn is_space(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\u{000B}' | '\u{000C}' | '\r' | '\u{0085}')
        || matches!(
            c,
            ' ' | '\u{00A0}' | '\u{1680}' | '\u{2000}'
                ..='\u{200A}' | '\u{2028}' | '\u{2029}' | '\u{202F}' | '\u{205F}' | '\u{3000}'
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn spellings_a_directory_treats_alike_are_one_name() {
        for spelling in [
            "bob",
            "BOB",
            " bob",
            "bob         ",
            "  Bob  ",
            "\tbob\n",
            "b\u{00AD}ob",
            "b\u{200B}ob",
            "\u{FF42}\u{FF4F}\u{FF42}", // fullwidth
            "bob\u{3000}",
        ] {
            assert_eq!(throttle_name(spelling), "bob", "{spelling:?}");
        }
    }

    #[test]
    fn inner_runs_of_spaces_count_as_one() {
        assert_eq!(throttle_name("Bob   Smith"), "bob smith");
        assert_eq!(throttle_name(" bob \u{00A0} smith "), "bob smith");
    }

    #[test]
    fn different_names_stay_different() {
        assert_ne!(throttle_name("bob"), throttle_name("bobby"));
        assert_ne!(throttle_name("bob smith"), throttle_name("bobsmith"));
        assert_ne!(throttle_name("alice"), throttle_name("al1ce"));
    }

    proptest! {
        #[test]
        fn normalising_twice_changes_nothing(s in "\\PC{0,24}") {
            let once = throttle_name(&s);
            prop_assert_eq!(throttle_name(&once), once.clone());
        }

        #[test]
        fn padding_and_case_never_matter(s in "[a-zA-Z0-9._@-]{1,20}", l in 0usize..4, r in 0usize..4) {
            let padded = format!("{}{}{}", " ".repeat(l), s.to_uppercase(), " ".repeat(r));
            prop_assert_eq!(throttle_name(&padded), throttle_name(&s));
        }
    }
}
