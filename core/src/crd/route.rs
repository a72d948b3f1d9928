//! From an `HTTPScaledObject` to the proxy's [`Route`]: one pure conversion, used by the proxy
//! (to route) and by the controller (to report invalid specs and route conflicts), so both agree
//! on what an object means.

use std::collections::BTreeMap;
use std::time::Duration;

use kube::ResourceExt;

use super::{ColdStartCaps, HTTPScaledObject, HeaderSpec, PlaceholderAudience};
use crate::route::{
    Failover, HeaderMatch, HostPattern, MAX_REFRESH_SECS, PathPrefix, Placeholder, Route,
    RouteLimits, UpstreamProtocol, failover_target,
};

/// KEDA's readiness timeout when a failover is set without one (its interceptor's
/// `defaultFallbackReadinessTimeout`), used when `timeoutSeconds` is 0 and no other hold
/// timeout is given.
pub const DEFAULT_FAILOVER_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest `coldStartTimeoutFailoverRef.timeoutSeconds`: a week, the local file's bound on any
/// duration, far beyond any useful hold.
pub const MAX_FAILOVER_TIMEOUT_SECS: i32 = 7 * 24 * 3600;

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
/// No `hosts` means any host (KEDA routes such an object by path alone). The hold timeout is,
/// from the weakest: 20 s, `timeouts.conditionWait`, `rouse.coldStart.holdTimeoutMs`; with a
/// `coldStartTimeoutFailoverRef` its `timeoutSeconds` replaces them all when above 0 (KEDA's
/// precedence), and 30 s applies if it is 0 and nothing else is given (KEDA's default).
pub fn route_of(o: &HTTPScaledObject) -> Result<Route, Vec<String>> {
    let s = &o.spec;
    let mut errors = Vec::new();
    let hosts = hosts_of("spec.hosts", s.hosts.as_deref(), &mut errors);
    let path_prefixes = prefixes_of(
        "spec.pathPrefixes",
        s.path_prefixes.iter().flatten().map(String::as_str),
        &mut errors,
    );
    let headers = headers_of("spec.headers", s.headers.as_deref(), &mut errors);
    let ext = s.rouse.clone().unwrap_or_default();
    let rewrite_prefix = rewrite_of(
        "spec.rouse.rewritePrefix",
        ext.rewrite_prefix.as_deref(),
        &mut errors,
    );

    let mut limits = RouteLimits::default();
    // Whether the object sets a hold timeout itself (KEDA's failover default applies if not).
    let mut hold_timeout_given = false;
    if let Some(wait) = s
        .timeouts
        .as_ref()
        .and_then(|t| t.condition_wait.as_deref())
    {
        match parse_go_duration(wait) {
            Ok(d) if !d.is_zero() => {
                limits.hold_timeout = d;
                hold_timeout_given = true;
            }
            Ok(_) => {}
            Err(e) => errors.push(format!("spec.timeouts.conditionWait: {e}")),
        }
    }
    refuse_unserved_deadline(
        "spec.timeouts.responseHeader",
        s.timeouts
            .as_ref()
            .and_then(|t| t.response_header.as_deref()),
        "deadline for the response head",
        &mut errors,
    );
    hold_timeout_given |= apply_caps(
        &mut limits,
        ext.cold_start.as_ref(),
        ext.endpoint_concurrency,
    );
    let key = object_key(o);
    if let Some(f) = &s.cold_start_timeout_failover_ref {
        const FIELD: &str = "spec.coldStartTimeoutFailoverRef";
        if f.service.is_empty() {
            errors.push(format!("{FIELD}.service: must name a Service"));
        }
        if f.port.is_some() == f.port_name.is_some() {
            errors.push(format!(
                "{FIELD}: must define either the 'portName' or the 'port'"
            ));
        }
        match f.timeout_seconds {
            secs @ 1..=MAX_FAILOVER_TIMEOUT_SECS => {
                limits.hold_timeout = Duration::from_secs(secs.unsigned_abs().into());
            }
            0 if !hold_timeout_given => limits.hold_timeout = DEFAULT_FAILOVER_TIMEOUT,
            0 => {}
            secs => errors.push(format!(
                "{FIELD}.timeoutSeconds: must be 0..={MAX_FAILOVER_TIMEOUT_SECS} (got {secs})"
            )),
        }
        limits.failover = Some(Failover {
            target: failover_target(&key),
            addr: None,
        });
    }
    if let Some(p) = &ext.placeholder {
        if s.cold_start_timeout_failover_ref.is_some() {
            errors.push(
                "spec.rouse.placeholder: cannot be combined with spec.coldStartTimeoutFailoverRef: \
                 the placeholder answers every request while the target is cold, so none would \
                 wait for the failover; set one of them"
                    .to_string(),
            );
        }
        limits.placeholder = placeholder_of(
            "spec.rouse.placeholder",
            i64::from(p.status_code),
            p.body.clone(),
            &p.headers,
            &mut errors,
        )
        .and_then(|placeholder| {
            with_audience(
                placeholder,
                p.audience,
                p.refresh_seconds,
                (
                    "spec.rouse.placeholder.audience",
                    "spec.rouse.placeholder.refreshSeconds",
                ),
                &mut errors,
            )
        });
    }

    if !errors.is_empty() {
        return Err(errors);
    }
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

/// Refuses a deadline of KEDA's that Rouse's proxy does not have (`what`) unless it is absent or
/// zero: accepted and silently ignored would be worse than refused by name.
pub(super) fn refuse_unserved_deadline(
    field: &str,
    raw: Option<&str>,
    what: &str,
    errors: &mut Vec<String>,
) {
    match raw.map(parse_go_duration) {
        None => {}
        Some(Ok(d)) if d.is_zero() => {}
        Some(Ok(_)) => errors.push(format!(
            "{field}: not served by Rouse yet (its proxy has no {what}); remove it or set \"0s\""
        )),
        Some(Err(e)) => errors.push(format!("{field}: {e}")),
    }
}

/// The host patterns of one match block; no hosts means any host (KEDA's catch-all). Each
/// problem is named under `field` (`spec.hosts`, `spec.rules[1].hosts`).
pub(super) fn hosts_of(
    field: &str,
    hosts: Option<&[String]>,
    errors: &mut Vec<String>,
) -> Vec<HostPattern> {
    match hosts {
        None | Some([]) => vec![HostPattern::Any],
        Some(hosts) => hosts
            .iter()
            .filter_map(|h| {
                HostPattern::parse(h)
                    .map_err(|e| errors.push(format!("{field}: {e}")))
                    .ok()
            })
            .collect(),
    }
}

/// The path prefixes of one match block (none means `/`), problems named under `field`.
pub(super) fn prefixes_of<'a>(
    field: &str,
    paths: impl Iterator<Item = &'a str>,
    errors: &mut Vec<String>,
) -> Vec<PathPrefix> {
    paths
        .filter_map(|p| {
            PathPrefix::parse(p)
                .map_err(|e| errors.push(format!("{field}: {e}")))
                .ok()
        })
        .collect()
}

