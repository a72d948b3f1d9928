//! From an InterceptorRoute spec to the proxy's [`Route`]s: pure, shared by the proxy (to route)
//! and the controller (to report refused fields and conflicts). The per-field checks are the
//! HTTPScaledObject's ([`super::super::route`]), so both kinds refuse the same values.
//!
//! One object becomes one route per rule (a rule is an AND of hosts, paths and headers; rules
//! are ORed) and one per static-route rule, all sharing the object's target `namespace/name`.

use std::time::Duration;

use super::{InterceptorRouteSpec, RoutingRule, StaticResponse, StaticResponseMode};
use crate::crd::route::{
    DEFAULT_FAILOVER_TIMEOUT, apply_caps, headers_of, hosts_of, parse_go_duration, placeholder_of,
    prefixes_of, refuse_unserved_deadline, rewrite_of, with_audience,
};
use crate::route::{
    Failover, HostPattern, Placeholder, Route, RouteLimits, StaticAnswer, StaticMode,
    UpstreamProtocol, failover_target,
};

/// The hold used for `timeouts.readiness: 0s` without a fallback (KEDA: no readiness deadline):
/// a week, the longest hold Rouse accepts anywhere. Caps on held requests still apply.
pub const MAX_HOLD: Duration = Duration::from_secs(7 * 24 * 3600);

/// Separates an object's key from the suffix naming one of its extra routes (`#rule-1`,
/// `#static-0-0`); `#` never occurs in a Kubernetes name.
const ROUTE_SUFFIX: char = '#';

/// The object (`namespace/name`) a route name belongs to.
pub fn route_owner(route: &str) -> &str {
    route
        .split_once(ROUTE_SUFFIX)
        .map_or(route, |(owner, _)| owner)
}

