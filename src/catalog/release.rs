//! Debian `Release` files: the text of an `InRelease` (or `Release`) after its
//! signature has been verified and the armour taken off. One deb822 paragraph: the
//! archive's `Origin`, `Suite`, `Codename`, its `Date` and `Valid-Until`, and under
//! `SHA256:` the digest and size of every index file the release covers.
//!
//! Bounds: the text is at most [`MAX_RELEASE_BYTES`], a line at most
//! [`MAX_LINE_BYTES`], and `SHA256:` lists at most [`MAX_FILES`] files (bookworm's
//! lists about 800). Nothing is allocated beyond a copy of what is kept.
//!
//! The deb822 line reader here is shared with `catalog::debpkg` (`Packages` indexes
//! are deb822 too).

use std::collections::BTreeMap;

/// The largest `Release` text taken (bookworm's is 150 KB, Ubuntu's about 250 KB).
pub const MAX_RELEASE_BYTES: usize = 32 << 20;
/// The longest line taken in a deb822 file (`Release` or `Packages`: bookworm's
/// `Packages` has a 75 KB `Provides:` line). Lines are not copied.
pub const MAX_LINE_BYTES: usize = 1 << 20;
/// The most files taken under `SHA256:`.
pub const MAX_FILES: usize = 100_000;

/// Why a `Release` text was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FormatError {
    #[error("Release text is {size} bytes, more than the {max} taken")]
    TooLarge { size: usize, max: usize },
    #[error(
        "Release text is still clearsigned: verify the signature and pass the signed text only"
    )]
    Clearsigned,
    #[error("Release line {line}: {what}")]
    Line { line: usize, what: String },
    #[error("Release has no {0} field")]
    MissingField(&'static str),
    #[error("Release lists more than {0} files under SHA256")]
    TooManyFiles(usize),
}

/// One file a release covers: its sha256 (lower-case hex) and size in bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    pub sha256: String,
    pub size: u64,
}

/// A parsed `Release`.
#[derive(Debug, Clone)]
pub struct Release {
    pub origin: Option<String>,
    pub suite: Option<String>,
    pub codename: Option<String>,
    /// `Date:`, unix seconds.
    pub date: i64,
    /// `Valid-Until:`, unix seconds, where the release has one.
    pub valid_until: Option<i64>,
    /// Every field's first line, by lower-cased name.
    fields: BTreeMap<String, String>,
    sha256: BTreeMap<String, FileEntry>,
}

impl Release {
    /// Parses the signed text of an `InRelease` or a `Release` file.
    pub fn parse(text: &str) -> Result<Release, FormatError> {
        if text.len() > MAX_RELEASE_BYTES {
            return Err(FormatError::TooLarge {
                size: text.len(),
                max: MAX_RELEASE_BYTES,
            });
        }
        if text.starts_with("-----BEGIN PGP") {
            return Err(FormatError::Clearsigned);
        }
        let mut fields: BTreeMap<String, String> = BTreeMap::new();
        let mut sha256: BTreeMap<String, FileEntry> = BTreeMap::new();
        let mut current: Option<String> = None;
        let mut date_line = 0;
        let mut valid_until_line = 0;
        let mut ended = false;
        for item in Deb822Lines::new(text) {
            let item = item.map_err(|(line, what)| FormatError::Line { line, what })?;
            let line = item.line();
            if ended && !matches!(item, Deb822Line::Blank { .. }) {
                return Err(FormatError::Line {
                    line,
                    what: "a second paragraph (a Release file has one)".into(),
                });
            }
            match item {
                Deb822Line::Blank { .. } => ended = !fields.is_empty(),
                Deb822Line::Field { name, value, .. } => {
                    let key = name.to_ascii_lowercase();
                    if fields.contains_key(&key) {
                        return Err(FormatError::Line {
                            line,
                            what: format!("field {name} given twice"),
                        });
                    }
                    match key.as_str() {
                        "date" => date_line = line,
                        "valid-until" => valid_until_line = line,
                        _ => {}
                    }
                    fields.insert(key.clone(), value.to_string());
                    current = Some(key);
                }
                Deb822Line::Continuation { text: rest, .. } => match current.as_deref() {
                    None => {
                        return Err(FormatError::Line {
                            line,
                            what: "a continuation line before any field".into(),
                        });
                    }
                    Some("sha256") => {
                        let (path, entry) = parse_file_line(rest)
                            .map_err(|what| FormatError::Line { line, what })?;
                        if sha256.len() >= MAX_FILES {
                            return Err(FormatError::TooManyFiles(MAX_FILES));
                        }
                        if sha256.insert(path.to_string(), entry).is_some() {
                            return Err(FormatError::Line {
                                line,
                                what: format!("{path} listed twice under SHA256"),
                            });
                        }
                    }
                    Some(_) => {}
                },
            }
        }
        let date = match fields.get("date") {
            None => return Err(FormatError::MissingField("Date")),
            Some(value) => parse_date(value).ok_or_else(|| FormatError::Line {
                line: date_line,
                what: format!("Date {value:?} is not an RFC 2822 date"),
            })?,
        };
        let valid_until = match fields.get("valid-until") {
            None => None,
            Some(value) => Some(parse_date(value).ok_or_else(|| FormatError::Line {
                line: valid_until_line,
                what: format!("Valid-Until {value:?} is not an RFC 2822 date"),
            })?),
        };
        let text_field = |name: &str| fields.get(name).filter(|v| !v.is_empty()).cloned();
        Ok(Release {
            origin: text_field("origin"),
            suite: text_field("suite"),
            codename: text_field("codename"),
            date,
            valid_until,
            sha256,
            fields,
        })
    }