/// The header matches of one match block (no value: present), problems named under `field`.
pub(super) fn headers_of(
    field: &str,
    headers: Option<&[HeaderSpec]>,
    errors: &mut Vec<String>,
) -> Vec<HeaderMatch> {
    headers
        .iter()
        .copied()
        .flatten()
        .filter_map(|h| {
            let m = match &h.value {
                Some(v) => HeaderMatch::new(&h.name, v),
                None => HeaderMatch::present(&h.name),
            };
            m.map_err(|e| errors.push(format!("{field}: {e}"))).ok()
        })
        .collect()
}

/// The rewrite prefix of `spec.rouse.rewritePrefix`, if given and valid.
pub(super) fn rewrite_of(
    field: &str,
    raw: Option<&str>,
    errors: &mut Vec<String>,
) -> Option<PathPrefix> {
    raw.and_then(|p| {
        PathPrefix::parse(p)
            .map_err(|e| errors.push(format!("{field}: {e}")))
            .ok()
    })
}

/// Applies Rouse's `coldStart` caps and `endpointConcurrency` to `limits`; returns whether they
/// set the hold timeout (`holdTimeoutMs`), which then wins over KEDA's timeouts.
pub(super) fn apply_caps(
    limits: &mut RouteLimits,
    caps: Option<&ColdStartCaps>,
    endpoint_concurrency: Option<i32>,
) -> bool {
    let mut hold_timeout_given = false;
    if let Some(caps) = caps {
        let positive = |v: Option<i64>| v.and_then(|v| u64::try_from(v).ok()).filter(|v| *v > 0);
        if let Some(n) = positive(caps.max_held_requests) {
            limits.max_held_requests = usize::try_from(n).unwrap_or(usize::MAX);
        }
        if let Some(n) = positive(caps.max_held_bytes) {
            limits.max_held_bytes = n;
        }
        if let Some(ms) = positive(caps.hold_timeout_ms) {
            limits.hold_timeout = Duration::from_millis(ms);
            hold_timeout_given = true;
        }
    }
    limits.endpoint_concurrency = endpoint_concurrency
        .and_then(|c| u32::try_from(c).ok())
        .filter(|c| *c > 0);
    hold_timeout_given
}

