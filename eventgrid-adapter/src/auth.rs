//! Who may deliver: shared keys (header or query parameter, constant-time compare, any of the
//! configured keys so two are valid during rotation) and Microsoft Entra ID bearer tokens
//! (RS256, issuer, audience, expiry; keys from the tenant's JWKS, cached).
//!
//! A failed check is 401; a check that *cannot run* (JWKS unreachable) is 503 + Retry-After,
//! because Event Grid never retries a 401 and the event would be lost.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use subtle::ConstantTimeEq;

use crate::config::{AuthConfig, EntraConfig};
use crate::protocol::Headers;

/// Why a request was not let in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// 401: wrong or missing credentials.
    Unauthorized(String),
    /// 503: the check could not run (key set unreachable); the sender should retry.
    Unavailable(String),
}

/// Constant-time key comparison (length leaks, contents do not).
fn key_matches(given: &str, keys: &[String]) -> bool {
    keys.iter().fold(false, |ok, k| {
        ok | bool::from(given.as_bytes().ct_eq(k.as_bytes()))
    })
}

/// The value of query parameter `name` (`application/x-www-form-urlencoded`: `+` is a space,
/// percent-escapes decoded; the first occurrence wins).
pub fn query_param<'a>(query: &'a str, name: &str) -> Option<std::borrow::Cow<'a, str>> {
    form_urlencoded::parse(query.as_bytes()).find_map(|(k, v)| (k == name).then_some(v))
}

/// Keys fetched from a JWKS URL, by `kid`.
struct KeySet {
    keys: HashMap<String, DecodingKey>,
    fetched: Instant,
}

/// The shared keys in force: a list, or why there is none right now (on Kubernetes, the key
/// Secret is missing or unreadable). Replaced whole, so a request sees one set or the other.
type KeyState = Result<std::sync::Arc<Vec<String>>, String>;

/// Checks credentials per a subscription's [`AuthConfig`].
pub struct Authenticator {
    config: AuthConfig,
    /// Starts as `config.keys`; [`Authenticator::set_keys`] replaces it (Secret rotation on
    /// Kubernetes takes effect without rebuilding anything).
    keys: std::sync::RwLock<KeyState>,
    jwks: Mutex<Option<KeySet>>,
}

type HttpsClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Empty<bytes::Bytes>,
>;

fn https_client() -> Result<HttpsClient, String> {
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .map_err(|e| format!("TLS roots: {e}"))?
        .https_or_http()
        .enable_http1()
        .build();
    Ok(
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(connector),
    )
}

/// A JWKS document, each key kept unparsed: one key of a type or algorithm this version of
/// `jsonwebtoken` does not know must not make the others unusable.
#[derive(serde::Deserialize)]
struct Jwks {
    keys: Vec<serde_json::Value>,
}

/// The RSA signing keys of a JWKS document, by `kid` (keys without a `kid`, of another type or
/// that do not parse are skipped).
fn parse_jwks(body: &[u8]) -> Result<HashMap<String, DecodingKey>, String> {
    let jwks: Jwks = serde_json::from_slice(body).map_err(|e| format!("JWKS JSON: {e}"))?;
    let keys: HashMap<String, DecodingKey> = jwks
        .keys
        .into_iter()
        .filter_map(|k| serde_json::from_value::<Jwk>(k).ok())
        .filter(|k| matches!(k.algorithm, AlgorithmParameters::RSA(_)))
        .filter_map(|k| {
            let key = DecodingKey::from_jwk(&k).ok()?;
            Some((k.common.key_id?, key))
        })
        .collect();
    if keys.is_empty() {
        return Err("JWKS has no usable RSA key".into());
    }
    Ok(keys)
}

async fn fetch_jwks(url: &str) -> Result<HashMap<String, DecodingKey>, String> {
    let client = https_client()?;
    let uri: http::Uri = url.parse().map_err(|e| format!("jwks_url: {e}"))?;
    let resp = tokio::time::timeout(Duration::from_secs(5), client.get(uri))
        .await
        .map_err(|_| "JWKS request timed out".to_string())?
        .map_err(|e| format!("JWKS request failed: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("JWKS answered {}", resp.status()));
    }
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("JWKS body: {e}"))?
        .to_bytes();
    parse_jwks(&body)
}

