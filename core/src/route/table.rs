//! The route table: picks the route for a request by host, then path, then headers.
//!
//! Built once from the full route list and swapped whole (readers never lock). Lookup is a hash
//! probe per host label, a short scan of that host's header-less candidates and a hash probe per
//! routing header the host uses, so it stays flat with tens of thousands of routes.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;

use super::{HeaderMatch, HostPattern, PathPrefix, Route, normalize_host};

/// A route that lost a (host, path, headers) key to an earlier route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Conflict {
    /// The rejected (later) route.
    pub route: String,
    /// The route that keeps the key.
    pub existing: String,
    pub host: String,
    pub path_prefix: String,
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "route {:?} claims host {:?} path {:?}, already served by route {:?}",
            self.route, self.host, self.path_prefix, self.existing
        )
    }
}

#[derive(Debug)]
struct Candidate {
    prefix: PathPrefix,
    headers: Vec<HeaderMatch>,
    route: Arc<Route>,
}

#[derive(Debug, Default)]
struct HostEntry {
    /// Deepest prefix first, then most header matches, then most exact-value ones, then
    /// declaration order.
    candidates: Vec<Candidate>,
    /// Indices of the candidates without header matches, in that order.
    plain: Vec<usize>,
    /// Indices of the candidates with header matches, by their first header (headers are
    /// sorted), so a lookup probes only the candidates whose first header the request carries:
    /// a thousand tenants on one host cost one hash probe, not a thousand checks.
    by_header: HashMap<String, ByValue>,
}

/// Candidates whose first header has one name: by exact value, and presence-only ones.
#[derive(Debug, Default)]
struct ByValue {
    exact: HashMap<String, Vec<usize>>,
    present: Vec<usize>,
}

impl HostEntry {
    /// Sorts the candidates into priority order and builds the header index.
    fn finish(&mut self) {
        // Stable sort keeps declaration order among equals.
        // As KEDA ranks them: deepest prefix, then most headers, then most exact-value headers.
        let exact = |c: &Candidate| c.headers.iter().filter(|h| h.value.is_some()).count();
        self.candidates.sort_by(|a, b| {
            b.prefix
                .depth()
                .cmp(&a.prefix.depth())
                .then(b.headers.len().cmp(&a.headers.len()))
                .then(exact(b).cmp(&exact(a)))
        });
        for (i, c) in self.candidates.iter().enumerate() {
            let Some(h) = c.headers.first() else {
                self.plain.push(i);
                continue;
            };
            let by_value = self.by_header.entry(h.name.clone()).or_default();
            match &h.value {
                Some(v) => by_value.exact.entry(v.clone()).or_default().push(i),
                None => by_value.present.push(i),
            }
        }
    }
}

/// A request's headers, as route matching reads them.
pub trait RequestHeaders {
    /// Every value of header `name` (given lower-case) the request carries, in order.
    fn values(&self, name: &str) -> impl Iterator<Item = &str>;
}

/// A request without headers (tests, tools).
pub struct NoHeaders;

impl RequestHeaders for NoHeaders {
    fn values(&self, _: &str) -> impl Iterator<Item = &str> {
        std::iter::empty()
    }
}

/// `(name, value)` pairs, names lower-case.
impl<N: AsRef<str>, V: AsRef<str>> RequestHeaders for [(N, V)] {
    fn values(&self, name: &str) -> impl Iterator<Item = &str> {
        self.iter()
            .filter(move |(n, _)| n.as_ref() == name)
            .map(|(_, v)| v.as_ref())
    }
}

/// The result of a lookup: the route and the prefix that selected it.
#[derive(Debug, Clone, Copy)]
pub struct Match<'a> {
    pub route: &'a Arc<Route>,
    pub host: &'a HostPattern,
    pub prefix: &'a PathPrefix,
}

impl Match<'_> {
    /// The path (and query) to send upstream, after the route's prefix rewrite if any.
    pub fn upstream_path(&self, path_and_query: &str) -> Option<String> {
        self.route
            .rewrite_prefix
            .as_ref()
            .map(|to| self.prefix.rewrite(path_and_query, to))
    }
}

/// Immutable routing snapshot.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<Arc<Route>>,
    exact: HashMap<String, (HostPattern, HostEntry)>,
    /// Keyed by suffix (`.example.com`).
    wildcard: HashMap<String, (HostPattern, HostEntry)>,
    any: Option<(HostPattern, HostEntry)>,
}

impl RouteTable {
    /// Builds a table. Routes are taken in order: when two claim the same host, path prefix and
    /// header set, the later one is rejected whole and reported as a [`Conflict`], so callers
    /// should pass routes oldest first.
    pub fn build(routes: impl IntoIterator<Item = Route>) -> (RouteTable, Vec<Conflict>) {
        let mut table = RouteTable::default();
        let mut conflicts = Vec::new();
        let mut owners: HashMap<(HostPattern, PathPrefix, Vec<HeaderMatch>), String> =
            HashMap::new();
        let mut names: HashMap<String, ()> = HashMap::new();

        for route in routes {
            let prefixes = if route.path_prefixes.is_empty() {
                vec![PathPrefix::root()]
            } else {
                route.path_prefixes.clone()
            };
            let mut headers = route.headers.clone();
            headers.sort_by(|a, b| (&a.name, &a.value).cmp(&(&b.name, &b.value)));

            if names.contains_key(&route.name) {
                conflicts.push(Conflict {
                    route: route.name.clone(),
                    existing: route.name.clone(),
                    host: String::new(),
                    path_prefix: String::new(),
                });
                continue;
            }
            // Reject the whole route if any of its keys is taken.
            let clash = route.hosts.iter().find_map(|h| {
                prefixes.iter().find_map(|p| {
                    owners
                        .get(&(h.clone(), p.clone(), headers.clone()))
                        .map(|owner| Conflict {
                            route: route.name.clone(),
                            existing: owner.clone(),
                            host: h.to_string(),
                            path_prefix: p.to_string(),
                        })
                })
            });
            if let Some(c) = clash {
                conflicts.push(c);
                continue;
            }
            names.insert(route.name.clone(), ());
            let route = Arc::new(route);
            for host in &route.hosts {
                let entry = table.entry(host);
                for prefix in &prefixes {
                    owners.insert(
                        (host.clone(), prefix.clone(), headers.clone()),
                        route.name.clone(),
                    );
                    entry.candidates.push(Candidate {
                        prefix: prefix.clone(),
                        headers: headers.clone(),
                        route: route.clone(),
                    });
                }
            }
            table.routes.push(route);
        }

        table.exact.values_mut().for_each(|(_, e)| e.finish());
        table.wildcard.values_mut().for_each(|(_, e)| e.finish());
        if let Some((_, e)) = table.any.as_mut() {
            e.finish();
        }
        (table, conflicts)
    }