    /// The sha256 and size the release gives for `path` (relative to the release's
    /// directory, as in `main/binary-amd64/Packages.xz`).
    pub fn sha256(&self, path: &str) -> Option<&FileEntry> {
        self.sha256.get(path)
    }

    /// Every file under `SHA256:`, by path.
    pub fn sha256_files(&self) -> impl Iterator<Item = (&str, &FileEntry)> {
        self.sha256
            .iter()
            .map(|(path, entry)| (path.as_str(), entry))
    }

    /// Any field's value (its first line), by case-insensitive name, e.g.
    /// `Acquire-By-Hash` or `Architectures`.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

/// ` <sha256> <size> <path>` under `SHA256:`.
fn parse_file_line(rest: &str) -> Result<(&str, FileEntry), String> {
    let mut parts = rest.split_ascii_whitespace();
    let (Some(hex), Some(size), Some(path), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("a SHA256 line is not `<sha256> <size> <path>`".into());
    };
    let sha256 = sha256_hex(hex).ok_or_else(|| format!("{hex:?} is not a sha256 in hex"))?;
    let size = parse_decimal(size).ok_or_else(|| format!("size {size:?} is not a number"))?;
    Ok((path, FileEntry { sha256, size }))
}

/// A sha256 written in hex (either case), lower-cased.
pub(crate) fn sha256_hex(hex: &str) -> Option<String> {
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| hex.to_ascii_lowercase())
}

/// Decimal digits only (no sign, no spaces), as deb822 sizes are written.
pub(crate) fn parse_decimal(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// An RFC 2822 date as Debian and Ubuntu write `Date:` (`Sat, 10 May 2025 09:02:13
/// UTC`): an optional weekday, day, month, year, `HH:MM[:SS]`, and `UTC`, `GMT`, `UT`,
/// `Z` or a `+hhmm`/`-hhmm` offset. Unix seconds.
pub fn parse_date(text: &str) -> Option<i64> {
    let mut parts = text.split_ascii_whitespace().peekable();
    if let Some(first) = parts.peek()
        && let Some(day) = first.strip_suffix(',')
    {
        const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
        if !DAYS.iter().any(|d| d.eq_ignore_ascii_case(day)) {
            return None;
        }
        parts.next();
    }
    let day = small_number(parts.next()?, 1, 2)?;
    const MONTHS: [&str; 12] = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ];
    let month_name = parts.next()?;
    let month = MONTHS
        .iter()
        .position(|m| m.eq_ignore_ascii_case(month_name))? as i64
        + 1;
    let year = small_number(parts.next()?, 4, 4)?;
    let mut clock = parts.next()?.split(':');
    let hour = small_number(clock.next()?, 2, 2)?;
    let minute = small_number(clock.next()?, 2, 2)?;
    let second = match clock.next() {
        Some(s) => small_number(s, 2, 2)?,
        None => 0,
    };
    if clock.next().is_some() || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let offset = zone_offset(parts.next()?)?;
    if parts.next().is_some() || day > days_in_month(year, month) {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset)
}

fn small_number(text: &str, min_digits: usize, max_digits: usize) -> Option<i64> {
    let ok =
        (min_digits..=max_digits).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_digit());
    if ok { text.parse().ok() } else { None }
}

