//! The client-certificate policies of `client_auth_type`, by Go's names, as rustls verifiers:
//! the WebPKI verifier (with or without a certificate required) for the two verifying modes, a
//! verifier that accepts any certificate whose key signs the handshake for the two that do not
//! verify, and the `client_allowed_sans` check on top of either.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use super::TlsSetupError;
use crate::config::{ClientAuth, TlsMaterial, TlsSettings};

pub(super) fn client_verifier(
    settings: &TlsSettings,
    material: &TlsMaterial,
    provider: &Arc<rustls::crypto::CryptoProvider>,
) -> Result<Option<Arc<dyn ClientCertVerifier>>, TlsSetupError> {
    let roots = material.client_roots.clone();
    let hints: Vec<DistinguishedName> = roots
        .as_ref()
        .map(|roots| roots.subjects())
        .unwrap_or_default();
    let verifier: Arc<dyn ClientCertVerifier> = match settings.client_auth {
        ClientAuth::NoClientCert => return Ok(None),
        ClientAuth::RequestClientCert | ClientAuth::RequireAnyClientCert => {
            Arc::new(AnyClientCertificate {
                mandatory: settings.client_auth == ClientAuth::RequireAnyClientCert,
                hints,
                algorithms: provider.signature_verification_algorithms,
            })
        }
        ClientAuth::VerifyClientCertIfGiven | ClientAuth::RequireAndVerifyClientCert => {
            let roots = roots.ok_or_else(|| {
                TlsSetupError(format!(
                    "tls_server_config.client_ca_file: {} needs a client CA",
                    settings.client_auth.name()
                ))
            })?;
            let builder = WebPkiClientVerifier::builder_with_provider(roots, Arc::clone(provider));
            let builder = if settings.client_auth == ClientAuth::VerifyClientCertIfGiven {
                builder.allow_unauthenticated()
            } else {
                builder
            };
            builder.build().map_err(|error| {
                TlsSetupError(format!(
                    "tls_server_config.client_ca_file: cannot verify clients with it: {error}"
                ))
            })?
        }
    };
    if settings.client_allowed_sans.is_empty() {
        return Ok(Some(verifier));
    }
    Ok(Some(Arc::new(AllowedSans {
        inner: verifier,
        allowed: settings.client_allowed_sans.clone(),
    })))
}

/// `RequestClientCert` / `RequireAnyClientCert`: any certificate, not checked against a CA,
/// but its key must sign the handshake.
#[derive(Debug)]
struct AnyClientCertificate {
    mandatory: bool,
    hints: Vec<DistinguishedName>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyClientCertificate {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // Still a certificate: garbage is refused.
        webpki::EndEntityCert::try_from(end_entity).map_err(|_| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
        })?;
        Ok(ClientCertVerified::assertion())
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

/// `client_allowed_sans`: after the inner policy accepts the certificate, one of its DNS, IP
/// or URI SANs must equal an allowed value exactly (exporter-toolkit's rule).
#[derive(Debug)]
struct AllowedSans {
    inner: Arc<dyn ClientCertVerifier>,
    allowed: Vec<String>,
}

impl AllowedSans {
    fn matches(&self, end_entity: &CertificateDer<'_>) -> bool {
        let Ok(certificate) = webpki::EndEntityCert::try_from(end_entity) else {
            return false;
        };
        let dns_or_uri = certificate
            .valid_dns_names()
            .chain(certificate.valid_uri_names())
            .any(|name| self.allowed.iter().any(|allowed| allowed == name));
        dns_or_uri
            || self.allowed.iter().any(|allowed| {
                allowed.parse::<std::net::IpAddr>().is_ok_and(|address| {
                    let name = rustls::pki_types::ServerName::IpAddress(address.into());
                    certificate.verify_is_valid_for_subject_name(&name).is_ok()
                })
            })
    }
}

impl ClientCertVerifier for AllowedSans {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        if self.matches(end_entity) {
            Ok(verified)
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
