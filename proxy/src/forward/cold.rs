//! The forwarding decisions a cold target adds, kept pure so they are tested apart from pingora:
//! whether a request gets the route's placeholder instead of a hold ([`placeholder_for`]), what
//! a failed hold turns into ([`after_hold`]), and the placeholder's response head
//! ([`placeholder_head`]).

use rouse_core::RouteLimits;
use rouse_core::route::{Audience, Placeholder};

use crate::reason::Reason;

/// What the request path knows about a request and its target when it decides.
#[derive(Debug, Clone, Copy)]
pub struct ColdView {
    /// The target has at least one ready endpoint (with or without free capacity).
    pub ready: bool,
    /// The platform says the target cannot get endpoints at all (e.g. its Service is missing).
    pub unavailable: bool,
    /// The request is an event gateway delivery (see [`crate::delivery_guard`]).
    pub delivery: bool,
    /// Its `Accept` prefers HTML ([`rouse_core::route::prefers_html`]): a person at a browser.
    pub html: bool,
}

/// The route's placeholder when it answers this request: every request while the target has
/// no ready endpoint (KEDA's semantics: not only browsers), except
/// - event gateway deliveries, which must reach the app (they are held and wake it instead);
/// - requests for a target that cannot get endpoints at all, which get the truthful
///   `target_unavailable` answer rather than a "starting…" page for something that will not
///   start.
///
/// - with [`Audience::Browsers`], requests that do not prefer HTML: API clients are held and
///   answered by the app, only people get the waiting page.
///
/// A target with ready endpoints that are all at their concurrency cap is not cold: such a
/// request is held for capacity as usual.
pub fn placeholder_for(limits: &RouteLimits, view: ColdView) -> Option<&Placeholder> {
    if view.ready || view.unavailable || view.delivery {
        return None;
    }
    limits
        .placeholder
        .as_ref()
        .filter(|p| p.audience == Audience::All || view.html)
}

/// What a request whose hold ended with `reason` gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterHold {
    /// Forward it to the route's failover.
    Failover,
    /// Answer `reason` (the JSON error).
    Answer(Reason),
}

/// With a failover, a request whose target did not become ready in time (`cold_start_timeout`)
/// or cannot get endpoints at all (`target_unavailable`: waiting would only end in the same
/// timeout) goes to the failover (KEDA: forward to the failover Service instead of failing).
/// Caps (`*_full`), a client gone, a proxy shutting down keep their answer: the failover is for
/// a target that is late, not for shedding load. Event gateway deliveries never fail over: they
/// belong to the app, and the gateway retries them.
pub fn after_hold(limits: &RouteLimits, reason: Reason, delivery: bool) -> AfterHold {
    match reason {
        Reason::ColdStartTimeout | Reason::TargetUnavailable
            if limits.failover.is_some() && !delivery =>
        {
            AfterHold::Failover
        }
        other => AfterHold::Answer(other),
    }
}

/// The headers of a placeholder response besides `content-length`: the placeholder's own, then
/// what it leaves out: `content-type` sniffed from the body, `cache-control: no-store` (a
/// "starting…" page must not be cached in place of the app), `retry-after` for a 503, and
/// `x-rouse-placeholder: true` so clients and tests can tell it from the app's answer.
pub fn placeholder_head(p: &Placeholder, retry_after_secs: u32) -> Vec<(String, String)> {
    let mut head = p.headers.clone();
    let mut default = |name: &str, value: String| {
        if p.header(name).is_none() {
            head.push((name.to_string(), value));
        }
    };
    if !p.body.is_empty() {
        default("content-type", sniff(&p.body).to_string());
    }
    default("cache-control", "no-store".to_string());
    if p.status == 503 {
        default("retry-after", retry_after_secs.to_string());
    }
    if let Some(refresh) = p.refresh_secs {
        default("refresh", refresh.to_string());
    }
    head.push((PLACEHOLDER_HEADER.to_string(), "true".to_string()));
    head
}

/// Response header on a placeholder answer.
pub const PLACEHOLDER_HEADER: &str = "x-rouse-placeholder";

/// The content type of a body given without one: HTML, JSON or plain text, by its first
/// non-blank character (what a browser would guess for these three).
fn sniff(body: &str) -> &'static str {
    match body.trim_start().chars().next() {
        Some('<') => "text/html; charset=utf-8",
        Some('{' | '[') => "application/json",
        _ => "text/plain; charset=utf-8",
    }
}

#[cfg(test)]
mod tests {
    use rouse_core::route::{Failover, Placeholder};

