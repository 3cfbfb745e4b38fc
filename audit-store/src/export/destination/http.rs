//! An HTTP endpoint: batches as gzipped NDJSON, signed, with an idempotency key.

use std::io::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flate2::Compression;
use flate2::write::GzEncoder;
use http::StatusCode;
use http::header::{HeaderMap, HeaderName, HeaderValue};

use super::{DeliveryError, Destination};
use crate::export::batch::EncodedBatch;
use crate::export::retry::parse_retry_after;
use crate::export::secret::{SIGNATURE_HEADER, Secret, signature};
use crate::export::tls::TlsConfig;

/// The default of [`HttpDestination::timeout`].
pub const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// Posts each batch to a URL: the batch's lines gzipped (`Content-Encoding: gzip`), with an
/// `Idempotency-Key` header (the batch's key: the same on every retry) and, with a
/// [`secret`](Self::secret), `X-Audit-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 over
/// "<t>." and the body as sent>`. A 2xx answer delivers the batch; anything else (an error
/// status, a timeout, a reset connection) fails it, and a `Retry-After` in the answer sets
/// the wait before the next attempt. A 400, 413 or 422 [refuses](super::DeliveryError::refused)
/// the batch: the job narrows that account's batches instead of sending the same one again.
///
/// `https://` URLs are checked against the platform's certificate authorities unless given a
/// [`TlsConfig`](crate::export::TlsConfig) (a CA bundle, a client certificate); plain `http://`
/// is for a receiver on the loopback or a test: the records and the signature travel in clear.
///
/// The URL may not carry credentials (`user:password@`): a token goes in
/// [`authorization`](Self::authorization), which like the secret is never logged or shown.
///
/// ```
/// use std::time::Duration;
///
/// use audit_store::export::{HttpDestination, Secret, TlsConfig};
///
/// let siem = HttpDestination::new("http://127.0.0.1:8443/ingest")?
///     .secret(Secret::new("whsec-from-the-environment"))
///     .timeout(Duration::from_secs(10));
/// assert!(!format!("{siem:?}").contains("whsec"));
/// assert!(HttpDestination::new("ftp://siem.example/").is_err());
/// // HTTPS, checked against a private CA's bundle instead of the platform's:
/// # let ca_pem = rcgen::generate_simple_self_signed(vec!["siem.example".into()])
/// #     .unwrap().cert.pem();
/// let siem = HttpDestination::new("https://siem.example/ingest")?
///     .tls(TlsConfig::ca_bundle_pem(ca_pem.as_bytes())?)?;
/// # Ok::<(), audit_store::export::ExportConfigError>(())
/// ```
#[derive(Clone)]
pub struct HttpDestination {
    client: reqwest::Client,
    url: reqwest::Url,
    secret: Option<Secret>,
    authorization: Option<Secret>,
    timeout: Duration,
    gzip: bool,
    /// `host:port`, naming the destination in errors (never its path or query).
    endpoint: String,
}