/// Seconds east of UTC.
fn zone_offset(zone: &str) -> Option<i64> {
    if ["UTC", "GMT", "UT", "Z"]
        .iter()
        .any(|z| z.eq_ignore_ascii_case(zone))
    {
        return Some(0);
    }
    let (sign, digits) = match zone.as_bytes().first()? {
        b'+' => (1, &zone[1..]),
        b'-' => (-1, &zone[1..]),
        _ => return None,
    };
    if digits.len() != 4 {
        return None;
    }
    let hours = small_number(&digits[..2], 2, 2)?;
    let minutes = small_number(&digits[2..], 2, 2)?;
    if hours > 23 || minutes > 59 {
        return None;
    }
    Some(sign * (hours * 3600 + minutes * 60))
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// One line of a deb822 file, with its 1-based line number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Deb822Line<'a> {
    /// `Name: value` (the value trimmed; empty for a field whose lines follow).
    Field {
        line: usize,
        name: &'a str,
        value: &'a str,
    },
    /// A line starting with a space or a tab, continuing the last field.
    Continuation { line: usize, text: &'a str },
    /// An empty (or all-blank) line, which ends a paragraph.
    Blank { line: usize },
}

impl Deb822Line<'_> {
    pub(crate) fn line(&self) -> usize {
        match self {
            Deb822Line::Field { line, .. }
            | Deb822Line::Continuation { line, .. }
            | Deb822Line::Blank { line } => *line,
        }
    }
}

/// The lines of a deb822 text, `#` comments skipped; an error is the line number and
/// what is wrong with it. Allocates nothing.
pub(crate) struct Deb822Lines<'a> {
    rest: Option<&'a str>,
    line: usize,
}

impl<'a> Deb822Lines<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        Deb822Lines {
            rest: Some(text),
            line: 0,
        }
    }
}