impl Authenticator {
    pub fn new(config: AuthConfig) -> Self {
        let keys = std::sync::RwLock::new(Ok(std::sync::Arc::new(config.keys.clone())));
        Authenticator {
            config,
            keys,
            jwks: Mutex::new(None),
        }
    }

    /// Replaces the accepted shared keys (`Err`: none available, with the reason; requests are
    /// then answered 503 so the sender retries, never accepted without a key check).
    pub fn set_keys(&self, keys: Result<Vec<String>, String>) {
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = keys.map(std::sync::Arc::new);
    }

    /// Whether requests must carry a shared key (a header or query parameter is configured).
    pub fn wants_key(&self) -> bool {
        self.config.key_header.is_some() || self.config.key_query.is_some()
    }

    /// Checks one request.
    pub async fn check(&self, headers: &Headers, query: &str) -> Result<(), Denied> {
        let c = &self.config;
        if self.wants_key() {
            let keys = self
                .keys
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
                .map_err(|_| Denied::Unavailable("the webhook's keys are not loaded".into()))?;
            let given = c
                .key_header
                .as_deref()
                .and_then(|h| headers.get(&h.to_ascii_lowercase()).map(str::to_string))
                .or_else(|| {
                    c.key_query
                        .as_deref()
                        .and_then(|q| query_param(query, q).map(|v| v.into_owned()))
                });
            match given {
                Some(k) if key_matches(&k, &keys) => {}
                Some(_) => return Err(Denied::Unauthorized("the key does not match".into())),
                None => return Err(Denied::Unauthorized("no key in the request".into())),
            }
        }
        if let Some(entra) = &c.entra {
            self.check_bearer(entra, headers).await?;
        }
        Ok(())
    }

    async fn key_for(&self, entra: &EntraConfig, kid: &str) -> Result<DecodingKey, Denied> {
        let fresh = |ks: &KeySet| ks.fetched.elapsed() < Duration::from_secs(entra.cache_secs);
        // An unknown kid refetches at most this often: tokens with made-up kids must not turn
        // the gateway into a JWKS request amplifier.
        let recent = |ks: &KeySet| ks.fetched.elapsed() < Duration::from_secs(30);
        let stale_key = {
            let cached = self.jwks.lock().unwrap_or_else(|p| p.into_inner());
            match cached.as_ref() {
                Some(ks) if fresh(ks) => {
                    if let Some(k) = ks.keys.get(kid) {
                        return Ok(k.clone());
                    }
                    if recent(ks) {
                        return Err(Denied::Unauthorized(format!(
                            "no signing key {kid:?} in the JWKS"
                        )));
                    }
                    None
                }
                Some(ks) => ks.keys.get(kid).cloned(),
                None => None,
            }
        };
        // Unknown kid or stale set: refetch (keys rotate). If the JWKS is unreachable, a key
        // already known still verifies the token.
        let keys = match fetch_jwks(&entra.jwks_url).await {
            Ok(keys) => keys,
            Err(e) => return stale_key.ok_or(Denied::Unavailable(e)),
        };
        let key = keys.get(kid).cloned();
        *self.jwks.lock().unwrap_or_else(|p| p.into_inner()) = Some(KeySet {
            keys,
            fetched: Instant::now(),
        });
        key.ok_or_else(|| Denied::Unauthorized(format!("no signing key {kid:?} in the JWKS")))
    }

