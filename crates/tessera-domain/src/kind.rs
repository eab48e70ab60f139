//! Token kinds and their JOSE `typ` values. A token of one kind is never
//! accepted as another (RFC 8725 section 3.11: explicit typing).

/// What a token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenKind {
    /// An access token, `typ: at+jwt` (RFC 9068 section 2.1).
    Access,
    /// A single-use email verification token.
    EmailVerification,
    /// A single-use password reset token.
    PasswordReset,
}

impl TokenKind {
    /// The `typ` header value of this kind.
    pub const fn typ(self) -> &'static str {
        match self {
            Self::Access => "at+jwt",
            Self::EmailVerification => "email-verification+jwt",
            Self::PasswordReset => "password-reset+jwt",
        }
    }

    /// The kind whose `typ` this is. RFC 8725 recommends comparing the
    /// media type case-insensitively and allows the `application/` prefix
    /// (RFC 7515 §4.1.9), itself in any letter case (media types are).
    pub fn from_typ(typ: &str) -> Option<Self> {
        const PREFIX: &str = "application/";
        let t = typ
            .get(..PREFIX.len())
            .filter(|p| p.eq_ignore_ascii_case(PREFIX))
            .map_or(typ, |_| &typ[PREFIX.len()..]);
        [Self::Access, Self::EmailVerification, Self::PasswordReset]
            .into_iter()
            .find(|k| k.typ().eq_ignore_ascii_case(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typ_is_compared_as_a_media_type() {
        for typ in [
            "at+jwt",
            "AT+JWT",
            "application/at+jwt",
            "Application/At+Jwt",
        ] {
            assert_eq!(TokenKind::from_typ(typ), Some(TokenKind::Access), "{typ}");
        }
        for typ in [
            "",
            "jwt",
            "at+jwt ",
            "text/at+jwt",
            "application/",
            "applicatio",
            "é",
        ] {
            assert_eq!(TokenKind::from_typ(typ), None, "{typ}");
        }
    }
}