impl std::fmt::Debug for HttpDestination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The host only: a path or query may hold a token.
        f.debug_struct("HttpDestination")
            .field("host", &self.url.host_str())
            .field("signed", &self.secret.is_some())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl HttpDestination {
    /// A destination posting to `url` (`https`, or `http` for the loopback and tests),
    /// unsigned, with a 30 s timeout; an `https` one trusts the platform's certificate
    /// authorities (see [`tls`](Self::tls)).
    ///
    /// # Errors
    ///
    /// When `url` is not an absolute `http` or `https` URL, or carries credentials.
    pub fn new(url: &str) -> Result<Self, crate::export::ExportConfigError> {
        use crate::export::ExportConfigError as E;
        let parsed = reqwest::Url::parse(url).map_err(|e| {
            E::new(format!(
                "invalid export URL: {e} (expected http(s)://host/path)"
            ))
        })?;
        let tls = match parsed.scheme() {
            "http" => None,
            "https" => Some(TlsConfig::platform()),
            other => {
                return Err(E::new(format!(
                    "invalid export URL: scheme {other:?} (expected https, or http for the \
                     loopback)"
                )));
            }
        };
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(E::new(
                "invalid export URL: it carries credentials (user:password@); give a token \
                 with `authorization` instead, which is never logged",
            ));
        }
        let endpoint = format!(
            "{}:{}",
            parsed.host_str().unwrap_or_default(),
            parsed.port_or_known_default().unwrap_or_default()
        );
        Ok(Self {
            client: client(tls.as_ref())?,
            url: parsed,
            secret: None,
            authorization: None,
            timeout: DEFAULT_HTTP_TIMEOUT,
            gzip: true,
            endpoint,
        })
    }

    /// How HTTPS connections are made: the certificate authorities the receiver's certificate
    /// must chain to, a client certificate. Defaults to [`TlsConfig::platform`].
    ///
    /// # Errors
    ///
    /// When the URL is `http` (TLS would not be used), or the configuration cannot be set up.
    pub fn tls(mut self, tls: TlsConfig) -> Result<Self, crate::export::ExportConfigError> {
        if self.url.scheme() != "https" {
            return Err(crate::export::ExportConfigError::new(format!(
                "invalid export destination {}: a TLS configuration needs an https URL",
                self.endpoint
            )));
        }
        self.client = client(Some(&tls))?;
        Ok(self)
    }

    /// Signs every batch with `secret` (the `X-Audit-Signature` header).
    #[must_use]
    pub fn secret(mut self, secret: Secret) -> Self {
        self.secret = Some(secret);
        self
    }

    /// Sends `value` as the `Authorization` header (`Bearer ...`, `Splunk ...`), marked
    /// sensitive. Defaults to none.
    #[must_use]
    pub fn authorization(mut self, value: Secret) -> Self {
        self.authorization = Some(value);
        self
    }

    /// How long one attempt may take, from connecting to the end of the answer. Defaults to
    /// 30 s.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Whether bodies are gzipped. Defaults to `true`.
    #[must_use]
    pub fn gzip(mut self, gzip: bool) -> Self {
        self.gzip = gzip;
        self
    }

    /// The body of `batch` as sent.
    fn body(&self, batch: &EncodedBatch) -> Result<Vec<u8>, DeliveryError> {
        if !self.gzip {
            return Ok(batch.lines.as_bytes().to_vec());
        }
        let mut gz = GzEncoder::new(
            Vec::with_capacity(batch.lines.len() / 4),
            Compression::fast(),
        );
        gz.write_all(batch.lines.as_bytes())
            .and_then(|()| gz.finish())
            .map_err(|e| DeliveryError::new(format!("cannot gzip the batch: {e}")))
    }

    fn headers(
        &self,
        content_type: &'static str,
        gzipped: bool,
        idempotency_key: &str,
        body: &[u8],
    ) -> Result<HeaderMap, DeliveryError> {
        let invalid = |what: &str| DeliveryError::new(format!("invalid {what} header value"));
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static(content_type),
        );
        if gzipped {
            headers.insert(
                http::header::CONTENT_ENCODING,
                HeaderValue::from_static("gzip"),
            );
        }
        headers.insert(
            HeaderName::from_static("idempotency-key"),
            HeaderValue::from_str(idempotency_key).map_err(|_| invalid("Idempotency-Key"))?,
        );
        if let Some(secret) = &self.secret {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            headers.insert(
                HeaderName::from_static("x-audit-signature"),
                HeaderValue::from_str(&signature(secret, now, body))
                    .map_err(|_| invalid(SIGNATURE_HEADER))?,
            );
        }
        if let Some(token) = &self.authorization {
            let mut value =
                HeaderValue::from_bytes(token.expose()).map_err(|_| invalid("Authorization"))?;
            value.set_sensitive(true);
            headers.insert(http::header::AUTHORIZATION, value);
        }
        Ok(headers)
    }

    /// Posts `body` (already gzipped when `gzipped`), signed, under `idempotency_key`: a 2xx
    /// answer is `Ok`. Alert notifications go through here too.
    pub(crate) async fn post(
        &self,
        body: Vec<u8>,
        content_type: &'static str,
        gzipped: bool,
        idempotency_key: &str,
    ) -> Result<(), DeliveryError> {
        let headers = self.headers(content_type, gzipped, idempotency_key, &body)?;
        let response = self
            .client
            .post(self.url.clone())
            .headers(headers)
            .timeout(self.timeout)
            .body(body)
            .send()
            .await
            .map_err(|e| DeliveryError::new(describe(&e, &self.endpoint, self.timeout)))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let retry_after = response
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let hint = if status.is_redirection() {
            " (redirects are not followed: configure the URL it redirects to)"
        } else {
            ""
        };
        let message = format!(
            "the HTTP destination {} answered {status}{hint}",
            self.endpoint
        );
        // These answers are about the batch: another batch would be taken. Any other (a 401
        // or 404 of a misconfigured job, a 429, a 5xx) says the destination takes nothing now.
        let error = if matches!(
            status,
            StatusCode::BAD_REQUEST
                | StatusCode::PAYLOAD_TOO_LARGE
                | StatusCode::UNPROCESSABLE_ENTITY
        ) {
            DeliveryError::refused(message)
        } else {
            DeliveryError::new(message)
        };
        Err(error.retry_after(retry_after))
    }
}

impl Destination for HttpDestination {
    async fn deliver(&self, batch: &EncodedBatch) -> Result<(), DeliveryError> {
        let body = self.body(batch)?;
        self.post(
            body,
            batch.format.content_type(),
            self.gzip,
            &batch.idempotency_key,
        )
        .await
    }
}

/// The HTTP client: with `tls` for an `https` URL; without one, a TLS configuration that
/// trusts nothing (an `http` URL never uses it, and a redirect to `https` fails).
fn client(tls: Option<&TlsConfig>) -> Result<reqwest::Client, crate::export::ExportConfigError> {
    use crate::export::ExportConfigError as E;
    let config = match tls {
        Some(tls) => tls.client_config(&[b"http/1.1"])?,
        None => TlsConfig::ca_bundle_none().client_config(&[b"http/1.1"])?,
    };
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        // A redirect is never followed: a 301/302/303 would turn the POST into a GET without
        // its body (and a 2xx to that would count as delivered), and a 307/308 would resend
        // the signed records to whatever host, scheme or address the answer names.
        .redirect(reqwest::redirect::Policy::none())
        .tls_backend_preconfigured(config)
        .build()
        .map_err(|e| E::new(format!("cannot build the HTTP client: {}", e.without_url())))
}

/// A request's failure, naming the destination by `endpoint` (`host:port`) and without its
/// URL (whose path or query may hold a token): the chain of causes down to the I/O or TLS
/// error (a reset connection, an untrusted certificate).
fn describe(error: &reqwest::Error, endpoint: &str, timeout: Duration) -> String {
    if error.is_timeout() {
        return format!("the HTTP destination {endpoint} did not answer within {timeout:?}");
    }
    let mut text = if error.is_connect() {
        format!("cannot connect to the HTTP destination {endpoint}")
    } else {
        format!("the HTTP request to {endpoint} failed")
    };
    // The causes below the top one, none of which holds the URL.
    let mut source = std::error::Error::source(error);
    let mut last = String::new();
    while let Some(e) = source {
        let part = e.to_string();
        if part != last {
            text.push_str(": ");
            text.push_str(&part);
        }
        last = part;
        source = e.source();
    }
    text
}