    async fn check_bearer(&self, entra: &EntraConfig, headers: &Headers) -> Result<(), Denied> {
        // The scheme is case-insensitive (RFC 9110 §11.1).
        let token = headers
            .get("authorization")
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim())
            .ok_or_else(|| Denied::Unauthorized("no bearer token".into()))?;
        let header =
            decode_header(token).map_err(|e| Denied::Unauthorized(format!("token: {e}")))?;
        if header.alg != Algorithm::RS256 {
            return Err(Denied::Unauthorized(format!(
                "token algorithm {:?}",
                header.alg
            )));
        }
        let kid = header
            .kid
            .ok_or_else(|| Denied::Unauthorized("token has no kid".into()))?;
        let key = self.key_for(entra, &kid).await?;
        let mut v = Validation::new(Algorithm::RS256);
        v.set_audience(&[&entra.audience]);
        v.set_issuer(&entra.issuers);
        v.set_required_spec_claims(&["exp", "aud", "iss"]);
        v.leeway = 60;
        decode::<serde_json::Value>(token, &key, &v)
            .map(|_| ())
            .map_err(|e| Denied::Unauthorized(format!("token rejected: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(header: Option<&str>, query: Option<&str>) -> Authenticator {
        Authenticator::new(AuthConfig {
            keys: vec!["old-key".into(), "new-key".into()],
            key_header: header.map(str::to_string),
            key_query: query.map(str::to_string),
            entra: None,
        })
    }

    #[tokio::test]
    async fn either_rotation_key_is_accepted_in_the_query() {
        let a = auth(None, Some("code"));
        let h = Headers::default();
        assert_eq!(a.check(&h, "code=old-key").await, Ok(()));
        assert_eq!(a.check(&h, "x=1&code=new-key").await, Ok(()));
        assert!(matches!(
            a.check(&h, "code=nope").await,
            Err(Denied::Unauthorized(_))
        ));
        assert!(matches!(
            a.check(&h, "").await,
            Err(Denied::Unauthorized(_))
        ));
    }

    #[tokio::test]
    async fn replaced_keys_take_effect_at_once_and_missing_keys_refuse_with_503() {
        let a = auth(None, Some("code"));
        let h = Headers::default();
        a.set_keys(Ok(vec!["new-key".into(), "newer-key".into()]));
        assert_eq!(a.check(&h, "code=newer-key").await, Ok(()));
        assert!(
            matches!(
                a.check(&h, "code=old-key").await,
                Err(Denied::Unauthorized(_))
            ),
            "a removed key is refused"
        );
        a.set_keys(Err("secret missing".into()));
        let refused = a.check(&h, "code=new-key").await;
        assert_eq!(
            refused,
            Err(Denied::Unavailable(
                "the webhook's keys are not loaded".into()
            )),
            "no key set: retry later, never let in, and no Secret name to the sender"
        );
        a.set_keys(Ok(Vec::new()));
        assert!(matches!(
            a.check(&h, "code=").await,
            Err(Denied::Unauthorized(_))
        ));
    }

    #[tokio::test]
    async fn header_keys_are_case_insensitive_by_name() {
        let a = auth(Some("X-Rouse-Key"), None);
        let h = Headers::new([("x-rouse-key".to_string(), "new-key".to_string())]);
        assert_eq!(a.check(&h, "").await, Ok(()));
    }

    #[test]
    fn query_values_are_form_decoded() {
        let q = "a=1&code=k%2By+z&code=second&empty";
        assert_eq!(
            query_param(q, "code").as_deref(),
            Some("k+y z"),
            "first wins"
        );
        assert_eq!(query_param(q, "empty").as_deref(), Some(""));
        assert_eq!(query_param(q, "missing"), None);
        // Not well-formed escapes are kept as they are.
        assert_eq!(query_param("code=100%", "code").as_deref(), Some("100%"));
    }

    #[test]
    fn jwks_keeps_rsa_keys_with_a_kid_and_skips_the_rest() {
        let body = serde_json::json!({"keys": [
            {"kty": "RSA", "kid": "k1", "use": "sig", "n": "AQAB", "e": "AQAB", "x5c": ["MIIC"],
             "issuer": "https://login.microsoftonline.com/t/v2.0"},
            {"kty": "RSA", "n": "AQAB", "e": "AQAB"},
            {"kty": "EC", "kid": "ec", "crv": "P-256", "x": "AQAB", "y": "AQAB"},
            {"kty": "RSA", "kid": "odd-alg", "alg": "RS-FUTURE", "n": "AQAB", "e": "AQAB"},
            {"kty": "PQ", "kid": "future"},
        ]});
        let keys = parse_jwks(body.to_string().as_bytes()).expect("usable key");
        assert_eq!(keys.keys().collect::<Vec<_>>(), ["k1"]);
        assert!(parse_jwks(br#"{"keys": [{"kty": "PQ", "kid": "x"}]}"#).is_err());
        assert!(parse_jwks(b"not json").is_err());
    }
}
