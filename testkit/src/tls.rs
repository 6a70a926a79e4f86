//! A private CA for tests: a CA certificate and one server certificate it signed for
//! `127.0.0.1` and `localhost`, made with rcgen, so a test can serve HTTPS that only
//! clients given the CA trust.

/// A CA and a server certificate it issued, all PEM.
pub struct TestCa {
    /// The CA certificate (what a client is told to trust).
    pub ca_pem: String,
    /// The server's certificate, for `127.0.0.1` and `localhost`.
    pub server_cert_pem: String,
    /// The server certificate's private key.
    pub server_key_pem: String,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

impl TestCa {
    /// A fresh CA and server certificate.
    pub fn new() -> Result<Self, rcgen::Error> {
        Self::for_names(&["127.0.0.1", "localhost"])
    }

    /// A fresh CA and a server certificate for `names` only (DNS names or IP
    /// addresses), say to test a name mismatch.
    pub fn for_names(names: &[&str]) -> Result<Self, rcgen::Error> {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
            KeyUsagePurpose,
        };
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        ca.distinguished_name
            .push(DnType::CommonName, "leasehold test CA");
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate()?)?;
        let names: Vec<String> = names.iter().map(|&n| n.to_owned()).collect();
        let mut server = CertificateParams::new(names)?;
        server
            .distinguished_name
            .push(DnType::CommonName, "leasehold test server");
        let server_key = KeyPair::generate()?;
        let server_cert = server.signed_by(&server_key, &ca)?;
        Ok(Self {
            ca_pem: ca.pem(),
            server_cert_pem: server_cert.pem(),
            server_key_pem: server_key.serialize_pem(),
        })
    }
}
