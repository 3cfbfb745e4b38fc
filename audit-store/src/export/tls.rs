//! TLS for the HTTPS and syslog destinations: which certificate authorities a destination's
//! certificate is checked against (the platform's, or a PEM bundle), and an optional client
//! certificate. rustls with the aws-lc-rs provider; no OpenSSL.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::ExportConfigError;
use super::secret::Secret;

/// How a destination's TLS connections are made: the certificate authorities its certificate
/// must chain to and, for collectors that ask for one, a client certificate.
///
/// [`platform`](Self::platform) (the default of an `https://` destination) trusts the
/// operating system's CA store; [`ca_bundle_pem`](Self::ca_bundle_pem) or
/// [`ca_bundle_file`](Self::ca_bundle_file) trust only the bundle's certificates (a private
/// CA). The client key is held like a [`Secret`]: never in `Debug` output, logs or errors.
///
/// ```
/// use audit_store::export::{Secret, TlsConfig};
///
/// assert!(TlsConfig::ca_bundle_pem(b"not a certificate").is_err());
/// let platform = TlsConfig::platform();
/// assert!(!format!("{platform:?}").contains("PRIVATE KEY"));
/// let err = platform
///     .client_certificate(b"", &Secret::new("-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n"))
///     .unwrap_err();
/// assert!(!err.to_string().contains("c2VjcmV0"), "the key is never in an error: {err}");
/// ```
#[derive(Clone)]
pub struct TlsConfig {
    roots: Roots,
    client: Option<(Vec<CertificateDer<'static>>, Secret)>,
}

#[derive(Clone)]
enum Roots {
    Platform,
    Bundle(Vec<CertificateDer<'static>>),
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig")
            .field(
                "roots",
                &match &self.roots {
                    Roots::Platform => "platform".to_owned(),
                    Roots::Bundle(certs) => format!("{} certificates", certs.len()),
                },
            )
            .field("client_certificate", &self.client.is_some())
            .finish()
    }
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self::platform()
    }
}

/// The certificates of a PEM text (`what` names it in errors).
fn certificates(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, ExportConfigError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ExportConfigError::new(format!("invalid {what}: {e}")))?;
    if certs.is_empty() {
        return Err(ExportConfigError::new(format!(
            "invalid {what}: no PEM certificate (-----BEGIN CERTIFICATE-----) in it"
        )));
    }
    Ok(certs)
}

/// The private key of a PEM text; the error never quotes it.
fn private_key(pem: &Secret) -> Result<PrivateKeyDer<'static>, ExportConfigError> {
    PrivateKeyDer::from_pem_slice(pem.expose()).map_err(|_| {
        ExportConfigError::new(
            "invalid TLS client key: expected one PEM private key (PKCS#8, PKCS#1 or SEC1)",
        )
    })
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, ExportConfigError> {
    std::fs::read(path).map_err(|e| {
        ExportConfigError::new(format!("cannot read the {what} {}: {e}", path.display()))
    })
}

impl TlsConfig {
    /// Trusts the platform's certificate authorities (the system's CA store), no client
    /// certificate.
    pub fn platform() -> Self {
        Self {
            roots: Roots::Platform,
            client: None,
        }
    }

    /// Trusts nothing: the configuration of a client that never makes a TLS connection.
    pub(crate) fn ca_bundle_none() -> Self {
        Self {
            roots: Roots::Bundle(Vec::new()),
            client: None,
        }
    }

    /// Trusts only the certificates of `pem` (one or more `-----BEGIN CERTIFICATE-----`
    /// blocks): a private CA's bundle.
    ///
    /// # Errors
    ///
    /// When `pem` holds no certificate or a malformed one.
    pub fn ca_bundle_pem(pem: &[u8]) -> Result<Self, ExportConfigError> {
        Ok(Self {
            roots: Roots::Bundle(certificates(pem, "CA bundle")?),
            client: None,
        })
    }

    /// [`ca_bundle_pem`](Self::ca_bundle_pem) of the file at `path`.
    ///
    /// # Errors
    ///
    /// When the file cannot be read (the error names it) or holds no certificate.
    pub fn ca_bundle_file(path: impl AsRef<Path>) -> Result<Self, ExportConfigError> {
        let path = path.as_ref();
        let pem = read(path, "CA bundle")?;
        Ok(Self {
            roots: Roots::Bundle(certificates(
                &pem,
                &format!("CA bundle {}", path.display()),
            )?),
            client: None,
        })
    }

    /// Presents a client certificate: `chain_pem` (the certificate, then any intermediates)
    /// and its private key `key_pem`, held as a secret.
    ///
    /// # Errors
    ///
    /// When the chain holds no certificate or the key is not a PEM private key (the error
    /// never quotes the key).
    pub fn client_certificate(
        mut self,
        chain_pem: &[u8],
        key_pem: &Secret,
    ) -> Result<Self, ExportConfigError> {
        let chain = certificates(chain_pem, "TLS client certificate")?;
        private_key(key_pem)?;
        self.client = Some((chain, key_pem.clone()));
        Ok(self)
    }

    /// [`client_certificate`](Self::client_certificate) of two PEM files.
    ///
    /// # Errors
    ///
    /// When a file cannot be read or does not hold what it should.
    pub fn client_certificate_files(
        self,
        chain_path: impl AsRef<Path>,
        key_path: impl AsRef<Path>,
    ) -> Result<Self, ExportConfigError> {
        let chain = read(chain_path.as_ref(), "TLS client certificate")?;
        let key = Secret::new(read(key_path.as_ref(), "TLS client key")?);
        self.client_certificate(&chain, &key)
    }

    /// The rustls configuration of a client connecting with `alpn` protocols.
    pub(crate) fn client_config(
        &self,
        alpn: &[&[u8]],
    ) -> Result<rustls::ClientConfig, ExportConfigError> {
        let mut roots = rustls::RootCertStore::empty();
        match &self.roots {
            Roots::Bundle(certs) => {
                for cert in certs {
                    roots.add(cert.clone()).map_err(|e| {
                        ExportConfigError::new(format!("invalid CA bundle certificate: {e}"))
                    })?;
                }
            }
            Roots::Platform => {
                // Lenient: a platform without a CA store gets no roots, and every handshake
                // then fails naming the untrusted issuer (configure a CA bundle).
                let found = rustls_native_certs::load_native_certs();
                let (_added, _ignored) = roots.add_parsable_certificates(found.certs);
            }
        }
        // aws-lc-rs, the provider reqwest's `rustls` feature brings (and rustls' default).
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| ExportConfigError::new(format!("cannot set up TLS: {e}")))?
            .with_root_certificates(roots);
        let mut config = match &self.client {
            None => builder.with_no_client_auth(),
            Some((chain, key)) => builder
                .with_client_auth_cert(chain.clone(), private_key(key)?)
                .map_err(|_| {
                    ExportConfigError::new(
                        "invalid TLS client certificate: its key does not match it or is of an \
                         unsupported kind",
                    )
                })?,
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(config)
    }
}

/// A TLS failure's description for a destination's error: rustls' own words (an untrusted
/// issuer, a name mismatch), which never hold a key.
pub(crate) fn describe(error: &std::io::Error) -> String {
    error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .map_or_else(|| error.to_string(), ToString::to_string)
}
