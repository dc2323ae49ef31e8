//! A test certificate authority (rcgen): CAs, server certificates for
//! 127.0.0.1/localhost and client certificates, written as PEM files.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use std::path::{Path, PathBuf};

/// A CA whose certificate is `cert` (PEM file).
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    pub cert: PathBuf,
}

/// A certificate and its key, as PEM files.
pub struct Pair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Ca {
    /// A new CA named `name`, its certificate written to `dir/name.pem`.
    pub fn new(dir: &Path, name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let cert = dir.join(format!("{name}.pem"));
        std::fs::write(&cert, issuer.pem()).unwrap();
        Self { issuer, cert }
    }

    fn issue(
        &self,
        dir: &Path,
        name: &str,
        names: &[&str],
        usage: ExtendedKeyUsagePurpose,
    ) -> Pair {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let pair = Pair {
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}.key")),
        };
        // Written beside and renamed: a server watching the files never
        // reads half of one.
        for (path, text) in [(&pair.key, key.serialize_pem()), (&pair.cert, cert.pem())] {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, path).unwrap();
        }
        pair
    }

    /// A server certificate for 127.0.0.1 and localhost, as `dir/name.pem`
    /// and `dir/name.key` (replacing what is there).
    pub fn server(&self, dir: &Path, name: &str) -> Pair {
        self.issue(
            dir,
            name,
            &["127.0.0.1", "localhost"],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A client certificate.
    pub fn client(&self, dir: &Path, name: &str) -> Pair {
        self.issue(dir, name, &[], ExtendedKeyUsagePurpose::ClientAuth)
    }
}
