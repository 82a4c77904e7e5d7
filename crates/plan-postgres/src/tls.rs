//! TLS for the connection, with rustls on the ring provider: libpq's `sslmode` as far as
//! it maps onto tokio-postgres (see [`TlsMode`]).

use std::sync::Arc;

use plan_exec::error::{Hint, StoreError};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::address::{PgAddress, TlsMode};

/// The connector for `address`'s TLS mode. Under `disable` it is never used.
pub(crate) fn connector(address: &PgAddress) -> Result<MakeRustlsConnect, StoreError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::with_source(format!("cannot set up TLS: {e}"), e))?;
    let verify = *address.tls() == TlsMode::Verify || address.root_cert().is_some();
    let config = if verify {
        builder
            .with_root_certificates(roots(address)?)
            .with_no_client_auth()
    } else {
        // libpq's `prefer` and `require`: encrypted, the certificate not checked.
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(EncryptOnly {
                algorithms: provider.signature_verification_algorithms,
            }))
            .with_no_client_auth()
    };
    Ok(MakeRustlsConnect::new(config))
}

/// The CAs to check the server against: `sslrootcert` when given, else the system's.
fn roots(address: &PgAddress) -> Result<RootCertStore, StoreError> {
    let mut roots = RootCertStore::empty();
    if let Some(path) = address.root_cert() {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| {
                StoreError::new(format!(
                    "cannot read the CA certificates in {} (sslrootcert of {address}): {e}; \
                     check the path and that it holds PEM certificates",
                    path.display()
                ))
                .with_hint(Hint::StorePath)
            })?;
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(StoreError::new(format!(
                "no usable CA certificate in {} (sslrootcert of {address})",
                path.display()
            ))
            .with_hint(Hint::StorePath));
        }
    } else {
        let found = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(found.certs);
        if roots.is_empty() {
            return Err(StoreError::new(format!(
                "sslmode=verify-full for {address} needs trusted CA certificates and the \
                 system has none: add sslrootcert=PATH to the URL (the server's CA in PEM)"
            ))
            .with_hint(Hint::StorePath));
        }
    }
    Ok(roots)
}

/// Accepts any certificate but still checks the handshake's signatures: the connection
/// is encrypted, the server unauthenticated (libpq's `require`).
#[derive(Debug)]
struct EncryptOnly {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