/// Every route the object `key` asks for, or every problem with it, each naming its field.
///
/// Hold timeout, from the weakest: Rouse's 20 s; `timeouts.readiness` (`0s`: no deadline, i.e.
/// [`MAX_HOLD`]); with a fallback and no positive readiness, 30 s (KEDA's default);
/// `rouse.coldStart.holdTimeoutMs` wins over all.
pub fn routes_of(key: &str, spec: &InterceptorRouteSpec) -> Result<Vec<Route>, Vec<String>> {
    let mut errors = Vec::new();
    let ext = spec.rouse.clone().unwrap_or_default();
    let rewrite_prefix = rewrite_of(
        "spec.rouse.rewritePrefix",
        ext.rewrite_prefix.as_deref(),
        &mut errors,
    );
    let timeouts = spec.timeouts.clone().unwrap_or_default();
    let duration = |field: &str, raw: Option<&str>, errors: &mut Vec<String>| {
        raw.and_then(|r| {
            parse_go_duration(r)
                .map_err(|e| errors.push(format!("{field}: {e}")))
                .ok()
        })
    };
    let readiness = duration(
        "spec.timeouts.readiness",
        timeouts.readiness.as_deref(),
        &mut errors,
    );
    for (field, raw, what) in [
        (
            "spec.timeouts.request",
            timeouts.request.as_deref(),
            "deadline covering the whole request",
        ),
        (
            "spec.timeouts.responseHeader",
            timeouts.response_header.as_deref(),
            "deadline for the response head",
        ),
    ] {
        refuse_unserved_deadline(field, raw, what, &mut errors);
    }

    let cold = spec.cold_start.as_ref();
    let fallback = cold
        .and_then(|c| c.fallback.as_ref())
        .and_then(|f| f.service.as_ref());
    let mut limits = RouteLimits::default();
    match readiness {
        Some(d) if !d.is_zero() => limits.hold_timeout = d.min(MAX_HOLD),
        _ if fallback.is_some() => limits.hold_timeout = DEFAULT_FAILOVER_TIMEOUT,
        Some(_) => limits.hold_timeout = MAX_HOLD,
        None => {}
    }
    apply_caps(
        &mut limits,
        ext.cold_start.as_ref(),
        ext.endpoint_concurrency,
    );
    if let Some(f) = fallback {
        const FIELD: &str = "spec.coldStart.fallback.service";
        if f.name.is_empty() {
            errors.push(format!("{FIELD}.name: must name a Service"));
        }
        if f.port.is_some() == f.port_name.is_some() {
            errors.push(format!(
                "{FIELD}: exactly one of 'port' or 'portName' must be set"
            ));
        }
        limits.failover = Some(Failover {
            target: failover_target(key),
            addr: None,
        });
    }
    if let Some(p) = cold.and_then(|c| c.placeholder.as_ref()) {
        const FIELD: &str = "spec.coldStart.placeholder";
        if fallback.is_some() {
            errors.push(format!(
                "{FIELD}: not served by Rouse together with spec.coldStart.fallback yet (KEDA \
                 answers with the placeholder, then fails over at the readiness timeout); set \
                 one of them"
            ));
        }
        match &p.response {
            Some(r) => {
                limits.placeholder = response_of(&format!("{FIELD}.response"), r, &mut errors)
                    .and_then(|placeholder| {
                        with_audience(
                            placeholder,
                            ext.placeholder_audience,
                            ext.placeholder_refresh_seconds,
                            (
                                "spec.rouse.placeholderAudience",
                                "spec.rouse.placeholderRefreshSeconds",
                            ),
                            &mut errors,
                        )
                    })
            }
            None => errors.push(format!("{FIELD}.response: required")),
        }
    } else if ext.placeholder_audience.is_some() || ext.placeholder_refresh_seconds.is_some() {
        errors.push(
            "spec.rouse.placeholderAudience: applies to spec.coldStart.placeholder, which is not \
             set"
            .to_string(),
        );
    }
    let t = &spec.target;
    if t.port.is_some() == t.port_name.is_some() {
        errors.push("spec.target: exactly one of 'port' or 'portName' must be set".into());
    }

    let default_rule = [RoutingRule::default()];
    let rules = match spec.rules.as_deref() {
        None | Some([]) => &default_rule[..],
        Some(rules) => rules,
    };
    let mut routes = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        let name = if i == 0 {
            key.to_string()
        } else {
            format!("{key}{ROUTE_SUFFIX}rule-{i}")
        };
        let field = format!("spec.rules[{i}]");
        routes.push(route(&name, key, &field, rule, None, &mut errors));
    }
    // A static rule without hosts answers on the object's own hosts (KEDA matches static routes
    // among the requests already routed to the object).
    let own_hosts: Vec<HostPattern> = {
        let mut hosts: Vec<HostPattern> = Vec::new();
        for r in &routes {
            for h in &r.hosts {
                if !hosts.contains(h) {
                    hosts.push(h.clone());
                }
            }
        }
        hosts
    };
    for (i, s) in spec.static_routes.iter().flatten().enumerate() {
        let field = format!("spec.staticRoutes[{i}]");
        let Some(response) = response_of(&format!("{field}.response"), &s.response, &mut errors)
        else {
            continue;
        };
        if s.rules.is_empty() {
            errors.push(format!("{field}.rules: at least one rule is required"));
        }
        let answer = StaticAnswer {
            response,
            mode: match s.response_mode {
                Some(StaticResponseMode::Always) => StaticMode::Always,
                Some(StaticResponseMode::WhenUnavailable) | None => StaticMode::WhenUnavailable,
            },
        };
        for (j, rule) in s.rules.iter().enumerate() {
            let name = format!("{key}{ROUTE_SUFFIX}static-{i}-{j}");
            let rule_field = format!("{field}.rules[{j}]");
            let mut r = route(
                &name,
                key,
                &rule_field,
                rule,
                Some(answer.clone()),
                &mut errors,
            );
            if rule.hosts.as_deref().is_none_or(<[String]>::is_empty) {
                r.hosts.clone_from(&own_hosts);
            }
            routes.push(r);
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    for r in &mut routes {
        r.rewrite_prefix.clone_from(&rewrite_prefix);
        if r.limits.static_answer.is_none() {
            r.limits = limits.clone();
        } else {
            // A static route neither holds nor fails over: it answers while the target is cold.
            r.limits = RouteLimits {
                static_answer: r.limits.static_answer.take(),
                placeholder: None,
                failover: None,
                ..limits.clone()
            };
        }
    }
    Ok(routes)
}

/// One route of `owner` from one rule; limits are filled in by the caller.
fn route(
    name: &str,
    owner: &str,
    field: &str,
    rule: &RoutingRule,
    static_answer: Option<StaticAnswer>,
    errors: &mut Vec<String>,
) -> Route {
    let paths = rule.paths.iter().flatten().map(|p| p.value.as_str());
    Route {
        name: name.to_string(),
        target: owner.to_string(),
        hosts: hosts_of(&format!("{field}.hosts"), rule.hosts.as_deref(), errors),
        path_prefixes: prefixes_of(&format!("{field}.paths"), paths, errors),
        headers: headers_of(&format!("{field}.headers"), rule.headers.as_deref(), errors),
        rewrite_prefix: None,
        upstream_protocol: UpstreamProtocol::Http1,
        limits: RouteLimits {
            static_answer,
            ..RouteLimits::default()
        },
    }
}

/// A KEDA `StaticResponse` as a checked fixed response; `bodyFromConfigMap` is refused.
fn response_of(field: &str, r: &StaticResponse, errors: &mut Vec<String>) -> Option<Placeholder> {
    if r.body_from_config_map.is_some() {
        errors.push(format!(
            "{field}.bodyFromConfigMap: not served by Rouse yet; give the body inline in {field}.body"
        ));
    }
    let status = r
        .status_code
        .map_or(i64::from(Placeholder::DEFAULT_STATUS), i64::from);
    placeholder_of(
        field,
        status,
        r.body.clone(),
        &r.headers.clone().unwrap_or_default(),
        errors,
    )
}
