use super::*;

fn route(name: &str, hosts: &[&str], paths: &[&str]) -> Route {
    Route {
        name: name.to_string(),
        target: name.to_string(),
        hosts: hosts
            .iter()
            .map(|h| HostPattern::parse(h).expect("test host"))
            .collect(),
        path_prefixes: paths
            .iter()
            .map(|p| PathPrefix::parse(p).expect("test path"))
            .collect(),
        headers: vec![],
        rewrite_prefix: None,
        upstream_protocol: UpstreamProtocol::Http1,
        limits: RouteLimits::default(),
    }
}

fn resolve<'a>(t: &'a RouteTable, host: &str, path: &str) -> Option<&'a str> {
    t.resolve(host, path, &NoHeaders)
        .map(|m| m.route.name.as_str())
}

#[test]
fn host_patterns_parse_and_reject() {
    let cases = [
        ("Example.COM", Ok(HostPattern::Exact("example.com".into()))),
        ("example.com.", Ok(HostPattern::Exact("example.com".into()))),
        (
            "*.example.com",
            Ok(HostPattern::Wildcard(".example.com".into())),
        ),
        ("*", Ok(HostPattern::Any)),
        ("", Err(())),
        ("a..b", Err(())),
        ("exa mple.com", Err(())),
        ("foo.*.com", Err(())),
        ("*.", Err(())),
    ];
    for (raw, want) in cases {
        assert_eq!(HostPattern::parse(raw).map_err(|_| ()), want, "{raw}");
    }
}

#[test]
fn request_hosts_are_normalised() {
    let cases = [
        ("Example.com:8080", "example.com"),
        ("example.com.", "example.com"),
        ("[::1]:8080", "[::1]"),
        ("127.0.0.1:80", "127.0.0.1"),
        ("HOST", "host"),
    ];
    for (raw, want) in cases {
        assert_eq!(normalize_host(raw), want, "{raw}");
    }
}

#[test]
fn exact_beats_wildcard_and_longest_suffix_wins() {
    let (t, c) = RouteTable::build([
        route("any", &["*"], &[]),
        route("wild", &["*.example.com"], &[]),
        route("deep", &["*.api.example.com"], &[]),
        route("exact", &["www.example.com"], &[]),
    ]);
    assert!(c.is_empty());
    let cases = [
        ("www.example.com", Some("exact")),
        ("WWW.Example.com:443", Some("exact")),
        ("foo.example.com", Some("wild")),
        ("a.b.example.com", Some("wild")),
        ("v1.api.example.com", Some("deep")),
        ("example.com", Some("any")),
        ("other.org", Some("any")),
    ];
    for (host, want) in cases {
        assert_eq!(resolve(&t, host, "/"), want, "{host}");
    }
}

#[test]
fn unknown_host_has_no_route_without_catch_all() {
    let (t, _) = RouteTable::build([route("a", &["a.test"], &[])]);
    assert_eq!(resolve(&t, "b.test", "/"), None);
    assert_eq!(resolve(&t, "a.test.evil.com", "/"), None);
    assert_eq!(resolve(&t, "", "/"), None);
}

#[test]
fn longest_prefix_wins_segment_wise() {
    let (t, _) = RouteTable::build([
        route("root", &["h"], &["/"]),
        route("api", &["h"], &["/api"]),
        route("v2", &["h"], &["/api/v2/"]),
    ]);
    let cases = [
        ("/", "root"),
        ("/api", "api"),
        ("/api/", "api"),
        ("/apix", "root"),
        ("/api/v2", "v2"),
        ("/api/v2/users", "v2"),
        ("/api/v20", "api"),
    ];
    for (path, want) in cases {
        assert_eq!(resolve(&t, "h", path), Some(want), "{path}");
    }
}

#[test]
fn most_specific_host_decides_without_fall_through() {
    let (t, _) = RouteTable::build([
        route("wild", &["*.example.com"], &["/"]),
        route("exact", &["www.example.com"], &["/only"]),
    ]);
    assert_eq!(resolve(&t, "www.example.com", "/only/x"), Some("exact"));
    assert_eq!(resolve(&t, "www.example.com", "/other"), None);
}

