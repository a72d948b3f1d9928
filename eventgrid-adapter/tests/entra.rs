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

fn token(key: &[u8], aud: &str, exp_offset: i64) -> String {
    let now = jiff::Timestamp::now().as_second();
    let claims = serde_json::json!({
        "aud": aud, "iss": ISSUER, "exp": now + exp_offset, "iat": now - 10,
        "roles": ["AzureEventGridSecureWebhookSubscriber"],
        "appid": "4962773b-9cdb-44cf-a8bf-237846a00ab7"
    });
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("k1".into());
    encode(
        &header,
        &claims,
        &EncodingKey::from_rsa_pem(key).expect("rsa pem"),
    )
    .expect("sign")
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
