//! Identifier fields: what a subject, audience, client id, kid, jti or
//! family id may contain, checked the same way wherever one comes in (Issue,
//! purpose tokens, Revoke, the key RPCs, the extra-claims allowlist), so no
//! identifier reads as another in the logs or the audit trail
//! (`docs/architecture.md`, "Decisions").

use crate::error::{DomainError, Result};

/// Checks an identifier field (subject, audience, client id, kid, jti, …):
/// required, at most `max` bytes, and nothing that could disguise it where
/// it is shown (logs, the audit trail, an operator's terminal): no control
/// characters, no line or paragraph separators, and no Unicode format
/// characters (bidirectional overrides such as U+202E, which make
/// `admin\u{202E}nimda` read as something else; zero-width characters,
/// which make two different subjects look the same). The error names the
/// field and the code point, never echoes the value.
pub fn check_text(field: &'static str, value: &str, max: usize) -> Result<()> {
    if value.is_empty() {
        return Err(DomainError::field(field, "is required"));
    }
    if value.len() > max {
        return Err(DomainError::field(field, format!("at most {max} bytes")));
    }
    if let Some(c) = value.chars().find(|c| is_disguising(*c)) {
        return Err(DomainError::field(
            field,
            format!(
                "must not contain control, separator or invisible format characters (found U+{:04X})",
                u32::from(c)
            ),
        ));
    }
    Ok(())
}

/// Control characters (Unicode category Cc), line and paragraph separators
/// (Zl, Zp: a line break in a log line) and format characters (Cf, from
/// Unicode 15.1's table: a hand-written range list, so the domain crate
/// needs no Unicode-data dependency; the tests below check it).
pub fn is_disguising(c: char) -> bool {
    const FORMAT: &[(u32, u32)] = &[
        (0x00AD, 0x00AD),   // soft hyphen
        (0x0600, 0x0605),   // Arabic number signs
        (0x061C, 0x061C),   // Arabic letter mark
        (0x06DD, 0x06DD),   // Arabic end of ayah
        (0x070F, 0x070F),   // Syriac abbreviation mark
        (0x0890, 0x0891),   // Arabic pound and piastre marks above
        (0x08E2, 0x08E2),   // Arabic disputed end of ayah
        (0x180E, 0x180E),   // Mongolian vowel separator
        (0x200B, 0x200F),   // zero-width space, (non-)joiner, LRM, RLM
        (0x202A, 0x202E),   // bidi embeddings and overrides
        (0x2060, 0x2064),   // word joiner, invisible operators
        (0x2066, 0x206F),   // bidi isolates, deprecated format controls
        (0xFEFF, 0xFEFF),   // zero-width no-break space (BOM)
        (0xFFF9, 0xFFFB),   // interlinear annotation
        (0x110BD, 0x110BD), // Kaithi number sign
        (0x110CD, 0x110CD), // Kaithi number sign above
        (0x13430, 0x1343F), // Egyptian hieroglyph format controls
        (0x1BCA0, 0x1BCA3), // shorthand format controls
        (0x1D173, 0x1D17A), // musical symbol format controls
        (0xE0001, 0xE0001), // language tag
        (0xE0020, 0xE007F), // tag characters
    ];
    let u = u32::from(c);
    c.is_control()
        || c == '\u{2028}'
        || c == '\u{2029}'
        || FORMAT.iter().any(|(lo, hi)| (*lo..=*hi).contains(&u))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_refuse_what_could_disguise_them() {
        for c in [
            '\u{0}',
            '\n',
            '\u{7f}',
            '\u{85}', // controls (Cc)
            '\u{202A}',
            '\u{202D}',
            '\u{202E}',
            '\u{2066}',
            '\u{2069}', // bidi
            '\u{200B}',
            '\u{200C}',
            '\u{200D}',
            '\u{200E}',
            '\u{200F}', // zero width, marks
            '\u{2060}',
            '\u{FEFF}',
            '\u{00AD}',
            '\u{061C}',
            '\u{180E}', // other Cf
            '\u{E0001}',
            '\u{E0041}', // tags
            '\u{2028}',
            '\u{2029}', // line and paragraph separators
        ] {
            assert!(is_disguising(c), "U+{:04X}", u32::from(c));
            let e = check_text("subject", &format!("adm{c}in"), 255).unwrap_err();
            let DomainError::InvalidField { field, reason } = e else {
                panic!("not a field error")
            };
            assert_eq!(field, "subject");
            assert!(
                reason.contains(&format!("U+{:04X}", u32::from(c))),
                "{reason}"
            );
        }
        // Visible text of any script is an identifier.
        for ok in ["user-123", "Zoë", "用户", "עברית", "a b", "x@y.example"] {
            assert!(check_text("subject", ok, 255).is_ok(), "{ok}");
        }
    }
}
