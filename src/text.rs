//! Text for people: timestamps as the panel and the CLI show them, and text from the
//! network made safe to print on a terminal.

pub fn format_ms(ms: Option<i64>) -> String {
    match ms {
        None => "-".into(),
        Some(ms) => {
            let secs = ms / 1000;
            let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
            let (y, m, d) = civil_from_days(days);
            format!(
                "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{:03}Z",
                rem / 3600,
                rem % 3600 / 60,
                rem % 60,
                ms.rem_euclid(1000)
            )
        }
    }
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// `text` with every control character (C0, DEL, C1) shown as an escape, so that text
/// a client sent (a DHCP vendor class or host name, an event's detail) cannot move the
/// cursor, retitle the window or clear the screen of whoever runs the CLI.
pub fn for_terminal(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut shown = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            shown.extend(c.escape_default());
        } else {
            shown.push(c);
        }
    }
    std::borrow::Cow::Owned(shown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc() {
        assert_eq!(format_ms(Some(0)), "1970-01-01 00:00:00.000Z");
        assert_eq!(
            format_ms(Some(1_795_305_600_123)),
            "2026-11-22 00:00:00.123Z"
        );
        assert_eq!(format_ms(None), "-");
    }

    #[test]
    fn control_characters_never_reach_the_terminal() {
        assert_eq!(for_terminal("PXEClient:Arch:00007"), "PXEClient:Arch:00007");
        let hostile = "a\u{1b}]0;owned\u{7}b\u{1b}[2Jc\u{9b}d\r\n";
        let shown = for_terminal(hostile);
        assert!(!shown.chars().any(char::is_control), "{shown:?}");
        assert_eq!(shown, "a\\u{1b}]0;owned\\u{7}b\\u{1b}[2Jc\\u{9b}d\\r\\n");
    }
}