/// A checked fixed response (placeholder or static route), problems named under `field`
/// (`spec.rouse.placeholder.statusCode`, `spec.staticRoutes[0].response.body`, ...).
pub(super) fn placeholder_of(
    field: &str,
    status: i64,
    body: Option<String>,
    headers: &BTreeMap<String, String>,
    errors: &mut Vec<String>,
) -> Option<Placeholder> {
    let headers = headers.iter().map(|(k, v)| (k.clone(), v.clone()));
    match Placeholder::build(status, body, headers) {
        Ok(p) => Some(p),
        Err(es) => {
            errors.extend(es.into_iter().map(|(f, e)| {
                let f = if f == "status" {
                    "statusCode".to_string()
                } else {
                    f
                };
                format!("{field}.{f}: {e}")
            }));
            None
        }
    }
}

/// Applies Rouse's placeholder options: `audience` (default all: KEDA's semantics) and the
/// `Refresh` interval (default 2 s for browsers); `fields` names them in errors.
pub(super) fn with_audience(
    placeholder: Placeholder,
    audience: Option<PlaceholderAudience>,
    refresh: Option<i32>,
    fields: (&str, &str),
    errors: &mut Vec<String>,
) -> Option<Placeholder> {
    let refresh = match refresh.map(u32::try_from) {
        None => None,
        Some(Ok(r)) if (1..=MAX_REFRESH_SECS).contains(&r) => Some(r),
        Some(_) => {
            errors.push(format!("{}: must be 1..={MAX_REFRESH_SECS}", fields.1));
            return None;
        }
    };
    match audience {
        Some(PlaceholderAudience::Browsers) => placeholder
            .for_browsers(refresh)
            .map_err(|e| errors.push(format!("{}: {e}", fields.1)))
            .ok(),
        Some(PlaceholderAudience::All) | None => Some(Placeholder {
            refresh_secs: refresh,
            ..placeholder
        }),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn object(yaml_spec: &str) -> HTTPScaledObject {
        serde_yaml::from_str(&format!(
            "apiVersion: rouse.dev/v1alpha1\nkind: HTTPScaledObject\n\
             metadata: {{name: shop, namespace: apps}}\nspec: {yaml_spec}\n"
        ))
        .expect("object parses")
    }

    #[test]
    fn the_failover_ref_becomes_the_routes_failover_and_its_hold_timeout() {
        let r = route_of(&object(
            "{scaleTargetRef: {service: shop, port: 80}, timeouts: {conditionWait: 7s}, \
             coldStartTimeoutFailoverRef: {service: fallback, port: 8080, timeoutSeconds: 45}}",
        ))
        .expect("valid");
        assert_eq!(
            r.limits.failover,
            Some(Failover {
                target: "apps/shop#failover".into(),
                addr: None
            })
        );
        assert_eq!(
            r.limits.hold_timeout,
            Duration::from_secs(45),
            "timeoutSeconds wins over conditionWait (KEDA)"
        );
        // KEDA's CRD default: 30 s when timeoutSeconds is left out.
        let r = route_of(&object(
            "{scaleTargetRef: {service: shop, port: 80}, \
             coldStartTimeoutFailoverRef: {service: fallback, portName: http}}",
        ))
        .expect("valid");
        assert_eq!(r.limits.hold_timeout, Duration::from_secs(30));
        // timeoutSeconds 0: the object's own hold timeout, else KEDA's 30 s fallback default.
        let r = route_of(&object(
            "{scaleTargetRef: {service: shop, port: 80}, rouse: {coldStart: {holdTimeoutMs: 900}}, \
             coldStartTimeoutFailoverRef: {service: fallback, port: 80, timeoutSeconds: 0}}",
        ))
        .expect("valid");
        assert_eq!(r.limits.hold_timeout, Duration::from_millis(900));
        let r = route_of(&object(
            "{scaleTargetRef: {service: shop, port: 80}, \
             coldStartTimeoutFailoverRef: {service: fallback, port: 80, timeoutSeconds: 0}}",
        ))
        .expect("valid");
        assert_eq!(r.limits.hold_timeout, DEFAULT_FAILOVER_TIMEOUT);
        // Without a failover nothing changes.
        let r = route_of(&object("{scaleTargetRef: {service: shop, port: 80}}")).expect("valid");
        assert_eq!(r.limits.failover, None);
        assert_eq!(r.limits.hold_timeout, Duration::from_secs(20));
    }

    /// KEDA's `timeouts.responseHeader` has no counterpart in Rouse's proxy: an object setting
    /// it is refused by name (it used to be accepted and silently ignored); absent or `0s` is
    /// fine.
    #[test]
    fn a_response_header_deadline_is_refused_by_name_unless_zero() {
        let with = |t: &str| {
            route_of(&object(&format!(
                "{{scaleTargetRef: {{service: shop, port: 80}}, timeouts: {t}}}"
            )))
        };
        assert!(with("{conditionWait: 7s}").is_ok());
        assert!(with("{responseHeader: 0s}").is_ok());
        for bad in ["{responseHeader: 5s}", "{responseHeader: later}"] {
            let errors = with(bad).expect_err(bad);
            assert!(
                errors
                    .iter()
                    .any(|e| e.starts_with("spec.timeouts.responseHeader: ")),
                "{bad}: {errors:?}"
            );
        }
        let e = with("{responseHeader: 5s}").expect_err("refused");
        assert!(e[0].contains("not served by Rouse yet"), "{e:?}");
    }

    #[test]
    fn the_placeholder_becomes_the_routes_placeholder() {
        let r = route_of(&object(
            "{scaleTargetRef: {service: shop, port: 80}, rouse: {placeholder: \
             {body: '<p>starting</p>', headers: {Refresh: '2'}}}}",
        ))
        .expect("valid");
        let p = r.limits.placeholder.expect("placeholder");
        assert_eq!(p.status, 503, "KEDA's default status");
        assert_eq!(p.body, "<p>starting</p>");
        assert_eq!(p.headers, vec![("refresh".to_string(), "2".to_string())]);
        let r = route_of(&object(
            "{scaleTargetRef: {service: shop, port: 80}, rouse: {placeholder: {statusCode: 200}}}",
        ))
        .expect("valid");
        assert_eq!(
            r.limits.placeholder.map(|p| (p.status, p.body)),
            Some((200, String::new()))
        );
    }

    #[test]
    fn a_placeholder_for_browsers_is_rouses_waiting_page_unless_a_body_is_given() {
        let r = route_of(&object(
            "{scaleTargetRef: {service: shop, port: 80}, rouse: {placeholder: \
             {audience: browsers}}}",
        ))
        .expect("valid");
        let p = r.limits.placeholder.expect("placeholder");
        assert_eq!(p.audience, crate::route::Audience::Browsers);
        assert_eq!(
            p.refresh_secs,
            Some(crate::route::DEFAULT_BROWSER_REFRESH_SECS)
        );
        assert_eq!(p.body, crate::route::WAITING_PAGE);
        let r = route_of(&object(
            "{scaleTargetRef: {service: shop, port: 80}, rouse: {placeholder: \
             {body: mine, refreshSeconds: 9}}}",
        ))
        .expect("valid");
        let p = r.limits.placeholder.expect("placeholder");
        assert_eq!(
            (p.audience, p.refresh_secs, p.body.as_str()),
            (crate::route::Audience::All, Some(9), "mine"),
            "KEDA's audience unless asked"
        );
        let errors = route_of(&object(
            "{scaleTargetRef: {service: shop, port: 80}, rouse: {placeholder: \
             {audience: browsers, refreshSeconds: 0}}}",
        ))
        .expect_err("invalid");
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("spec.rouse.placeholder.refreshSeconds: must be 1..=3600")),
            "{errors:?}"
        );
    }

    #[test]
    fn bad_placeholders_and_failovers_are_refused_naming_the_field() {
        let errors = route_of(&object(
            "{scaleTargetRef: {service: shop, port: 80}, rouse: {placeholder: \
             {statusCode: 102, headers: {Content-Length: '3', 'x-ok': \"a\\nb\"}}}}",
        ))
        .expect_err("invalid");
        for field in [
            "spec.rouse.placeholder.statusCode: must be 200..=599",
            "spec.rouse.placeholder.headers.Content-Length:",
            "spec.rouse.placeholder.headers.x-ok:",
        ] {
            assert!(
                errors.iter().any(|e| e.starts_with(field)),
                "{field}: {errors:?}"
            );
        }
        let errors = route_of(&object(
            "{scaleTargetRef: {service: shop, port: 80}, \
             coldStartTimeoutFailoverRef: {service: '', timeoutSeconds: -1}}",
        ))
        .expect_err("invalid");
        for field in [
            "spec.coldStartTimeoutFailoverRef.service:",
            "spec.coldStartTimeoutFailoverRef: must define either",
            "spec.coldStartTimeoutFailoverRef.timeoutSeconds: must be 0..=604800 (got -1)",
        ] {
            assert!(
                errors.iter().any(|e| e.starts_with(field)),
                "{field}: {errors:?}"
            );
        }
        let errors = route_of(&object(
            "{scaleTargetRef: {service: shop, port: 80}, rouse: {placeholder: {}}, \
             coldStartTimeoutFailoverRef: {service: fallback, port: 80}}",
        ))
        .expect_err("both");
        assert!(
            errors.iter().any(|e| e.starts_with(
                "spec.rouse.placeholder: cannot be combined with spec.coldStartTimeoutFailoverRef"
            )),
            "{errors:?}"
        );
    }
}
