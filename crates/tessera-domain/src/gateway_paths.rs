//! How a request's host and path are read before a route is chosen:
//! strictly, so that a gateway, Tessera and the upstream cannot read one
//! request as different routes ([`super`] explains which readings).

/// `path` lies under `prefix`, by whole segments (in any case when `fold`).
pub(super) fn within(path: &str, prefix: &str, fold: bool) -> bool {
    let head = path.get(..prefix.len());
    let rest = path.get(prefix.len()..).unwrap_or_default();
    let same = head.is_some_and(|h| {
        if fold {
            h.eq_ignore_ascii_case(prefix)
        } else {
            h == prefix
        }
    });
    prefix == "/" || (same && (rest.is_empty() || rest.starts_with('/')))
}

/// `path` with its escaped unreserved characters decoded (RFC 3986
/// §2.3: `%41` is `A`) and other escapes kept. `None` when an escape is
/// malformed or the escaped bytes are not UTF-8 (overlong `%c0%ae`).
pub(super) fn decode_unreserved(path: &str) -> Option<String> {
    let bytes = path.as_bytes();
    let (mut out, mut raw) = (
        String::with_capacity(path.len()),
        Vec::with_capacity(path.len()),
    );
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            out.push(char::from(bytes[i]));
            raw.push(bytes[i]);
            i += 1;
            continue;
        }
        let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
        let b = u8::from_str_radix(hex, 16)
            .ok()
            .filter(|_| hex.bytes().all(|c| c.is_ascii_hexdigit()))?;
        raw.push(b);
        match b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            true => out.push(char::from(b)),
            false => out.push_str(&format!("%{b:02X}")),
        }
        i += 3;
    }
    std::str::from_utf8(&raw).ok()?;
    Some(out)
}

/// `path` without the `;` parameters of its segments (`/a;x=1/b;` is
/// `/a/b`), as servlet containers read it.
pub(super) fn without_parameters(path: &str) -> String {
    path.split('/')
        .map(|seg| seg.split(';').next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("/")
}

/// A path a gateway and its upstream could read differently: dot or empty
/// segments, a backslash, an encoded `/`, `.`, `\` or `%`, or a control
/// character.
pub(super) fn unsafe_path(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    path.contains('\\')
        || path.chars().any(|c| c.is_control() || c == ' ')
        || ["%2f", "%2e", "%5c", "%25", "%00"]
            .iter()
            .any(|e| lower.contains(e))
        || segments
            .iter()
            .enumerate()
            .any(|(i, s)| *s == "." || *s == ".." || (s.is_empty() && i != last))
}

/// A host name (labels of letters, digits and `-`, none empty) or an IP
/// literal (`[…]` of hex digits, `:` and `.`).
pub(super) fn host_name_valid(name: &str) -> bool {
    if let Some(ip) = name.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        return !ip.is_empty()
            && ip
                .chars()
                .all(|c| c.is_ascii_hexdigit() || matches!(c, ':' | '.'));
    }
    !name.is_empty()
        && name
            .split('.')
            .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
}

/// The host name of a `Host` value, lower case, without port or final dot;
/// `None` when it is no host name.
pub(super) fn host_name(host: &str) -> Option<String> {
    let host = host.trim();
    let name = if let Some(rest) = host.strip_prefix('[') {
        &host[..rest.find(']')? + 2]
    } else {
        host.rsplit_once(':')
            .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
            .map_or(host, |(name, _)| name)
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    host_name_valid(&name).then_some(name)
}

/// `path` without the dots and spaces (`%20`) that end its segments, as
/// Windows servers (IIS) read `/orders/write.` and `/orders/write%20`.
pub(super) fn without_trailing_dots(path: &str) -> String {
    path.split('/')
        .map(|seg| {
            let mut seg = seg;
            loop {
                let next = seg.trim_end_matches('.');
                let next = next.strip_suffix("%20").unwrap_or(next);
                if next.len() == seg.len() {
                    return seg;
                }
                seg = next;
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// True when `path` holds an escaped character that some server's case
/// folding turns into ASCII: the dotless `ı` (`I`), the long `ſ` (`S`),
/// the Kelvin sign (`k`), so that `/orders/wr%C4%B1te` could be
/// `/orders/write` to Java's `equalsIgnoreCase`.
pub(super) fn folds_into_ascii(path: &str) -> bool {
    let mut bytes = Vec::new();
    let mut rest = path.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        let escaped = tail.get(..2).and_then(|h| std::str::from_utf8(h).ok());
        match (b, escaped.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                bytes.push(byte);
                rest = &tail[2..];
            }
            _ => {
                bytes.push(b);
                rest = tail;
            }
        }
    }
    String::from_utf8_lossy(&bytes).chars().any(|c| {
        !c.is_ascii()
            && (c.to_uppercase().chain(c.to_lowercase())).any(|f| f.is_ascii_alphanumeric())
    })
}
