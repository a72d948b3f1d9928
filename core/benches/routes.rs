//! Route lookup and table rebuild at 100, 1 000 and 10 000 routes: the load tests' "many routes"
//! scenario. Run through `rouse-bench routes` (loadtests/), which reads criterion's estimates, or
//! directly with `cargo bench -p rouse-core --bench routes`.
//!
//! The table mixes what a multi-tenant cluster has: 70 % exact hosts with two path prefixes each,
//! 20 % wildcard hosts, 10 % header-matched routes sharing a host.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use rouse_core::{
    HeaderMatch, HostPattern, NoHeaders, PathPrefix, Route, RouteLimits, RouteTable,
    UpstreamProtocol, normalize_path,
};

const SIZES: [usize; 3] = [100, 1_000, 10_000];

fn route(i: usize) -> Route {
    let parse = |h: String| HostPattern::parse(&h).expect("valid host");
    let (hosts, headers) = match i % 10 {
        0..=6 => (vec![parse(format!("app{i}.example.com"))], vec![]),
        7 | 8 => (vec![parse(format!("*.tenant{i}.example.com"))], vec![]),
        _ => (
            vec![parse("shared.example.com".into())],
            vec![HeaderMatch::new("x-tenant", &format!("t{i}")).expect("valid header")],
        ),
    };
    Route {
        name: format!("route-{i}"),
        target: format!("app-{i}"),
        hosts,
        path_prefixes: vec![
            PathPrefix::parse(&format!("/api/v{}", i % 3)).expect("valid path"),
            PathPrefix::parse("/static").expect("valid path"),
        ],
        headers,
        rewrite_prefix: None,
        upstream_protocol: UpstreamProtocol::Http1,
        limits: RouteLimits::default(),
    }
}

fn routes(n: usize) -> Vec<Route> {
    (0..n).map(route).collect()
}

fn lookup(c: &mut Criterion) {
    for n in SIZES {
        let (table, conflicts) = RouteTable::build(routes(n));
        assert!(conflicts.is_empty(), "synthetic routes conflict");
        // Mid-table keys, so no lookup is lucky by position.
        let exact = format!("app{}.example.com", (n / 2) / 10 * 10 + 1);
        let wildcard = format!("a.b.tenant{}.example.com", (n / 2) / 10 * 10 + 7);
        let tenant_headers = [("x-tenant", format!("t{}", (n / 2) / 10 * 10 + 9))];
        let path = format!("/api/v{}/users/42", ((n / 2) / 10 * 10 + 1) % 3);
        let mut g = c.benchmark_group("lookup");
        g.bench_with_input(BenchmarkId::new("exact", n), &n, |b, _| {
            b.iter(|| black_box(table.resolve(black_box(&exact), black_box(&path), &NoHeaders)))
        });
        let wpath = format!("/api/v{}/x", ((n / 2) / 10 * 10 + 7) % 3);
        g.bench_with_input(BenchmarkId::new("wildcard", n), &n, |b, _| {
            b.iter(|| black_box(table.resolve(black_box(&wildcard), black_box(&wpath), &NoHeaders)))
        });
        if n >= 10 {
            let hpath = format!("/api/v{}/x", ((n / 2) / 10 * 10 + 9) % 3);
            g.bench_with_input(BenchmarkId::new("header", n), &n, |b, _| {
                b.iter(|| {
                    black_box(table.resolve(
                        black_box("shared.example.com"),
                        black_box(&hpath),
                        &tenant_headers[..],
                    ))
                })
            });
        }
        g.bench_with_input(BenchmarkId::new("miss", n), &n, |b, _| {
            b.iter(|| {
                black_box(table.resolve(black_box("nope.example.org"), black_box("/"), &NoHeaders))
            })
        });
        // What the proxy does per request: normalise the raw path, then resolve.
        let raw = format!("{path}?q=1");
        g.bench_with_input(BenchmarkId::new("normalize+exact", n), &n, |b, _| {
            b.iter(|| {
                let p = normalize_path(black_box(&raw));
                black_box(table.resolve(black_box(&exact), &p, &NoHeaders).is_some())
            })
        });
        g.finish();
    }
}

fn rebuild(c: &mut Criterion) {
    let mut g = c.benchmark_group("rebuild");
    g.sample_size(10);
    for n in SIZES {
        let input = routes(n);
        g.bench_with_input(BenchmarkId::from_parameter(n), &input, |b, input| {
            b.iter(|| black_box(RouteTable::build(input.iter().cloned())))
        });
    }
    g.finish();
}

criterion_group!(benches, lookup, rebuild);
criterion_main!(benches);