    use super::*;

    fn limits(placeholder: bool, failover: bool) -> RouteLimits {
        RouteLimits {
            placeholder: placeholder.then(|| {
                Placeholder::build(503, Some("<p>starting</p>".into()), []).expect("valid")
            }),
            failover: failover.then(|| Failover {
                target: "a#failover".into(),
                addr: None,
            }),
            ..RouteLimits::default()
        }
    }

    const COLD: ColdView = ColdView {
        ready: false,
        unavailable: false,
        delivery: false,
        html: false,
    };

    #[test]
    fn the_placeholder_answers_every_request_while_cold_and_only_then() {
        let l = limits(true, false);
        assert!(placeholder_for(&l, COLD).is_some());
        for view in [
            ColdView {
                ready: true,
                ..COLD
            },
            ColdView {
                unavailable: true,
                ..COLD
            },
            ColdView {
                delivery: true,
                ..COLD
            },
        ] {
            assert!(placeholder_for(&l, view).is_none(), "{view:?}");
        }
        assert!(placeholder_for(&limits(false, false), COLD).is_none());
    }

    #[test]
    fn a_waiting_page_for_browsers_answers_only_requests_that_prefer_html() {
        let mut l = limits(true, false);
        l.placeholder = l
            .placeholder
            .map(|p| p.for_browsers(Some(2)).expect("refresh"));
        let browser = ColdView { html: true, ..COLD };
        let page = placeholder_for(&l, browser).expect("a browser gets the page");
        assert!(
            placeholder_head(page, 1).contains(&("refresh".to_string(), "2".to_string())),
            "reloads by itself"
        );
        assert!(placeholder_for(&l, COLD).is_none(), "an API client is held");
        assert!(
            placeholder_for(
                &l,
                ColdView {
                    ready: true,
                    ..browser
                }
            )
            .is_none(),
            "warm: the app answers"
        );
        // KEDA's semantics by default: every request.
        assert!(placeholder_for(&limits(true, false), COLD).is_some());
    }

    #[test]
    fn a_timed_out_or_unavailable_hold_fails_over_and_nothing_else_does() {
        let l = limits(false, true);
        for r in [Reason::ColdStartTimeout, Reason::TargetUnavailable] {
            assert_eq!(after_hold(&l, r, false), AfterHold::Failover, "{r:?}");
            assert_eq!(after_hold(&l, r, true), AfterHold::Answer(r), "delivery");
            assert_eq!(
                after_hold(&limits(false, false), r, false),
                AfterHold::Answer(r)
            );
        }
        for r in [
            Reason::RouteQueueFull,
            Reason::GlobalBytesFull,
            Reason::ClientClosed,
            Reason::NoEndpoint,
        ] {
            assert_eq!(after_hold(&l, r, false), AfterHold::Answer(r), "{r:?}");
        }
    }

    #[test]
    fn the_placeholder_head_fills_in_what_was_not_given() {
        let p = Placeholder::build(503, Some("  <html>".into()), []).expect("valid");
        let head = placeholder_head(&p, 7);
        let get = |n: &str| head.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
        assert_eq!(get("content-type"), Some("text/html; charset=utf-8"));
        assert_eq!(get("cache-control"), Some("no-store"));
        assert_eq!(get("retry-after"), Some("7"));
        assert_eq!(get(PLACEHOLDER_HEADER), Some("true"));

        let given = Placeholder::build(
            503,
            Some("{}".into()),
            [
                ("Retry-After".to_string(), "30".to_string()),
                (
                    "Content-Type".to_string(),
                    "application/problem+json".to_string(),
                ),
            ],
        )
        .expect("valid");
        let head = placeholder_head(&given, 7);
        let all = |n: &str| head.iter().filter(|(k, _)| k == n).count();
        assert_eq!(all("retry-after"), 1, "{head:?}");
        assert_eq!(all("content-type"), 1, "{head:?}");
        assert!(head.contains(&("retry-after".into(), "30".into())));

        let ok = Placeholder::build(200, Some("starting".into()), []).expect("valid");
        let head = placeholder_head(&ok, 7);
        assert!(head.iter().all(|(k, _)| k != "retry-after"), "not a 503");
        assert!(head.contains(&("content-type".into(), "text/plain; charset=utf-8".into())));
        let empty = Placeholder::build(204, None, []).expect("valid");
        assert!(
            placeholder_head(&empty, 1)
                .iter()
                .all(|(k, _)| k != "content-type")
        );
    }
}