    fn entry(&mut self, host: &HostPattern) -> &mut HostEntry {
        let slot = match host {
            HostPattern::Exact(h) => self
                .exact
                .entry(h.clone())
                .or_insert_with(|| (host.clone(), HostEntry::default())),
            HostPattern::Wildcard(s) => self
                .wildcard
                .entry(s.clone())
                .or_insert_with(|| (host.clone(), HostEntry::default())),
            HostPattern::Any => self
                .any
                .get_or_insert_with(|| (HostPattern::Any, HostEntry::default())),
        };
        &mut slot.1
    }

    /// All routes, in declaration order (conflicting ones excluded).
    pub fn routes(&self) -> &[Arc<Route>] {
        &self.routes
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Finds the route for a request.
    ///
    /// `host` is the request's authority (absolute-form URI) or `Host` header, raw; `path` is the
    /// normalised path without query (see [`normalize_path`]); `headers` are the request's.
    ///
    /// The most specific host pattern that exists decides: its paths are tried and, if none
    /// matches, the request has no route (it does not fall through to a wildcard), which keeps
    /// "who serves this host" answerable from the host alone.
    pub fn resolve<'a>(
        &'a self,
        host: &str,
        path: &str,
        headers: &(impl RequestHeaders + ?Sized),
    ) -> Option<Match<'a>> {
        let host = normalize_host(host);
        let (pattern, entry) = self.host_entry(&host)?;
        let matches = |c: &Candidate| {
            c.prefix.matches(path)
                && c.headers.iter().all(|h| match &h.value {
                    Some(want) => headers.values(&h.name).any(|v| v == want),
                    None => headers.values(&h.name).next().is_some(),
                })
        };
        // Lowest index of `list` that matches, if below `best`.
        let probe = |list: &[usize], best: Option<usize>| {
            list.iter()
                .copied()
                .take_while(|&i| best.is_none_or(|b| i < b))
                .find(|&i| entry.candidates.get(i).is_some_and(matches))
        };
        // The first candidate in priority order that matches: the best plain one, then any
        // header candidate ranked before it that the request's headers select.
        let mut best = entry.plain.iter().copied().find(|&i| {
            entry
                .candidates
                .get(i)
                .is_some_and(|c| c.prefix.matches(path))
        });
        for (name, by_value) in &entry.by_header {
            let mut present = false;
            for value in headers.values(name) {
                present = true;
                if let Some(found) = by_value.exact.get(value).and_then(|l| probe(l, best)) {
                    best = Some(found);
                }
            }
            if present && let Some(found) = probe(&by_value.present, best) {
                best = Some(found);
            }
        }
        let c = entry.candidates.get(best?)?;
        Some(Match {
            route: &c.route,
            host: pattern,
            prefix: &c.prefix,
        })
    }

    /// The host pattern that would decide for `host` (normalised), if any.
    pub fn host_pattern(&self, host: &str) -> Option<&HostPattern> {
        self.host_entry(&normalize_host(host)).map(|(p, _)| p)
    }

    fn host_entry(&self, host: &str) -> Option<(&HostPattern, &HostEntry)> {
        if let Some((p, e)) = self.exact.get(host) {
            return Some((p, e));
        }
        // `a.b.example.com` probes `.b.example.com`, `.example.com`, `.com`: longest suffix first.
        let mut rest = host;
        while let Some(i) = rest.find('.') {
            let suffix = &rest[i..];
            if let Some((p, e)) = self.wildcard.get(suffix) {
                return Some((p, e));
            }
            rest = &rest[i + 1..];
        }
        self.any.as_ref().map(|(p, e)| (p, e))
    }
}

/// Normalises a request path for matching and forwarding: decodes percent-encoded dots (an
/// unreserved character, RFC 3986 §6.2.2.2, so `%2e` *is* `.`), collapses `//`, resolves `.` and
/// `..` segments (never above the root) so `/api/../admin` or `/api/%2e%2e/admin` cannot pose as
/// `/api`. The query is kept as is.
pub fn normalize_path(path_and_query: &str) -> String {
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    };
    let decoded;
    let path = if path.contains('%') {
        decoded = path.replace("%2e", ".").replace("%2E", ".");
        decoded.as_str()
    } else {
        path
    };
    let mut out: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let trailing = path.len() > 1 && path.ends_with('/') && !out.is_empty();
    let mut s = String::with_capacity(path_and_query.len() + 1);
    s.push('/');
    s.push_str(&out.join("/"));
    if trailing {
        s.push('/');
    }
    if let Some(q) = query {
        s.push('?');
        s.push_str(q);
    }
    s
}
