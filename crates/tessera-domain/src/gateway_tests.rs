use super::*;

const FILE: &str = r#"
[[route]]
host = "*"
audience = "fallback"

[[route]]
host = "api.example.com"
path_prefix = "/orders"
audience = "orders-api"
scopes = ["orders:read"]

[[route]]
host = "api.example.com"
path_prefix = "/orders/admin/"
audience = "orders-admin"

[[route]]
host = "*.example.com"
path_prefix = "/"
audience = "wild"

[[route]]
host = "*.eu.example.com"
audience = "wild-eu"
"#;

fn audience<'a>(routes: &'a Routes, host: &str, target: &str) -> Option<&'a str> {
    routes.find(host, target).map(|r| r.audience.as_str())
}

#[test]
fn the_most_specific_route_wins() {
    let r = Routes::parse(FILE).unwrap();
    assert_eq!(r.len(), 5);
    assert_eq!(r.header_prefix(), "X-Tessera-");
    for (host, target, want) in [
        ("api.example.com", "/orders", Some("orders-api")),
        ("API.Example.com:8443", "/orders/7?x=1", Some("orders-api")),
        ("api.example.com.", "/orders/7", Some("orders-api")),
        // A request target holds no fragment: a `#` is refused.
        ("api.example.com", "/orders/7#frag", None),
        ("api.example.com", "/orders/admin", Some("orders-admin")),
        ("api.example.com", "/orders/admin/x", Some("orders-admin")),
        // Whole segments: "/ordersx" is not under "/orders".
        ("api.example.com", "/ordersx", Some("wild")),
        ("api.example.com", "/", Some("wild")),
        ("x.example.com", "/orders", Some("wild")),
        ("a.eu.example.com", "/", Some("wild-eu")),
        // A wildcard needs a subdomain.
        ("example.com", "/", Some("fallback")),
        ("other.test", "/anything", Some("fallback")),
        ("[::1]:8080", "/", Some("fallback")),
    ] {
        assert_eq!(audience(&r, host, target), want, "{host} {target}");
    }
}

#[test]
fn no_route_means_no_audience() {
    let r = Routes::parse(
        r#"
[[route]]
host = "api.example.com"
path_prefix = "/orders"
audience = "orders-api"
"#,
    )
    .unwrap();
    assert_eq!(audience(&r, "api.example.com", "/billing"), None);
    assert_eq!(audience(&r, "evil.example.com", "/orders"), None);
    assert_eq!(audience(&r, "", "/orders"), None);
    // A file with no route is refused: more often a write cut short than
    // a policy.
    assert!(
        Routes::parse("")
            .unwrap_err()
            .message
            .contains("no [[route]]")
    );
    assert!(Routes::parse("[headers]\n").is_err());
}

/// The tester's bypasses: a path whose readings by different upstreams
/// (escapes decoded, `;` parameters dropped, case folded) reach different
/// routes, or that cannot be read at all, matches nothing.
#[test]
fn readings_that_reach_other_routes_match_nothing() {
    let r = Routes::parse(FILE).unwrap();
    for target in [
        "/orders/%61dmin",
        "/orders/admi%6E/1",
        "/orders/%41DMIN",
        "/orders/ADMIN",
        "/Orders/1",
        "/orders/admin;x=1",
        "/orders/admin;",
        "/orders/..;/admin",
        "/orders/.;/x",
        "/orders/%",
        "/orders/%zz",
        "/orders/%4",
        "/orders/%c0%ae%c0%ae/admin",
        "/orders/%u002e%u002e",
        "/orders/%ff",
        // Round two: a fragment mark, case folding beyond ASCII (dotless
        // i, long s, Kelvin sign), trailing dots and spaces (IIS).
        "/orders/x#/../admin",
        "/orders/x?#/../admin",
        "/orders/%61dm%C4%B1n",
        "/orders/%C5%BFx",
        "/orders/%E2%84%AAx",
        "/orders/admin.",
        "/orders/admin%20",
        "/orders/admin.%20.",
    ] {
        assert_eq!(audience(&r, "api.example.com", target), None, "{target:?}");
    }
    // Readings that agree are fine.
    for target in [
        "/orders/%61bc",
        "/orders/caf%C3%A9",
        "/orders/x;v=1",
        "/orders/admin/%7Ex",
        "/orders/ABC",
        "/orders/x.",
        "/orders/caf%C3%A9/%E2%82%AC",
    ] {
        assert_eq!(
            audience(&r, "api.example.com", target),
            routes_audience(&r, target),
            "{target:?}"
        );
    }
    // Hosts that are no host names.
    for host in [
        "x/.example.com",
        "x..example.com",
        "*.example.com",
        "x%.example.com",
        "a b",
    ] {
        assert_eq!(audience(&r, host, "/"), None, "{host:?}");
    }
}

/// What the readings of `target` agree on in `FILE`, spelled out.
fn routes_audience(_: &Routes, target: &str) -> Option<&'static str> {
    Some(if target.starts_with("/orders/admin") {
        "orders-admin"
    } else {
        "orders-api"
    })
}

#[test]
fn paths_read_two_ways_match_nothing() {
    let r = Routes::parse(FILE).unwrap();
    for target in [
        "/orders/../admin",
        "/orders/./x",
        "/orders/..",
        "//orders",
        "/orders//x",
        "/orders%2fadmin",
        "/orders/%2e%2e/admin",
        "/orders/%2E%2E",
        "/orders\\..\\admin",
        "/orders/%5c",
        "/orders/%252e%252e",
        "/orders/%00",
        "orders",
        "*",
        "http://api.example.com/orders",
        "/orders/a b",
        "/orders/\t",
    ] {
        assert_eq!(audience(&r, "api.example.com", target), None, "{target:?}");
    }
    // A trailing slash is one empty last segment, which is fine.
    assert_eq!(
        audience(&r, "api.example.com", "/orders/"),
        Some("orders-api")
    );
}

