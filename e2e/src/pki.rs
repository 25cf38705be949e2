//! Certificates and keys for one test-bed instance, generated fresh in memory
//! with `rcgen` (no openssl CLI): a CA, the API server's serving certificate,
//! client certificates for the admin (`system:masters`) and for a restricted
//! user, and the service-account signing key pair.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::Error;

/// Paths of the PEM files written by [`generate`].
#[derive(Debug, Clone)]
pub struct PkiFiles {
    /// CA certificate: trusted by clients for the API server, and by the API
    /// server for client certificates.
    pub ca_cert: PathBuf,
    /// API server serving certificate and key (SANs: 127.0.0.1, localhost,
    /// kubernetes.default.svc).
    pub apiserver_cert: PathBuf,
    #[allow(missing_docs)]
    pub apiserver_key: PathBuf,
    /// Admin client certificate (CN `ferrotel-admin`, O `system:masters`).
    pub admin_cert: PathBuf,
    #[allow(missing_docs)]
    pub admin_key: PathBuf,
    /// Restricted client certificate (CN [`RESTRICTED_USER`]).
    pub restricted_cert: PathBuf,
    #[allow(missing_docs)]
    pub restricted_key: PathBuf,
    /// The real node's kubelet (CN `system:node:<name>`, O `system:nodes`,
    /// so the Node authorizer and NodeRestriction apply to it).
    pub kubelet_cert: PathBuf,
    #[allow(missing_docs)]
    pub kubelet_key: PathBuf,
    /// kube-proxy (CN `system:kube-proxy`, bound to `system:node-proxier`).
    pub proxy_cert: PathBuf,
    #[allow(missing_docs)]
    pub proxy_key: PathBuf,
    /// The API server's client certificate towards kubelets (logs, exec).
    pub apiserver_kubelet_cert: PathBuf,
    #[allow(missing_docs)]
    pub apiserver_kubelet_key: PathBuf,
    /// Service-account token signing key (private, PKCS#8) and its public key.
    pub sa_key: PathBuf,
    #[allow(missing_docs)]
    pub sa_pub: PathBuf,
}

/// User name (certificate CN) of the restricted user.
pub const RESTRICTED_USER: &str = "ferrotel-restricted";
/// User name (certificate CN) of the admin user.
pub const ADMIN_USER: &str = "ferrotel-admin";

fn pki_err(what: &str, e: rcgen::Error) -> Error {
    Error::Pki(format!("{what}: {e}"))
}

fn write(path: &Path, text: &str) -> Result<(), Error> {
    std::fs::write(path, text).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Generates all certificates and keys into `dir` (created if missing).
/// `extra_sans` are added to the API server's certificate (the address it
/// listens on when a real node must reach it, the `kubernetes` Service IP).
pub fn generate(dir: &Path, extra_sans: &[String]) -> Result<PkiFiles, Error> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let files = PkiFiles {
        ca_cert: dir.join("ca.crt"),
        apiserver_cert: dir.join("apiserver.crt"),
        apiserver_key: dir.join("apiserver.key"),
        admin_cert: dir.join("admin.crt"),
        admin_key: dir.join("admin.key"),
        restricted_cert: dir.join("restricted.crt"),
        restricted_key: dir.join("restricted.key"),
        kubelet_cert: dir.join("kubelet.crt"),
        kubelet_key: dir.join("kubelet.key"),
        proxy_cert: dir.join("kube-proxy.crt"),
        proxy_key: dir.join("kube-proxy.key"),
        apiserver_kubelet_cert: dir.join("apiserver-kubelet-client.crt"),
        apiserver_kubelet_key: dir.join("apiserver-kubelet-client.key"),
        sa_key: dir.join("sa.key"),
        sa_pub: dir.join("sa.pub"),
    };

    let ca_key = KeyPair::generate().map_err(|e| pki_err("generate CA key", e))?;
    let mut ca_params =
        CertificateParams::new(Vec::<String>::new()).map_err(|e| pki_err("CA params", e))?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "ferrotel-testbed-ca");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params
        .self_signed(&ca_key)
        .map_err(|e| pki_err("self-sign CA", e))?;
    write(&files.ca_cert, &ca_cert.pem())?;
    let issuer = Issuer::new(ca_params, ca_key);

    let leaf = |cn: &str,
                org: Option<&str>,
                sans: Vec<String>,
                usage: ExtendedKeyUsagePurpose,
                cert: &Path,
                key: &Path|
     -> Result<(), Error> {
        let leaf_key = KeyPair::generate().map_err(|e| pki_err("generate key", e))?;
        let mut params = CertificateParams::new(sans).map_err(|e| pki_err("leaf params", e))?;
        params.distinguished_name.push(DnType::CommonName, cn);
        if let Some(org) = org {
            params
                .distinguished_name
                .push(DnType::OrganizationName, org);
        }
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![usage];
        let signed = params
            .signed_by(&leaf_key, &issuer)
            .map_err(|e| pki_err(cn, e))?;
        write(cert, &signed.pem())?;
        write(key, &leaf_key.serialize_pem())
    };

    let mut apiserver_sans: Vec<String> = vec![
        "127.0.0.1".into(),
        "localhost".into(),
        "kubernetes".into(),
        "kubernetes.default".into(),
        "kubernetes.default.svc".into(),
        "kubernetes.default.svc.cluster.local".into(),
    ];
    apiserver_sans.extend(extra_sans.iter().cloned());
    leaf(
        "kube-apiserver",
        None,
        apiserver_sans,
        ExtendedKeyUsagePurpose::ServerAuth,
        &files.apiserver_cert,
        &files.apiserver_key,
    )?;
    leaf(
        ADMIN_USER,
        Some("system:masters"),
        vec![],
        ExtendedKeyUsagePurpose::ClientAuth,
        &files.admin_cert,
        &files.admin_key,
    )?;
    leaf(
        RESTRICTED_USER,
        Some("ferrotel:restricted"),
        vec![],
        ExtendedKeyUsagePurpose::ClientAuth,
        &files.restricted_cert,
        &files.restricted_key,
    )?;

    leaf(
        &format!("system:node:{}", crate::node::NODE_NAME),
        Some("system:nodes"),
        vec![],
        ExtendedKeyUsagePurpose::ClientAuth,
        &files.kubelet_cert,
        &files.kubelet_key,
    )?;
    leaf(
        "system:kube-proxy",
        None,
        vec![],
        ExtendedKeyUsagePurpose::ClientAuth,
        &files.proxy_cert,
        &files.proxy_key,
    )?;
    leaf(
        "kube-apiserver-kubelet-client",
        Some("system:masters"),
        vec![],
        ExtendedKeyUsagePurpose::ClientAuth,
        &files.apiserver_kubelet_cert,
        &files.apiserver_kubelet_key,
    )?;

    let sa = KeyPair::generate().map_err(|e| pki_err("generate service-account key", e))?;
    write(&files.sa_key, &sa.serialize_pem())?;
    write(&files.sa_pub, &sa.public_key_pem())?;
    Ok(files)
}
