//! The test cluster's keys and certificates: one CA that signs the API server's serving
//! certificate and every client's, and the service-account signing key.
//!
//! Every client authenticates with a certificate whose common name is its user and whose
//! organisations are its groups, the way kubeadm's components do: the tests' admin is in
//! `system:masters`; the daemon under test is a plain user that RBAC knows only through the
//! binding the tests make to `deploy/rbac.yaml`'s ClusterRole.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};

use crate::Result;

/// A certificate and its key, as PEM files.
#[derive(Debug, Clone)]
pub(crate) struct Pair {
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
}

/// A client identity to issue.
pub(crate) struct Identity {
    /// The file name prefix and the key the tests look it up by.
    pub(crate) name: &'static str,
    /// The user (certificate common name).
    pub(crate) user: &'static str,
    /// The groups (certificate organisations).
    pub(crate) groups: &'static [&'static str],
}

/// Everything [`issue`] wrote.
pub(crate) struct Issued {
    /// The CA certificate (PEM): it signed the serving certificate and every client's.
    pub(crate) ca: PathBuf,
    /// The API server's serving certificate.
    pub(crate) serving: Pair,
    /// The service-account signing key (private, PEM) and its public half.
    pub(crate) service_account_key: PathBuf,
    pub(crate) service_account_public: PathBuf,
    /// Each identity's client certificate, by name.
    pub(crate) clients: Vec<(&'static str, Pair)>,
}

fn rcgen_error(what: &str) -> impl Fn(rcgen::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

fn write(dir: &Path, name: &str, text: &str) -> Result<PathBuf> {
    let path = dir.join(name);
    std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

/// Writes a fresh CA, a serving certificate valid for `serving_names` (addresses and DNS
/// names the clients dial), a service-account key, and a client certificate per identity, all
/// into `dir`.
pub(crate) fn issue(dir: &Path, serving_names: &[&str], identities: &[Identity]) -> Result<Issued> {
    let mut ca_params = CertificateParams::default();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "ipvs-rs test cluster CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate().map_err(rcgen_error("the CA's key"))?;
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key).map_err(rcgen_error("the CA"))?;
    let ca_path = write(dir, "ca.crt", &ca.pem())?;

    let mut serving = CertificateParams::default();
    serving
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    serving.subject_alt_names = serving_names
        .iter()
        .map(|name| match name.parse::<IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => (*name)
                .try_into()
                .map(SanType::DnsName)
                .map_err(|e| format!("{name}: {e}")),
        })
        .collect::<Result<_>>()?;
    serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let serving = leaf(dir, "apiserver", serving, &ca)?;

    let sa_key = KeyPair::generate().map_err(rcgen_error("the service-account key"))?;
    let service_account_key = write(dir, "sa.key", &sa_key.serialize_pem())?;
    let service_account_public = write(dir, "sa.pub", &sa_key.public_key_pem())?;

    let mut clients = Vec::new();
    for identity in identities {
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, identity.user);
        for group in identity.groups {
            params
                .distinguished_name
                .push(DnType::OrganizationName, *group);
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        clients.push((identity.name, leaf(dir, identity.name, params, &ca)?));
    }
    Ok(Issued {
        ca: ca_path,
        serving,
        service_account_key,
        service_account_public,
        clients,
    })
}

/// Signs `params` with the CA and writes `<name>.crt` and `<name>.key`.
fn leaf(
    dir: &Path,
    name: &str,
    mut params: CertificateParams,
    ca: &CertifiedIssuer<'_, KeyPair>,
) -> Result<Pair> {
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let key = KeyPair::generate().map_err(rcgen_error(name))?;
    let cert = params.signed_by(&key, ca).map_err(rcgen_error(name))?;
    Ok(Pair {
        cert: write(dir, &format!("{name}.crt"), &cert.pem())?,
        key: write(dir, &format!("{name}.key"), &key.serialize_pem())?,
    })
}