impl<'a> Iterator for Deb822Lines<'a> {
    type Item = Result<Deb822Line<'a>, (usize, String)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let rest = self.rest?;
            let (raw, next) = match rest.split_once('\n') {
                Some((raw, next)) => (raw, Some(next)),
                None if rest.is_empty() => return None,
                None => (rest, None),
            };
            self.rest = next;
            self.line += 1;
            let line = self.line;
            let raw = raw.strip_suffix('\r').unwrap_or(raw);
            if raw.len() > MAX_LINE_BYTES {
                self.rest = None;
                return Some(Err((
                    line,
                    format!("line is longer than {MAX_LINE_BYTES} bytes"),
                )));
            }
            if raw.trim().is_empty() {
                return Some(Ok(Deb822Line::Blank { line }));
            }
            if raw.starts_with('#') {
                continue;
            }
            if raw.starts_with([' ', '\t']) {
                return Some(Ok(Deb822Line::Continuation {
                    line,
                    text: raw.trim(),
                }));
            }
            let Some((name, value)) = raw.split_once(':') else {
                self.rest = None;
                return Some(Err((line, "line is not `Field: value`".into())));
            };
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic()) {
                self.rest = None;
                return Some(Err((line, format!("{name:?} is not a field name"))));
            }
            return Some(Ok(Deb822Line::Field {
                line,
                name,
                value: value.trim(),
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The signed text of a clearsigned file: between the armour header's blank line
    /// and the signature, dash-escaping undone (RFC 4880 section 7).
    fn clearsigned_body(armoured: &str) -> String {
        let (_, after) = armoured
            .split_once("-----BEGIN PGP SIGNED MESSAGE-----\n")
            .expect("clearsigned");
        let (_, body) = after.split_once("\n\n").expect("armour headers end");
        let (body, _) = body
            .split_once("\n-----BEGIN PGP SIGNATURE-----")
            .expect("signature");
        body.lines()
            .map(|l| l.strip_prefix("- ").unwrap_or(l))
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn bookworm() -> Release {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/catalog/bookworm-InRelease"
        );
        let armoured = std::fs::read_to_string(path).expect("fixture");
        Release::parse(&clearsigned_body(&armoured)).expect("parses")
    }

    #[test]
    fn bookworm_inrelease_fields() {
        let release = bookworm();
        assert_eq!(release.origin.as_deref(), Some("Debian"));
        assert_eq!(release.suite.as_deref(), Some("oldstable"));
        assert_eq!(release.codename.as_deref(), Some("bookworm"));
        // Date: Sat, 11 Jul 2026 10:16:37 UTC
        assert_eq!(release.date, 1_783_764_997);
        assert_eq!(release.valid_until, None);
        assert_eq!(release.field("acquire-by-hash"), Some("yes"));
        assert_eq!(release.sha256_files().count(), 772);
    }

    #[test]
    fn bookworm_inrelease_sha256_entries() {
        let release = bookworm();
        assert_eq!(
            release.sha256("main/installer-amd64/current/images/SHA256SUMS"),
            Some(&FileEntry {
                sha256: "8e0a94d8488f7c60f5fe6723e69b450ec5d7000f592ccdb169481f4bfe863b62".into(),
                size: 78_509,
            })
        );
        assert_eq!(
            release.sha256("main/binary-amd64/Packages.xz"),
            Some(&FileEntry {
                sha256: "9e0b5aabb2465b3d2e7a7fe27f9913846277833f7a2826e7767acccff5b588c5".into(),
                size: 8_790_396,
            })
        );
        // The SHA256 section's entry, not MD5Sum's.
        let gz = release
            .sha256("main/binary-amd64/Packages.gz")
            .expect("listed");
        assert_eq!(gz.size, 12_084_798);
        assert_eq!(gz.sha256.len(), 64);
        assert!(release.sha256("main/binary-amd64/Packages.bz2").is_none());
    }

    #[test]
    fn clearsigned_text_is_refused() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/catalog/bookworm-InRelease"
        );
        let armoured = std::fs::read_to_string(path).expect("fixture");
        assert_eq!(
            Release::parse(&armoured).unwrap_err(),
            FormatError::Clearsigned
        );
    }

    const SMALL: &str = "Origin: Ubuntu\nSuite: noble\nDate: Thu, 25 Apr 2024 15:10:33 +0200\n\
                         Valid-Until: Thu, 02 May 2024 15:10:33 UTC\nSHA256:\n \
                         0000000000000000000000000000000000000000000000000000000000000000 12 main/a\n";

    #[test]
    fn valid_until_and_offsets() {
        let release = Release::parse(SMALL).expect("parses");
        assert_eq!(release.date, 1_714_050_633);
        assert_eq!(release.valid_until, Some(1_714_662_633));
        assert_eq!(release.codename, None);
        assert_eq!(release.sha256("main/a").map(|e| e.size), Some(12));
    }

    #[test]
    fn errors_name_the_line() {
        let missing = SMALL.replace("Date: Thu, 25 Apr 2024 15:10:33 +0200\n", "");
        assert_eq!(
            Release::parse(&missing).unwrap_err(),
            FormatError::MissingField("Date")
        );
        let bad_date = SMALL.replace("25 Apr", "31 Apr");
        assert!(matches!(
            Release::parse(&bad_date).unwrap_err(),
            FormatError::Line { line: 3, .. }
        ));
        let bad_hex = SMALL.replace(" 0000000000", " 000000000g");
        let err = Release::parse(&bad_hex).unwrap_err();
        assert!(matches!(err, FormatError::Line { line: 6, .. }), "{err}");
        assert!(err.to_string().starts_with("Release line 6: "), "{err}");
        let twice = format!("{SMALL}Suite: again\n");
        assert!(matches!(
            Release::parse(&twice).unwrap_err(),
            FormatError::Line { line: 7, .. }
        ));
        let second = format!("{SMALL}\nOrigin: x\n");
        assert!(matches!(
            Release::parse(&second).unwrap_err(),
            FormatError::Line { line: 8, .. }
        ));
        let long = format!("{SMALL}X: {}\n", "y".repeat(MAX_LINE_BYTES));
        assert!(matches!(
            Release::parse(&long).unwrap_err(),
            FormatError::Line { line: 7, .. }
        ));
        assert!(matches!(
            Release::parse("no colon here\n").unwrap_err(),
            FormatError::Line { line: 1, .. }
        ));
    }

    #[test]
    fn dates() {
        assert_eq!(parse_date("Thu, 01 Jan 1970 00:00:00 UTC"), Some(0));
        assert_eq!(parse_date("1 Jan 1970 00:00 GMT"), Some(0));
        assert_eq!(
            parse_date("Sat, 10 May 2025 09:02:13 UTC"),
            Some(1_746_867_733)
        );
        assert_eq!(
            parse_date("Thu, 29 Feb 2024 23:59:59 -0100"),
            Some(1_709_254_799)
        );
        assert_eq!(parse_date("Sat, 29 Feb 2025 00:00:00 UTC"), None);
        assert_eq!(parse_date("Sat, 10 May 2025 24:00:00 UTC"), None);
        assert_eq!(parse_date("Sat, 10 May 2025 09:02:13"), None);
        assert_eq!(parse_date("Sat, 10 May 2025 09:02:13 UTC extra"), None);
        assert_eq!(parse_date("Caturday, 10 May 2025 09:02:13 UTC"), None);
        assert_eq!(parse_date("2025-05-10T09:02:13Z"), None);
        assert_eq!(parse_date(""), None);
    }
}
