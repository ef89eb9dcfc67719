//! The resident identity number (GB 11643-1999): 6-digit region, 8-digit birth date, 3-digit
//! sequence, and an ISO 7064 MOD 11-2 check character.
//!
//! The raw number is personal data. It leaves this module only masked ([`mask`]) or as a keyed
//! digest ([`IdNumber::fingerprint`]) that lets the store find an applicant's open cases without
//! holding the number in an index.

use chrono::NaiveDate;

/// A well-formed identity number: checked length, characters, birth date and check character.
#[derive(Clone, PartialEq, Eq)]
pub struct IdNumber {
    normalized: String,
    birth_date: NaiveDate,
}

impl std::fmt::Debug for IdNumber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IdNumber({})", mask(&self.normalized))
    }
}

/// Why a string is not a valid identity number. Never carries the number itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdNumberError {
    #[error("must be 18 characters")]
    Length,
    #[error("must be 17 digits followed by a digit or X")]
    Characters,
    #[error("birth date is not a real date")]
    BirthDate,
    #[error("check character does not match")]
    CheckCharacter,
}

const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
const CHECK: [char; 11] = ['1', '0', 'X', '9', '8', '7', '6', '5', '4', '3', '2'];

/// The ISO 7064 MOD 11-2 check character of the first 17 digits.
pub fn check_character(first17: &str) -> Option<char> {
    if first17.len() != 17 {
        return None;
    }
    let mut sum = 0;
    for (c, w) in first17.chars().zip(WEIGHTS) {
        sum += c.to_digit(10)? * w;
    }
    Some(CHECK[(sum % 11) as usize])
}

impl IdNumber {
    /// Parses and checks a number; lower-case `x` is accepted and normalised to `X`.
    pub fn parse(raw: &str) -> Result<IdNumber, IdNumberError> {
        if raw.chars().count() != 18 {
            return Err(IdNumberError::Length);
        }
        let normalized = raw.to_ascii_uppercase();
        let (body, last) = normalized.split_at(17);
        if !body.chars().all(|c| c.is_ascii_digit())
            || !last.chars().all(|c| c.is_ascii_digit() || c == 'X')
        {
            return Err(IdNumberError::Characters);
        }
        let birth_date = NaiveDate::parse_from_str(&body[6..14], "%Y%m%d")
            .map_err(|_| IdNumberError::BirthDate)?;
        if check_character(body) != last.chars().next() {
            return Err(IdNumberError::CheckCharacter);
        }
        Ok(IdNumber {
            normalized,
            birth_date,
        })
    }

    /// The birth date the number encodes.
    pub fn birth_date(&self) -> NaiveDate {
        self.birth_date
    }

    /// The number masked for display: `110105********128X`.
    pub fn masked(&self) -> String {
        mask(&self.normalized)
    }

    /// A keyed SHA-256 digest of the normalised number: equal numbers give equal fingerprints,
    /// and without the key the number cannot be recovered by trying the (small) number space.
    pub fn fingerprint(&self, key: &str) -> String {
        crate::sha256_hex(format!("{key}\u{1f}{}", self.normalized).as_bytes())
    }
}

/// Masks an identity number for operators: the first 6 and last 4 characters stay, the birth date
/// and the rest become `*`. Anything that is not 18 characters long is masked but for its last 2.
pub fn mask(raw: &str) -> String {
    let chars: Vec<char> = raw.chars().collect();
    if chars.len() == 18 {
        let head: String = chars[..6].iter().collect();
        let tail: String = chars[14..].iter().collect();
        format!("{head}********{tail}")
    } else {
        let keep = chars.len().min(2);
        let tail: String = chars[chars.len() - keep..].iter().collect();
        format!("{}{tail}", "*".repeat(chars.len() - keep))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_contract_example_is_valid() {
        let id = IdNumber::parse("11010519900307128X").unwrap();
        assert_eq!(
            id.birth_date(),
            NaiveDate::from_ymd_opt(1990, 3, 7).unwrap()
        );
        assert_eq!(id.masked(), "110105********128X");
    }

    #[test]
    fn the_number_in_domain_md_fails_its_check_character() {
        // domain.md §3's example `11010519900307123X`: MOD 11-2 of its first 17 digits gives `9`.
        assert_eq!(check_character("11010519900307123"), Some('9'));
        assert_eq!(
            IdNumber::parse("11010519900307123X"),
            Err(IdNumberError::CheckCharacter)
        );
        assert_eq!(mask("11010519900307123X"), "110105********123X");
    }

    #[test]
    fn lower_case_x_is_accepted() {
        let lower = IdNumber::parse("11010519900307128x").unwrap();
        let upper = IdNumber::parse("11010519900307128X").unwrap();
        assert_eq!(lower, upper);
        assert_eq!(lower.fingerprint("k"), upper.fingerprint("k"));
    }

    #[test]
    fn table_of_invalid_numbers() {
        let rows = [
            ("11010519900307123", IdNumberError::Length),
            ("11010519900307128XX", IdNumberError::Length),
            ("1101051990030712XX", IdNumberError::Characters),
            ("11010519900307A23X", IdNumberError::Characters),
            ("110105199002301230", IdNumberError::BirthDate), // 30 Feb
            ("110105199013011230", IdNumberError::BirthDate), // month 13
            ("110105199003071231", IdNumberError::CheckCharacter),
        ];
        for (raw, want) in rows {
            assert_eq!(IdNumber::parse(raw), Err(want), "{raw}");
        }
    }

    #[test]
    fn check_character_can_be_x_or_digit() {
        assert_eq!(check_character("11010519900307128"), Some('X'));
        assert_eq!(check_character("1101051990030712"), None);
    }

    #[test]
    fn fingerprints_depend_on_key_and_hide_the_number() {
        let id = IdNumber::parse("11010519900307128X").unwrap();
        assert_ne!(id.fingerprint("a"), id.fingerprint("b"));
        assert!(!id.fingerprint("a").contains("110105"));
        assert!(!format!("{id:?}").contains("19900307"));
    }

    #[test]
    fn masking_odd_lengths() {
        assert_eq!(mask("12345"), "***45");
        assert_eq!(mask(""), "");
    }
}
