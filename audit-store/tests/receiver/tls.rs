//! Certificates made in the test (rcgen): a CA, a server certificate it signed for
//! `localhost` and `127.0.0.1`, a client certificate it signed, and a second CA that signed
//! nothing of these (a wrong CA bundle).

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A test's public key infrastructure.
pub(crate) struct Pki {
    /// The CA's certificate (PEM): the bundle a job trusts.
    pub(crate) ca_pem: String,
    /// Another CA's certificate (PEM), which signed nothing here.
    pub(crate) other_ca_pem: String,
    /// The server's certificate (PEM) and its key (PKCS#8 PEM).
    pub(crate) server_pem: String,
    pub(crate) server_key_pem: String,
    server_der: CertificateDer<'static>,
    server_key_der: Vec<u8>,
    ca_der: CertificateDer<'static>,
    /// The client's certificate (PEM) and its key (PKCS#8 PEM).
    pub(crate) client_pem: String,
    pub(crate) client_key_pem: String,
}

fn ca(name: &str) -> Result<CertifiedIssuer<'static, KeyPair>, rcgen::Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate()?)
}

impl Pki {
    pub(crate) fn new() -> Result<Self, rcgen::Error> {
        let ca = ca("audit-store test CA")?;
        let other = ca_other()?;
        let server_key = KeyPair::generate()?;
        let server = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?
            .signed_by(&server_key, &ca)?;
        let client_key = KeyPair::generate()?;
        let mut client_params = CertificateParams::new(vec!["audit-export".to_owned()])?;
        client_params
            .distinguished_name
            .push(DnType::CommonName, "audit-export");
        let client = client_params.signed_by(&client_key, &ca)?;
        Ok(Self {
            ca_pem: ca.pem(),
            other_ca_pem: other.pem(),
            server_pem: server.pem(),
            server_key_pem: server_key.serialize_pem(),
            server_der: server.der().clone(),
            server_key_der: server_key.serialize_der(),
            ca_der: ca.der().clone(),
            client_pem: client.pem(),
            client_key_pem: client_key.serialize_pem(),
        })
    }

    /// A rustls server configuration presenting the server certificate; with
    /// `require_client`, it refuses clients without a certificate of the CA.
    pub(crate) fn server_config(
        &self,
        require_client: bool,
    ) -> Result<Arc<rustls::ServerConfig>, Box<dyn std::error::Error + Send + Sync>> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()?;
        let builder = if require_client {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(self.ca_der.clone())?;
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()?;
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.server_key_der.clone()));
        let mut config = builder.with_single_cert(vec![self.server_der.clone()], key)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

fn ca_other() -> Result<CertifiedIssuer<'static, KeyPair>, rcgen::Error> {
    ca("some other CA")
}