#[test]
fn header_matches_refine_a_prefix() {
    let mut canary = route("canary", &["h"], &["/"]);
    canary.headers = vec![HeaderMatch::new("X-Canary", "1").expect("header")];
    let (t, c) = RouteTable::build([route("stable", &["h"], &["/"]), canary]);
    assert!(c.is_empty());
    let with = [("x-canary", "1")];
    assert_eq!(
        t.resolve("h", "/", &with[..])
            .map(|m| m.route.name.as_str()),
        Some("canary")
    );
    assert_eq!(resolve(&t, "h", "/"), Some("stable"));
}

#[test]
fn conflicting_later_route_is_rejected_whole() {
    let (t, c) = RouteTable::build([
        route("first", &["h"], &["/a"]),
        route("second", &["other", "h"], &["/b", "/a/"]),
    ]);
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].route, "second");
    assert_eq!(c[0].existing, "first");
    assert_eq!(resolve(&t, "other", "/b"), None);
    assert_eq!(t.len(), 1);
}

#[test]
fn duplicate_route_names_conflict() {
    let (t, c) = RouteTable::build([route("x", &["a"], &[]), route("x", &["b"], &[])]);
    assert_eq!(c.len(), 1);
    assert_eq!(t.len(), 1);
}

#[test]
fn prefix_rewrite() {
    let p = |s: &str| PathPrefix::parse(s).expect("prefix");
    let cases = [
        ("/api", "/", "/api/users?x=1", "/users?x=1"),
        ("/api", "/", "/api", "/"),
        ("/api", "/", "/api?x", "/?x"),
        ("/api", "/v2", "/api/users", "/v2/users"),
        ("/api", "/v2", "/api", "/v2"),
        ("/", "/app", "/x", "/app/x"),
        ("/", "/", "/x?q", "/x?q"),
    ];
    for (from, to, path, want) in cases {
        assert_eq!(
            p(from).rewrite(path, &p(to)),
            want,
            "{from} -> {to} on {path}"
        );
    }
}

#[test]
fn rewrite_applies_through_match() {
    let mut r = route("api", &["h"], &["/api"]);
    r.rewrite_prefix = Some(PathPrefix::parse("/").expect("prefix"));
    let (t, _) = RouteTable::build([r]);
    let m = t.resolve("h", "/api/x", &NoHeaders).expect("match");
    assert_eq!(m.upstream_path("/api/x?y=1").as_deref(), Some("/x?y=1"));
}

