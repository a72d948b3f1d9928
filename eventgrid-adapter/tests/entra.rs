//! Vector 21: Microsoft Entra ID bearer tokens. A real JWKS server on 127.0.0.1, an RSA key made
//! by the `openssl` CLI, tokens signed with it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use rouse_eventgrid::{Gateway, GatewayConfig};

const AUDIENCE: &str = "api://rouse-webhook";
const ISSUER: &str = "https://login.microsoftonline.com/tenant-1/v2.0";

/// (private key PEM, JWKS JSON)
fn keypair(dir: &std::path::Path) -> (Vec<u8>, String) {
    let key = dir.join("key.pem");
    let ok = Command::new("openssl")
        .args(["genrsa", "-out"])
        .arg(&key)
        .arg("2048")
        .output()
        .expect("openssl")
        .status
        .success();
    assert!(ok, "openssl genrsa");
    let out = Command::new("openssl")
        .args(["rsa", "-noout", "-modulus", "-in"])
        .arg(&key)
        .output()
        .expect("openssl rsa");
    let text = String::from_utf8_lossy(&out.stdout);
    let hex = text.trim().trim_start_matches("Modulus=");
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect();
    let n = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let jwks = serde_json::json!({"keys": [{"kty": "RSA", "kid": "k1", "use": "sig", "n": n, "e": "AQAB"}]});
    (std::fs::read(&key).expect("key"), jwks.to_string())
}

async fn jwks_server(body: String) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let body = Arc::new(body);
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |_req| {
                    let body = body.clone();
                    async move {
                        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(
                            body.as_bytes().to_vec(),
                        ))))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

fn claims(aud: &str, iss: &str, exp_offset: i64) -> serde_json::Value {
    let now = jiff::Timestamp::now().as_second();
    serde_json::json!({
        "aud": aud, "iss": iss, "exp": now + exp_offset, "iat": now - 10,
        "roles": ["AzureEventGridSecureWebhookSubscriber"],
        "appid": "4962773b-9cdb-44cf-a8bf-237846a00ab7"
    })
}

/// Signed with `key` (`alg`), header `kid`.
fn signed(alg: Algorithm, kid: &str, key: &EncodingKey, claims: &serde_json::Value) -> String {
    let mut header = Header::new(alg);
    header.kid = Some(kid.into());
    encode(&header, claims, key).expect("sign")
}

fn token(key: &[u8], aud: &str, exp_offset: i64) -> String {
    signed(
        Algorithm::RS256,
        "k1",
        &EncodingKey::from_rsa_pem(key).expect("rsa pem"),
        &claims(aud, ISSUER, exp_offset),
    )
}

fn gateway(dir: &std::path::Path, jwks: &str) -> Arc<Gateway> {
    let yaml = format!(
        "data_dir: {}\nsubscriptions:\n  - name: s\n    path: /events\n    target: {{url: \"http://127.0.0.1:9\"}}\n    auth:\n      entra: {{jwks_url: \"{jwks}\", audience: \"{AUDIENCE}\", issuers: [\"{ISSUER}\"]}}\n",
        dir.join("data").display()
    );
    let config: GatewayConfig = rouse_eventgrid::config::parse(&yaml, "test").expect("config");
    Gateway::open(
        &config,
        rouse_eventgrid::metrics::Metrics::new(&prometheus::Registry::new()),
        Default::default(),
    )
    .expect("gateway")
}