#[test]
fn faults_name_their_line() {
    for (text, line, needle) in [
        ("[[route]]\nhost = \"a\"\n", 1, "audience"),
        (
            "\n[[route]]\nhost = \"a\"\naudience = \"*\"\n",
            2,
            "audience",
        ),
        ("[[route]]\nhost = \"a b\"\naudience = \"x\"\n", 1, "host"),
        (
            "\n\n[[route]]\nhost = \"a\"\npath_prefix = \"/a/../b\"\naudience = \"x\"\n",
            3,
            "path_prefix",
        ),
        (
            "[[route]]\nhost = \"a\"\npath_prefix = \"a\"\naudience = \"x\"\n",
            1,
            "path_prefix",
        ),
        (
            "[[route]]\nhost = \"a\"\naudience = \"x\"\nscopes = [\"a b\"]\n",
            1,
            "scopes",
        ),
        (
            "[[route]]\nhost = \"a\"\naudience = \"x\"\nscope = [\"a\"]\n",
            4,
            "scope",
        ),
        ("[headers]\nprefix = \"X Bad\"\n", 1, "prefix"),
        ("[headers]\nprefix = \"\"\n", 1, "prefix"),
        ("[headers]\nprefix = \"X-Tessera\"\n", 1, "ending in '-'"),
        (
            "[[route]]\nhost = \"a:443\"\naudience = \"x\"\n",
            1,
            "without port",
        ),
        (
            "[[route]]\nhost = \"*.com\"\naudience = \"x\"\n",
            1,
            "two labels",
        ),
        ("[[route]]\nhost = \"a..b\"\naudience = \"x\"\n", 1, "host"),
        (
            "[[route]]\nhost = \"a\"\npath_prefix = \"/a?x\"\naudience = \"x\"\n",
            1,
            "path_prefix",
        ),
        (
            "[[route]]\nhost = \"a\"\npath_prefix = \"/a;x\"\naudience = \"x\"\n",
            1,
            "path_prefix",
        ),
        (
            "[[route]]\nhost = \"a\"\npath_prefix = \"/a/*\"\naudience = \"x\"\n",
            1,
            "path_prefix",
        ),
        (
            "[[route]]\nhost = \"a\"\npath_prefix = \"/%61\"\naudience = \"x\"\n",
            1,
            "path_prefix",
        ),
        (
            "[[route]]\nhost = \"a\"\npath_prefix = \"/foo\"\naudience = \"x\"\nscopes = [\"w\"]\n\n[[route]]\nhost = \"A\"\npath_prefix = \"/FOO/\"\naudience = \"y\"\n",
            7,
            "line 1's",
        ),
        ("", 1, "no [[route]]"),
    ] {
        let e = Routes::parse(text).unwrap_err();
        assert_eq!(e.line, line, "{text:?}: {e}");
        assert!(e.message.contains(needle), "{text:?}: {e}");
    }
}

#[test]
fn the_prefix_is_configurable() {
    let r = Routes::parse(
        "[headers]\nprefix = \"X-Auth-\"\n\n[[route]]\nhost = \"*\"\naudience = \"a\"\n",
    )
    .unwrap();
    assert_eq!(r.header_prefix(), "X-Auth-");
}

#[test]
fn bearer_tokens_are_read_strictly() {
    assert_eq!(bearer_token("Bearer abc.def-_~+/="), Some("abc.def-_~+/="));
    assert_eq!(bearer_token("bearer abc"), Some("abc"));
    assert_eq!(bearer_token("BEARER abc"), Some("abc"));
    for bad in [
        "",
        "Bearer",
        "Bearer ",
        "Bearer  abc",
        "Bearer abc def",
        "Basic abc",
        "Bearerabc",
        "Bearer a\"b",
        "Bearer a,b",
    ] {
        assert_eq!(bearer_token(bad), None, "{bad:?}");
    }
}

fn claims(scope: Option<&str>) -> Claims {
    serde_json::from_value(serde_json::json!({
        "iss": "i", "sub": "alice", "aud": "orders-api", "exp": 2, "nbf": 0,
        "iat": 0, "jti": "j1", "scope": scope, "client_id": "web",
    }))
    .unwrap()
}

#[test]
fn scopes_are_all_required() {
    let r = Routes::parse(FILE).unwrap();
    let route = r.find("api.example.com", "/orders").unwrap();
    assert_eq!(missing_scopes(route, &claims(Some("orders:read"))), None);
    assert_eq!(
        missing_scopes(route, &claims(Some("a orders:read b"))),
        None
    );
    assert_eq!(
        missing_scopes(route, &claims(Some("orders:readx"))),
        Some("orders:read".to_owned())
    );
    assert_eq!(
        missing_scopes(route, &claims(None)),
        Some("orders:read".to_owned())
    );
    let open = r.find("x.example.com", "/").unwrap();
    assert_eq!(missing_scopes(open, &claims(None)), None);
}

#[test]
fn identity_names_every_header_even_empty() {
    let r = Routes::parse(FILE).unwrap();
    let route = r.find("api.example.com", "/orders").unwrap();
    let c = claims(None);
    let id = identity(route, &c);
    assert_eq!(id.map(|(n, _)| n), IDENTITY_HEADERS);
    assert_eq!(id.map(|(_, v)| v), ["alice", "", "web", "j1", "orders-api"]);
}
