//! From an `HTTPScaledObject` to the proxy's [`Route`]: one pure conversion, used by the proxy
//! (to route) and by the controller (to report invalid specs and route conflicts), so both agree
//! on what an object means.

use std::time::Duration;

use kube::ResourceExt;

use super::HTTPScaledObject;
use crate::route::{HeaderMatch, HostPattern, PathPrefix, Route, RouteLimits, UpstreamProtocol};

/// The name routes, targets and metrics use for an object: `namespace/name`.
pub fn object_key(o: &HTTPScaledObject) -> String {
    format!("{}/{}", o.namespace().unwrap_or_default(), o.name_any())
}

/// Parses a Go duration as KEDA's fields carry them (`300ms`, `20s`, `1m30s`, `1h`).
pub fn parse_go_duration(raw: &str) -> Result<Duration, String> {
    let bad = || format!("{raw:?} is not a duration like \"500ms\", \"20s\" or \"1m30s\"");
    let mut rest = raw.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let value: f64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total += Duration::try_from_secs_f64(value * scale).map_err(|_| bad())?;
    }
    Ok(total)
}

/// The route an object asks for, or every problem with it (each naming the field).
///
/// No `hosts` means any host (KEDA routes such an object by path alone).
pub fn route_of(o: &HTTPScaledObject) -> Result<Route, Vec<String>> {
    let s = &o.spec;
    let mut errors = Vec::new();
    let hosts: Vec<HostPattern> = match s.hosts.as_deref() {
        None | Some([]) => vec![HostPattern::Any],
        Some(hosts) => hosts
            .iter()
            .filter_map(|h| {
                HostPattern::parse(h)
                    .map_err(|e| errors.push(format!("spec.hosts: {e}")))
                    .ok()
            })
            .collect(),
    };
    let path_prefixes: Vec<PathPrefix> = s
        .path_prefixes
        .iter()
        .flatten()
        .filter_map(|p| {
            PathPrefix::parse(p)
                .map_err(|e| errors.push(format!("spec.pathPrefixes: {e}")))
                .ok()
        })
        .collect();
    let headers: Vec<HeaderMatch> = s
        .headers
        .iter()
        .flatten()
        .filter_map(|h| {
            let m = match &h.value {
                Some(v) => HeaderMatch::new(&h.name, v),
                None => HeaderMatch::present(&h.name),
            };
            m.map_err(|e| errors.push(format!("spec.headers: {e}")))
                .ok()
        })
        .collect();
    let ext = s.rouse.clone().unwrap_or_default();
    let rewrite_prefix = ext.rewrite_prefix.as_deref().and_then(|p| {
        PathPrefix::parse(p)
            .map_err(|e| errors.push(format!("spec.rouse.rewritePrefix: {e}")))
            .ok()
    });

    let mut limits = RouteLimits::default();
    if let Some(wait) = s
        .timeouts
        .as_ref()
        .and_then(|t| t.condition_wait.as_deref())
    {
        match parse_go_duration(wait) {
            Ok(d) if !d.is_zero() => limits.hold_timeout = d,
            Ok(_) => {}
            Err(e) => errors.push(format!("spec.timeouts.conditionWait: {e}")),
        }
    }
    if let Some(caps) = &ext.cold_start {
        let positive = |v: Option<i64>| v.and_then(|v| u64::try_from(v).ok()).filter(|v| *v > 0);
        if let Some(n) = positive(caps.max_held_requests) {
            limits.max_held_requests = usize::try_from(n).unwrap_or(usize::MAX);
        }
        if let Some(n) = positive(caps.max_held_bytes) {
            limits.max_held_bytes = n;
        }
        if let Some(ms) = positive(caps.hold_timeout_ms) {
            limits.hold_timeout = Duration::from_millis(ms);
        }
    }
    limits.endpoint_concurrency = ext
        .endpoint_concurrency
        .and_then(|c| u32::try_from(c).ok())
        .filter(|c| *c > 0);

    if !errors.is_empty() {
        return Err(errors);
    }
    let key = object_key(o);
    Ok(Route {
        name: key.clone(),
        target: key,
        hosts,
        path_prefixes,
        headers,
        rewrite_prefix,
        upstream_protocol: UpstreamProtocol::Http1,
        limits,
    })
}

/// Objects in the order their routes are claimed: oldest first (ties by key), so on a conflict
/// the newer object is the one refused, whichever process computes it.
pub fn claim_order(objects: &mut [&HTTPScaledObject]) {
    objects.sort_by_cached_key(|o| {
        (
            o.metadata.creation_timestamp.as_ref().map(|t| t.0),
            object_key(o),
        )
    });
}