async fn post(gw: &Arc<Gateway>, bearer: &str) -> u16 {
    let sub = gw.subscription_for("/events").expect("sub").clone();
    let body = r#"[{"id":"e1","topic":"t","subject":"s","eventType":"T","eventTime":"2024-01-01T00:00:00Z","data":{}}]"#;
    gw.handle(
        &sub,
        rouse_eventgrid::Request {
            method: http::Method::POST,
            query: String::new(),
            headers: rouse_eventgrid::protocol::Headers::new([
                ("content-type".to_string(), "application/json".to_string()),
                ("aeg-event-type".to_string(), "Notification".to_string()),
                ("authorization".to_string(), format!("Bearer {bearer}")),
            ]),
            body: Bytes::from_static(body.as_bytes()),
        },
    )
    .await
    .status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v21_entra_bearer_wrong_audience_and_expired_are_401_valid_is_ack_jwks_down_is_503() {
    let dir = tempfile::tempdir().expect("tmp");
    let (key, jwks) = keypair(dir.path());
    let addr = jwks_server(jwks).await;
    let gw = gateway(dir.path(), &format!("http://{addr}/keys"));
    assert_eq!(
        post(&gw, &token(&key, "api://someone-else", 3600)).await,
        401,
        "wrong aud"
    );
    assert_eq!(
        post(&gw, &token(&key, AUDIENCE, -3600)).await,
        401,
        "expired"
    );
    assert_eq!(post(&gw, "not-a-jwt").await, 401, "garbage");
    assert_eq!(post(&gw, &token(&key, AUDIENCE, 3600)).await, 200, "valid");

    // JWKS unreachable: the check cannot run, so 503 (retried), never 401 (dropped).
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let dir2 = tempfile::tempdir().expect("tmp");
    let gw = gateway(dir2.path(), &format!("http://127.0.0.1:{port}/keys"));
    assert_eq!(post(&gw, &token(&key, AUDIENCE, 3600)).await, 503);
}

/// Tokens a forger would try, each refused 401 while a valid one is accepted: another issuer
/// (valid signature), a `kid` the JWKS does not have (another key), the right `kid` signed by
/// another key, HS256 keyed with the public key's modulus (algorithm confusion), and
/// `alg: none`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_entra_tokens_wrong_issuer_unknown_kid_other_key_alg_swap_and_none_are_401() {
    let dir = tempfile::tempdir().expect("tmp");
    let (key, jwks) = keypair(dir.path());
    let other_dir = tempfile::tempdir().expect("tmp");
    let (other, _) = keypair(other_dir.path());
    let addr = jwks_server(jwks.clone()).await;
    let gw = gateway(dir.path(), &format!("http://{addr}/keys"));
    let rsa = EncodingKey::from_rsa_pem(&key).expect("rsa pem");
    let other = EncodingKey::from_rsa_pem(&other).expect("rsa pem");
    let good = claims(AUDIENCE, ISSUER, 3600);
    // The precondition: the same key and claims make a token that is accepted.
    assert_eq!(
        post(&gw, &signed(Algorithm::RS256, "k1", &rsa, &good)).await,
        200,
        "valid"
    );
    let wrong_issuer = claims(
        AUDIENCE,
        "https://login.microsoftonline.com/evil/v2.0",
        3600,
    );
    assert_eq!(
        post(&gw, &signed(Algorithm::RS256, "k1", &rsa, &wrong_issuer)).await,
        401,
        "wrong issuer"
    );
    assert_eq!(
        post(&gw, &signed(Algorithm::RS256, "k2", &other, &good)).await,
        401,
        "unknown kid"
    );
    assert_eq!(
        post(&gw, &signed(Algorithm::RS256, "k1", &other, &good)).await,
        401,
        "right kid, another key"
    );
    let n = serde_json::from_str::<serde_json::Value>(&jwks).expect("jwks")["keys"][0]["n"]
        .as_str()
        .expect("n")
        .to_string();
    // The public key as PEM, the usual material of an algorithm-confusion forgery.
    let public_pem = Command::new("openssl")
        .args(["rsa", "-pubout", "-in"])
        .arg(dir.path().join("key.pem"))
        .output()
        .expect("openssl rsa -pubout")
        .stdout;
    assert!(public_pem.starts_with(b"-----BEGIN PUBLIC KEY-----"));
    for secret in [n.as_bytes().to_vec(), public_pem] {
        assert_eq!(
            post(
                &gw,
                &signed(
                    Algorithm::HS256,
                    "k1",
                    &EncodingKey::from_secret(&secret),
                    &good
                )
            )
            .await,
            401,
            "HS256 keyed with public material"
        );
    }
    let b64 = |v: &serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let none = format!(
        "{}.{}.",
        b64(&serde_json::json!({"alg": "none", "typ": "JWT", "kid": "k1"})),
        b64(&good)
    );
    assert_eq!(post(&gw, &none).await, 401, "alg none");
}