#[test]
fn path_prefixes_parse_and_reject() {
    assert_eq!(
        PathPrefix::parse("/api/").map(|p| p.0),
        Ok("/api".to_string())
    );
    assert_eq!(
        PathPrefix::parse("//a//b").map(|p| p.0),
        Ok("/a/b".to_string())
    );
    assert_eq!(PathPrefix::parse("/").map(|p| p.0), Ok("/".to_string()));
    for bad in ["api", "/a?b", "/a/../b", "/./a", "/a b", ""] {
        assert!(PathPrefix::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn request_paths_are_normalised_before_matching() {
    let cases = [
        ("/", "/"),
        ("//a///b", "/a/b"),
        ("/api/../admin", "/admin"),
        ("/../../etc", "/etc"),
        ("/a/./b/?q=/../x", "/a/b/?q=/../x"),
        ("/a/", "/a/"),
        ("/api/%2e%2e/admin", "/admin"),
        ("/api/%2E./admin", "/admin"),
        ("/a%2fb", "/a%2fb"),
    ];
    for (raw, want) in cases {
        assert_eq!(normalize_path(raw), want, "{raw}");
    }
}

#[test]
fn ten_thousand_routes_resolve() {
    let routes =
        (0..10_000).map(|i| route(&format!("r{i}"), &[&format!("app{i}.example.com")], &["/"]));
    let (t, c) = RouteTable::build(routes);
    assert!(c.is_empty());
    assert_eq!(resolve(&t, "app9999.example.com", "/x"), Some("r9999"));
    assert_eq!(resolve(&t, "app10000.example.com", "/x"), None);
}

#[test]
fn header_index_keeps_priority_order() {
    let h = |n: &str, v: &str| HeaderMatch::new(n, v).expect("header");
    let mut tenant = route("tenant-a", &["h"], &["/"]);
    tenant.headers = vec![h("x-tenant", "a")];
    // Two headers rank before one; sorted, its first header is x-beta.
    let mut beta = route("tenant-a-beta", &["h"], &["/"]);
    beta.headers = vec![h("x-tenant", "a"), h("x-beta", "1")];
    let (t, c) = RouteTable::build([
        route("root", &["h"], &["/"]),
        tenant,
        beta,
        route("api", &["h"], &["/api"]),
    ]);
    assert!(c.is_empty());
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case; 7] = [
        ("/", &[], "root"),
        ("/", &[("x-tenant", "a")], "tenant-a"),
        ("/", &[("x-tenant", "a"), ("x-beta", "1")], "tenant-a-beta"),
        ("/", &[("x-tenant", "b")], "root"),
        ("/", &[("x-beta", "1")], "root"),
        // A deeper prefix outranks header matches on a shallower one.
        ("/api/x", &[("x-tenant", "a")], "api"),
        // Any value of a repeated header counts.
        ("/", &[("x-tenant", "b"), ("x-tenant", "a")], "tenant-a"),
    ];
    for (path, headers, want) in cases {
        assert_eq!(
            t.resolve("h", path, headers).map(|m| m.route.name.as_str()),
            Some(want),
            "{path} {headers:?}"
        );
    }
}

#[test]
fn a_thousand_tenants_on_one_host_resolve_by_header() {
    let routes = (0..1000).map(|i| {
        let mut r = route(&format!("t{i}"), &["shared"], &["/"]);
        r.headers = vec![HeaderMatch::new("x-tenant", &format!("{i}")).expect("header")];
        r
    });
    let (t, c) = RouteTable::build(routes);
    assert!(c.is_empty());
    for i in [0, 499, 999] {
        let headers = [("x-tenant", i.to_string())];
        assert_eq!(
            t.resolve("shared", "/", &headers[..])
                .map(|m| m.route.name.clone()),
            Some(format!("t{i}"))
        );
    }
    assert!(t.resolve("shared", "/", &NoHeaders).is_none());
}

#[test]
fn a_header_without_a_value_matches_on_presence() {
    let mut canary = route("canary", &["h"], &["/"]);
    canary.headers = vec![HeaderMatch::present("X-Canary").expect("header")];
    let mut blue = route("blue", &["h"], &["/"]);
    blue.headers = vec![HeaderMatch::new("x-canary", "blue").expect("header")];
    let (t, c) = RouteTable::build([route("stable", &["h"], &["/"]), canary, blue]);
    assert!(c.is_empty(), "{c:?}");
    let name = |h: &[(&str, &str)]| t.resolve("h", "/", h).map(|m| m.route.name.clone());
    assert_eq!(name(&[("x-canary", "anything")]).as_deref(), Some("canary"));
    assert_eq!(name(&[("x-canary", "")]).as_deref(), Some("canary"));
    // An exact value outranks presence (as in KEDA), whatever the declaration order.
    assert_eq!(name(&[("x-canary", "blue")]).as_deref(), Some("blue"));
    assert_eq!(name(&[]).as_deref(), Some("stable"));
}

#[test]
fn header_matches_deserialise_validated() {
    let h: HeaderMatch = serde_yaml::from_str("{name: X-Tenant, value: a}").expect("valid");
    assert_eq!(h, HeaderMatch::new("x-tenant", "a").expect("valid"));
    let h: HeaderMatch = serde_yaml::from_str("{name: X-Canary}").expect("valid");
    assert_eq!(h.value, None);
    let err = serde_yaml::from_str::<HeaderMatch>("{name: 'bad name'}").expect_err("invalid");
    assert!(err.to_string().contains("bad name"), "{err}");
    assert!(serde_yaml::from_str::<HeaderMatch>("{name: a, vlaue: b}").is_err());
}
